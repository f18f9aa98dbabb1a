"""Tests for tflite_export.verify and the `tflite-export verify` command."""

import importlib

import keras
import numpy as np
import pytest

import tflite_export
from tf_reweight.cli.tflite import main
from tflite_export import evaluate_tflite, export, verify
from tflite_export.flatbuffer import count_zero_weights

L = keras.layers


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, sparse_convnet):
    """A small conv net with 80% zero kernels, a dense float file, a sample."""
    model, sample = sparse_convnet
    dense = str(tmp_path_factory.mktemp("verify") / "dense.tflite")
    export(model, dense, sparse=False, verify=False)
    return model, dense, sample


def test_dense_float_runs_on_default_delegate(pruned):
    model, dense, sample = pruned
    report = verify(dense, model, sample, runs=3)
    assert (report.delegate, report.delegate_fallback) == ("xnnpack", False)
    assert report.delegate_error is None
    assert report.max_abs_diff < 1e-4 and report.argmax_agreement == 1.0
    assert report.num_samples == 16 and report.latency_ms > 0


def test_sparse_quantized_falls_back_to_builtin_kernels(tmp_path, pruned):
    model, _, sample = pruned
    path = str(tmp_path / "sparse.tflite")
    export(model, path, quantization="dynamic", sparse=True, verify=False)

    report = verify(path, model, sample, runs=3)

    # XNNPACK cannot prepare a sparse FULLY_CONNECTED with int8 weights.
    assert report.delegate_fallback and report.delegate == "builtin"
    assert report.delegate_error
    assert report.argmax_agreement == 1.0
    assert report.sparse_tensors >= 1


def test_zero_count_matches_the_keras_kernels(tmp_path, pruned):
    model, dense, _ = pruned
    sparse = str(tmp_path / "sparse.tflite")
    export(model, sparse, sparse=True, verify=False)
    kernels = [w.numpy() for w in model.weights if len(w.shape) >= 2]
    expected = (sum(k.size for k in kernels), sum(np.sum(k == 0) for k in kernels))

    total, zeros, sparse_tensors = count_zero_weights(sparse)

    assert (total, zeros) == expected
    assert sparse_tensors >= 1
    assert count_zero_weights(dense) == (*expected, 0)


def test_dense_reference_ratios_and_table(tmp_path, pruned):
    model, dense, sample = pruned
    path = str(tmp_path / "f16.tflite")
    export(model, path, quantization="float16", verify=False)

    report = verify(path, model, sample, runs=3, dense_reference_path=dense)

    assert report.size_ratio == report.file_bytes / report.dense_reference_bytes
    assert report.speedup == report.dense_reference_latency_ms / report.latency_ms
    assert report.to_dict()["zero_fraction"] == report.zero_weights / (
        report.weight_count
    )
    assert "delegate_fallback" in str(report) and "size_ratio" in str(report)


def test_fixed_batch_model_is_run_in_padded_batches(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), batch_size=2), L.Dense(4)])
    path = str(tmp_path / "fixed.tflite")
    export(model, path, verify=False)
    sample = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")

    report = verify(path, model, sample, runs=2)

    assert report.num_samples == 5 and report.max_abs_diff < 1e-5


def test_evaluate_tflite_matches_numpy_accuracy(pruned):
    model, dense, sample = pruned
    labels = np.random.default_rng(2).integers(0, 4, len(sample))
    expected = np.mean(model.predict(sample, verbose=0).argmax(1) == labels)
    assert evaluate_tflite(dense, sample, labels, batch_size=5) == expected
    assert evaluate_tflite(dense, sample, np.eye(4)[labels]) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample": np.zeros((2, 8, 8, 3))}, "sample"),
        ({"runs": 0}, "runs"),
        ({"tflite_path": "missing.tflite"}, "existing file"),
    ],
)
def test_verify_rejects_bad_input(pruned, kwargs, message):
    model, dense, sample = pruned
    arguments = {"tflite_path": dense, "reference": model, "sample": sample}
    with pytest.raises(ValueError, match=message):
        verify(**{**arguments, **kwargs})


def test_cli_verify_on_saved_model(tmp_path, pruned, capsys):
    model, dense, _ = pruned
    model.save(tmp_path / "model.keras")
    arguments = ["verify", dense, "--reference", str(tmp_path / "model.keras")]

    assert main([*arguments, "--runs", "2"]) == 0
    assert "argmax_agreement" in capsys.readouterr().out
    # A reference whose logits are negated disagrees with the file.
    other = keras.models.clone_model(model)
    other.set_weights([-w for w in model.get_weights()])
    other.save(tmp_path / "other.keras")
    disagreeing = ["verify", dense, "--reference", str(tmp_path / "other.keras")]
    assert main([*disagreeing, "--runs", "2", "--min-agreement", "0.99"]) == 1
    assert main([*arguments, "--runs", "2", "--min-agreement", "1.01"]) == 2


def _with_nan_kernel(model):
    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    kernel = broken.layers[-1].kernel
    kernel.assign(np.where(np.arange(kernel.shape[0])[:, None] == 0, np.nan, kernel))
    return broken


def test_non_finite_outputs_fail_verification(tmp_path, pruned):
    model, dense, sample = pruned
    broken = _with_nan_kernel(model)
    with pytest.raises(ValueError, match="Keras reference model gives NaN or inf"):
        verify(dense, broken, sample, runs=1)
    path = str(tmp_path / "nan.tflite")
    with pytest.raises(ValueError, match="NaN or inf outputs"):
        export(broken, path)  # verifies against the NaN model by default
    with pytest.raises(ValueError, match=r"\.tflite file .* gives NaN or inf"):
        verify(path, model, sample, runs=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_tflite(path, sample, np.zeros(len(sample), "int64"))


def test_non_finite_sample_is_refused(pruned):
    model, dense, sample = pruned
    bad = sample.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="finite values"):
        verify(dense, model, bad, runs=1)


def test_measure_pair_interleaves_the_two_files(tmp_path, pruned, monkeypatch):
    verify_module = importlib.import_module("tflite_export.verify")
    model, dense, sample = pruned
    sparse = str(tmp_path / "sparse.tflite")
    export(model, sparse, quantization="dynamic", sparse=True, verify=False)
    order = []
    timed = verify_module._Runner.times

    def times(runner, runs):
        order.append((runner.delegate, runs))
        return timed(runner, runs)

    monkeypatch.setattr(verify_module._Runner, "times", times)
    (first, first_ms), (second, second_ms) = verify_module.measure_pair(
        sparse, dense, sample, rounds=3, runs=2
    )
    assert (first, second) == ("builtin", "xnnpack")
    assert first_ms > 0 and second_ms > 0
    # Rounds alternate which file goes first: ABBAAB.
    assert [d for d, _ in order] == ["builtin", "xnnpack", "xnnpack", "builtin"] + [
        "builtin",
        "xnnpack",
    ]
    assert {runs for _, runs in order} == {2}
    with pytest.raises(ValueError, match="rounds"):
        tflite_export.measure_pair(sparse, dense, sample, rounds=0)
