"""Tests for tflite_export.quantizer: LiteRT's quantizer keeps pruned zeros."""

import numpy as np
import pytest

from tflite_export import export, quantizer
from tflite_export.flatbuffer import TfliteTensor, count_zero_weights, read, schema


@pytest.fixture(scope="module")
def files(sparse_convnet, tmp_path_factory):
    """The 80%-zero conv net exported through the converter and the quantizer."""
    model, sample = sparse_convnet
    folder = tmp_path_factory.mktemp("quantizer")
    reports = {}
    for mode in ("none", "weight_int8", "weight_int4"):
        reports[mode] = export(
            model, str(folder / f"{mode}.tflite"), mode, sample=sample
        )
    return model, sample, reports


def _kernel_zeros(model) -> int:
    return sum(
        int(np.sum(layer.kernel.numpy() == 0))
        for layer in model.layers
        if hasattr(layer, "kernel")
    )


@pytest.mark.parametrize("mode", ["weight_int8", "weight_int4"])
def test_weights_are_quantized_and_keep_every_pruned_zero(files, mode):
    model, sample, reports = files
    report = reports[mode]
    types = {t.type for t in read(report.path) if t.data and t.rank >= 2}
    expected = (
        schema.TensorType.INT8 if mode == "weight_int8" else schema.TensorType.INT4
    )
    assert types == {expected}
    total, zeros, sparse = count_zero_weights(report.path)
    assert sparse == 0 and total == reports["none"].verification.weight_count
    assert zeros >= _kernel_zeros(model)  # rounding may add zeros, never lose one
    # Relative to the largest output: 8-bit steps are 1/127 of a channel's
    # largest weight, 4-bit steps 1/7 (measured: 0.4% and 9%).
    model_out = model.predict(sample, verbose=0)
    bound = {"weight_int8": 0.02, "weight_int4": 0.25}[mode] * np.abs(model_out).max()
    assert report.verification.max_abs_diff <= bound
    assert report.file_bytes < reports["none"].file_bytes
    assert report.encoding.encoding == "dense"


def test_four_bits_take_half_the_bytes_of_eight(files):
    *_, reports = files
    weights = {
        mode: sum(len(t.data) for t in read(reports[mode].path) if t.rank >= 2)
        for mode in ("weight_int8", "weight_int4")
    }
    assert weights["weight_int4"] * 2 == pytest.approx(weights["weight_int8"], rel=0.01)


def test_sparse_encoding_is_refused_before_writing(sparse_convnet, tmp_path):
    model, _ = sparse_convnet
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="writes dense tensors"):
        export(model, str(path), "weight_int4", sparse=True)
    assert not path.exists()


def test_a_missing_quantizer_is_named(sparse_convnet, tmp_path, monkeypatch):
    model, _ = sparse_convnet
    monkeypatch.setattr(quantizer, "available", lambda: False)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"pip install tf-reweight\[quantizer\]"):
        export(model, str(path), "weight_int8")
    assert not path.exists()


def test_int4_values_unpack_low_half_first():
    tensor = TfliteTensor(
        name="w",
        shape=(3,),
        type=schema.TensorType.INT4,
        data=bytes([0x1F, 0x08]),
        sparse=False,
        index_bytes=0,
        quant_param_bytes=0,
    )
    np.testing.assert_array_equal(tensor.values(), [-1, 1, -8])
