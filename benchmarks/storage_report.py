"""The storage benchmark's Markdown table and its goal line."""

from __future__ import annotations

GOAL = (3000.0, 0.99)  # storage rate, test accuracy


def table(stored: list[dict]) -> str:
    """The Markdown table of the records, by rate, pruning epochs, seed and bits.

    Storage rates are ``rate_kernels`` per index width (the best fixed width
    in bold) and per kernel, then ``rate_all`` at the best fixed width and
    per kernel.
    """
    widths = sorted({int(w) for r in stored for w in r["storage"]})
    head = ["target", "epochs", "seed", "weights", "test acc.", "before fine-tuning"]
    head += ["nonzeros", "pruning rate", *(f"kernels, {w}-bit index" for w in widths)]
    head += ["kernels, per-kernel index", "all params (fixed / per-kernel index)"]
    head += ["revived", "levels max"]
    out = ["| " + " | ".join(head) + " | on grid |", "|" + "---|" * (len(head) + 1)]

    def order(r):
        return r["target_rate"], r["epochs"], r["seed"], -r["bits"], r["method"]

    for r in sorted(stored, key=order):
        best, fixed = str(r["best_index_bits"]), r["storage"]
        rates = [
            ("**{:.0f}x**" if w == best else "{:.0f}x").format(fixed[w]["rate_kernels"])
            if w in fixed
            else ""
            for w in map(str, widths)
        ]
        row = [f"{r['target_rate']:g}x", str(r["epochs"]), str(r["seed"])]
        row.append(
            "fp32" if r["method"] == "float" else f"{r['bits']}-bit {r['method']}"
        )
        row += [f"{100 * r[k]:.2f}%" for k in ("accuracy", "accuracy_before_finetune")]
        row += [f"{r['nonzeros']:,}", f"{r['rate']:.0f}x", *rates]
        per_kernel = r["per_kernel"]
        row += [f"{per_kernel['rate_kernels']:.0f}x"]
        row += [f"{fixed[best]['rate_all']:.0f}x / {per_kernel['rate_all']:.0f}x"]
        row += [str(r["revived"]), str(r["levels_max"])]
        row.append({True: "yes", False: "no"}.get(r["on_grid"], "-"))
        out.append("| " + " | ".join(row).replace("None", "-") + " |")
    return "\n".join(out)


def goal_line(stored: list[dict]) -> str:
    """Whether a quantized record reaches the goal, with a fixed index width or
    per-kernel widths, and the highest kernel storage rate of each scheme."""
    rate, accuracy = GOAL
    quantized = [r for r in stored if r["method"] != "float"]
    if not quantized:
        return "No quantized records yet."
    schemes = {
        "fixed index width": lambda r: max(
            v["rate_kernels"] for v in r["storage"].values()
        ),
        "per-kernel index widths": lambda r: r["per_kernel"]["rate_kernels"],
    }
    parts = []
    for name, rate_of in schemes.items():
        met = any(r["accuracy"] >= accuracy and rate_of(r) >= rate for r in quantized)
        top = max(quantized, key=rate_of)
        parts.append(
            f"{name}: {'reached' if met else 'not reached'}, highest "
            f"{rate_of(top):.0f}x at {100 * top['accuracy']:.2f}% "
            f"({top['target_rate']:g}x, {top['bits']}-bit {top['method']})"
        )
    return f"Goal {rate:g}x at >= {100 * accuracy:.1f}%: " + "; ".join(parts)
