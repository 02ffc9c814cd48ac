"""Keras layers, heads and models of DUPN and its baselines."""
import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
