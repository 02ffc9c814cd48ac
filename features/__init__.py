"""The feature contract of DUPN; importing this package selects Keras 2 before TensorFlow loads."""
import os

# The one place that selects Keras 2 (tf_keras): Keras 3 cannot run
# model.fit under ParameterServerStrategy. It must happen before TensorFlow is imported,
# so `models` and `pipeline` import this package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The BFC allocator on CPU cut DUPN's CPU time per training step by a fifth to a third
# (docs/BENCHMARKS.md, "Training step"); it too must be set before TensorFlow loads.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
