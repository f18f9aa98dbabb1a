import keras
import numpy as np
import pytest

import tf_reweight as tfr

RNG = np.random.default_rng(0)


def _convnet():
    inputs = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.Reshape((36, 8))(x)
    x = keras.layers.Conv1D(8, 3, name="conv1d")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    return keras.Model(inputs, outputs)


def _snapshot(model):
    return [w.copy() for w in model.get_weights()], [type(x) for x in model.layers]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 1.0}, "between 0 and 1"),
        ({"target": 0.0}, "between 0 and 1"),
        ({"target": "0.5x"}, "rate"),
        ({"target": 0.5, "structure": "rows"}, "Unknown structure"),
        ({"target": 0.5, "structure": "2:3"}, "multiple of 3"),
        ({"target": 0.5, "structure": "block:64x64"}, "larger than"),
        ({"target": 0.5, "penalty": -1.0}, "non-negative"),
        ({"target": 0.5, "eps": 0.0}, "eps"),
        ({"target": {"nope": 0.5}}, "not prunable"),
        ({"target": 0.5, "scope": "model"}, "scope"),
    ],
)
def test_bad_input_raises_before_anything_changes(kwargs, match):
    model = _convnet()
    weights, types = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        tfr.apply(model, **kwargs)
    after_weights, after_types = _snapshot(model)
    assert types == after_types
    assert all(
        np.array_equal(a, b) for a, b in zip(weights, after_weights, strict=True)
    )


def test_unbuilt_subclassed_and_unprunable_models_are_rejected():
    with pytest.raises(ValueError, match="built"):
        tfr.apply(keras.Sequential([keras.layers.Dense(3)]), target=0.5)
    no_kernels = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no prunable layer"):
        tfr.apply(no_kernels, target=0.5)
    pruned = tfr.apply(_convnet(), target=0.5)
    with pytest.raises(ValueError, match="already has pruned layers"):
        tfr.apply(pruned, target=0.5)


@pytest.mark.parametrize("structure", ["unstructured", "filter", "column", "block:2x2"])
def test_every_layer_type_is_pruned_and_masks_hold_through_fit(structure):
    model = _convnet()
    pruned = tfr.apply(model, structure, 0.6, penalty=1e-4, scope="layer")
    np.testing.assert_allclose(
        pruned.predict(np.ones((2, 12, 12, 4)), verbose=0),
        model.predict(np.ones((2, 12, 12, 4)), verbose=0),
        atol=1e-6,
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = RNG.uniform(size=(32, 12, 12, 4)).astype("float32")
    y = RNG.integers(0, 4, size=32)
    pruned.fit(x, y, epochs=3, verbose=0, callbacks=[tfr.Reweight(), tfr.HardPrune(1)])
    rep = tfr.report(pruned)
    kernels = {(r.layer, r.kernel) for r in rep.pruned_rows}
    expected = {
        ("conv", "kernel"),
        ("dw", "kernel"),
        ("sep", "depthwise_kernel"),
        ("sep", "pointwise_kernel"),
        ("conv1d", "kernel"),
        ("out", "kernel"),
    }
    if structure == "filter":  # the output layer's units are the classes
        expected.remove(("out", "kernel"))
    assert expected == kernels
    for row in rep.pruned_rows:
        assert 0.45 <= row.sparsity <= 0.75, row


def test_inapplicable_structure_skips_kernels_with_a_warning():
    with pytest.warns(UserWarning, match="does not apply"):
        pruned = tfr.apply(_convnet(), "channel", 0.5)
    rows = {(r.layer, r.kernel): r.structure for r in tfr.report(pruned).rows}
    assert rows[("dw", "kernel")] == "dense"
    assert rows[("sep", "pointwise_kernel")] == "channel"


def test_strip_gives_plain_layers_with_the_same_outputs():
    model = _convnet()
    pruned = tfr.apply(model, "filter", 0.5, skip_last=True)
    tfr.hard_prune(pruned)
    plain = tfr.strip(pruned)
    assert [type(x).__name__ for x in plain.layers] == [
        type(x).__name__ for x in model.layers
    ]
    assert not tfr.pruning.wrappers(plain)
    x = RNG.uniform(size=(4, 12, 12, 4)).astype("float32")
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    assert tfr.report(plain).rows[0].nonzeros == tfr.report(pruned).rows[0].nonzeros


def test_report_counts_and_rates():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(10, name="a"),
            keras.layers.Dense(5, name="b"),
        ]
    )
    pruned = tfr.apply(model, "unstructured", "10x", layers=["a"])
    tfr.hard_prune(pruned)
    rep = tfr.report(pruned)
    assert [r.structure for r in rep.rows] == ["unstructured", "dense"]
    assert rep.to_dict()["nonzeros"] == 10
    assert rep.rate == pytest.approx(10.0)
    assert rep.model_rate == pytest.approx(150 / 60)
    assert "10.0x" in str(rep)


