"""Smoke test of `benchmarks/zoo.py`: record fields, resume and the table."""

import json

import pytest

from benchmarks import records, zoo, zoo_checks, zoo_report

STATUSES = {"pass", "fail", "error", "skip", "n/a"}
CELL = ["--backends", "tensorflow", "--models", zoo.TRANSFORMER]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The transformer's unstructured and filter cells, measured on TF once."""
    path = tmp_path_factory.mktemp("zoo") / "zoo.json"
    zoo.main([*CELL, "--structures", "unstructured,filter", "--results", str(path)])
    return path


def test_records_have_every_check(results):
    records = json.loads(results.read_text())
    assert {(r["backend"], r["model"], r["structure"]) for r in records} == {
        ("tensorflow", zoo.TRANSFORMER, "unstructured"),
        ("tensorflow", zoo.TRANSFORMER, "filter"),
    }
    for record in records:
        assert set(record["checks"]) == set(zoo_checks.CHECKS)
        assert {c["status"] for c in record["checks"].values()} <= STATUSES
        for check in record["checks"].values():
            if check["status"] == "error":
                assert check["error"].split(":")[0].isidentifier()
        assert record["target"] == zoo_checks.TARGET
        assert record["input_shape"] == [32, 32, 3]
        assert record["params"] > 0
        assert record["command"].startswith("python -m benchmarks.zoo --backends")
        assert "tf_reweight" in record and "commit" in record
        # The stock-layer transformer applies and meets the target on today's code.
        checks = record["checks"]
        assert checks["apply"]["status"] == "pass"
        assert isinstance(checks["apply"]["warnings"], list)
        assert checks["exact"]["status"] == "pass"
        assert abs(checks["exact"]["sparsity"] - 0.75) <= checks["exact"]["tolerance"]
    by_structure = {r["structure"]: r["checks"] for r in records}
    assert by_structure["unstructured"]["shrink"]["status"] == "n/a"
    assert by_structure["filter"]["shrink"]["status"] != "n/a"
    tflite = by_structure["unstructured"]["tflite"]
    assert tflite["status"] == "pass"
    assert 0.0 <= tflite["argmax_agreement"] <= 1.0
    assert tflite["max_abs_diff"] <= zoo_checks.TFLITE_ATOL["none"]


def test_second_run_skips_recorded_cells(results, monkeypatch):
    calls = []
    monkeypatch.setattr(zoo, "_spawn", lambda *args: calls.append(args))
    before = results.read_text()
    zoo.main([*CELL, "--structures", "unstructured,filter", "--results", str(results)])
    assert calls == []
    assert results.read_text() == before
    zoo.main([*CELL, "--structures", "filter,2:4", "--results", str(results)])
    assert [(c[0], c[1], c[2]) for c in calls] == [
        ("tensorflow", zoo.TRANSFORMER, ["2:4"])
    ]


def test_unknown_names_raise_before_running(tmp_path):
    path = tmp_path / "zoo.json"
    with pytest.raises(ValueError, match="Received: --models='NoSuchNet'"):
        zoo.main(["--models", "NoSuchNet", "--results", str(path)])
    with pytest.raises(ValueError, match="Received: --structures='kernel'"):
        zoo.main(["--structures", "kernel", "--results", str(path)])
    assert not path.exists()


def test_partial_cells_count_as_done_only_for_skipping_runs(tmp_path, monkeypatch):
    path = tmp_path / "zoo.json"
    checks = {c: {"status": "pass"} for c in zoo_checks.CHECKS}
    checks["fit"] = {"status": "skip", "reason": "not run (--skip)"}
    record = {"backend": "tensorflow", "model": zoo.TRANSFORMER, "checks": checks}
    zoo.store(path).add({**record, "structure": "filter", "partial": True})
    assert zoo_report.cell_code(records.load(path)[0]) == "7/7*"
    calls = []
    monkeypatch.setattr(zoo, "_spawn", lambda *args: calls.append(args[2]))
    argv = [*CELL, "--structures", "filter", "--results", str(path)]
    zoo.main([*argv, "--skip", "fit"])
    assert calls == []
    zoo.main(argv)
    assert calls == [["filter"]]


def test_cells_whose_worker_died_are_measured_again(tmp_path, monkeypatch):
    path = tmp_path / "zoo.json"
    dead = {"backend": "tensorflow", "model": zoo.TRANSFORMER, "structure": "filter"}
    zoo.store(path).add({**dead, "error": "worker killed by SIGTERM"})
    calls = []
    monkeypatch.setattr(zoo, "_spawn", lambda *args: calls.append(args[2]))
    zoo.main([*CELL, "--structures", "filter", "--results", str(path)])
    assert calls == [["filter"]]


@pytest.mark.parametrize(
    "returncode, expected",
    [
        (0, None),
        (1, "exit code 1"),
        (-15, "killed by SIGTERM"),
        (-9, "killed by SIGKILL"),
    ],
)
def test_exit_text_names_the_signal(returncode, expected):
    assert zoo._exit_text(returncode) == expected
