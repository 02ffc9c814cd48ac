"""TF Serving's warm-up records: PredictionLogs in a SavedModel's assets.extra/tf_serving_warmup_requests.

TF Serving replays them when it loads a version, before the version serves, so the first real
request does not pay for tracing and graph optimisation. Each part gets one request per
signature on a batch of one padded example (the contract's defaults).
"""
from __future__ import annotations

from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def predict_log(model_name: str, signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
    """A PredictionLog of one PredictRequest: inputs name -> array or tensor."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(saved_model_dir, logs) -> Path:
    """Writes the PredictionLogs as SAVED_MODEL_DIR/assets.extra/tf_serving_warmup_requests."""
    path = Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(saved_model_dir) -> list[prediction_log_pb2.PredictionLog]:
    """The warm-up records of an exported part, parsed back."""
    path = Path(saved_model_dir) / WARMUP_FILE
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]
