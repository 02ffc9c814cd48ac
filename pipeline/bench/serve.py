"""`dupn bench serve`: latency of scoring one user's candidates with the whole model against the split pair.

    dupn bench serve [--work WORK | --model MODEL_DIR | --config dupn] [--candidates 1000] [--xla] [--json]

Exports the model (the published one, a model dir, or a freshly built one of --config: latency
does not depend on the weights) to a temporary folder, loads the three SavedModels, and times
one request of one user with full-length history and K candidates:
  whole   the whole model on K rows (the user part recomputed for every candidate)
  split   the user part on 1 row, then the item part on K rows
Each is warmed up, then timed `--repeats` times; the medians are reported, with their ratio.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from features.contract import Contract
from pipeline.dispatch import command_parser
from pipeline.serving.export import ITEM_FEATURES, REPRESENTATION, USER_FEATURES, export, load_part


def request(contract: Contract, candidates: int, seed: int = 0) -> tuple[dict, dict]:
    """(one user's features [1, ...], K candidates' features [K, ...]): every slot filled."""
    rng = np.random.default_rng(seed)

    def values(name, rows):
        f = contract.features[name]
        shape = (rows, *f.shape)
        if f.dtype == "string":
            return np.vectorize(lambda v: f"{name}-{v}".encode(), otypes=[object])(
                rng.integers(0, 100_000, size=shape))
        if f.dtype == "int64":
            return rng.integers(1, f.vocab, size=shape).astype(np.int64)
        return rng.random(shape).astype(np.float32)

    return ({n: values(n, 1) for n in USER_FEATURES}, {n: values(n, candidates) for n in ITEM_FEATURES})


def median_ms(function, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(model, contract: Contract, candidates: int, repeats: int, xla: bool = False) -> dict:
    user_features, item_features = request(contract, candidates)
    with tempfile.TemporaryDirectory(prefix="dupn-bench-serve-") as folder:
        export(model, contract, folder, xla=xla)
        user, item, whole = (load_part(folder, p) for p in ("user", "item", "whole"))
        tiled = {k: tf.constant(np.repeat(v, candidates, axis=0)) for k, v in user_features.items()}
        user_in = {k: tf.constant(v) for k, v in user_features.items()}
        item_in = {k: tf.constant(v) for k, v in item_features.items()}

        def split():
            representation = user(**user_in)[REPRESENTATION]
            return {k: v.numpy() for k, v in item(**{REPRESENTATION: representation}, **item_in).items()}

        def entire():
            return {k: v.numpy() for k, v in whole(**tiled, **item_in).items()}

        # The two paths must agree before their speeds are compared.
        a, b = split(), entire()
        gap = max(float(np.max(np.abs(a[h] - b[h]))) for h in a)
        whole_ms = median_ms(entire, repeats)
        split_ms = median_ms(split, repeats)
        user_ms = median_ms(lambda: user(**user_in)[REPRESENTATION].numpy(), repeats)
    return {"candidates": candidates, "sequence_length": contract.sequence_length,
            "whole_ms": round(whole_ms, 3), "split_ms": round(split_ms, 3),
            "user_ms": round(user_ms, 3), "speedup": round(whole_ms / split_ms, 2),
            "max_score_gap": gap, "user_part_xla": xla, "repeats": repeats, "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("dupn bench serve", __doc__)
    parser.add_argument("--work", help="benchmark the published model of this work directory")
    parser.add_argument("--model", help="benchmark this model dir")
    parser.add_argument("--config", default="dupn",
                        help="without --work/--model: a fresh model of this configuration "
                             "(default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--xla", action="store_true",
                        help="export the user part XLA-compiled (dupn export --xla)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from configs.loader import ConfigError, load_config
    from pipeline.training.checkpoints import load_model, new_model
    from pipeline.layout import published_model_dir
    try:
        if args.work or args.model:
            source = str(args.model or published_model_dir(args.work))
            config, model = load_model(source)
        else:
            config = load_config(args.config, args.overrides)
            model, source = new_model(config, Contract.from_config(config)), f"fresh {args.config}"
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"dupn bench serve: {err}", file=sys.stderr)
        return 1
    result = {"model": source, **run(model, Contract.from_config(config), args.candidates, args.repeats,
                                          xla=args.xla)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"one user, {result['candidates']} candidates, history of {result['sequence_length']}: "
              f"whole {result['whole_ms']:.1f} ms, split {result['split_ms']:.1f} ms "
              f"(user part {result['user_ms']:.1f} ms): {result['speedup']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
