"""Tests for tf_reweight.core.presets: a structure per layer, chosen by the format."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import presets

L = keras.layers


def _net():
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.DepthwiseConv2D(3, name="depthwise")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu", name="fc")(x)
    x = L.Dense(8, activation="relu", name="narrow")(x)  # 64 inputs: blocks fit
    x = L.Dense(4, name="tiny_in")(x)  # 8 inputs: no 16-row block fits
    return keras.Model(inputs, x)


def _structures(pruned) -> dict:
    return {w.layer.name: repr(w.structure) for w in tfr.pruning.wrappers(pruned)}


def test_litert_prunes_dense_in_16x1_blocks_and_convolutions_weight_by_weight():
    pruned = tfr.apply(_net(), structure="litert", target=0.8)
    assert _structures(pruned) == {
        "conv": "unstructured",
        "depthwise": "unstructured",
        "fc": "block:16x1",
        "narrow": "block:16x1",
        "tiny_in": "unstructured",
    }


def test_litert_blocks_are_whole_after_the_hard_prune():
    pruned = tfr.apply(_net(), structure="litert", target=0.9)
    tfr.hard_prune(pruned)
    kernel = keras.ops.convert_to_numpy(tfr.strip(pruned).get_layer("fc").kernel)
    blocks = (kernel.reshape(-1, 16, kernel.shape[1]) != 0).sum(axis=1)
    assert set(np.unique(blocks)) <= {0, 16}  # every 16x1 block empty or full
    assert 0 < (blocks == 16).mean() < 0.5


def test_litert_in_a_dict_and_for_attention():
    inputs = keras.Input((6, 32))
    h = L.MultiHeadAttention(2, 16, name="mha")(inputs, inputs)
    x = L.Conv1D(32, 1, name="mix")(h)
    model = keras.Model(inputs, x)
    pruned = tfr.apply(model, structure={"mha": "litert", "mix": "litert"}, target=0.5)
    assert _structures(pruned) == {"mha": "block:16x1", "mix": "unstructured"}


def test_resolve_passes_other_identifiers_through():
    layer = L.Dense(4)
    layer.build((None, 32))
    assert presets.resolve("LiteRT", layer) == "block:16x1"
    assert presets.resolve("filter", layer) == "filter"
    assert presets.is_preset(" litert ") and not presets.is_preset("filter")
    assert presets.fixed_sparsity("litert") is None
    assert presets.fixed_sparsity("2:4") == 0.5


def test_check_names_the_presets_for_an_unknown_structure():
    presets.check("litert")
    presets.check("block:4x4")
    with pytest.raises(ValueError, match=r"Or a preset .*\['litert'\]"):
        presets.check("litrt")


def test_litert_model_round_trips_through_keras_file(tmp_path):
    pruned = tfr.apply(_net(), structure="litert", target=0.8)
    tfr.hard_prune(pruned)
    path = tmp_path / "m.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert _structures(loaded) == _structures(pruned)
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(pruned(x)),
        atol=1e-6,
    )
