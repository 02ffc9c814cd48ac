"""`dupn report`: one self-contained HTML page of a work directory (data, daily runs, evaluation,
experiments, configuration), its plots embedded as data URIs so it opens offline."""
from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
from pathlib import Path

import pandas as pd

from features.contract import TASKS
from pipeline import layout
from pipeline.layout import DamagedFile, published_model_dir, read_manifest

EXPERIMENTS = ("ablation", "multitask", "transfer", "attention", "sharing", "balance")
WORLDS_FILES = ("worlds", "worlds_summary")     # shown in their own section, not among the experiments
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
LONG_TABLE = 40     # rows above which a table is folded away
NOT_RUN = '<p class="missing">Not run yet: {}</p>'
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; } td.text { text-align: left; max-width: 24em; }
td:first-child { white-space: nowrap; }
.missing { color: #a33; font-style: italic; } .note { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; } pre { background: #f6f6f6; padding: 1em; }
.scroll { overflow-x: auto; }
"""


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts to one level of dotted keys; lists of numbers become one short text."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix.rstrip(".")
    if isinstance(value, list):
        # per-class values keep their decimals, so a column of them lines up
        return {key: ", ".join(f"{v:.4f}" if isinstance(v, float) else format_value(v) for v in value)}
    return {key: value}


def format_value(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:   # counts read back from CSV as floats
            return str(int(value))
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def html_table(rows: dict, row_header: str | None, columns: list | None = None) -> str:
    """rows: row name -> {column -> value}; columns in first-seen order unless given.

    row_header None leaves the row names out (rows that carry their own first column).
    """
    if columns is None:
        columns = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
    shown = columns if row_header is None else [row_header, *columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown)
    body = []
    for name, values in rows.items():
        cells = [] if row_header is None else [f'<td class="text">{html.escape(str(name))}</td>']
        for c in columns:
            v = values.get(c)
            cls = "" if isinstance(v, (int, float)) and not isinstance(v, bool) else ' class="text"'
            cells.append(f"<td{cls}>{html.escape(format_value(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def transposed(rows: dict) -> dict:
    """Columns become rows: long flattened records read better down the page than across."""
    out = {}
    for name, values in rows.items():
        for k, v in values.items():
            out.setdefault(k, {})[name] = v
    return out


def image_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def dated_records(manifest) -> dict:
    """date -> record from a manifest keyed by date, or holding a list/dict of per-date records."""
    if isinstance(manifest, dict):
        dated = {k: v for k, v in manifest.items() if DATE.fullmatch(str(k))}
        if dated:
            return dict(sorted(dated.items()))
        for value in manifest.values():
            found = dated_records(value)
            if found:
                return found
    if isinstance(manifest, list):
        dated = {str(r.get("date")): r for r in manifest
                 if isinstance(r, dict) and DATE.fullmatch(str(r.get("date", "")))}
        return dict(sorted(dated.items()))
    return {}


def task_metrics_in(record) -> dict:
    """The first {task: {metric: value}} mapping found in a record (an evaluation's result)."""
    if isinstance(record, dict):
        tasks = {k: v for k, v in record.items() if k in TASKS and isinstance(v, dict)}
        if tasks and any(("auc" in v or "accuracy" in v) for v in tasks.values()):
            return tasks
        for value in record.values():
            found = task_metrics_in(value)
            if found:
                return found
    return {}


def published_flag(record):
    """The record's published flag (True/False), or None when it holds none."""
    if isinstance(record, dict):
        if isinstance(record.get("published"), bool):
            return record["published"]
        for value in record.values():
            flag = published_flag(value)
            if flag is not None:
                return flag
    return None


def metrics_over_days(records: dict, png: Path) -> Path | None:
    """A line per task of its headline metric (AUC; accuracy for power) by day; x marks days not published."""
    from pipeline.experiments import plots
    by_task = {}
    for date, record in records.items():
        found = record.get("metrics") if isinstance(record, dict) else None
        for task, values in (found if isinstance(found, dict) else task_metrics_in(record)).items():
            metric = "accuracy" if task == "power" else "auc"
            if isinstance(values.get(metric), (int, float)):
                by_task.setdefault(f"{task} {metric}", {})[date] = values[metric]
    if not by_task:
        return None
    refused = [d for d, r in records.items() if published_flag(r) is False]
    return plots.day_lines(by_task, refused, png, "test metric of each day's model")


def section_data(work: Path, plot_dir: Path) -> str:
    examples = layout.examples_dir(work)
    stats_dir = Path(layout.join(examples, layout.STATS_DIR))
    days = layout.stats_days(examples)
    if not days:
        return NOT_RUN.format(f"no example statistics in {stats_dir} (run the Beam job: dupn build-examples)")
    stats = {day: layout.read_json(layout.stats_file(examples, day)) for day in days}
    parts = [f'<p class="note">From {html.escape(str(stats_dir))}, written by the Beam job.</p>']
    if all(isinstance(s.get("tasks"), dict) for s in stats.values()):
        parts.append(html_table({d: data_summary(s) for d, s in stats.items()}, "date"))
        png = data_plot(stats, plot_dir / "data.png")
        if png:
            parts.append(image_tag(png, "samples per task and day; sequence lengths"))
    parts.append(details("every statistic, one column per day",
                         html_table(transposed({d: flatten(s) for d, s in stats.items()}), "statistic")))
    return "".join(parts)


def data_summary(stats: dict) -> dict:
    """One day's headline statistics: rows read and rejected, samples and positive rate per task."""
    row = {"rows read": stats.get("rows_total"), "rejected": stats.get("rejected_total"),
           "examples": stats.get("examples")}
    for task, values in stats["tasks"].items():
        row[f"{task} samples"] = values.get("samples")
        if "positive_rate" in values:
            row[f"{task} positive rate"] = values["positive_rate"]
    return row


def data_plot(stats: dict, png: Path) -> Path | None:
    """Samples per task by day, and the sequence lengths of the last day's samples per task."""
    from pipeline.experiments import plots
    days = list(stats)
    tasks = list(dict.fromkeys(t for s in stats.values() for t in s["tasks"]))
    curves = {"samples per day": {t: (days, [stats[d]["tasks"].get(t, {}).get("samples", 0) for d in days])
                                  for t in tasks}}
    last = stats[days[-1]]["tasks"]
    lengths = {t: v["seq_len"] for t, v in last.items() if isinstance(v.get("seq_len"), dict)}
    if lengths:
        curves[f"behaviours in the sequence, {days[-1]}"] = {
            t: (list(h), list(h.values())) for t, h in lengths.items()}
    return plots.panels(curves, png, "Examples", xlabel={"samples per day": "day"},
                        ylabels={name: "samples" for name in curves}, rotate_x=True)


def details(summary: str, content: str) -> str:
    """A folded block (no script needed: the browser opens it on a click)."""
    return f"<details><summary>{html.escape(summary)}</summary>{content}</details>"


def section_daily(work: Path, plot_dir: Path) -> str:
    manifest = read_manifest(work)
    if manifest is None:
        return NOT_RUN.format(f"no {layout.manifest_file(work)} (run dupn backfill, then dupn daily)")
    records = dated_records(manifest)
    if not records:
        return ('<p class="note">manifest.json holds no per-day records; as written:</p>'
                f"<pre>{html.escape(json.dumps(manifest, indent=2))}</pre>")
    parts = [f'<p class="note">From {html.escape(str(layout.manifest_file(work)))}: what the backfill '
             "and daily jobs did on each date; a model is published only if no task's metric falls "
             "more than the margin below the model in service on the same examples.</p>"]
    summaries = {d: daily_summary(r) for d, r in records.items()}
    present = {c for row in summaries.values() for c in row}
    parts.append(html_table(summaries, "date", [c for c in daily_columns() if c in present]))
    png = metrics_over_days(records, plot_dir / "daily_metrics.png")
    if png:
        parts.append(image_tag(png, "test metrics per day"))
    published = manifest.get("published") if isinstance(manifest, dict) else None
    if published:
        parts.append(f'<p>Published models kept, oldest first: {html.escape(", ".join(map(str, published)))}</p>')
    parts.append(details("every field of every record",
                         html_table({d: flatten(r) for d, r in records.items()}, "date")))
    return "".join(parts)


# The per-user (per-request for l2r) metric of each binary task, shown beside its AUC.
PER_GROUP = {"l2r": ("NDCG@10", "ndcg_at_10")}
PER_USER = ("GAUC", "gauc")


def per_group_metric(task: str) -> tuple[str, str] | None:
    """(column label, metric key) of a task's per-user or per-request metric; None for power."""
    return None if task == "power" else PER_GROUP.get(task, PER_USER)


def daily_columns() -> list[str]:
    """daily_summary's columns in display order: each task's metric beside the model in service's."""
    columns = ["job", "status", "published", "trained on", "samples", "steps", "evaluated on"]
    for task in TASKS:
        metric = "accuracy" if task == "power" else "AUC"
        columns += [f"{task} {metric}", f"{task} {metric}, in service"]
        if per_group_metric(task):
            columns.append(f"{task} {per_group_metric(task)[0]}")
    return columns + ["ctr oracle AUC", "seconds", "reason"]


def daily_summary(record: dict) -> dict:
    """One date's job: what it was, what it trained on, its metrics beside the model in service's."""
    if not isinstance(record, dict):
        return {"record": record}
    inputs = record.get("inputs") or {}
    train, evaluated = inputs.get("train") or {}, inputs.get("eval") or {}
    row = {"job": record.get("kind"), "status": record.get("status"), "published": record.get("published"),
           "trained on": f"{train['start']}..{train['end']}" if "start" in train else None,
           "samples": train.get("samples"), "steps": record.get("steps"),
           "evaluated on": " ".join(str(evaluated[k]) for k in ("date", "data") if k in evaluated) or None}
    new, old = record.get("metrics") or {}, record.get("previous_metrics") or {}
    for task in TASKS:
        if task in new:
            metric = "accuracy" if task == "power" else "AUC"
            row[f"{task} {metric}"] = new[task].get(metric.lower())
            if task in old:
                row[f"{task} {metric}, in service"] = old[task].get(metric.lower())
            if per_group_metric(task):
                label, key = per_group_metric(task)
                row[f"{task} {label}"] = new[task].get(key)
    if isinstance(new.get("ctr"), dict) and "oracle_auc" in new["ctr"]:
        row["ctr oracle AUC"] = new["ctr"]["oracle_auc"]
    row.update({"seconds": record.get("seconds"), "reason": record.get("reason")})
    return {k: v for k, v in row.items() if v is not None}


def section_eval(work: Path) -> str:
    folder = layout.eval_dir(work)
    files = sorted(folder.glob("*.json")) if folder.exists() else []
    if not files:
        return NOT_RUN.format(f"no evaluations in {folder} (run dupn evaluate)")
    parts = []
    for f in files:
        result = json.loads(f.read_text())
        parts.append(f"<h3>{html.escape(f.stem)}</h3>")
        parts.append(html_table({task: flatten(values) for task, values in result.items()}, "task"))
    parts.append('<p class="note">precision and recall of power: one value per level 1..7; '
                 "a level never predicted has precision 0. oracle_auc: the AUC of the generator's "
                 "true click probabilities on the same samples. gauc: the users' AUCs weighted by "
                 "their samples (gauc_users counted, gauc_users_excluded had one class only); "
                 "ndcg_at_10: NDCG@10 per request of l2r, a buy's gain above a click's.</p>")
    return "".join(parts)


def section_experiments(work: Path) -> str:
    folder = layout.experiments_dir(work)
    found = sorted(p.stem for p in folder.glob("*.csv")) if folder.exists() else []
    names = list(EXPERIMENTS) + [n for n in found if n not in EXPERIMENTS + WORLDS_FILES]
    parts = []
    for name in names:
        parts.append(f"<h3>{html.escape(name)}</h3>")
        csv, png = folder / f"{name}.csv", folder / f"{name}.png"
        if not csv.exists():
            parts.append(NOT_RUN.format(f"dupn experiment {name} --work {work}"))
            continue
        table = pd.read_csv(csv)
        rows = {str(i): {c: _plain(v) for c, v in row.items()} for i, row in table.head(LONG_TABLE * 10).iterrows()}
        shown = html_table(rows, None, list(table.columns))
        # A long table (curves, per-position weights) is folded: the plot is the summary.
        parts.append(shown if len(table) <= LONG_TABLE else details(
            f"the table: {len(table)} rows of {csv}" + (f" (the first {len(rows)} shown)"
                                                       if len(rows) < len(table) else ""), shown))
        parts.append(image_tag(png, name) if png.exists() else NOT_RUN.format(f"no {png.name}"))
        # Second figures of an experiment: NAME_<view>.png (sharing_gates, balance_weights).
        parts.extend(image_tag(extra, extra.stem) for extra in sorted(folder.glob(f"{name}_*.png")))
    return "".join(parts)


def section_worlds(work: Path) -> str:
    """`dupn experiment worlds`: the summary over seeds, the plot, and every run folded away."""
    folder = work / "experiments"
    summary = pd.read_csv(folder / "worlds_summary.csv")
    table = pd.read_csv(folder / "worlds.csv")

    def rows(frame):
        return {str(i): {c: _plain(v) for c, v in row.items()} for i, row in frame.iterrows()}
    parts = [f'<p class="note">Per world and model: the mean of each metric over seeds and its '
             f'spread (max - min); the oracle is the generator\'s true click probability, the blind '
             f'oracle the same world\'s best score without behaviour type and age.</p>',
             '<div class="scroll">' + html_table(rows(summary), None, list(summary.columns)) + "</div>"]
    png = folder / "worlds.png"
    parts.append(image_tag(png, "worlds") if png.exists() else NOT_RUN.format(f"no {png.name}"))
    parts.append(details(f"every run: {len(table)} rows of {folder / 'worlds.csv'}",
                         html_table(rows(table), None, list(table.columns))))
    return "".join(parts)


def _plain(value):
    """pandas scalars to Python ones; NaN to None (shown as a dash)."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def section_config(work: Path) -> str:
    try:
        model_dir = published_model_dir(work)
    except FileNotFoundError as err:
        return NOT_RUN.format(html.escape(str(err)))
    config = model_dir / "config.yaml"
    if not config.exists():
        return NOT_RUN.format(f"{config} is missing")
    return (f'<p class="note">{html.escape(str(config))}</p>'
            f"<pre>{html.escape(config.read_text())}</pre>")


def render(work) -> str:
    """The whole page as one HTML string."""
    work = Path(work)
    plot_dir = work / "report_plots"
    sections = [("data", "Data statistics", section_data(work, plot_dir)),
                ("daily", "Daily runs", section_daily(work, plot_dir)),
                ("evaluation", "Evaluation", section_eval(work)),
                ("experiments", "Experiments", section_experiments(work)),
                *([("worlds", "Worlds", section_worlds(work))]
                  if (work / "experiments" / "worlds.csv").exists() else []),
                ("configuration", "Configuration of the published model", section_config(work))]
    toc = "".join(f'<li><a href="#{key}">{title}</a></li>' for key, title, _ in sections)
    body = "".join(f'<h2 id="{key}">{title}</h2>{content}' for key, title, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>DUPN report: {html.escape(str(work))}</title><style>{STYLE}</style></head>"
            f"<body><h1>DUPN report</h1><p class=\"note\">Work directory {html.escape(str(work))}</p>"
            f"<ul>{toc}</ul>{body}</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn report", description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="work directory")
    parser.add_argument("--out", help="HTML file to write (default: WORK/report.html)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    if not work.is_dir():
        print(f"dupn report: {work}: no such work directory", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else work / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        page = render(work)
    except DamagedFile as err:
        print(f"dupn report: {err}", file=sys.stderr)
        return 1
    out.write_text(page, encoding="utf-8")
    print(f"dupn report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
