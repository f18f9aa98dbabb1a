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
        "fc": "block:16x1:magnitude",
        "narrow": "block:16x1:magnitude",
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
    assert _structures(pruned) == {"mha": "block:16x1:magnitude", "mix": "unstructured"}


def test_resolve_passes_other_identifiers_through():
    layer = L.Dense(4)
    layer.build((None, 32))
    assert presets.resolve("LiteRT", layer) == "block:16x1:magnitude"
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


def test_litert_ranks_blocks_like_single_weights_and_spares_a_small_conv():
    """A mixed global budget: FC tiles and conv weights rank on one scale.

    Ranked relative to its layer with a floor at the target, the big FC
    kernel could not go past the target and the small conv paid for it.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 4))
    x = L.Conv2D(16, 3, name="conv")(inputs)
    x = L.Dense(8, name="out")(L.Dense(128, name="fc")(L.Flatten()(x)))
    model = keras.Model(inputs, x)
    for structure in ("litert", {"conv": "unstructured", "fc": "block:16x1"}):
        pruned = tfr.apply(
            model, structure=structure, target=0.97, layers=["conv", "fc"]
        )
        tfr.hard_prune(pruned)
        sparsity = {
            w.layer.name: 1 - np.count_nonzero(k) / k.size
            for w in tfr.pruning.wrappers(pruned)
            for k in [keras.ops.convert_to_numpy(w.layer.kernel)]
        }
        if structure == "litert":
            assert sparsity["fc"] > 0.97 > sparsity["conv"]
        else:  # the relative rule with its floor at the target: the conv pays
            assert sparsity["conv"] > 0.97


def test_magnitude_blocks_round_trip_and_rank_without_a_floor():
    block = tfr.structures.get("block:16x1:magnitude")
    assert repr(block) == "block:16x1:magnitude"
    assert block.get_config() == {"rows": 16, "cols": 1, "magnitude": True}
    assert tfr.structures.get(tfr.structures.serialize(block)).magnitude
    assert tfr.structures.get("block:16x1").get_config() == {"rows": 16, "cols": 1}
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 1, 1, 64, 8))
    kept = tfr.budget.allocate([block, block], [a, 0.1 * b], 0.5)
    assert kept == [31, 1]  # 32 tiles in all; the small kernel keeps one: no floor
    relative = tfr.structures.get("block:16x1")
    # Relative tiles ignore the scale: the same counts as for equal scales.
    same = tfr.budget.allocate([relative, relative], [a, b], 0.5)
    assert tfr.budget.allocate([relative, relative], [a, 0.1 * b], 0.5) == same
    assert min(same) >= 4  # the floor: at most 90% of 32 tiles pruned
    with pytest.raises(ValueError, match="magnitude"):
        type(block)(16, 1, magnitude="yes")
