"""Tests of `benchmarks/storage.py`: arguments, accounting, a tiny run, resume."""

import json

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from benchmarks import storage


def test_arguments_defaults_and_bad_lists():
    args = storage.parse_args([])
    assert (args.rates, args.seeds, args.bits, args.methods) == (
        [630.0, 1000.0],
        [0],
        [4, 3],
        ["ste"],
    )
    assert (args.penalty, args.eps, tuple(args.epochs)) == (1e-4, 1e-2, (4, 4))
    assert (args.finetune_epochs, args.index_bits) == (2, [3, 4, 5])
    assert storage.parse_args(["--methods=ste,projection"]).methods == [
        "ste",
        "projection",
    ]
    for bad in (
        ["--bits=9"],
        ["--methods=adam"],
        ["--rates="],
        ["--finetune-epochs=-1"],
    ):
        with pytest.raises(SystemExit):
            storage.parse_args(bad)


def test_cells_key_every_record_of_a_pruned_model():
    args = storage.parse_args(["--bits=4,3", "--methods=ste,projection"])
    found = storage.cells(args, 630.0, 1)
    assert [(c["bits"], c["method"]) for c in found] == [
        (32, "float"),
        (4, "ste"),
        (4, "projection"),
        (3, "ste"),
        (3, "projection"),
    ]
    assert found[0]["finetune_epochs"] == 0 and found[1]["finetune_epochs"] == 2
    assert all(set(c) == set(storage.KEY_FIELDS) for c in found)
    assert {c["epochs"] for c in found} == {8}


def test_grid_check_counts_levels_and_rejects_off_grid_values():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 5, 3, 4)).astype("float32")
    q = keras.ops.convert_to_numpy(tfr.quantize(w, bits=3))
    levels, on_grid = storage.grid_check(q, bits=3)
    assert on_grid and 2 <= levels <= 2**3 - 1
    off = q.copy()
    off[0, 0, 0, 0] += 0.3 * np.abs(q[..., 0]).max() / 3  # 0.3 of a grid step
    assert not storage.grid_check(off, bits=3)[1]


