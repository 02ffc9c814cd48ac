"""The raw-log side: the schema of docs/RAW_LOGS.md (schema.py), the row contract (rows.py),
synthetic worlds (synth*.py) and the Taobao import. TensorFlow-free; imports only `features` and
`pipeline.layout`."""
