"""Serving: the split export (user part, item part, whole) and scoring of requests. Imports
training (to load a model) and below."""
