"""`dupn bench train`: DUPN's training step at the paper's sizes against a stock Keras LSTM, and FLOP/s.

In one process: dupn-all (configs/dupn.yaml: sequence 100, LSTM 128, the paper's embedding
widths, every head, AdaGrad) and a stock tf_keras.layers.LSTM(128) over inputs of the same width
(e_t and p_t, 172 floats a step) with one dense head, trained step by step in turns so both see
the same machine load; the same stock LSTM once more over DUPN's own (trainable) behaviour
embeddings; then a large matmul for the machine's FLOP/s. Figures: docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ALLOCATORS = ("bfc", "default")


def _select_allocator(name: str) -> bool:
    """Chooses TensorFlow's CPU allocator; only possible before TensorFlow loads (returns whether
    the choice took effect). The BFC allocator keeps freed blocks for reuse: the LSTM loops
    allocate megabytes per step, which the default allocator gets from (and returns to) the OS
    every time."""
    if "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if name == "bfc" else "false"
    return True


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s (in GFLOP/s) of a float32 [size, size] @ [size, size] matmul."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    run = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    run().numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size ** 3 / best / 1e9


def dupn_step_flops(contract, model_config, batch: int) -> float:
    """Matmul FLOPs of one DUPN training step (forward + backward), the parts that scale with
    the sequence: the LSTM's input projection and recurrence and the attention's projection.
    Backward counts twice forward (a gradient for the inputs and one for the weights)."""
    n, u, a = contract.sequence_length, model_config.lstm_units, model_config.attention_units
    de, dp = contract.item_embedding_dim, contract.property_embedding_dim
    forward = 2 * batch * n * ((de + dp) * 4 * u + u * 4 * u + (u + dp) * a + a)
    return 3.0 * forward


def lstm_step_flops(n: int, width: int, units: int, batch: int) -> float:
    """Matmul FLOPs of one stock-LSTM training step; its inputs are constants, so the input
    projection has a weight gradient only."""
    return 2 * batch * n * (3 * units * 4 * units + 2 * width * 4 * units)


def build_dupn(config, contract, batch: int, seed: int):
    import tf_keras as keras

    from models.dupn import build_model
    from pipeline.bench.random_batch import random_batch

    model = build_model(config, contract)
    model.compile(optimizer=keras.optimizers.Adagrad(config.trainer.learning_rate))
    if config.trainer.weight_average:    # training's step then also updates the average
        from models.weight_average import WeightAverage
        model.average_weights(WeightAverage(model.trainable_variables, config.trainer.weight_average))
    inputs, labels = random_batch(contract, batch, seed=seed, full_sequences=True)
    return model, (inputs, labels)


def build_stock_lstm(n: int, width: int, units: int, batch: int, learning_rate: float, seed: int):
    import numpy as np
    import tf_keras as keras

    sequence = keras.Input(shape=(n, width))
    logit = keras.layers.Dense(1)(keras.layers.LSTM(units)(sequence))
    model = keras.Model(sequence, logit)
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n, width)).astype(np.float32)
    y = (rng.random((batch, 1)) < 0.5).astype(np.float32)
    return model, (x, y)


def build_embedded_lstm(contract, units: int, learning_rate: float):
    """The stock LSTM reading the same trainable behaviour embeddings as DUPN (so its input
    projection, like DUPN's, also back-propagates into the tables), with one dense head."""
    import tensorflow as tf
    import tf_keras as keras

    from models.config import contract_config
    from models.embedding import FeatureEmbeddings

    class EmbeddedLSTM(keras.Model):
        def __init__(self):
            super().__init__()
            self.embeddings = FeatureEmbeddings(contract_config(contract))
            self.lstm = keras.layers.LSTM(units)
            self.head = keras.layers.Dense(1)

        def call(self, inputs):
            e, _ = self.embeddings.behaviour(inputs)
            x = tf.concat([e, self.embeddings.behaviour_properties(inputs)], axis=-1)
            return self.head(self.lstm(x))

    model = EmbeddedLSTM()
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def time_steps(runs: dict, steps: int, warmup: int) -> tuple[dict, dict]:
    """Median wall and CPU seconds per step of each model, stepping the models in turns (CPU
    seconds, both cores summed, vary less than wall time when the machine is shared).

    Each step is the model's train function on a lasting iterator over its batch, as `fit` runs
    it. (`train_on_batch` builds a new dataset and iterator every call, which cost DUPN's large
    input dict up to a second of idle wall time a step.)
    """
    import numpy as np
    import tensorflow as tf

    stepping = {}
    for name, (model, (x, y)) in runs.items():
        batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        stepping[name] = (model.make_train_function(), batches)
    for _ in range(warmup):
        for train_function, batches in stepping.values():
            tf.nest.map_structure(np.asarray, train_function(batches))
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(steps):
        for name, (train_function, batches) in stepping.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            tf.nest.map_structure(np.asarray, train_function(batches))   # waits for the step
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    median = lambda d: {name: float(np.median(v)) for name, v in d.items()}
    return median(wall), median(cpu)


def run(args) -> dict:
    allocator_set = _select_allocator(args.allocator)
    import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
    import tensorflow as tf

    from configs.loader import load_config
    from features.contract import Contract

    config = load_config(args.config, [f"model.variant={args.variant}", *args.overrides])
    contract = Contract.from_config(config)
    m = config.model
    batch = args.batch or config.trainer.batch_size
    tf.random.set_seed(config.runtime.seed)

    dupn, dupn_data = build_dupn(config, contract, batch, config.runtime.seed)
    width = contract.item_embedding_dim + contract.property_embedding_dim
    n = contract.sequence_length
    stock, stock_data = build_stock_lstm(n, width, m.lstm_units, batch,
                                         config.trainer.learning_rate, config.runtime.seed)
    embedded = build_embedded_lstm(contract, m.lstm_units, config.trainer.learning_rate)
    embedded_data = (dupn_data[0], dupn_data[1]["label"][:, None])
    seconds, cpu = time_steps({"dupn": (dupn, dupn_data), "lstm": (stock, stock_data),
                               "lstm_on_embeddings": (embedded, embedded_data)},
                              args.steps, args.warmup)
    peak = matmul_gflops(args.matmul_size)
    dupn_flops = dupn_step_flops(contract, m, batch)
    lstm_flops = lstm_step_flops(n, width, m.lstm_units, batch)
    return {
        "variant": args.variant, "batch": batch, "sequence_length": n,
        "lstm_units": m.lstm_units, "input_width": width, "steps": args.steps,
        "dupn_step_s": round(seconds["dupn"], 4), "lstm_step_s": round(seconds["lstm"], 4),
        "dupn_samples_per_s": round(batch / seconds["dupn"], 1),
        "lstm_samples_per_s": round(batch / seconds["lstm"], 1),
        "ratio": round(seconds["lstm"] / seconds["dupn"], 3),
        "dupn_cpu_s_per_step": round(cpu["dupn"], 4), "lstm_cpu_s_per_step": round(cpu["lstm"], 4),
        "lstm_on_embeddings_cpu_s_per_step": round(cpu["lstm_on_embeddings"], 4),
        "lstm_on_embeddings_step_s": round(seconds["lstm_on_embeddings"], 4),
        "lstm_on_embeddings_samples_per_s": round(batch / seconds["lstm_on_embeddings"], 1),
        "ratio_vs_lstm_on_embeddings": round(seconds["lstm_on_embeddings"] / seconds["dupn"], 3),
        "achieved_gflops": round(dupn_flops / seconds["dupn"] / 1e9, 6),
        "lstm_achieved_gflops": round(lstm_flops / seconds["lstm"] / 1e9, 6),
        "peak_gflops": round(peak, 1),
        "peak_source": f"best of 5 float32 {args.matmul_size}^3 matmuls in this process",
        "allocator": args.allocator if allocator_set else "as already loaded",
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "tensorflow": tf.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    from configs.loader import add_config_args

    parser = argparse.ArgumentParser(prog="dupn bench train", description=__doc__.splitlines()[0])
    add_config_args(parser, default="dupn")
    parser.add_argument("--variant", default="dupn-all")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--batch", type=int, default=0, help="batch size (default: the config's)")
    parser.add_argument("--allocator", choices=ALLOCATORS, default="bfc",
                        help="TensorFlow CPU allocator (default: %(default)s)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 0:
        parser.error("--steps must be >= 1, --warmup and --batch >= 0")
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"dupn ({result['variant']}): {result['dupn_samples_per_s']:.0f} samples/s "
              f"({result['dupn_step_s']:.3f} s/step, ~{result['achieved_gflops']:.0f} GFLOP/s)")
        print(f"stock LSTM({result['lstm_units']}): {result['lstm_samples_per_s']:.0f} samples/s "
              f"({result['lstm_step_s']:.3f} s/step, ~{result['lstm_achieved_gflops']:.0f} GFLOP/s)")
        print(f"stock LSTM on DUPN's embeddings: {result['lstm_on_embeddings_samples_per_s']:.0f} "
              f"samples/s")
        print(f"ratio dupn/lstm: {result['ratio']:.2f} (against the LSTM on embeddings: "
              f"{result['ratio_vs_lstm_on_embeddings']:.2f})   matmul peak: "
              f"{result['peak_gflops']:.0f} GFLOP/s on {result['cpu_count']} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
