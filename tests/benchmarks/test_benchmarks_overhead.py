"""Smoke test of the per-epoch overhead benchmark (tiny budget, not timed)."""

import json

import pytest


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
    with pytest.raises(SystemExit):
        overhead.main([*argv, "--rounds=0"])
    with pytest.raises(ValueError, match="obd"):
        overhead.main([*argv, "--methods=dense,obd"])
