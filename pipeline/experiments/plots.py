"""Matplotlib figures of the experiments and the report, drawn off-screen (Agg) into PNG files."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100


def save(fig, path) -> Path:
    """Writes a figure as PNG and frees it (figures left open pile up in long jobs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def bar_panels(table: pd.DataFrame, path, title: str) -> Path:
    """One panel per column (a metric) with one bar per row (a model), each panel zoomed on its
    own range: models differ in the second or third decimal, and metrics differ in scale.

    Args:
      table: index = model names, columns = metric names; NaN bars are left out.
    """
    rows, cols = [str(r) for r in table.index], list(table.columns)
    fig, axes = plt.subplots(1, len(cols), figsize=(max(6.0, 0.35 * len(rows) * len(cols) + 1.5 * len(cols)), 4.4),
                             squeeze=False)
    colours = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    for ax, col in zip(axes[0], cols):
        values = table[col].to_numpy(dtype=np.float64)
        shown = np.isfinite(values)
        x = np.arange(len(rows))
        ax.bar(x[shown], values[shown], color=[colours(i % colours.N) for i in x[shown]])
        for i in x[shown]:
            ax.text(i, values[i], f"{values[i]:.3f}", ha="center", va="bottom", fontsize=6, rotation=90)
        if shown.any():
            low, high = values[shown].min(), values[shown].max()
            pad = max(0.02, (high - low) * 0.3)
            ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad) + pad * 0.5)
        ax.set_xticks(x, rows, rotation=60, ha="right", fontsize=8)
        ax.set_title(str(col))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def error_bar_grid(rows: dict, path, title: str) -> Path:
    """A row of bar panels per group (e.g. a world), one panel per metric, one bar per model with
    an error bar over its range; each panel zoomed on its own range as in bar_panels.

    Args:
      rows: group -> (means, spreads, lines): means and spreads DataFrames with index = models and
        columns = metrics (the error bar spans mean +- spread / 2); lines: metric -> label ->
        value, drawn as dashed horizontal lines (e.g. the oracle's AUC).
    """
    groups = list(rows)
    metrics = list(rows[groups[0]][0].columns) if groups else []
    models = len(rows[groups[0]][0]) if groups else 0
    fig, axes = plt.subplots(max(len(groups), 1), max(len(metrics), 1),
                             figsize=(max(6.0, (0.3 * models + 1.6) * len(metrics)), 2.8 * max(len(groups), 1)),
                             squeeze=False)
    colours = plt.get_cmap("tab10" if models <= 10 else "tab20")
    for axes_row, group in zip(axes, groups):
        means, spreads, lines = rows[group]
        names = [str(m) for m in means.index]
        for ax, metric in zip(axes_row, metrics):
            values = means[metric].to_numpy(dtype=np.float64)
            half = np.nan_to_num(spreads[metric].to_numpy(dtype=np.float64)) / 2
            shown = np.isfinite(values)
            x = np.arange(len(names))
            ax.bar(x[shown], values[shown], yerr=half[shown], capsize=3,
                   color=[colours(i % colours.N) for i in x[shown]])
            extremes = list(values[shown] - half[shown]) + list(values[shown] + half[shown])
            for k, (label, value) in enumerate(lines.get(metric, {}).items()):
                if np.isfinite(value):     # labels alternate right and left: equal lines stay legible
                    ax.axhline(value, linestyle="--", linewidth=1, color="grey")
                    ax.text(len(names) - 0.5 if k % 2 == 0 else -0.5, value, label, fontsize=6,
                            ha="right" if k % 2 == 0 else "left", va="bottom")
                    extremes.append(value)
            if extremes:
                low, high = min(extremes), max(extremes)
                pad = max(0.02, (high - low) * 0.2)
                ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
            ax.set_xticks(x, names if group == groups[-1] else [""] * len(names), rotation=60,
                          ha="right", fontsize=7)
            ax.set_title(f"{group}: {metric}", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def panels(curves: dict, path, title: str, xlabel, ylabels: dict | None = None,
           rotate_x: bool = False) -> Path:
    """One panel per key of `curves`, each with one line per series.

    Args:
      curves: panel name -> series name -> (x values, y values).
      xlabel: the x-axis label of every panel, or panel name -> label.
      ylabels: panel name -> y-axis label (default: the panel name).
      rotate_x: slant the x tick labels (dates, bucket names).
    """
    names = list(curves)
    cols = min(len(names), 3) or 1
    rows = (len(names) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        for series, (xs, ys) in curves[name].items():
            ax.plot(xs, ys, marker="o", markersize=3, label=str(series))
        ax.set_title(name)
        ax.set_xlabel(xlabel.get(name, "") if isinstance(xlabel, dict) else xlabel)
        ax.set_ylabel((ylabels or {}).get(name, name))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if rotate_x:
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def heatmap_and_lines(matrix: np.ndarray, row_labels, col_labels, lines: dict, line_xlabels,
                      path, title: str, heat_title: str, line_title: str) -> Path:
    """Left: a heatmap of `matrix` [rows, cols] with its values written in; right: line plots.

    Args:
      lines: series name -> y values [len(line_xlabels)] (e.g. one query's attention over a history).
      line_xlabels: tick labels of the right panel's x axis.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1, 1.3]})
    _heatmap(fig, left, matrix, row_labels, col_labels, heat_title)
    x = np.arange(len(line_xlabels))
    for series, ys in lines.items():
        right.plot(x, ys, marker="o", markersize=3, label=str(series))
    step = max(1, len(line_xlabels) // 20)
    right.set_xticks(x[::step], list(line_xlabels)[::step], rotation=60, ha="right", fontsize=7)
    right.set_ylabel("attention weight")
    right.set_title(line_title)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def _heatmap(fig, ax, matrix, row_labels, col_labels, title: str) -> None:
    """A heatmap with its values written in (NaN cells left blank) and a colour bar."""
    values = np.asarray(matrix, dtype=np.float64)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)


def heatmaps(panels: dict, path, title: str) -> Path:
    """One heatmap per panel, side by side.

    Args:
      panels: panel title -> (matrix [rows, cols], row labels, column labels); NaN cells blank.
    """
    widths = [max(3.0, 0.55 * len(cols) + 2.0) for _, _, cols in panels.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 1, 4.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, (matrix, rows, cols)) in zip(axes[0], panels.items()):
        _heatmap(fig, ax, matrix, rows, cols, name)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def day_lines(series: dict, marked_days, path, title: str) -> Path:
    """One line per series over days, with an x on the marked days (e.g. models not published).

    Args:
      series: name -> {date string -> value}.
      marked_days: dates to mark on every line.
    """
    days = sorted({d for values in series.values() for d in values})
    position = {d: i for i, d in enumerate(days)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(days)), 3.8))
    for name, values in series.items():
        ds = sorted(values)
        ax.plot([position[d] for d in ds], [values[d] for d in ds], marker="o", markersize=4, label=name)
        marked = [d for d in ds if d in set(marked_days)]
        if marked:
            ax.scatter([position[d] for d in marked], [values[d] for d in marked], marker="x",
                       s=80, color="red", zorder=3)
    if marked_days:
        ax.scatter([], [], marker="x", color="red", label="not published")
    ax.set_xticks(range(len(days)), days, rotation=45, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)
