"""Tests for tflite_export.shrink: zero filters removed, outputs unchanged."""

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
    weights[0][..., filters] = 0.0
    if layer.use_bias:
        weights[1][filters] = 0.0
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
    "layer",
    [L.LSTM(2), L.Lambda(lambda t: t * 2.0)],
    ids=["lstm", "lambda"],
)
def test_shrink_rejects_unsupported_layers(layer):
    model = keras.Sequential([keras.Input((4, 3)), L.Dense(3), layer])
    with pytest.raises(ValueError, match="does not support layer .* Supported"):
        shrink(model)


def test_shrink_rejects_unbuilt_model():
    with pytest.raises(ValueError, match="built"):
        shrink(keras.Sequential([L.Dense(2)]))
