"""Run reports: `report.json`, `report.md` and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from tf_reweight.pruning.sparsity import SparsityReport


def _plot_sparsity(rep: SparsityReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep.rows
    labels = [
        r.layer if r.kernel == "kernel" else f"{r.layer}/{r.kernel}" for r in rows
    ]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.2))
    ax.bar(range(len(rows)), [100 * r.sparsity for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"per-layer sparsity, {rep.rate:.1f}x over pruned kernels")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_history(history: dict, marks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation data")):
        if key in history:
            epochs = range(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], marker=".", label=label)
    for label, epoch in marks.items():
        ax.axvline(epoch + 0.5, color="gray", ls="--", lw=0.8)
        ax.text(epoch + 0.6, ax.get_ylim()[0], label, fontsize=8, va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(record: dict, rep: SparsityReport) -> str:
    lines = [f"# {record.get('title', 'tf_reweight run')}", ""]
    lines += ["| quantity | value |", "|---|---|"]
    for key, value in record.items():
        if key in ("title", "layers", "history", "export") or isinstance(
            value, (dict, list)
        ):
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {text} |")
    lines += ["", "## Per-layer sparsity", "", "```", str(rep), "```", ""]
    if record.get("export"):
        lines += [
            "## TFLite export",
            "",
            "```",
            record["export"].get("text", ""),
            "```",
            "",
        ]
    lines += ["![sparsity](sparsity.png)", "", "![accuracy](accuracy.png)", ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | Path, record: dict, rep: SparsityReport, history: dict, marks: dict
) -> Path:
    """Writes ``report.json``, ``report.md``, ``sparsity.png`` and ``accuracy.png``.

    Args:
        out_dir: The run directory (created if missing).
        record: Flat facts of the run (accuracy, rate, seconds, ...).
        rep: The sparsity report of the final model.
        history: Keras history of the run, for the accuracy plot.
        marks: Epoch markers for the plot, e.g. ``{"hard prune": 8}``.

    Returns:
        The path of ``report.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = {**record, "layers": rep.to_dict()["layers"], "history": history}
    path = out / "report.json"
    path.write_text(json.dumps(full, indent=2, default=str))
    (out / "report.md").write_text(_markdown(record, rep))
    _plot_sparsity(rep, out / "sparsity.png")
    _plot_history(history, marks, out / "accuracy.png")
    return path
