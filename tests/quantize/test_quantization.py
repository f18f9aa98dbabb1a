"""Tests for `tf_reweight.quantize.quantization` against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_reweight.quantize import quantization as q


def numpy_quantize(w, bits, axis):
    levels = 2 ** (bits - 1) - 1
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    scale = np.abs(w).max(axis=other, keepdims=True) / levels
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -levels, levels) * scale


@pytest.fixture
def kernel():
    """A conv kernel (3, 3, 4, 6) with pruned weights and one all-zero channel."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    w[rng.uniform(size=w.shape) < 0.5] = 0.0
    w[..., 2] = 0.0
    return w


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("axis", [-1, 2])
def test_quantize_matches_numpy(kernel, bits, axis):
    got = keras.ops.convert_to_numpy(q.quantize(kernel, bits, axis=axis))
    np.testing.assert_allclose(got, numpy_quantize(kernel, bits, axis), rtol=1e-6)
    assert not np.isnan(got).any()
    assert np.all(got[kernel == 0] == 0) and np.all(got[..., 2] == 0)
    channels = np.moveaxis(got, axis, 0).reshape(got.shape[axis], -1)
    assert max(len(np.unique(c)) for c in channels) <= 2**bits - 1
    # Each channel's largest weight is kept: it defines the channel's scale.
    original = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    np.testing.assert_allclose(
        np.abs(channels).max(axis=1), np.abs(original).max(axis=1), rtol=1e-6
    )


def test_quantize_per_tensor():
    w = np.array([[0.1, -1.0], [0.5, 0.3]], "float32")
    got = keras.ops.convert_to_numpy(q.quantize(w, 2, axis=None))
    # One scale, 1.0, for the whole tensor; 0.5 rounds half to even, to 0.
    np.testing.assert_array_equal(got, [[0.0, -1.0], [0.0, 0.0]])


def test_fake_quantize_value_and_identity_gradient(kernel):
    w = tf.Variable(kernel)
    upstream = np.random.default_rng(1).normal(size=kernel.shape).astype("float32")
    with tf.GradientTape() as tape:
        y = q.fake_quantize(w, 3)
        loss = tf.reduce_sum(upstream * y)
    np.testing.assert_allclose(y.numpy(), numpy_quantize(kernel, 3, -1), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), upstream)


def test_constraint_projects_and_round_trips(kernel):
    constraint = q.QuantizeConstraint(bits=4, axis=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(constraint(kernel)),
        numpy_quantize(kernel, 4, 2),
        rtol=1e-6,
    )
    config = keras.saving.serialize_keras_object(constraint)
    assert config["registered_name"] == "tf_reweight>QuantizeConstraint"
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, q.QuantizeConstraint)
    assert restored.get_config() == {"bits": 4, "axis": 2}

    layer = keras.layers.Dense(3, kernel_constraint=q.QuantizeConstraint(2))
    clone = keras.layers.Dense.from_config(layer.get_config())
    assert clone.kernel_constraint.get_config() == {"bits": 2, "axis": -1}


def test_constraint_applies_after_optimizer_step():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, kernel_constraint=q.QuantizeConstraint(3)),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(8, 5)), rng.normal(size=(8, 4)))
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    np.testing.assert_allclose(kernel, numpy_quantize(kernel, 3, -1), atol=1e-6)
    assert max(len(np.unique(c)) for c in kernel.T) <= 7


@pytest.mark.parametrize("bits", [1, 9, 4.0])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=f"bits={bits!r}"):
        q.quantize(np.ones((2, 2)), bits)
    with pytest.raises(ValueError, match="from 2 to 8"):
        q.QuantizeConstraint(bits)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis=2"):
        q.quantize(np.ones((2, 2)), 4, axis=2)


def numpy_fillers(flat, index_bits):
    """Encodes `flat` entry by entry and counts the filler zeros it needs."""
    fillers, skipped = 0, 0
    for value in np.trim_zeros(flat, "b"):  # trailing zeros are not stored
        if value == 0:
            skipped += 1
            if skipped == 2**index_bits:  # the index overflows: store a zero
                fillers, skipped = fillers + 1, 0
        else:
            skipped = 0
    return fillers


def test_storage_bits_formula():
    report = q.storage_bits(nonzeros=100, bits=4, total=1000, index_bits=4, fillers=5)
    assert report["dense_bits"] == 32_000
    assert report["sparse_bits"] == 105 * 8
    assert report["compression"] == pytest.approx(32_000 / 840)
    assert q.storage_bits(0, 4, 10)["compression"] == float("inf")
    with pytest.raises(ValueError, match="nonzeros=11, total=10"):
        q.storage_bits(11, 4, 10)


@pytest.mark.parametrize("index_bits", [2, 4])
def test_compression_report_counts_fillers(kernel, index_bits):
    dense = np.ones((7, 5), "float32")
    report = q.compression_report(
        {"conv": kernel, "fc": dense}, bits=4, index_bits=index_bits
    )
    fillers = numpy_fillers(kernel.reshape(-1), index_bits)
    nonzeros = np.count_nonzero(kernel)
    assert report["layers"]["conv"]["fillers"] == fillers
    assert report["layers"]["conv"]["nonzeros"] == nonzeros
    assert report["layers"]["fc"]["fillers"] == 0
    stored = (nonzeros + fillers + 35) * (4 + index_bits)
    assert report["sparse_bits"] == stored
    assert report["compression"] == pytest.approx(32 * (kernel.size + 35) / stored)


def test_compression_report_of_model():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    report = q.compression_report(model, bits=8)
    assert list(report["layers"]) == [
        w.path for w in model.weights if w.name == "kernel"
    ]
    assert report["total"] == 3 * 3 * 2 + 32 * 3  # biases are left out
    with pytest.raises(ValueError, match="non-empty"):
        q.compression_report([], bits=8)
