"""Tests of `benchmarks/robust_report.py`: the table of the robust records."""

from benchmarks import robust, robust_report


def test_table_lists_runs_side_by_side_with_their_mean():
    args = robust._configure(["--suite", "mnist"])
    common = {
        "dataset": "mnist",
        "model": "lenet5",
        "train_attack": "pgd-7",
        "attack": "pgd-40",
        "eval_samples": 10000,
        "dense_adv_epochs": 8,
        "train_samples": 60000,
        "epochs": 4,
        "target_rate": 16.0,
    }
    records = [
        {
            **common,
            "method": "dense",
            "epochs": 9,
            "accuracy": 0.97,
            "robust_accuracy": 0.6,
        },
        {**common, "method": "admm", "accuracy": 0.95, "robust_accuracy": 0.5},
        {
            **common,
            "method": "admm",
            "prune_seed": 1,
            "accuracy": 0.96,
            "robust_accuracy": 0.55,
        },
        {
            **common,
            "method": "admm",
            "probe_ratio": 0.9,
            "accuracy": 0.9,
            "robust_accuracy": 0.4,
        },
        {
            **common,
            "method": "admm",
            "eval_samples": 10,
            "accuracy": 0.1,
            "robust_accuracy": 0.1,
        },
    ]
    records.append(
        {**records[1], "max_ratio": 0.95, "accuracy": 0.8, "robust_accuracy": 0.3}
    )
    lines = robust_report.table(records, args).splitlines()
    assert lines[0] == "| method | rate | clean (s0 / s0 p1) | PGD-40 (s0 / s0 p1) |"
    assert lines[2:] == [
        "| dense | 1x | 97.00 / – | 60.00 / – |",
        "| admm | 16x | 95.00 / 96.00 (mean 95.50) | 50.00 / 55.00 (mean 52.50) |",
        "| admm (probe 0.9) | 16x | 90.00 / – | 40.00 / – |",
        "| admm (cap 0.95) | 16x | 80.00 / – | 30.00 / – |",
    ]
