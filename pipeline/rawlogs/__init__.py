"""The raw-log side: the row contract (rows.py), synthetic worlds (synth*.py) and the Taobao
import. TensorFlow-free; imports only `features` and `pipeline.layout`."""
