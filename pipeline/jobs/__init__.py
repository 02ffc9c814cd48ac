"""Scheduled jobs: backfill, daily fine-tune, transfer, the day's data, publishing and the manifest.
Imports evaluation, serving, training, beam and below."""
