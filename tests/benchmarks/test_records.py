"""Tests for `benchmarks/records.py`: the one benchmark record store."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import tf_reweight as tfr
from benchmarks import records

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_load_missing_and_bad_files(tmp_path):
    assert records.load(tmp_path / "missing.json") == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "lenet5"}')
    with pytest.raises(ValueError, match="JSON list of records"):
        records.load(bad)


def test_every_committed_results_file_loads():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        stored = records.load(path)
        assert stored and all(isinstance(r, dict) for r in stored), path.name


def test_append_keeps_earlier_records_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "results.json"
    records.append(path, {"model": "a", "epochs": [3, 3]})
    records.append(path, {"model": "b"})
    assert json.loads(path.read_text()) == [
        {"model": "a", "epochs": [3, 3]},
        {"model": "b"},
    ]
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".tmp") == []
    records.append(path, {"model": "c"}, replaces=lambda r: r["model"] == "a")
    assert [r["model"] for r in records.load(path)] == ["b", "c"]


def test_store_keys_survive_the_json_round_trip(tmp_path):
    store = records.Store(tmp_path / "r.json", ("model", "epochs", "target"))
    record = {"model": "lenet5", "epochs": [3, 3], "target": 0.9, "accuracy": 0.5}
    assert not store.has(record)
    store.add(record)
    # A list field read back from JSON gives the same key; absent fields are None.
    assert store.has({"model": "lenet5", "epochs": [3, 3], "target": 0.9})
    assert not store.has({"model": "lenet5", "epochs": [3, 2], "target": 0.9})
    assert store.keys() == {("lenet5", (3, 3), 0.9)}
    assert store.key({"model": "x"}) == ("x", None, None)
    store.add({**record, "accuracy": 0.7}, replace=True)
    assert [r["accuracy"] for r in store.records()] == [0.7]
    store.add({**record, "accuracy": 0.8})
    assert [r["accuracy"] for r in store.records()] == [0.7, 0.8]
    assert store.keys(lambda r: r["accuracy"] > 0.75) == store.keys()
    assert store.keys(lambda r: r["accuracy"] > 0.9) == set()


def test_command_lines():
    assert records.command("zoo", ["--models", "A B"], module=True) == (
        "python -m benchmarks.zoo --models 'A B'"
    )
    assert records.command("structured", ["--seed", "1"]) == (
        "python benchmarks/structured.py --seed 1"
    )


def test_stamp_and_versions():
    stamp = records.stamp()
    assert stamp["tf_reweight"] == tfr.__version__
    assert stamp["keras"] == keras.__version__
    assert stamp["backend"] == keras.backend.backend()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=records.ROOT,
        capture_output=True,
        text=True,
    )
    if head.returncode == 0:
        assert stamp["commit"].split("+")[0] == head.stdout.strip()
    found = records.versions("keras", "no-such-distribution")
    assert found["python"] == sys.version.split()[0]
    assert found["keras"] == keras.__version__
    assert "no-such-distribution" not in found


def test_penalty_arguments_and_labels_take_auto():
    assert records.number_or_auto("auto") == "auto"
    assert records.number_or_auto("1e-4") == 1e-4
    with pytest.raises(ValueError):
        records.number_or_auto("Auto")
    assert records.label("auto") == "auto" and records.label(1e-05) == "1e-05"


def test_superseded_records_stay_but_no_longer_count_as_measured(tmp_path):
    store = records.Store(tmp_path / "r.json", ("model",))
    store.add({"model": "lenet5", "accuracy": 0.5, "superseded": True})
    assert not store.has({"model": "lenet5"}) and store.keys() == set()
    store.add({"model": "lenet5", "accuracy": 0.9})
    assert store.has({"model": "lenet5"})
    assert [r["accuracy"] for r in store.records()] == [0.5, 0.9]
