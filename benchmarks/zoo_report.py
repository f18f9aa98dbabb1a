"""The zoo's Markdown tables: the failure matrix per backend and the shrink MACs."""

from __future__ import annotations

from benchmarks.zoo_checks import CHECKS, STRUCTURES

LETTERS = dict(zip(CHECKS, "AIFESRTK", strict=True))


def cell_code(record: dict) -> str:
    """``passed/applicable`` plus the letters of the checks that failed or raised."""
    if "checks" not in record:
        return "build" if record["error"].startswith("build") else "crash"
    checks = record["checks"]
    counted = [
        c
        for c in CHECKS
        if checks[c]["status"] != "n/a"
        and checks[c].get("reason") != "not run (--skip)"
    ]
    passed = sum(checks[c]["status"] == "pass" for c in counted)
    bad = "".join(
        LETTERS[c] for c in counted if checks[c]["status"] in ("fail", "error")
    )
    partial = "*" if record.get("partial") else ""
    return f"{passed}/{len(counted)}{partial}" + (f" {bad}" if bad else "")


def table(records: list[dict]) -> str:
    """A Markdown failure matrix per backend, a legend and the failure list."""
    lines = []
    for backend in sorted({r["backend"] for r in records}):
        rows = [r for r in records if r["backend"] == backend]
        structures = [s for s in STRUCTURES if any(r["structure"] == s for r in rows)]
        cells = {(r["model"], r["structure"]): cell_code(r) for r in rows}
        lines += [f"**{backend}**", "", "| model | " + " | ".join(structures) + " |"]
        lines.append("|---" * (len(structures) + 1) + "|")
        for model in dict.fromkeys(r["model"] for r in rows):
            codes = [cells.get((model, s), "") for s in structures]
            lines.append(f"| {model} | " + " | ".join(codes) + " |")
        lines.append("")
    legend = ", ".join(f"{letter} {check}" for check, letter in LETTERS.items())
    lines += [
        f"Cells: checks passed / checks that apply; letters name the checks that "
        f"failed or raised ({legend}); build: the model did not build; crash: "
        f"the worker died; *: partial cell, checks not run (--skip) not counted. "
        f"Skipped checks (a check they need raised) count as not passed.",
        "",
        "Failures (check: message, cells):",
        "",
    ]
    failures: dict = {}
    for r in records:
        cell = f"{r['backend']} {r['model']} {r['structure']}"
        if "checks" not in r:
            failures.setdefault((cell_code(r), r["error"]), []).append(cell)
            continue
        for check in CHECKS:
            c = r["checks"][check]
            if c["status"] in ("fail", "error"):
                message = c.get("error") or c.get("detail", "")
                failures.setdefault((check, message), []).append(cell)
    for (check, message), where in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"- {check}: `{message}` ({len(where)}): " + ", ".join(where))
    return "\n".join(lines + ["", shrink_table(records)])


def shrink_table(records: list[dict]) -> str:
    """MACs before and after `tflite_export.shrink` of the filter cells at 4x."""
    shrunk = {}
    for r in records:  # the latest record of a cell wins
        check = r.get("checks", {}).get("shrink", {})
        if r["structure"] == "filter" and check.get("status") == "pass":
            shrunk[(r["model"], r["backend"])] = (check, r.get("commit", ""))
    lines = [
        "Shrink of the filter cells (4x fewer weights): MACs before and after.",
        "",
        "| model | backend | MACs before | MACs after | MAC ratio | commit |",
        "|---|---|---|---|---|---|",
    ]
    for (model, backend), (check, commit) in shrunk.items():
        before, after = check["macs_before"], check["macs_after"]
        lines.append(
            f"| {model} | {backend} | {before:,} | {after:,} "
            f"| {check['mac_ratio']:.2f}x | {commit} |"
        )
    return "\n".join(lines)
