"""Tests for tf_reweight.core.walker and pruning of the graphs users really have."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import walker

L = keras.layers
RNG = np.random.default_rng(0)


@keras.saving.register_keras_serializable(package="tf_reweight_tests")
class Block(L.Layer):
    """A user's custom layer holding two Dense sublayers and a LayerNorm."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.up = L.Dense(units * 2, activation="relu")
        self.down = L.Dense(units)
        self.norm = L.LayerNormalization()

    def build(self, input_shape):
        self.up.build(input_shape)
        self.down.build((*input_shape[:-1], self.units * 2))
        self.norm.build((*input_shape[:-1], self.units))

    def call(self, x):
        return self.norm(self.down(self.up(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(16, activation="relu")
        self.out = L.Dense(4)

    def call(self, x):
        return self.out(self.hidden(x))


def _ops_net():
    """keras.ops nodes as in MobileNetV3's hard-swish, plus a nested Sequential."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    inner = keras.Sequential(
        [keras.Input((8, 8, 8)), L.Conv2D(8, 1, name="inner_conv"), L.ReLU()],
        name="inner",
    )
    x = inner(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def _assert_same_outputs(a, b, x):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(a(x)), keras.ops.convert_to_numpy(b(x)), atol=1e-5
    )


def test_the_one_private_keras_access_is_pinned():
    model = _ops_net()
    assert walker.sublayers(model) == model.layers
    block = Block()
    block.build((None, 8))
    assert walker.sublayers(block) == [block.up, block.down, block.norm]


def _shared_net():
    """A nested Functional model called three times, a shared Dense, an op node."""
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.ReLU(name="inner_relu")(inner_in), name="inner")
    inputs = keras.Input((4,), name="x")
    y = inner(inner(inputs))
    dense = L.Dense(4, name="dense")
    return keras.Model(inputs, [y, inner(dense(inputs)), dense(y) + 3.0])


def test_graph_gives_every_call_and_who_feeds_it():
    model = _shared_net()
    config = model.get_config()
    g = walker.graph(model)
    names = [
        call.op.name if isinstance(call.op, L.Layer) else type(call.op).__name__
        for call in g.calls
    ]
    assert sorted(names) == ["Add", "dense", "dense", "inner", "inner", "inner", "x"]
    position = {id(call): i for i, call in enumerate(g.calls)}
    for call in g.calls:
        for tensor in call.inputs:
            assert position[id(g.producer(tensor))] < position[id(call)]
        assert all(t.shape == (None, 4) for t in (*call.inputs, *call.outputs))
    assert [g.producer(t).op.name for t in g.outputs[:2]] == ["inner", "inner"]
    # Each output comes from the right call: the second from inner(dense(x)).
    second = g.producer(g.outputs[1])
    assert [g.producer(t).op.name for t in second.inputs] == ["dense"]
    first = g.producer(g.outputs[0])
    assert [g.producer(t).op.name for t in first.inputs] == ["inner"]
    add = g.producer(g.outputs[2])
    assert add.constants == [3.0]
    x = RNG.normal(size=(2, 4)).astype("float32")
    hidden = keras.ops.convert_to_numpy(add([x]))
    np.testing.assert_allclose(hidden, x + 3.0, atol=1e-6)
    assert model.get_config() == config  # nothing was called or added


def test_graph_of_a_sequential_model_and_a_clear_error_otherwise():
    model = keras.Sequential(
        [keras.Input((3,)), L.Dense(2, name="a"), L.ReLU(name="b")]
    )
    g = walker.graph(model)
    assert [call.op.name for call in g.calls[1:]] == ["a", "b"]
    assert isinstance(g.calls[0].op, L.InputLayer)
    assert g.producer(g.outputs[0]).op is model.get_layer("b")
    with pytest.raises(ValueError, match="Sequential or Functional"):
        walker.graph(Subclassed())


def test_feeders_open_nested_models():
    model = _ops_net()
    feeding = {layer.name: source.name for layer, source in walker.feeders(model)}
    assert feeding["inner_conv"].startswith("input_layer")
    assert feeding["head"] == model.layers[-2].name
    assert "inner" not in feeding


def test_a_subclassed_model_is_walked_through_the_graph_models_it_holds():
    class Holder(keras.Model):  # like tfr.AdversarialModel
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, x):
            return self.inner(x)

    model = _ops_net()
    holder = Holder(model)
    assert walker.graph_models(holder) == [model]
    assert walker.graph_models(model) == [model]
    assert walker.graph_models(keras.layers.Dense(2)) == []
    assert list(walker.feeders(holder)) == list(walker.feeders(model))


def test_ops_nodes_and_nested_models_are_pruned_not_skipped(tmp_path):
    model = _ops_net()
    x = RNG.normal(size=(4, 8, 8, 3)).astype("float32")
    pruned = tfr.apply(model, "unstructured", 0.75)
    _assert_same_outputs(model, pruned, x)
    wrapped = {w.name for w in tfr.pruning.wrappers(pruned)}
    assert wrapped == {"stem", "inner_conv", "head"}
    tfr.hard_prune(pruned)
    rep = tfr.report(pruned)
    assert {r.layer for r in rep.pruned_rows} == wrapped
    assert rep.sparsity == pytest.approx(0.75, abs=0.01)
    plain = tfr.strip(pruned)
    assert not tfr.pruning.wrappers(plain)
    _assert_same_outputs(pruned, plain, x)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    _assert_same_outputs(pruned, loaded, x)


def test_custom_layer_with_sublayers_is_pruned_inside(tmp_path):
    inputs = keras.Input((8,))
    outputs = L.Dense(3, name="out")(Block(8, name="block")(inputs))
    model = keras.Model(inputs, outputs)
    x = RNG.normal(size=(16, 8)).astype("float32")
    pruned = tfr.apply(model, "unstructured", 0.5, penalty=1e-3)
    _assert_same_outputs(model, pruned, x)
    block = pruned.get_layer("block")
    assert isinstance(block, tfr.PruningWrapper)
    assert [pk.name for pk in block.pruned_kernels] == [
        f"{block.layer.up.name}/kernel",
        f"{block.layer.down.name}/kernel",
    ]
    # The penalty of the sublayers' kernels is part of the model's losses.
    assert float(keras.ops.convert_to_numpy(sum(pruned.losses))) > 0.0
    tfr.hard_prune(pruned)
    rows = {r.kernel: r for r in tfr.report(pruned).pruned_rows if r.layer == "block"}
    assert set(rows) == {pk.name for pk in block.pruned_kernels}
    assert all(0.0 < r.sparsity < 1.0 for r in rows.values())
    assert tfr.report(pruned).sparsity == pytest.approx(0.5, abs=0.01)
    path = tmp_path / "block.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    _assert_same_outputs(pruned, loaded, x)
    for a, b in zip(
        block.pruned_kernels,
        loaded.get_layer("block").pruned_kernels,
        strict=True,
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a.mask), keras.ops.convert_to_numpy(b.mask)
        )
    plain = tfr.strip(pruned)
    assert type(plain.get_layer("block")) is Block
    _assert_same_outputs(pruned, plain, x)


def test_shared_layers_and_several_inputs_and_outputs():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(8, name="shared")
    ha, hb = shared(a), shared(b)
    merged = L.Concatenate()([ha, hb])
    model = keras.Model(
        [a, b], [L.Dense(2, name="y1")(merged), L.Dense(3, name="y2")(hb)]
    )
    x = [RNG.normal(size=(5, 6)).astype("float32") for _ in range(2)]
    pruned = tfr.apply(model, "unstructured", 0.5)
    names = [w.name for w in tfr.pruning.wrappers(pruned)]
    assert sorted(names) == ["shared", "y1", "y2"]
    for got, want in zip(pruned(x), model(x), strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), atol=1e-5
        )


def test_subclassed_model_is_refused_with_the_way_around_it():
    model = Subclassed()
    model(np.zeros((1, 8), "float32"))
    with pytest.raises(ValueError, match="call it inside a Functional model"):
        tfr.apply(model, target=0.5)
    inputs = keras.Input((8,))
    functional = keras.Model(inputs, model(inputs))
    pruned = tfr.apply(functional, "unstructured", 0.5)
    x = RNG.normal(size=(4, 8)).astype("float32")
    _assert_same_outputs(functional, pruned, x)
    (wrapper,) = tfr.pruning.wrappers(pruned)
    assert len(wrapper.pruned_kernels) == 2
    tfr.hard_prune(pruned)
    assert tfr.report(pruned).sparsity == pytest.approx(0.5, abs=0.01)


def _stem_net():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="stem")(inputs)
    x = L.Conv2D(8, 3, name="body")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def test_unfit_kernels_stay_dense_with_one_warning_unless_strict():
    model = _stem_net()
    with pytest.warns(UserWarning, match=r"stem/kernel \(3, 3, 3, 8\)") as record:
        pruned = tfr.apply(model, "2:4")
    assert sum("does not fit" in str(w.message) for w in record) == 1
    rows = {r.layer: r.structure for r in tfr.report(pruned).rows}
    assert rows == {"stem": "dense", "body": "2:4", "head": "2:4"}
    with pytest.raises(ValueError, match="multiple of 4"):
        tfr.apply(model, "2:4", strict=True)


def test_filter_pruning_keeps_the_output_units_unless_named():
    model = _stem_net()
    with pytest.warns(UserWarning, match=r"\['head'\] produce the model's outputs"):
        pruned = tfr.apply(model, "filter", 0.5)
    assert "head" not in {w.name for w in tfr.pruning.wrappers(pruned)}
    named = tfr.apply(model, "filter", 0.5, layers=["stem", "body", "head"])
    assert "head" in {w.name for w in tfr.pruning.wrappers(named)}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"structure": {"typo": "filter"}, "target": 0.5}, "not prunable"),
        ({"layers": "stem", "target": 0.5}, "list or dict of strings"),
        ({"target": {"stem": 0.5, "nope": 0.5}}, "not prunable"),
    ],
)
def test_layer_names_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfr.apply(_stem_net(), **kwargs)


def test_batchnorm_after_a_pruned_filter_matches_training_mode():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(4, 1, name="mix")(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    bn = model.get_layer("bn")
    bn.set_weights(
        [
            RNG.uniform(0.5, 2.0, 8),
            RNG.normal(size=8),
            RNG.normal(size=8),  # stale moving statistics
            RNG.uniform(0.5, 2.0, 8),
        ]
    )
    pruned = tfr.apply(model, "filter", 0.5, layers=["conv"])
    tfr.hard_prune(pruned)
    x = RNG.normal(size=(16, 6, 6, 3)).astype("float32")
    conv = pruned.get_layer("conv")
    dead = ~np.any(keras.ops.convert_to_numpy(conv.pruned_kernels[0].mask), (0, 1, 2))
    assert dead.sum() == 4
    probe = keras.Model(pruned.inputs, pruned.get_layer("bn").output)
    train = keras.ops.convert_to_numpy(probe(x, training=True))
    infer = keras.ops.convert_to_numpy(probe(x, training=False))
    np.testing.assert_allclose(infer[..., dead], train[..., dead], atol=1e-4)
    beta = keras.ops.convert_to_numpy(pruned.get_layer("bn").beta)
    np.testing.assert_allclose(
        infer[..., dead], np.broadcast_to(beta[dead], infer[..., dead].shape), atol=1e-4
    )


class Unclonable(L.Layer):
    """A custom layer whose sublayer is built only when it is called."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(units)

    def call(self, x):
        return self.dense(x)


def test_a_layer_that_builds_lazily_gets_a_clear_error():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(Unclonable(3, name="odd")(inputs)))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(
        ValueError, match=r"Layer 'odd' \(Unclonable\) does not create its weights"
    ):
        tfr.apply(model, "unstructured", 0.5)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_attention_kernels_are_pruned_inside_the_layer(tmp_path):
    inputs = keras.Input((6, 16))
    attention = L.MultiHeadAttention(2, 8, name="mha")
    x = L.LayerNormalization()(inputs + attention(inputs, inputs))
    model = keras.Model(inputs, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(x)))
    x = RNG.normal(size=(3, 6, 16)).astype("float32")
    pruned = tfr.apply(model, "filter", 0.5)
    _assert_same_outputs(model, pruned, x)
    names = [pk.name for pk in pruned.get_layer("mha").pruned_kernels]
    assert names == [
        f"{n}/kernel" for n in ("query", "key", "value", "attention_output")
    ]
    tfr.hard_prune(pruned)
    path = tmp_path / "mha.keras"
    pruned.save(path)
    _assert_same_outputs(pruned, keras.saving.load_model(path), x)
    _assert_same_outputs(pruned, tfr.strip(pruned), x)


class BadConfig(L.Layer):
    """A custom layer whose config names an argument its constructor lacks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(2)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "bogus": 1}


def test_a_layer_that_cannot_be_rebuilt_from_its_config_gets_a_clear_error():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, BadConfig(name="bad")(inputs))
    with pytest.raises(ValueError, match=r"'bad' \(BadConfig\) cannot be rebuilt"):
        tfr.apply(model, "unstructured", 0.5)


def test_a_kernel_without_a_canonical_view_is_named_in_a_warning():
    inputs = keras.Input((4, 6))
    grouped = L.EinsumDense("abc,bcd->abd", output_shape=(4, 8), name="grouped")
    model = keras.Model(inputs, L.Dense(3, name="head")(grouped(inputs)))
    with pytest.warns(UserWarning, match="grouped"):
        pruned = tfr.apply(model, "unstructured", 0.5)
    assert [w.name for w in tfr.pruning.wrappers(pruned)] == ["head"]
