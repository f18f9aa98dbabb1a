"""Tests for tflite_export.shrink: zero filters removed, outputs unchanged."""

import os

import keras
import numpy as np
import pytest

from tflite_export import count_macs, shrink, shrink_report

L = keras.layers


def _randomize_batch_norms(model, seed=0):
    """Non-trivial BN statistics, so a zero filter becomes a non-zero constant."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n),
                    rng.normal(size=n),
                    rng.normal(size=n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )


def _zero_filters(layer, filters):
    weights = layer.get_weights()
    weights[int(isinstance(layer, L.SeparableConv2D))][..., filters] = 0.0
    if layer.use_bias:
        weights[-1][filters] = 0.0
    layer.set_weights(weights)


def _assert_same_outputs(original, shrunk, shape, seed=1):
    x = np.random.default_rng(seed).normal(size=(4, *shape)).astype("float32")
    expected = original.predict(x, verbose=0)
    # Absorbed biases sum in another float32 order: error grows with |output|.
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5
    )


def test_conv_net_drops_zero_filters_and_folds_constants():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(8, 3, name="c1"),
            L.BatchNormalization(),
            L.Conv2D(6, 3, use_bias=False, name="c2"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(5, name="d1"),
            L.Dense(3, activation="softmax"),
        ]
    )
    _randomize_batch_norms(model)
    _zero_filters(model.get_layer("c1"), [1, 4, 5])
    _zero_filters(model.get_layer("c2"), [0, 3])
    _zero_filters(model.get_layer("d1"), [2])

    shrunk = shrink(model)

    _assert_same_outputs(model, shrunk, (10, 10, 3))
    assert shrunk.get_layer("c1").kernel.shape == (3, 3, 3, 5)
    # c1's zero filters are non-zero constants after BN: folded into a new bias.
    assert shrunk.get_layer("c2").kernel.shape == (3, 3, 5, 4)
    assert shrunk.get_layer("c2").use_bias
    assert shrunk.get_layer("d1").kernel.shape == (3 * 3 * 4, 4)
    report = shrink_report(model, shrunk)
    assert report.params_after == shrunk.count_params() < model.count_params()
    macs_after = 8 * 8 * 5 * 27 + 6 * 6 * 4 * 45 + 36 * 4 + 4 * 3
    assert (report.macs_before, report.macs_after) == (
        8 * 8 * 8 * 27 + 6 * 6 * 6 * 72 + 54 * 5 + 5 * 3,
        macs_after,
    )


def test_residual_add_removes_only_channels_zero_in_every_branch():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    a = L.BatchNormalization()(L.Conv2D(6, 1, padding="same", name="a")(inputs))
    b = L.Conv2D(6, 3, padding="same", name="b")(inputs)
    b = L.ReLU()(L.BatchNormalization()(b))
    x = L.ReLU()(L.BatchNormalization()(L.Add()([a, b])))
    x = L.DepthwiseConv2D(1, name="dw")(x)
    x = L.Conv2D(5, 3, name="c")(x)
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    _randomize_batch_norms(model)
    _zero_filters(model.get_layer("a"), [0, 2, 3])
    _zero_filters(model.get_layer("b"), [2, 3, 5])

    shrunk = shrink(model)

    _assert_same_outputs(model, shrunk, (8, 8, 4))
    assert shrunk.get_layer("a").kernel.shape[-1] == 4
    assert shrunk.get_layer("b").kernel.shape[-1] == 4
    assert shrunk.get_layer("dw").kernel.shape == (1, 1, 4, 1)
    assert shrunk.get_layer("c").kernel.shape == (3, 3, 4, 5)


@pytest.mark.parametrize("batch_norm, kept", [(True, 4), (False, 3)])
def test_same_padding_reader_keeps_nonzero_constant_channels(batch_norm, kept):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((6, 6, 2)), L.Conv2D(4, 1, name="c1")]
    layers += [L.BatchNormalization()] if batch_norm else []
    model = keras.Sequential([*layers, L.Conv2D(2, 3, padding="same")])
    _randomize_batch_norms(model)
    _zero_filters(model.get_layer("c1"), [1])

    shrunk = shrink(model)

    _assert_same_outputs(model, shrunk, (6, 6, 2))
    assert shrunk.get_layer("c1").kernel.shape[-1] == kept


def test_count_macs_counts_depthwise_per_output_element():
    model = keras.Sequential(
        [keras.Input((5, 5, 3)), L.DepthwiseConv2D(3), L.Flatten(), L.Dense(2)]
    )
    assert count_macs(model) == 3 * 3 * 3 * 9 + 27 * 2


@pytest.mark.parametrize(
    "layer, name",
    [(L.LSTM(2, name="lstm"), "LSTM"), (L.Lambda(lambda t: t * 2.0), "Lambda")],
    ids=["lstm", "lambda"],
)
def test_unfollowed_layer_fed_by_zero_filters_is_refused_by_name(layer, name):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3)), L.Dense(3, name="d"), layer])
    _zero_filters(model.get_layer("d"), [1])
    with pytest.raises(
        ValueError,
        match=f"cannot follow layer '{layer.name}' of type {name} .*do not prune them",
    ):
        shrink(model)


def test_unfollowed_layer_without_zero_filters_is_copied():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3)), L.Dense(3), L.LSTM(2)])
    _assert_same_outputs(model, shrink(model), (4, 3))


def test_shrink_rejects_unbuilt_model():
    with pytest.raises(ValueError, match="built"):
        shrink(keras.Sequential([L.Dense(2)]))


def _shrink_and_compare(model, shape, zero, seed=0):
    """Zeroes filters, shrinks, asserts equal outputs and fewer MACs."""
    _randomize_batch_norms(model, seed)
    for name, filters in zero.items():
        _zero_filters(model.get_layer(name), filters)
    shrunk = shrink(model)
    _assert_same_outputs(model, shrunk, shape)
    assert count_macs(shrunk) < count_macs(model)
    return shrunk


def _in_channels(model, name):
    layer = model.get_layer(name)
    kernel = getattr(layer, "pointwise_kernel", None)
    return (layer.depthwise_kernel if kernel is not None else layer.kernel).shape[-2]


def test_zero_padding_passes_only_zero_constants():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(5, 1, name="c1")(inputs)
    x = L.ZeroPadding2D(1)(x)
    x = L.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(L.Conv2D(4, 1, name="c2")(x))
    outputs = L.Conv2D(2, 2, name="c3")(x)
    model = keras.Model(inputs, outputs)
    c1 = model.get_layer("c1")
    _zero_filters(c1, [1, 2])
    kernel, bias = c1.get_weights()
    c1.set_weights([kernel, np.where(np.arange(5) == 2, 0.5, bias)])

    shrunk = _shrink_and_compare(model, (6, 6, 3), {"c2": [3]})

    # Filter 1 is 0 and crosses the pad; filter 2 is 0.5 and would not.
    assert shrunk.get_layer("c1").kernel.shape[-1] == 4
    assert shrunk.get_layer("dw").kernel.shape[-2] == 4
    assert shrunk.get_layer("c2").kernel.shape[-1] == 3


def test_rescaling_and_normalization_follow_channels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 5, 3))
    x = L.Rescaling(1 / 255.0)(inputs)
    x = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0])(x)
    x = L.BatchNormalization()(L.Conv2D(4, 1, name="c1")(x))
    x = L.Rescaling([1.0, 2.0, 3.0, 4.0], offset=0.5, name="scale")(x)
    norm = L.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, (16, 5, 5, 4)))
    outputs = L.Conv2D(2, 3, name="c2")(norm(x))
    model = keras.Model(inputs, outputs)

    shrunk = _shrink_and_compare(model, (5, 5, 3), {"c1": [0, 2]})

    assert _in_channels(shrunk, "c2") == 2
    assert shrunk.get_layer("scale").scale == [2.0, 4.0]


def test_reshape_keeping_the_channel_axis_is_followed():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, name="c1")(inputs)))
    gate = L.Reshape((1, 1, 6))(L.GlobalAveragePooling2D()(x))
    gate = L.Conv2D(6, 1, name="c2")(gate)
    x = L.Reshape((4, 6))(L.Add()([x, gate]))
    outputs = L.Dense(2, name="d")(L.Flatten()(x))
    model = keras.Model(inputs, outputs)

    shrunk = _shrink_and_compare(model, (4, 4, 3), {"c1": [1, 4], "c2": [1, 4, 5]})

    assert shrunk.get_layer("c2").kernel.shape == (1, 1, 4, 4)
    assert shrunk.get_layer("d").kernel.shape == (4 * 4, 2)


def test_concatenate_offsets_channels_of_each_input():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 5, 3))
    a = L.Conv2D(4, 1, name="a")(inputs)
    b = L.Conv2D(3, 1, name="b")(L.ReLU()(L.BatchNormalization()(a)))
    x = L.ReLU()(L.BatchNormalization()(L.Concatenate()([a, b])))
    x = L.AveragePooling2D(2, padding="same")(L.Conv2D(5, 1, name="c")(x))
    outputs = L.Dense(2)(L.GlobalMaxPooling2D()(x))
    model = keras.Model(inputs, outputs)

    shrunk = _shrink_and_compare(model, (5, 5, 3), {"a": [1], "b": [0, 2]})

    assert _in_channels(shrunk, "b") == 3
    assert _in_channels(shrunk, "c") == 3 + 1


@pytest.mark.parametrize(
    "keepdims_pool", [L.GlobalAveragePooling2D, L.GlobalMaxPooling2D]
)
def test_squeeze_excite_multiply_removes_channels_zero_on_either_side(keepdims_pool):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = L.Activation("swish")(L.Conv2D(6, 3, padding="same", name="c1")(inputs))
    gate = keepdims_pool(keepdims=True)(x)
    gate = L.Conv2D(2, 1, activation="relu", name="reduce")(gate)
    gate = L.Conv2D(6, 1, activation="sigmoid", name="expand")(gate)
    x = L.Multiply()([x, gate])
    outputs = L.Conv2D(4, 3, padding="same", name="project")(x)
    model = keras.Model(inputs, outputs)

    # Channel 0 is 0 (swish(0)) times an unknown gate, 1 is known on both sides,
    # 5 is unknown times a known gate: 0 and 1 go, 5 stays.
    shrunk = _shrink_and_compare(model, (4, 4, 3), {"c1": [0, 1], "expand": [1, 5]})

    assert shrunk.get_layer("c1").kernel.shape[-1] == 4
    assert shrunk.get_layer("expand").kernel.shape[-1] == 4
    assert _in_channels(shrunk, "reduce") == 4
    assert _in_channels(shrunk, "project") == 4


def test_activations_and_ops_nodes_of_hard_swish_are_followed():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = L.BatchNormalization()(L.Conv2D(6, 1, name="c1")(inputs))
    x = L.ReLU(max_value=6.0)(x)
    x = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    x = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(5, 1, name="c2")(x)))
    x = L.Activation("hard_swish")(x)
    outputs = L.Conv2D(2, 1, name="c3")(x)
    model = keras.Model(inputs, outputs)

    shrunk = _shrink_and_compare(model, (4, 4, 3), {"c1": [0, 3], "c2": [4]})

    assert _in_channels(shrunk, "c2") == 4
    assert _in_channels(shrunk, "c3") == 4


def test_ops_node_with_a_per_channel_constant_is_refused_by_name():
    inputs = keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1, name="c1")(inputs)
    outputs = L.Conv2D(2, 1)(x * np.arange(1.0, 4.0, dtype="float32"))
    model = keras.Model(inputs, outputs)
    _zero_filters(model.get_layer("c1"), [0])
    with pytest.raises(ValueError, match="of type Multiply .*non-scalar"):
        shrink(model)


def test_conv1d_chain():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            L.Conv1D(6, 3, name="c1"),
            L.BatchNormalization(),
            L.ZeroPadding1D(1),
            L.Conv1D(4, 3, strides=2, name="c2"),
            L.ReLU(),
            L.Conv1D(4, 3, padding="same", name="c3"),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )
    # BN's constant stops at the pad; ReLU(-|b|) = 0 crosses the "same" border.
    shrunk = _shrink_and_compare(model, (12, 3), {"c1": [0, 4], "c2": [1]})
    assert shrunk.get_layer("c1").kernel.shape[-1] == 6
    assert shrunk.get_layer("c3").kernel.shape[-2] == 3


def test_separable_and_depthwise_chains():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((9, 9, 3)),
            L.Conv2D(6, 1, name="c1"),
            L.BatchNormalization(),
            L.DepthwiseConv2D(3, name="dw1"),
            L.BatchNormalization(),
            L.SeparableConv2D(5, 3, name="sep1"),
            L.BatchNormalization(),
            L.ReLU(),
            L.DepthwiseConv2D(3, padding="same", name="dw2"),
            L.SeparableConv2D(4, 3, padding="same", name="sep2"),
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ]
    )
    shrunk = _shrink_and_compare(model, (9, 9, 3), {"c1": [2, 5], "sep1": [0, 3]})

    assert shrunk.get_layer("dw1").kernel.shape == (3, 3, 4, 1)
    assert shrunk.get_layer("sep1").depthwise_kernel.shape == (3, 3, 4, 1)
    # sep1's zero filters cross dw2's "same" border only where ReLU makes them 0.
    gamma, beta, mean, var = model.layers[5].get_weights()
    constant = beta - gamma * mean / np.sqrt(var + model.layers[5].epsilon)
    kept = 5 - int(np.sum(constant[[0, 3]] <= 0))
    assert shrunk.get_layer("sep1").pointwise_kernel.shape[-1] == kept
    assert shrunk.get_layer("dw2").kernel.shape[-2] == kept
    assert _in_channels(shrunk, "sep2") == kept


_STOCK = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(32, 32, 3), weights=None, classifier_activation=None
    ),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classifier_activation=None
    ),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(
        input_shape=(32, 32, 3), weights=None, classifier_activation=None
    ),
    "ResNet50V2": lambda: keras.applications.ResNet50V2(
        input_shape=(32, 32, 3), weights=None, classifier_activation=None
    ),
    "DenseNet121": lambda: keras.applications.DenseNet121(
        input_shape=(32, 32, 3), weights=None, classifier_activation=None
    ),
}


_SLOW = pytest.mark.skipif(
    not os.environ.get("TF_REWEIGHT_SLOW_TESTS"),
    reason="builds a large stock model; set TF_REWEIGHT_SLOW_TESTS=1",
)


@pytest.mark.parametrize(
    "name",
    [n if n == "MobileNetV3Small" else pytest.param(n, marks=_SLOW) for n in _STOCK],
)
def test_stock_application_shrinks_to_the_same_outputs(name):
    keras.utils.set_random_seed(0)
    model = _STOCK[name]()
    _randomize_batch_norms(model)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer) is L.Conv2D:  # a filter prune of every Conv2D
            n = layer.filters
            _zero_filters(layer, rng.choice(n, n // 2, replace=False))

    shrunk = shrink(model)

    x = rng.uniform(0.0, 255.0, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    scale = float(np.abs(expected).max())
    got = shrunk.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)
    assert count_macs(shrunk) < 0.9 * count_macs(model)


def test_zero_filters_of_a_layer_it_cannot_follow_are_refused_by_name():
    inputs = keras.Input((4, 4, 4))
    outputs = L.Conv2D(4, 1)(L.Conv2D(4, 3, groups=4, name="grouped")(inputs))
    model = keras.Model(inputs, outputs)
    _zero_filters(model.get_layer("grouped"), [1])
    with pytest.raises(ValueError, match="'grouped' of type Conv2D .*groups=1.*zero"):
        shrink(model)


def test_graph_gives_each_call_in_order_and_reruns_it():
    """`shrink_graph.graph` is the walker's graph: calls in order, rerunnable."""
    from tflite_export.shrink_graph import graph

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="fc")(inputs)
    outputs = keras.ops.add(hidden, 2.0)
    model = keras.Model(inputs, outputs)
    nodes = graph(model)
    assert [getattr(n.op, "name", None) for n in nodes][-2:-1] == ["fc"]
    assert nodes[-1].constants == [2.0]
    x = np.ones((2, 4), "float32")
    fc_out = nodes[-2]([x])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(nodes[-1]([fc_out])),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-6,
    )


