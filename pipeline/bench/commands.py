"""`dupn bench pipeline|memory|train|serve|scale`: runs one benchmark, each in its own module pipeline/bench/<name>.py."""
from __future__ import annotations

import sys

from pipeline.dispatch import dispatch

BENCHMARKS = {
    name: (f"pipeline.bench.{name}", help_) for name, help_ in {
        "pipeline": "the Beam example job's throughput",
        "memory": "the local example job's peak memory at two sizes, in one pass and in passes",
        "train": "DUPN's training step against a stock LSTM, and the machine's FLOP/s",
        "serve": "the exported models' scoring latency and throughput",
        "scale": "the 10-day backfill end to end at a given size: each stage's time, CPU, peak memory",
    }.items()
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(list(sys.argv[1:] if argv is None else argv), "dupn bench", BENCHMARKS,
                    "benchmark", placeholder="NAME", what="its options", heading="benchmarks")


if __name__ == "__main__":
    sys.exit(main())
