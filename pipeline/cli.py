"""The `dupn` command: one subcommand per job, each a module with `main(argv)`.

Subcommand modules are imported only when run, so `dupn synth` never loads TensorFlow.
"""
from __future__ import annotations

import sys

from pipeline.dispatch import dispatch

COMMANDS = {
    "demo": ("pipeline.demo", "the main job end to end on synthetic data (what `make demo` runs)"),
    "synth": ("pipeline.rawlogs.synth", "write synthetic raw behaviour logs (all six tables)"),
    "import-taobao": ("pipeline.rawlogs.taobao_import", "map the public Taobao UserBehavior CSV to raw logs"),
    "build-examples": ("pipeline.beam.build_examples", "Beam job: raw logs to TFRecord examples"),
    "train": ("pipeline.training.train", "train a model on a date range of examples"),
    "backfill": ("pipeline.jobs.backfill", "build a window's examples, train from scratch, publish"),
    "daily": ("pipeline.jobs.daily", "fine-tune the published model on one new day"),
    "transfer": ("pipeline.jobs.transfer", "learn the shop-preference task four ways"),
    "export": ("pipeline.serving.export", "write the user, item and whole SavedModels"),
    "score": ("pipeline.serving.score", "score candidates for requests with an exported model"),
    "evaluate": ("pipeline.evaluation.evaluate", "per-task metrics of a model on a day"),
    "experiment": ("pipeline.experiments.run", "run one of the paper's experiments"),
    "report": ("pipeline.experiments.report", "write the HTML report of a work directory"),
    "bench": ("pipeline.bench.commands", "benchmarks: pipeline, memory, train, serve, scale"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch(list(sys.argv[1:] if argv is None else argv), "dupn", COMMANDS, "command")


if __name__ == "__main__":
    sys.exit(main())
