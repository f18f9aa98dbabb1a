"""Tests of `benchmarks/zoo_report.py`: the failure matrix and the shrink table."""

from benchmarks import zoo_report
from benchmarks.zoo_checks import CHECKS


def test_table_counts_and_lists_failures():
    checks = {c: {"status": "pass"} for c in CHECKS}
    checks["tflite"] = {"status": "n/a"}
    checks["fit"] = {"status": "error", "error": "TypeError: bad"}
    checks["shrink"] = {"status": "fail", "detail": "max abs diff 1 > 0.0001"}
    records = [
        {"backend": "jax", "model": "M", "structure": "filter", "checks": checks},
        {"backend": "jax", "model": "M", "structure": "2:4", "error": "worker x"},
    ]
    text = zoo_report.table(records)
    assert "| model | filter | 2:4 |" in text
    assert "| M | 5/7 FK | crash |" in text
    assert "- fit: `TypeError: bad` (1): jax M filter" in text
    assert "- crash: `worker x` (1): jax M 2:4" in text
    assert "| M |" not in zoo_report.shrink_table(records)  # its shrink failed


def test_shrink_table_keeps_the_latest_record_of_a_cell():
    shrink = {
        "status": "pass",
        "macs_before": 4000,
        "macs_after": 2000,
        "mac_ratio": 2.0,
    }
    old = {"backend": "tensorflow", "model": "M", "structure": "filter", "commit": "a"}
    new = {**old, "commit": "b"}
    records = [
        {
            **old,
            "checks": {"shrink": {**shrink, "macs_after": 3000, "mac_ratio": 1.33}},
        },
        {**new, "checks": {"shrink": shrink}},
    ]
    lines = zoo_report.shrink_table(records).splitlines()
    assert lines[-1] == "| M | tensorflow | 4,000 | 2,000 | 2.00x | b |"
    assert sum(line.startswith("| M |") for line in lines) == 1
