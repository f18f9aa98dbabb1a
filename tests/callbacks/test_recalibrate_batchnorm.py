"""Tests for `tf_reweight.callbacks.recalibrate_batchnorm`."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr


def _net(batchnorm: bool = True) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(momentum=0.99, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(n, 6, 6, 2)) * 3.0 + 1.5).astype("float32")
    return x, rng.integers(0, 3, n)


# More samples than inputs: all of them.
@pytest.mark.parametrize("samples", [None, 10_000])
def test_moving_statistics_equal_the_data_after_fit(samples):
    keras.utils.set_random_seed(0)
    x, y = _data()
    pruned = tfr.apply(_net(), "filter", 0.5, penalty=1e-3)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[
            tfr.HardPrune(1),
            tfr.RecalibrateBatchNorm(x, samples, batch_size=16),
        ],
    )
    bn = pruned.get_layer("bn")
    conv = pruned.get_layer("conv")
    kernel = keras.ops.convert_to_numpy(conv.layer.kernel) * keras.ops.convert_to_numpy(
        conv.pruned_kernels[0].mask
    )
    # The BatchNorm input, recomputed here: a "valid" 3x3 conv without bias.
    features = keras.ops.convert_to_numpy(
        keras.ops.conv(x, kernel, strides=1, padding="valid")
    ).reshape(-1, 4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), features.mean(0), atol=1e-4
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        features.var(0),
        rtol=1e-3,
        atol=1e-4,
    )


def test_a_model_without_batchnorm_is_refused_before_training():
    x, y = _data(8)
    model = _net(batchnorm=False)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="no BatchNormalization layer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tfr.RecalibrateBatchNorm(x)])
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": np.zeros((0, 2))}, "non-empty numeric array"),
        ({"x": np.array(["a"])}, "non-empty numeric array"),
        ({"x": np.zeros((4, 2)), "samples": 0}, "samples"),
        ({"x": np.zeros((4, 2)), "batch_size": 1.5}, "batch_size"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfr.RecalibrateBatchNorm(**kwargs)


def test_auto_recalibrates_only_models_with_batchnorm():
    from tf_reweight.pruning import batchnorm

    x = np.zeros((20, 6, 6, 2), "float32")
    assert batchnorm.check_recalibrate("auto", _net(), x) == 20
    assert batchnorm.check_recalibrate("auto", _net(batchnorm=False), x) is None
    big = np.zeros((batchnorm.AUTO_SAMPLES + 5, 1), "float32")
    assert batchnorm.check_recalibrate("auto", _net(), big) == batchnorm.AUTO_SAMPLES
    with pytest.raises(ValueError, match="'auto'"):
        batchnorm.check_recalibrate("always", _net(), x)