def test_sequential_models_and_per_layer_targets():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, name="a"),
            keras.layers.Dense(8, name="b"),
        ]
    )
    pruned = tfr.apply(model, "unstructured", {"a": 0.5, "b": "4x"})
    tfr.hard_prune(pruned)
    assert [r.sparsity for r in tfr.report(pruned).rows] == [0.5, 0.75]


def test_max_prune_floors_every_layer_and_per_layer_overrides(tmp_path):
    model = _convnet()
    pruned = tfr.apply(model, "filter", 0.6, max_prune={"conv": 0.25})
    assert pruned.get_layer("conv").max_prune == 0.25
    assert pruned.get_layer("dw").max_prune is None
    tfr.hard_prune(pruned)
    conv = pruned.get_layer("conv").pruned_kernels[0]
    filters = np.any(keras.ops.convert_to_numpy(conv.mask) != 0, axis=(0, 1, 2))
    assert filters.sum() >= 6  # at most 2 of 8 filters pruned
    path = tmp_path / "floors.keras"
    pruned.save(path)
    assert keras.saving.load_model(path).get_layer("conv").max_prune == 0.25
    uniform = tfr.apply(model, "filter", 0.5, max_prune=0.5)
    tfr.hard_prune(uniform)
    for row in tfr.report(uniform).pruned_rows:
        assert row.sparsity <= 0.5 + 1e-9, row


@pytest.mark.parametrize(
    "max_prune, match",
    [
        (0.0, r"\(0, 1\]"),
        (1.5, r"\(0, 1\]"),
        ({"nope": 0.5}, "not prunable"),
        ("a", "share"),
    ],
)
def test_bad_max_prune_is_refused(max_prune, match):
    with pytest.raises(ValueError, match=match):
        tfr.apply(_convnet(), "filter", 0.5, max_prune=max_prune)


def _mlp():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="a"),
            keras.layers.Dense(3, name="b"),
        ]
    )


def test_default_method_is_the_reweighted_penalty_of_the_options():
    pruned = tfr.apply(_mlp(), target=0.5, penalty=1e-3, eps=1e-2, bounded=True)
    penalty = pruned.get_layer("a").method
    assert isinstance(penalty, tfr.ReweightedGroupPenalty)
    assert (penalty.lam, penalty.eps, penalty.squared, penalty.bounded) == (
        1e-3,
        1e-2,
        False,
        True,
    )
    default = tfr.apply(_mlp(), target=0.5).get_layer("a").method
    assert (default.lam, default.eps, default.bounded) == ("auto", "auto", False)
    assert default.spare_scale_free
    kept = tfr.apply(_mlp(), target=0.5, spare_scale_free=False).get_layer("a").method
    assert kept.spare_scale_free is False


@pytest.mark.parametrize(
    "method", [None, tfr.GroupLassoPenalty(1e-3)], ids=["None", "penalty"]
)
@pytest.mark.parametrize(
    "option",
    [
        {"penalty": 1e-4},
        {"eps": 1e-3},
        {"squared": False},
        {"bounded": True},
        {"spare_scale_free": False},
    ],
    ids=lambda o: next(iter(o)),
)
def test_reweighting_options_conflict_with_another_method(method, option):
    (name, value), model = next(iter(option.items())), _mlp()
    before = _snapshot(model)
    with pytest.raises(
        ValueError, match=rf"reweighted penalty only.*Received: {name}={value!r}"
    ):
        tfr.apply(model, target=0.5, method=method, **option)
    for old, new in zip(before[0], _snapshot(model)[0], strict=True):
        np.testing.assert_array_equal(old, new)


def test_no_penalty_keeps_masks_hard_prune_report_strip_and_saving(tmp_path):
    x = RNG.normal(size=(16, 6)).astype("float32")
    pruned = tfr.apply(_mlp(), "unstructured", 0.75, method=None)
    assert all(layer.method is None for layer in tfr.pruning.wrappers(pruned))
    pruned(x)
    assert pruned.losses == []
    tfr.hard_prune(pruned)
    assert tfr.report(pruned).sparsity == pytest.approx(0.75, abs=0.02)
    path = tmp_path / "no_penalty.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("a").method is None
    assert loaded.get_layer("a").is_pruned
    expected = keras.ops.convert_to_numpy(pruned(x))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5
    )
    plain = tfr.strip(loaded)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)), expected, atol=1e-5
    )
    kernel = keras.ops.convert_to_numpy(plain.get_layer("a").kernel)
    assert np.count_nonzero(kernel) == tfr.report(pruned).rows[0].nonzeros


def test_method_string_other_than_reweighted_is_refused():
    with pytest.raises(ValueError, match="Received: method='magnitude'"):
        tfr.apply(_mlp(), target=0.5, method="magnitude")
