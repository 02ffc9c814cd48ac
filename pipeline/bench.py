"""`dupn bench pipeline|train|serve`: runs one benchmark, each in its own module pipeline/bench_<name>.py."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "pipeline": "the Beam example job's throughput",
    "train": "DUPN's training step against a stock LSTM, and the machine's FLOP/s",
    "serve": "the exported models' scoring latency and throughput",
}


def usage() -> str:
    lines = ["usage: dupn bench NAME [options]   (dupn bench NAME --help for its options)", "",
             "benchmarks:"]
    lines += [f"  {name:<9} {help_}" for name, help_ in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"dupn bench: unknown benchmark '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = f"pipeline.bench_{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"dupn bench {name}: not built yet", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
