"""Beam jobs and the train, daily, backfill, transfer and export jobs of DUPN."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
