"""The ablation experiment: the nine models trained on the same window, evaluated on the same day.

The paper's table (AUC of CTR, L2R and talent, accuracy of purchasing power; one row per model)
and a bar chart. A model that cannot be trained keeps its row, with the reason and no metrics.
"""
from __future__ import annotations

import pandas as pd

from configs.schema import VARIANTS
from pipeline.experiments import plots
from pipeline.experiments.run import Setup, chosen, evaluate_run, headline, train_run, with_variant

# The paper's order: baselines first, then DUPN without and with behaviour properties.
ORDER = ("wide", "wide-deep", "dssm", "cnn-max", "dupn-nobp", "dupn-bplstm", "dupn-bpatt",
         "dupn-all", "dupn-w2v")
assert sorted(ORDER) == sorted(VARIANTS)
COLUMNS = {"ctr": "CTR AUC", "l2r": "L2R AUC", "talent": "Talent AUC", "power": "Power accuracy"}


def run(setup: Setup):
    """Returns (table, png): one row per variant, the paper's metric per task."""
    rows = []
    for variant in chosen(setup, ORDER):
        config = with_variant(setup.config, variant)
        run_dir = setup.runs_dir("ablation") / variant
        row = {"model": variant}
        try:
            trained, seconds = train_run(setup, config, run_dir)
            result = evaluate_run(setup, run_dir)
        except ValueError as err:   # e.g. a variant the training job cannot build
            setup.log(f"{variant}: not trained: {err}")
            rows.append({**row, "error": str(err)})
            continue
        for task, label in COLUMNS.items():
            row[label] = headline(task, result[task]) if task in result else None
        row.update({"CTR oracle AUC": result.get("ctr", {}).get("oracle_auc"),
                    "CTR blind oracle AUC": result.get("ctr", {}).get("blind_oracle_auc"),
                    "steps": trained["steps"], "train seconds": round(seconds, 1),
                    "eval examples": sum(v["n"] for v in result.values()), "error": ""})
        setup.log(f"{variant}: {trained['steps']} steps in {seconds:.0f} s; "
                  + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k in COLUMNS.values() and v is not None))
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", *COLUMNS.values(), "CTR oracle AUC",
                                        "CTR blind oracle AUC", "steps",
                                        "train seconds", "eval examples", "error"])
    chart = table.set_index("model")[list(COLUMNS.values())].astype(float)
    png = plots.bar_panels(
        chart, setup.chart_path("ablation"),
        f"Ablation: trained {setup.train_start}..{setup.train_end}, tested {setup.eval_date}"
        + (f", {setup.runs_tag}" if setup.runs_tag else ""))
    return table, png
