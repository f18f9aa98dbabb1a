"""Tests for `tflite_export.flatbuffer`: the one reader of `.tflite` tensors."""

from pathlib import Path

import keras
import numpy as np
import pytest

from tflite_export import export
from tflite_export.flatbuffer import byte_breakdown, count_zero_weights, read

L = keras.layers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A Dense net, 75% zero kernels, biases 0.5, exported dense and sparse."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((32,)), L.Dense(64, activation="relu"), L.Dense(8)]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        kernel[rng.random(kernel.shape) < 0.75] = 0.0
        layer.kernel.assign(kernel)
        layer.bias.assign(np.full(layer.bias.shape, 0.5, "float32"))
    folder = tmp_path_factory.mktemp("flatbuffer")
    paths = {}
    for name, sparse in (("dense", False), ("sparse", True)):
        paths[name] = str(folder / f"{name}.tflite")
        export(model, paths[name], sparse=sparse, verify=False)
    return model, paths


def test_dense_file_holds_the_kernels(files):
    model, paths = files
    tensors = read(paths["dense"])
    weights = {t.shape: t.values() for t in tensors if t.rank >= 2 and t.data}
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        # TFLite stores FULLY_CONNECTED weights as (units, inputs).
        stored = weights[kernel.T.shape].reshape(kernel.T.shape)
        np.testing.assert_array_equal(stored, kernel.T)
    assert not any(t.sparse or t.index_bytes for t in tensors)
    assert all(t.values() is None for t in tensors if not t.data)


def test_sparse_file_stores_only_kept_values(files):
    model, paths = files
    sparse = [t for t in read(paths["sparse"]) if t.sparse]
    assert sparse and all(t.index_bytes > 0 for t in sparse)
    assert all(t.block is None for t in read(paths["dense"]))
    assert all(len(t.block) == t.rank for t in sparse)
    kept = sum(int(np.count_nonzero(layer.kernel.numpy())) for layer in model.layers)
    stored = sum(int(np.count_nonzero(t.values())) for t in sparse)
    assert stored == kept


def test_byte_breakdown_adds_up_to_the_file(files):
    model, paths = files
    dense, sparse = (byte_breakdown(paths[k]) for k in ("dense", "sparse"))
    for name, counts in (("dense", dense), ("sparse", sparse)):
        assert sum(counts.values()) == Path(paths[name]).stat().st_size
        assert counts["other_bytes"] > 0
    kernel_bytes = 4 * sum(layer.kernel.numpy().size for layer in model.layers)
    assert dense["weight_bytes"] == kernel_bytes
    assert dense["index_bytes"] == 0 and dense["quant_param_bytes"] == 0
    assert sparse["index_bytes"] > 0
    assert sparse["weight_bytes"] < kernel_bytes / 2
    assert dense["vector_bytes"] >= 4 * (64 + 8)  # the biases


def test_zero_count_of_both_files(files):
    model, paths = files
    kernels = [layer.kernel.numpy() for layer in model.layers]
    expected = (sum(k.size for k in kernels), sum(int(np.sum(k == 0)) for k in kernels))
    assert count_zero_weights(paths["dense"]) == (*expected, 0)
    assert count_zero_weights(paths["sparse"]) == (*expected, 2)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="existing `.tflite` file"):
        read(tmp_path / "missing.tflite")


@pytest.mark.parametrize("quantization", ["int8", "none"])
def test_litert_preset_stores_full_blocks_in_fewer_bytes(tmp_path, quantization):
    """`structure="litert"` fits LiteRT's sparse blocks: no padding is stored."""
    import tf_reweight as tfr

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu", name="fc")(x)
    model = keras.Model(inputs, L.Dense(10, name="out")(x))
    data = np.random.default_rng(0).uniform(size=(32, 8, 8, 2)).astype("float32")
    stored = {}
    for structure in ("litert", "unstructured"):
        pruned = tfr.apply(model, structure=structure, target=0.9, scope="layer")
        tfr.hard_prune(pruned)
        path = tmp_path / f"{structure}.tflite"
        export(
            pruned,
            path,
            quantization,
            sparse=True,
            representative_data=data,
            verify=False,
        )
        fc = [t for t in read(path) if t.data and t.shape == (64, 576)]
        assert len(fc) == 1 and fc[0].sparse
        kept = int(np.count_nonzero(tfr.strip(pruned).get_layer("fc").kernel.numpy()))
        stored[structure] = (
            len(fc[0].data) // fc[0].values().itemsize,
            kept,
            len(fc[0].data) + fc[0].index_bytes,
        )
        if structure == "litert":  # LiteRT's FULLY_CONNECTED blocks
            assert fc[0].block == ((1, 16) if quantization == "int8" else (1, 4))
    values, kept, _ = stored["litert"]
    assert values == kept  # whole blocks: not one padded zero
    assert stored["litert"][2] < 0.9 * stored["unstructured"][2]
