"""Training: the train job, run checkpoints (resume, warm start, load) and the parameter-server
cluster. Imports `models`, `features`, `configs` and the packages below it (layout, rawlogs, beam)."""
