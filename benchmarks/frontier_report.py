"""The frontier's report: its records as lines, a figure and a Markdown table.

`lines` groups the records of `frontier.py` into frontier lines, sweep points
and dense rows; `plot` draws them (accuracy vs compression rate) and `table`
prints them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import records
from benchmarks.frontier_jobs import EXTRA_METHODS, METHODS, SUITES, Suite


def lines(stored: list[dict], mains: dict) -> tuple[dict, list, list]:
    """Splits records into frontier lines, single sweep points and dense rows.

    A line is one method, structure and configuration (penalty, eps,
    schedule; seeds share a line) measured
    at several rates; its label names the configuration unless it is the
    method's main one (``mains``, from `main_configs`). A lone unstructured
    record off the main configuration is a sweep point.

    Returns:
        ``(lines, sweep, dense)``: ``{label: [records]}`` and two lists.
    """
    groups: dict[tuple, list] = {}
    dense = []
    for r in stored:
        if r["method"] == "dense":
            dense.append(r)
            continue
        config = (r.get("penalty"), r.get("eps"), r.get("schedule"))
        groups.setdefault((r["method"], r["structure"], config), []).append(r)
    found, sweep = {}, []
    for (method, structure, (penalty, eps, schedule)), rows in groups.items():
        main = mains.get((method, structure != "unstructured"), (None, None))
        main = penalty in (None, main[0]) and eps == main[1] and schedule is None
        if not main and len(rows) == 1 and structure == "unstructured":
            sweep.extend(rows)
            continue
        label = method if structure == "unstructured" else f"{method} ({structure})"
        if not main:
            label += f" λ={records.label(penalty)}"
            label += "" if eps is None else f" eps={records.label(eps)}"
            label += "" if schedule is None else f" {schedule} schedule"
        found[label] = sorted(rows, key=lambda r: r["rate"])
    return found, sweep, dense


def plot(
    stored: list[dict], path: Path, mains: dict, suite: Suite = SUITES["mnist"]
) -> None:
    """Accuracy vs compression rate (log x), one line per method and structure.

    The left panel shows the whole accuracy range, the right one zooms on
    ``suite.zoom``-100% (default: 20 points below the dense accuracy up to 5
    above). Sweep records (a penalty other than the line's) are crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, sweep, dense = lines(stored, mains)
    zoom = (suite.zoom, 100.0)
    if suite.zoom is None:
        top = 100 * max((r["accuracy"] for r in dense), default=1.0)
        zoom = (max(0.0, 10 * np.floor(top / 10) - 20), min(100.0, top + 5))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, limits in zip(axes, (None, zoom), strict=True):
        colors = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]
        ax.set_prop_cycle(color=colors)  # distinct colors for up to 20 lines
        for r in dense:
            ax.axhline(100 * r["accuracy"], color="gray", lw=0.8, ls=":", label="dense")
        for label, rows in sorted(series.items()):
            unstructured = rows[0]["structure"] == "unstructured"
            if unstructured and suite.label_structures:
                label += " (unstructured)"
            ax.plot(
                [r["rate"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                "-o" if unstructured else "--s",
                ms=4,
                label=label,
            )
        for r in sweep:
            xy = (r["rate"], 100 * r["accuracy"])
            ax.plot(*xy, "kx")
            ax.annotate(f"λ={records.label(r['penalty'])}", xy, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"compression rate (dense / nonzero weights, {suite.counted})")
        ax.set_ylabel("test accuracy (%)")
        if limits is not None:
            ax.set_ylim(*limits)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(f"{suite.title}: same dense start and epoch budget")
    axes[1].set_title(f"zoom: {zoom[0]:g}-{zoom[1]:g}%")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Wrote {path}", flush=True)


def table(stored: list[dict], mains: dict) -> str:
    """A Markdown table: accuracy (and achieved rate) per target and line.

    Rows are (structure, target rate), columns the lines of `lines` (a
    structured line shares its method's column); sweep points are left out,
    as in the plot.
    """
    series, _, _ = lines(stored, mains)
    cells, columns = {}, []
    for label, rows in series.items():
        column = label.split(" (")[0] if "(" in label and "λ" not in label else label
        columns.append(column)
        for r in rows:
            row = (r["structure"] != "unstructured", r["structure"], r["target_rate"])
            cells[row, column] = f"{100 * r['accuracy']:.2f} ({r['rate']:.4g}x)"
    known = [m for m in (*METHODS, *EXTRA_METHODS) if m in columns]
    order = known + sorted(set(columns) - set(known))
    out = [
        "| structure | target | " + " | ".join(order) + " |",
        "|---|---|" + "---|" * len(order),
    ]
    for row in sorted({key for key, _ in cells}):
        values = [cells.get((row, c), "") for c in order]
        out.append(f"| {row[1]} | {row[2]:g}x | " + " | ".join(values) + " |")
    return "\n".join(out)
