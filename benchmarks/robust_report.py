"""Robust benchmark, the report: the Markdown table of the stored records.

`table` shows the records measured with one invocation's settings, one row
per method and the runs side by side; `benchmarks/robust.py` prints it after
every run.
"""

from __future__ import annotations

from benchmarks.robust_train import train_attack


def table(stored: list[dict], args) -> str:
    """A Markdown table of the records measured with ``args``' settings.

    One row per method; each accuracy cell lists the runs (``seed`` /
    ``prune_seed`` pairs, the column header) separated by slashes, then
    their mean. Records of other suites, budgets or evaluations are left
    out.
    """
    wanted = {
        "dataset": args.dataset,
        "model": args.model,
        "train_attack": train_attack(args),
        "attack": f"pgd-{args.eval_steps}",
        "eval_samples": args.eval_limit,
        "recalibrate_bn": args.recalibrate_bn or None,
        "dense_adv_epochs": args.adv_epochs,
        "precision": None if args.mixed_precision == "off" else args.mixed_precision,
    }
    same = [
        r
        for r in stored
        if all(r.get(k) == v for k, v in wanted.items())
        and (args.train_limit is None or r["train_samples"] <= args.train_limit)
        and (
            r.get("test_samples") is None
            if args.test_limit is None
            else r.get("test_samples", args.test_limit + 1) <= args.test_limit
        )
        and (
            r["method"] == "dense"
            or (r["epochs"], r["target_rate"]) == (sum(args.epochs), args.rate)
        )
    ]
    runs = sorted(
        {(r.get("seed", 0), r.get("prune_seed")) for r in same},
        key=lambda run: (run[0], -1 if run[1] is None else run[1]),
    )
    fields = [("accuracy", "clean"), ("robust_accuracy", f"PGD-{args.eval_steps}")]
    if args.recalibrate_bn:
        fields += [
            ("recal_accuracy", "clean, BN recal"),
            ("recal_robust_accuracy", f"PGD-{args.eval_steps}, BN recal"),
        ]
    head = " / ".join(f"s{s}" + ("" if p is None else f" p{p}") for s, p in runs)
    out = [
        "| method | rate | " + " | ".join(f"{h} ({head})" for _, h in fields) + " |",
        "|---|---|" + "---|" * len(fields),
    ]

    def label(r: dict) -> str:
        if r["method"] == "dense":
            return "dense"
        options = [
            f"{name} {r[key]:g}"
            for key, name in (("probe_ratio", "probe"), ("max_ratio", "cap"))
            if r.get(key) is not None
        ]
        return r["method"] + (f" ({', '.join(options)})" if options else "")

    methods = sorted(dict.fromkeys(map(label, same)), key=lambda m: m != "dense")
    for method in methods:
        # The dense checkpoint belongs to a seed: it shows under its prune seed None.
        rows = {
            (r.get("seed", 0), r.get("prune_seed")): r
            for r in same
            if label(r) == method
        }
        cells = []
        for field, _ in fields:
            values = [rows.get(run, {}).get(field) for run in runs]
            shown = [v for v in values if v is not None]
            text = " / ".join("–" if v is None else f"{100 * v:.2f}" for v in values)
            if len(shown) > 1:
                text += f" (mean {100 * sum(shown) / len(shown):.2f})"
            cells.append(text if shown else "")
        rate = "1x" if method == "dense" else f"{args.rate:g}x"
        out.append(f"| {method} | {rate} | " + " | ".join(cells) + " |")
    return "\n".join(out)
