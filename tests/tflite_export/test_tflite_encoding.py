"""Tests for the encoding `export` writes (sparse="auto"), gzip size, converters."""

import gzip
import json
from pathlib import Path

import keras
import pytest

from tflite_export import choose_encoding, export
from tflite_export.convert import keras_exporter_available
from tflite_export.flatbuffer import count_zero_weights

L = keras.layers


@pytest.mark.parametrize(
    "measured, encoding",
    [
        # Off XNNPACK while the dense file runs on it: dense, even if faster.
        (("builtin", 1.0, "xnnpack", 2.0), "dense"),
        # Both on XNNPACK: the sparse file unless slower beyond the tolerance.
        (("xnnpack", 2.2, "xnnpack", 2.0), "dense"),
        (("xnnpack", 2.05, "xnnpack", 2.0), "sparse"),
        (("xnnpack", 1.0, "xnnpack", 2.0), "sparse"),
        # Both on the builtin kernels: latency decides.
        (("builtin", 1.0, "builtin", 2.0), "sparse"),
        (("builtin", 3.0, "builtin", 2.0), "dense"),
    ],
)
def test_choose_encoding(measured, encoding):
    choice = choose_encoding(*measured)
    assert choice.encoding == encoding
    assert (
        choice.sparse_delegate,
        choice.sparse_latency_ms,
        choice.dense_delegate,
        choice.dense_latency_ms,
    ) == measured
    assert f"{measured[1]:.4g} ms on {measured[0]}" in str(choice)
    assert f"dense {measured[3]:.4g} ms on {measured[2]}" in str(choice)


def test_choose_encoding_tolerance_and_bad_input():
    assert choose_encoding("xnnpack", 2.05, "xnnpack", 2.0, tolerance=0.0).encoding == (
        "dense"
    )
    with pytest.raises(ValueError, match=r"Received: sparse_latency_ms=-1"):
        choose_encoding("xnnpack", -1, "xnnpack", 2.0)
    with pytest.raises(ValueError, match="tolerance"):
        choose_encoding("xnnpack", 1.0, "xnnpack", 2.0, tolerance=float("nan"))


@pytest.fixture(scope="module")
def pruned(sparse_convnet):
    """A small conv net with 80% zero kernels and a sample."""
    return sparse_convnet


def test_auto_writes_the_dense_file_when_sparse_falls_off_xnnpack(tmp_path, pruned):
    model, sample = pruned
    path = tmp_path / "auto.tflite"

    report = export(model, str(path), quantization="dynamic", sample=sample)

    # XNNPACK cannot prepare a sparse FULLY_CONNECTED with int8 weights.
    choice = report.encoding
    assert (choice.encoding, choice.sparse_delegate) == ("dense", "builtin")
    assert choice.dense_delegate == "xnnpack" and "falls back" in choice.reason
    assert choice.sparse_latency_ms > 0 and choice.dense_latency_ms > 0
    assert choice.dense_bytes == report.file_bytes == path.stat().st_size
    assert choice.sparse_bytes < choice.dense_bytes  # 80% zeros, stored sparse
    assert f"{choice.sparse_bytes} bytes" in str(report)
    assert report.verification.delegate == "xnnpack"
    assert not report.verification.delegate_fallback
    assert count_zero_weights(path)[2] == 0  # no sparse tensor in the file
    assert report.verification.argmax_agreement == 1.0
    assert "encoding: dense" in str(report) and "on builtin" in str(report)
    assert json.loads(json.dumps(report.to_dict()))["encoding"]["encoding"] == "dense"


def test_sparse_true_keeps_the_sparse_file_and_warns(tmp_path, pruned):
    model, sample = pruned
    path = tmp_path / "sparse.tflite"

    with pytest.warns(UserWarning, match="sparse='auto'"):
        report = export(
            model, str(path), quantization="dynamic", sparse=True, sample=sample
        )

    assert report.encoding.encoding == "sparse"
    assert report.encoding.dense_delegate == "xnnpack"
    verification = report.verification
    assert (verification.delegate, verification.delegate_fallback) == ("builtin", True)
    assert verification.dense_reference_delegate == "xnnpack"
    assert verification.dense_reference_latency_ms > 0
    assert verification.sparse_tensors >= 1
    assert "dense_reference_latency_ms" in str(report)


def test_auto_float_file_states_its_choice(tmp_path, pruned):
    model, sample = pruned
    report = export(model, str(tmp_path / "float.tflite"), sample=sample)

    choice, verification = report.encoding, report.verification
    assert choice.sparse_delegate == "xnnpack" == choice.dense_delegate
    # Which file is faster depends on the machine; the report must match it.
    expected = choose_encoding(
        "xnnpack", choice.sparse_latency_ms, "xnnpack", choice.dense_latency_ms
    ).encoding
    assert choice.encoding == expected
    if expected == "sparse":
        assert verification.sparse_tensors >= 1
        assert verification.dense_reference_bytes > verification.file_bytes
    else:
        assert verification.sparse_tensors == 0
    assert verification.max_abs_diff < 1e-4


def test_a_model_without_zeros_gives_one_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(3)])
    report = export(model, str(tmp_path / "m.tflite"), verify=False)
    assert report.encoding.encoding == "dense"
    assert "both encodings give this file" in report.encoding.reason
    assert report.verification is None


def test_gzip_bytes_is_the_compressed_size(tmp_path, pruned):
    model, _ = pruned
    path = tmp_path / "dense.tflite"
    report = export(model, str(path), sparse=False, verify=False)

    assert report.encoding.encoding == "dense"
    expected = len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))
    assert report.gzip_bytes == expected
    # 80% zero float weights compress to well under the file's size.
    assert report.gzip_bytes < 0.6 * report.file_bytes
    assert f"({report.gzip_bytes} gzipped)" in str(report)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparse": "yes"}, "sparse"),
        ({"sparse": 1}, "sparse"),
        ({"converter": "onnx"}, "converter"),
    ],
)
def test_bad_encoding_or_converter_is_refused_before_writing(tmp_path, kwargs, message):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=f"Received: {message}="):
        export(model, str(path), **kwargs)
    assert not path.exists()


def test_keras_converter_matches_keras(tmp_path, pruned, monkeypatch):
    model, sample = pruned
    assert keras_exporter_available()  # Keras 3.13+ documents format="litert"
    path = tmp_path / "keras.tflite"

    report = export(
        model, str(path), quantization="float16", converter="keras", sample=sample
    )

    assert report.converter == "keras" and "converter=keras" in str(report)
    assert report.verification.max_abs_diff < 1e-2
    assert report.verification.argmax_agreement == 1.0

    def export_without_litert(self, filepath, format="tf_saved_model"):
        """Export the model (formats: "tf_saved_model", "onnx")."""

    monkeypatch.setattr(keras.Model, "export", export_without_litert)
    older = tmp_path / "older.tflite"
    with pytest.raises(ValueError, match=rf"Keras {keras.__version__}"):
        export(model, str(older), converter="keras")
    assert not older.exists()
