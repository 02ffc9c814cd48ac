"""Evaluation: per-task metrics of a model on a day. Imports training (to load a model) and below."""
