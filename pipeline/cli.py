"""The `dupn` command: one subcommand per job, each a module with `main(argv)`.

Subcommand modules are imported only when run, so `dupn synth` never loads TensorFlow.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("pipeline.demo", "the main job end to end on synthetic data (what `make demo` runs)"),
    "synth": ("pipeline.synth", "write synthetic raw behaviour logs (all six tables)"),
    "import-taobao": ("pipeline.taobao_import", "map the public Taobao UserBehavior CSV to raw logs"),
    "build-examples": ("pipeline.build_examples", "Beam job: raw logs to TFRecord examples"),
    "train": ("pipeline.train", "train a model on a date range of examples"),
    "backfill": ("pipeline.backfill", "build a window's examples, train from scratch, publish"),
    "daily": ("pipeline.daily", "fine-tune the published model on one new day"),
    "transfer": ("pipeline.transfer", "learn the shop-preference task four ways"),
    "export": ("pipeline.export", "write the user, item and whole SavedModels"),
    "score": ("pipeline.score", "score candidates for requests with an exported model"),
    "evaluate": ("pipeline.evaluate", "per-task metrics of a model on a day"),
    "experiment": ("pipeline.experiment", "run one of the paper's experiments"),
    "report": ("pipeline.report", "write the HTML report of a work directory"),
    "bench": ("pipeline.bench", "benchmarks: pipeline, train, serve"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: dupn COMMAND [options]   (dupn COMMAND --help for a command's options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dupn: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as err:
        if err.name != COMMANDS[name][0]:
            raise
        print(f"dupn {name}: not built yet", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