def test_storage_counts_kernels_then_biases_and_scales_in_fp32():
    model = keras.Sequential(
        [keras.Input((40,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    first = np.zeros((40, 3), "float32")
    first[[0, 39], 0] = 1.0  # a zero run of 116 in row-major order, then 1 more
    first[5, 1] = -1.0
    second = np.zeros((3, 2), "float32")
    second[2, 1] = 0.5
    model.layers[0].kernel.assign(first)
    model.layers[1].kernel.assign(second)
    out = storage.storage(model, bits=4, index_bits=[3, 4])
    report = tfr.quantization.compression_report(model, bits=4, index_bits=3)
    assert out["storage"]["3"]["sparse_bits"] == report["sparse_bits"]
    assert out["storage"]["3"]["fillers"] == report["fillers"] > 0
    assert (out["nonzeros"], out["kernel_weights"], out["parameters"]) == (4, 126, 131)
    assert out["scales"] == 3  # channels with a nonzero: 2 of fc1's 3, 1 of 2
    for w, row in out["storage"].items():
        sparse = tfr.quantization.compression_report(model, 4, int(w))["sparse_bits"]
        assert row["rate_kernels"] == pytest.approx(32 * 126 / sparse)
        assert row["rate_all"] == pytest.approx(32 * 131 / (sparse + 32 * (5 + 3)))
    assert out["best_index_bits"] == min(
        (3, 4), key=lambda w: out["storage"][str(w)]["sparse_bits"]
    )
    unscaled = storage.storage(model, bits=32, index_bits=[3], scaled=False)
    sparse = tfr.quantization.compression_report(model, 32, 3)["sparse_bits"]
    assert unscaled["scales"] == 0  # float kernels store no scales
    assert unscaled["storage"]["3"]["rate_all"] == pytest.approx(
        32 * 131 / (sparse + 32 * 5)
    )
    per_kernel = out["per_kernel"]
    assert per_kernel["sparse_bits"] <= out["storage"]["3"]["sparse_bits"] + 8
    assert set(per_kernel["index_bits"]) == {v.path for v in model.weights[::2]}


def test_tiny_run_records_checks_resumes_and_tables(data_dir, tmp_path, capsys):
    results = tmp_path / "storage.json"
    argv = [
        "--rates=20",
        "--bits=3",
        "--methods=ste,projection",
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        "--train-limit=200",
        "--test-limit=100",
        "--dense-epochs=1",
        "--epochs",
        "1",
        "1",
        "--finetune-epochs=1",
    ]
    assert storage.main(argv) == 0
    records = json.loads(results.read_text())
    assert [(r["bits"], r["method"]) for r in records] == [
        (32, "float"),
        (3, "ste"),
        (3, "projection"),
    ]
    for r in records:
        assert r["kernel_weights"] == 430_500 and r["parameters"] == 431_080
        assert r["rate"] == pytest.approx(430_500 / r["nonzeros"])
        assert r["revived"] == 0  # no pruned weight came back
        assert set(r["storage"]) == {"3", "4", "5"}
        assert r["storage"][str(r["best_index_bits"])]["sparse_bits"] == min(
            v["sparse_bits"] for v in r["storage"].values()
        )
        assert (r["train_images"], r["test_images"]) == (200, 100)
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["command"].startswith("python benchmarks/storage.py --rates=20")
    assert records[0]["rate"] == pytest.approx(20, rel=0.01)
    assert records[0]["scales"] == 0 and records[1]["scales"] > 0
    assert records[0]["on_grid"] is None and records[0]["accuracy"] == pytest.approx(
        records[0]["float_accuracy"]
    )
    for r in records[1:]:
        assert r["on_grid"] and r["levels_max"] <= 2**3 - 1
        assert r["nonzeros"] <= records[0]["nonzeros"]  # rounding may add zeros
        assert r["float_accuracy"] == records[0]["accuracy"]
    capsys.readouterr()

    assert storage.main(argv) == 0  # everything stored: nothing re-measured
    assert json.loads(results.read_text()) == records
    printed = capsys.readouterr().out
    assert "already measured, skipped" in printed
    assert "| 20x | 2 | 0 | 3-bit projection |" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| 20x |")]
    assert [row.endswith("| 0 | - | - |") for row in rows] == [True, False, False]
    assert all(row.endswith(" | yes |") for row in rows[1:])
    assert "Goal 3000x at >= 99.0%: fixed index width: not reached" in printed
    assert "per-kernel index widths: not reached" in printed


def test_missing_data_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("TF_REWEIGHT_DATA_DIR", raising=False)
    results = tmp_path / "storage.json"
    argv = [f"--data-dir={tmp_path / 'none'}", f"--results={results}"]
    argv.append(f"--cache-dir={tmp_path / 'cache'}")
    with pytest.raises(tfr.data.DatasetNotFoundError, match="mnist"):
        storage.main(argv)
    assert not results.exists() and not (tmp_path / "cache").exists()


def test_checks_count_revived_weights_and_off_grid_kernels():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    kernel = np.array([[0.0, 1.0], [0.5, 0.0], [0.0, -1.0], [1.0, 0.0]], "float32")
    model.layers[0].kernel.assign(kernel)
    zeros = {v.path: kernel == 0 for v in model.weights if v.name == "kernel"}
    assert storage.checks(model, zeros, bits=2) == {
        "revived": 0,
        "levels_max": 3,
        "on_grid": False,  # 0.5 is not on the 2-bit grid {-1, 0, 1} of column 0
    }
    changed = kernel.copy()
    changed[1, 0] = 1.0  # now on the grid
    changed[0, 0] = -1.0  # a pruned weight came back
    model.layers[0].kernel.assign(changed)
    assert storage.checks(model, zeros, bits=2) == {
        "revived": 1,
        "levels_max": 3,
        "on_grid": True,
    }
    assert storage.checks(model, zeros, bits=None)["on_grid"] is None