def test_a_filter_pruned_residual_stream_leaves_the_shrunk_model():
    import tf_reweight as tfr

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    stem = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, name="stem")(x)))
    # 1x1 readers: a constant channel folds into their bias (see above for
    # "same" padding, which keeps the non-zero constants).
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 1)(stem)))
    stream = L.Add()([stem, L.BatchNormalization()(L.Conv2D(16, 1, name="b")(h))])
    h = L.Conv2D(24, 1, name="head")(L.ReLU()(stream))
    model = keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    _randomize_batch_norms(model)
    pruned = tfr.apply(model, "filter", 0.7)
    tfr.hard_prune(pruned)
    stripped = tfr.strip(pruned)
    kept = int(
        np.count_nonzero(np.abs(stripped.get_layer("stem").kernel).sum((0, 1, 2)))
    )
    assert kept < 16

    shrunk = shrink(stripped)

    _assert_same_outputs(stripped, shrunk, (8, 8, 3))
    # The channels the stream lost leave every layer that writes or reads it.
    assert shrunk.get_layer("stem").kernel.shape[-1] == kept
    assert shrunk.get_layer("b").kernel.shape[-1] == kept
    assert shrunk.get_layer("head").kernel.shape[-2] == kept


def test_convnext_layer_scale_is_followed():
    # Keras does not export ConvNeXt's LayerScale; this pins where it lives.
    from keras.src.applications.convnext import LayerScale

    from tf_reweight.core import dependency

    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 1, name="a")(x)
    scaled = LayerScale(0.5, 8, name="scale")(a)
    b = L.Conv2D(4, 1, name="b")(scaled)
    model = keras.Model(x, b)
    layer_scale = model.get_layer("scale")
    assert dependency.is_layer_scale(layer_scale)
    layer_scale.gamma.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    found = dependency.dependencies(model, model.layers).couplings
    assert [(c.producers[0].name, c.consumer.name) for c in found] == [("a", "b")]

    shrunk = _shrink_and_compare(model, (6, 6, 3), {"a": [1, 4, 6]})

    assert shrunk.get_layer("a").kernel.shape[-1] == 5
    np.testing.assert_allclose(
        shrunk.get_layer("scale").gamma.numpy(),
        np.linspace(0.5, 2.0, 8)[[0, 2, 3, 5, 7]],
    )


