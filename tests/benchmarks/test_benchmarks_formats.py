"""Smoke test of `benchmarks/formats.py`: bytes per kept weight, XNNPACK timing."""

import json

import pytest

from benchmarks import formats


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("formats") / "formats.json"
    argv = ["--results", str(path), "--structures", "unstructured,litert"]
    formats.main([*argv, "--part", "bytes"])
    # One model per timed part keeps the smoke test short; the full parts
    # run MobileNetV2 too.
    timed = [*argv, "--size", "32", "--rounds", "1", "--runs", "2"]
    formats.main([*timed, "--part", "xnnpack", "--models", "mobilenet_chain"])
    formats.main([*timed, "--part", "shrink", "--models", "mobilenet_v3_small"])
    return path, argv


def test_litert_stores_fully_connected_weights_in_full_blocks(results):
    path, _ = results
    rows = [r for r in json.loads(path.read_text()) if r["part"] == "bytes"]
    by = {(r["structure"], r["quantization"], r["layer"]): r for r in rows}
    assert len(by) == 2 * 2 * 4  # structures x quantizations x LeNet-5 kernels
    assert by["litert", "int8", "fc1"]["block"] == [1, 16]
    assert by["litert", "none", "fc1"]["block"] == [1, 4]
    for quantization in ("int8", "none"):
        litert = by["litert", quantization, "fc1"]["bytes_per_kept"]
        assert litert < 0.75 * by["unstructured", quantization, "fc1"]["bytes_per_kept"]
        # Convolutions: single weights either way.
        assert by["litert", quantization, "conv2"]["block"] == [1, 1, 1, 1]
    record = by["litert", "int8", "fc1"]
    assert record["kept"] == pytest.approx(0.1 * record["weights"], rel=0.01)
    assert record["command"].startswith("python -m benchmarks.formats")


def test_xnnpack_records_both_latencies(results):
    path, _ = results
    rows = [r for r in json.loads(path.read_text()) if r["part"] == "xnnpack"]
    assert {r["model"] for r in rows} == {"mobilenet_chain"}
    for row in rows:
        assert row["sparse_ms"] > 0 and row["dense_ms"] > 0
        assert row["speedup"] == pytest.approx(row["dense_ms"] / row["sparse_ms"], 1e-2)
        assert row["sparse_bytes"] < row["dense_bytes"]


def test_a_second_run_resumes(results, capsys):
    path, argv = results
    before = path.read_text()
    formats.main([*argv, "--part", "bytes"])
    assert path.read_text() == before
    assert "[skip]" in capsys.readouterr().out


def test_shrink_records_fewer_macs_and_both_latencies(results):
    path, _ = results
    rows = [r for r in json.loads(path.read_text()) if r["part"] == "shrink"]
    assert {r["model"] for r in rows} == {"mobilenet_v3_small"}
    for row in rows:
        assert row["macs_after"] < row["macs_before"]
        assert row["mac_ratio"] == pytest.approx(
            row["macs_before"] / row["macs_after"], 1e-2
        )
        assert row["params_after"] < row["params_before"]
        assert row["shrunk_ms"] > 0 and row["dense_ms"] > 0
