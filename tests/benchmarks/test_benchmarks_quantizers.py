"""Smoke test of `benchmarks/quantizers.py` on a small pruned MNIST model."""

import json

import keras
import numpy as np

import tf_reweight as tfr
from benchmarks import quantizers


def test_every_method_is_measured_once(data_dir, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 5, strides=2, activation="relu")(inputs)
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    pruned = tfr.apply(model, "litert", 0.9)
    tfr.hard_prune(pruned)
    path = tmp_path / "model.keras"
    tfr.strip(pruned).save(path)
    results = tmp_path / "quantizers.json"
    argv = [
        "--model",
        str(path),
        "--data-dir",
        str(data_dir),
        "--results",
        str(results),
        "--test-limit",
        "200",
        "--rounds",
        "1",
        "--runs",
        "2",
        "--calibration-samples",
        "16",
    ]
    quantizers.main(argv)
    records = {r["method"]: r for r in json.loads(results.read_text())}
    assert set(records) == set(quantizers.METHODS)
    kept = sum(
        int(np.count_nonzero(w.numpy()))
        for w in tfr.strip(pruned).weights
        if len(w.shape) >= 2
    )
    for record in records.values():
        assert record["test_samples"] == 200 and 0 <= record["tflite_accuracy"] <= 1
        assert record["latency_ms"] > 0 and record["float_latency_ms"] > 0
        assert record["weight_count"] - record["zero_weights"] <= kept
    sizes = {m: r["file_bytes"] for m, r in records.items()}
    assert sizes["converter_int8_sparse_per_tensor"] < sizes["converter_int8_sparse"]
    assert sizes["quantizer_weight_int4"] < sizes["quantizer_weight_int8"]
    assert sizes["quantizer_weight_int8"] < sizes["float_dense"]
    quantizers.main(argv)  # resumes: nothing measured twice
    assert len(json.loads(results.read_text())) == len(quantizers.METHODS)
    assert "[skip]" in capsys.readouterr().out
