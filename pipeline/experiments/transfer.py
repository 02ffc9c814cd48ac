"""The transfer experiment: shop-preference AUC against training time for RS, RA, RT and FT.

Reads what `dupn transfer` wrote in WORK/transfer (one JSON per mode, transfer.csv of them all)
and runs `dupn transfer` for the modes not there yet, on the experiment's window and day
(--small: two passes over the data instead of five). Needs a published model (rt and ft start
from it).
"""
from __future__ import annotations

import json

import pandas as pd

from pipeline import layout
from pipeline.experiments import plots
from pipeline.experiments.run import Setup

MODES = ("rs", "ra", "rt", "ft")   # pipeline.jobs.transfer.MODES, without loading TensorFlow here
NAMES = {"rs": "RS: retrain, shop alone", "ra": "RA: retrain, all tasks + shop",
         "rt": "RT: shallow net on the frozen representation", "ft": "FT: fine-tune the network"}
SMALL_EPOCHS = 2


def run(setup: Setup):
    """Returns (table, png): the curves (mode, epoch, steps, seconds, auc) and their plot."""
    folder = layout.transfer_dir(setup.work)
    missing = [m for m in MODES if not (folder / f"{m}.json").exists()]
    if missing:
        from pipeline.jobs import transfer
        argv = ["--mode", ",".join(missing), "--work", str(setup.work), "--test-date", setup.eval_date,
                "--start", setup.train_start, "--end", setup.train_end]
        if setup.options.get("model"):
            argv += ["--model", str(setup.options["model"])]
        if setup.small:
            argv += ["--epochs", str(SMALL_EPOCHS)]
        setup.log(f"running dupn transfer {' '.join(argv)}")
        if transfer.main(argv) != 0:
            raise ValueError(f"dupn transfer failed for {', '.join(missing)} (see above; rt and ft "
                             "need a published model: run dupn backfill first)")
    else:
        setup.log(f"reading {folder} (delete a mode's JSON there to run it again)")
    rows, about = [], {}
    for mode in MODES:
        result = json.loads((folder / f"{mode}.json").read_text())
        rows += [{**point, "mode": mode} for point in result["curve"]]
        train = result.get("train") or ["?", "?"]
        about[mode] = f"trained {train[0]}..{train[-1]}, tested {result.get('test_date')}"
    table = pd.DataFrame(rows, columns=["mode", "epoch", "steps", "seconds", "auc"])
    curves = {"shop AUC against training time": {}, "shop AUC against training steps": {}}
    for mode in MODES:
        part = table[table["mode"] == mode].sort_values("epoch")
        curves["shop AUC against training time"][NAMES[mode]] = (part["seconds"].tolist(), part["auc"].tolist())
        curves["shop AUC against training steps"][NAMES[mode]] = (part["steps"].tolist(), part["auc"].tolist())
    days = sorted(set(about.values()))
    png = plots.panels(curves, setup.out_dir / "transfer.png",
                       f"Transfer to shop preference ({'; '.join(days)})",
                       xlabel={"shop AUC against training time": "training seconds",
                               "shop AUC against training steps": "training steps"},
                       ylabels={name: "shop AUC" for name in curves})
    return table, png