def test_inception_resnet_scaled_add_is_a_merge():
    # Keras does not export InceptionResNetV2's CustomScaleLayer
    # (x + scale * y); this pins where it lives.
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    from tf_reweight.core import dependency

    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    stream = L.Conv2D(8, 1, name="stem")(x)
    up = L.Conv2D(8, 1, name="up")(L.Conv2D(4, 3, padding="same", name="mix")(stream))
    merged = CustomScaleLayer(0.17, name="scaled")([stream, up])
    model = keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(merged)))
    assert dependency.is_scaled_add(model.get_layer("scaled"))
    found = dependency.dependencies(model, model.layers)
    assert [sorted(p.name for p in group) for group in found.groups] == [["stem", "up"]]
    # A channel leaves the stream when both of its writers lose it (the
    # biases are folded into the head's), not when only one does.
    shrunk = _shrink_and_compare(model, (6, 6, 3), {"stem": [1, 4, 6], "up": [1, 4]})
    assert shrunk.get_layer("stem").kernel.shape[-1] == 6
    assert shrunk.get_layer("up").kernel.shape[-1] == 6
    assert shrunk.get_layer("head").kernel.shape[-2] == 6


def test_nested_models_are_opened():
    """ConvNeXt's downsampling blocks are nested Sequentials: shrink enters them."""
    keras.utils.set_random_seed(0)
    block = keras.Sequential(
        [L.BatchNormalization(name="bn"), L.ReLU(), L.Conv2D(6, 3, name="inner")],
        name="block",
    )
    inputs = keras.Input((8, 8, 3))
    x = block(L.Conv2D(8, 3, name="stem")(inputs))
    model = keras.Model(inputs, L.Dense(4, name="head")(L.Flatten()(x)))
    _randomize_batch_norms(block)
    _zero_filters(model.get_layer("stem"), [0, 3, 5])
    _zero_filters(block.get_layer("inner"), [1])
    layers = [id(layer) for layer in block.layers]
    shrunk = shrink(model)
    _assert_same_outputs(model, shrunk, (8, 8, 3))
    assert _in_channels(shrunk, "inner") == 5 and shrunk.get_layer("inner").filters == 5
    assert shrunk.get_layer("bn").gamma.shape == (5,)
    assert not any(isinstance(layer, keras.Model) for layer in shrunk.layers)
    assert count_macs(shrunk) < count_macs(model)
    # The user's model is untouched: same layers, each called once.
    assert [id(layer) for layer in block.layers] == layers
    assert all(len(layer._inbound_nodes) == 1 for layer in block.layers)


def test_nested_models_with_clashing_layer_names_are_refused():
    inner = keras.Sequential([L.Conv2D(4, 1, name="conv")], name="inner")
    inputs = keras.Input((4, 4, 3))
    outputs = inner(L.Conv2D(4, 1, name="conv")(inputs))
    model = keras.Model(inputs, outputs)
    _zero_filters(inner.get_layer("conv"), [1])
    with pytest.raises(ValueError, match="layer 'conv' twice"):
        shrink(model)


def test_a_nested_model_called_twice_is_refused_by_name():
    inner = keras.Sequential([L.Conv2D(4, 1, name="inner_conv")], name="inner")
    inputs = keras.Input((4, 4, 4))
    model = keras.Model(inputs, inner(inner(inputs)))
    _zero_filters(inner.get_layer("inner_conv"), [1])
    with pytest.raises(ValueError, match="layer 'inner_conv' twice"):
        shrink(model)
