"""The Beam example job: raw logs to TFRecord examples per task and day (build_examples.py wires
read, join, samples, write). Imports `features`, `configs`, `pipeline.layout` and `pipeline.rawlogs`;
never TensorFlow at pipeline construction."""
