"""Smoke test of the per-epoch overhead benchmark (tiny budget, not timed)."""

import json

import pytest

from benchmarks import records as record_store


def test_interleaved_epochs_give_one_ratio_per_method(data_dir, tmp_path):
    from benchmarks import overhead

    results = tmp_path / "overhead.json"
    argv = [f"--data-dir={data_dir}", f"--results={results}", "--train-limit=256"]
    assert overhead.main([*argv, "--rounds=2"]) == 0
    records = json.loads(results.read_text())
    assert [r["method"] for r in records] == list(overhead.METHODS)
    for r in records:
        assert len(r["epoch_seconds"]) == 2 and r["relative_to"] == "dense"
        median = sorted(r["epoch_seconds"])[0] / 2 + sorted(r["epoch_seconds"])[1] / 2
        assert r["seconds_per_epoch"] == pytest.approx(median, abs=1e-3)
    assert records[0]["ratio"] == records[0]["min_ratio"] == 1.0
    assert records[2]["min_seconds"] == min(records[2]["epoch_seconds"])
    assert records[1]["ratio"] == pytest.approx(
        records[1]["seconds_per_epoch"] / records[0]["seconds_per_epoch"], rel=1e-2
    )
    assert records[0]["versions"] == record_store.tf_versions()
    assert records[0]["command"] == record_store.command(
        "overhead", [*argv, "--rounds=2"]
    )

    # A second run replaces its methods' records and keeps the others'.
    other = {**records[0], "train_images": 128}
    record_store.append(results, other)
    assert overhead.main([*argv, "--rounds=1", "--methods=dense,magnitude"]) == 0
    again = json.loads(results.read_text())
    assert [r["method"] for r in again] == [
        "reweighted",
        "admm",
        "group_lasso",
        "dense",
        "dense",
        "magnitude",
    ]
    assert again[:3] == records[1:4] and again[3] == other
    assert [len(r["epoch_seconds"]) for r in again[4:]] == [1, 1]
    with pytest.raises(SystemExit):
        overhead.main([*argv, "--rounds=0"])
    with pytest.raises(ValueError, match="obd"):
        overhead.main([*argv, "--methods=dense,obd"])
