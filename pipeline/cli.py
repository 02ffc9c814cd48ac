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


def usage(prog: str = "dupn", table: dict = COMMANDS, placeholder: str = "COMMAND",
          what: str = "a command's options", heading: str = "commands") -> str:
    width = max(map(len, table))
    lines = [f"usage: {prog} {placeholder} [options]   ({prog} {placeholder} --help for {what})", "",
             f"{heading}:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in table.items()]
    return "\n".join(lines)


def dispatch(argv: list[str], prog: str, table: dict, noun: str, **usage_words) -> int:
    """Runs `table[argv[0]]`'s module's main(argv[1:]); table maps a name to (module, help).

    Shared by `dupn` and `dupn bench`; a module is imported only when its name is run.
    """
    shown = usage(prog, table, **usage_words)
    if not argv or argv[0] in ("-h", "--help"):
        print(shown)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"{prog}: unknown {noun} '{name}'\n\n{shown}", file=sys.stderr)
        return 2
    module_name = table[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"{prog} {name}: not built yet", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    return dispatch(list(sys.argv[1:] if argv is None else argv), "dupn", COMMANDS, "command")


if __name__ == "__main__":
    sys.exit(main())
