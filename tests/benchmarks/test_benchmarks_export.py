"""Smoke test of `benchmarks/export.py` with tiny budgets (numbers not checked)."""

import json
from pathlib import Path

import pytest

from benchmarks import export as bench

FIELDS = (
    "method",
    "model",
    "dataset",
    "structure",
    "rate",
    "accuracy",
    "epochs",
    "seconds",
    "nonzeros",
    "file_bytes",
    "argmax_agreement",
    "max_abs_diff",
    "latency_ms",
    "delegate",
    "versions",
    "command",
)
PARTS = ("weight_bytes", "vector_bytes", "index_bytes", "quant_param_bytes")


def run(tmp_path, part, *extra):
    argv = [
        "--part",
        part,
        "--quick",
        "--train-limit",
        "128",
        "--test-limit",
        "48",
        "--latency-runs",
        "2",
        "--calibration-samples",
        "8",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--results",
        str(tmp_path / "export.json"),
        "--verbose",
        "0",
        *extra,
    ]
    return bench.main(argv)


def check_records(records, tmp_path):
    saved = json.loads((tmp_path / "export.json").read_text())
    assert saved[-len(records) :] == json.loads(json.dumps(records))
    for record in records:
        assert set(FIELDS) <= set(record), set(FIELDS) - set(record)
        assert record["method"] in bench.METHODS
        assert record["test_samples"] == 48
        assert 0.0 <= record["accuracy"] <= 1.0
        assert 0.0 <= record["argmax_agreement"] <= 1.0
        assert record["latency_ms"] > 0
        assert record["delegate"] in ("xnnpack", "builtin")
        assert record["command"].startswith("python -m benchmarks.export --part")
        assert record["other_bytes"] >= 0
        assert sum(record[p] for p in PARTS) <= record["file_bytes"]


def test_lenet_records_and_resume(tmp_path, data_dir):
    records = run(tmp_path, "lenet")
    check_records(records, tmp_path)
    methods = {(r["method"], r["quantization"], r["sparse_encoding"]) for r in records}
    assert methods == {
        ("dense", "none", False),
        ("int8", "int8", False),
        ("sparse", "none", True),
        ("sparse_int8", "int8", True),
        ("sparse_int8", "dynamic", True),
        ("shrunk", "int8", True),
        ("shrunk", "dynamic", True),
    }
    assert len(records) == 8  # int8 twice: dense model and pruned model
    dense = next(r for r in records if r["method"] == "dense")
    sparse = next(r for r in records if r["method"] == "sparse")
    assert dense["file_compression"] == 1.0 and dense["rate"] == 1.0
    assert sparse["index_bytes"] > 0 and sparse["sparse_tensors"] > 0
    assert sparse["nonzeros"] < dense["nonzeros"] / 50
    assert sparse["file_bytes"] < dense["file_bytes"]
    assert sparse["latency_speedup"] == pytest.approx(
        sparse["dense_latency_ms"] / sparse["latency_ms"]
    )
    assert len(list((tmp_path / "cache").glob("*.keras"))) == 2

    # A second run finds every record and trains nothing.
    before = (tmp_path / "export.json").read_text()
    assert run(tmp_path, "lenet") == []
    assert (tmp_path / "export.json").read_text() == before


def test_resnet_shrunk_records(tmp_path, data_dir):
    if not Path(data_dir, "cifar10", "cifar10-jpg.tar.gz").exists():
        pytest.skip("No local CIFAR-10 copy")
    records = run(
        tmp_path,
        "resnet",
        "--cifar-rate",
        "4x",
        "--methods",
        "shrunk",
        "--cifar-epochs",
        "0,1,1",
    )
    check_records(records, tmp_path)
    assert [r["method"] for r in records] == ["dense", "shrunk", "shrunk"]
    shrunk = records[1:]
    assert [r["quantization"] for r in shrunk] == ["none", "int8"]
    for record in shrunk:
        assert record["macs_after"] < record["macs_before"]
        assert record["macs"] == record["macs_after"]
        assert record["shrink_keras_max_abs_diff"] < 1e-3
    assert shrunk[0]["argmax_agreement"] == 1.0
