"""Tests for `tf_reweight.pruning.batchnorm`: exact statistics and validation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_reweight as tfr
from tf_reweight.pruning.batchnorm import batchnorm_layers, recalibrate_batchnorm
from tf_reweight.robust.adversarial import AdversarialModel
from tf_reweight.training import data, recipes

N = 37  # batches of 10, 10, 10 and 7


def _conv_bn(**bn_kwargs) -> keras.Model:
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn", **bn_kwargs)(h)
    return keras.Model(inputs, outputs)


def _inputs() -> np.ndarray:
    # Each example has its own offset: batch means differ, so neither an EMA
    # nor a plain average of the batch variances gives the pooled variance.
    rng = np.random.default_rng(0)
    offset = np.linspace(-3, 3, N, dtype="float32")[:, None, None, None]
    return rng.normal(size=(N, 6, 6, 2)).astype("float32") + offset


def _conv_outputs(model, x) -> np.ndarray:
    conv = keras.Model(model.input, model.get_layer("conv").output)
    return keras.ops.convert_to_numpy(conv(x)).astype(np.float64)


def _state(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


# Moving statistics from different batchings are float32 sums in another order.
# Per channel they pool at most 37 * 16 = 592 conv outputs of size |h| < 10,
# so the float32 rounding of a mean is at most about 10 * 1.2e-7 * log2(592)
# ~ 1e-5 (pairwise), and of a variance (pooled from per-batch E[h^2] - E[h]^2)
# about 1e-6 relative; measured over batch sizes 1 to 37: 3e-7 and 6e-7. The
# means are close to 0, so they need an absolute tolerance, not a relative one.
MEAN_ATOL, VARIANCE_RTOL = 1e-5, 1e-4


def _assert_moments(bn, mean, variance):
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=0, atol=MEAN_ATOL)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=VARIANCE_RTOL)


def _assert_same(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.fixture
def model():
    keras.utils.set_random_seed(0)
    return _conv_bn()


def test_moving_statistics_are_the_pooled_biased_moments_of_all_batches(model):
    x = _inputs()
    bn = model.get_layer("bn")
    assert recalibrate_batchnorm(model, x, batch_size=10) == 1
    h = _conv_outputs(model, x)
    mean, variance = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))  # ddof=0
    _assert_moments(bn, mean, variance)
    # The test discriminates: averaging the four batch variances is far off.
    per_batch = np.mean([h[i : i + 10].var(axis=(0, 1, 2)) for i in range(0, N, 10)])
    assert abs(per_batch - variance.mean()) > 0.1 * variance.mean()
    assert bn.momentum == 0.99


def test_only_moving_statistics_change(model):
    x = _inputs()
    model.compile("adam", "mse")
    model.fit(x, np.zeros((N, 4, 4, 3)), batch_size=16, epochs=1, verbose=0)
    moving = {id(v) for v in model.non_trainable_variables}
    before = _state(model)
    optimizer = [v.numpy().copy() for v in model.optimizer.variables]
    recalibrate_batchnorm(model, x, batch_size=10)
    for old, v in zip(before, model.variables, strict=True):
        if id(v) not in moving:
            np.testing.assert_array_equal(old, v.numpy())
    _assert_same(optimizer, [v.numpy() for v in model.optimizer.variables])


def test_datasets_iterables_steps_and_nested_wrapped_models_agree():
    keras.utils.set_random_seed(0)
    inner = tfr.apply(_conv_bn(), target=0.5)
    tfr.hard_prune(inner)
    outer = keras.Sequential([keras.Input((6, 6, 2)), inner, keras.layers.Flatten()])
    masks = [w.numpy().copy() for w in outer.non_trainable_weights if "mask" in w.path]
    x = _inputs()
    assert [layer.name for layer in batchnorm_layers(outer)] == ["bn"]
    bn = inner.get_layer("bn")

    recalibrate_batchnorm(inner, x, batch_size=10)
    expected = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(N))).batch(8)
    generator = (x[i : i + 5] for i in range(0, N, 5))
    named = keras.Input((6, 6, 2), name="image")
    by_name = keras.Model({"image": named}, outer(named))
    for model, source in [
        (outer, dataset),
        (AdversarialModel(outer), generator),
        (by_name, {"image": x}),
    ]:
        bn.moving_mean.assign(np.full(3, 7.0, "float32"))
        bn.moving_variance.assign(np.full(3, 7.0, "float32"))
        assert recalibrate_batchnorm(model, source, batch_size=4) == 1
        _assert_moments(bn, *expected)
    after = [w.numpy() for w in outer.non_trainable_weights if "mask" in w.path]
    _assert_same(masks, after)

    recalibrate_batchnorm(outer, dataset, steps=2)  # the first 16 examples
    h = _conv_outputs(inner, x[:16])
    _assert_moments(bn, h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": np.zeros((0, 6, 6, 2))}, r"at least one example.*x=array of shape \(0,"),
        ({"x": None}, "Received: x=NoneType"),
        ({"x": "images"}, "Received: x=str"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": True}, "batch_size=True"),
        ({"batch_size": 2.0}, "batch_size=2.0"),
        ({"steps": 0}, "steps=0"),
    ],
)
def test_invalid_inputs_raise_before_any_change(model, kwargs, match):
    before = _state(model)
    args = {"x": _inputs(), **kwargs}
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(model, **args)
    _assert_same(before, _state(model))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)]), "no B"),
        (lambda: _frozen(), "1 frozen"),
        (lambda: _conv_bn(renorm=True), "renorm"),
        (lambda: keras.Sequential([keras.layers.BatchNormalization()]), "built"),
    ],
)
def test_models_without_recalibratable_batchnorm_raise(build, match):
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(build(), _inputs())


def _frozen():
    model = _conv_bn()
    model.get_layer("bn").trainable = False
    return model


@pytest.mark.parametrize(
    "source",
    [
        tf.data.Dataset.from_tensor_slices(np.zeros((0, 6, 6, 2), "float32")).batch(4),
        [np.zeros((4, 6, 6, 2), "float32"), np.zeros((4, 6, 6, 3), "float32")],
    ],
    ids=["empty dataset", "bad second batch"],
)
def test_failures_during_the_passes_restore_the_statistics(model, source):
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(3, 5.0, "float32"))
    before = _state(model)
    with pytest.raises(ValueError):
        recalibrate_batchnorm(model, source)
    _assert_same(before, _state(model))
    assert bn.momentum == 0.99


def test_pruned_mnist_cnn_inference_recovers_training_mode_accuracy(data_dir):
    (x, y), (x_test, y_test) = data.load("mnist", data_dir)
    x, y, x_test, y_test = x[:2048], y[:2048], x_test[:1000], y_test[:1000]
    keras.utils.set_random_seed(0)

    def conv_bn(filters, name):
        return [
            keras.layers.Conv2D(filters, 3, use_bias=False, name=name),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]

    dense = keras.Sequential(
        [keras.Input((28, 28, 1)), *conv_bn(8, "conv1"), *conv_bn(16, "conv2")]
        + [keras.layers.Flatten(), keras.layers.Dense(10, name="logits")]
    )
    recipes.compile_classifier(dense, 3e-3)
    dense.fit(x, y, batch_size=64, epochs=2, verbose=0)
    pruned = recipes.compile_classifier(tfr.apply(dense, "filter", 0.5, skip_last=True))
    tfr.hard_prune(pruned)  # half the filters gone, no retraining

    def accuracy(training=False):
        logits = pruned(x_test, training=training)
        return float(np.mean(np.argmax(logits, axis=-1) == y_test))

    before = accuracy()
    assert recalibrate_batchnorm(pruned, x[:1024]) == 2
    after = accuracy()
    training_mode = accuracy(training=True)  # last: it moves the statistics
    # Seed 0: 72.2% -> 70.2% at inference, 70.3% in training mode (the
    # budget ranks BatchNorm-folded filters, so even the stale statistics
    # do well; recalibration makes inference match training mode).
    assert abs(after - training_mode) <= min(0.02, abs(before - training_mode))


def test_samples_recalibrate_on_a_fixed_random_sample_in_order(model):
    x = _inputs()
    rows = np.sort(np.random.default_rng(3).choice(N, 7, replace=False))
    assert recalibrate_batchnorm(model, x, batch_size=4, samples=7, seed=3) == 1
    h = _conv_outputs(model, x[rows])
    _assert_moments(
        model.get_layer("bn"), h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    )
    # As many samples as examples, or more: all of them.
    recalibrate_batchnorm(model, x, samples=N + 5)
    h = _conv_outputs(model, x)
    _assert_moments(
        model.get_layer("bn"), h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": 0}, "samples=0"),
        ({"samples": 2.0}, "samples=2.0"),
        ({"samples": 4, "seed": -1}, "seed=-1"),
        ({"samples": 4, "x": [np.zeros((4, 6, 6, 2), "float32")]}, "array inputs"),
    ],
)
def test_invalid_samples_raise_before_any_change(model, kwargs, match):
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(model, **{"x": _inputs(), **kwargs})
    _assert_same(before, _state(model))


def test_check_recalibrate_and_require_batchnorm_are_public_checks(model):
    x = _inputs()
    assert tfr.batchnorm.check_recalibrate(None, model, x) is None
    assert tfr.batchnorm.check_recalibrate(False, model, x) is None
    assert tfr.batchnorm.check_recalibrate(True, model, x) == N
    assert tfr.batchnorm.check_recalibrate(N + 5, model, x) == N
    assert tfr.batchnorm.check_recalibrate(5, model, x) == 5
    with pytest.raises(ValueError, match="recalibrate_bn=0"):
        tfr.batchnorm.check_recalibrate(0, model, x)
    assert tfr.batchnorm.require_batchnorm(model) == [model.get_layer("bn")]
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="no BatchNormalization"):
        tfr.batchnorm.check_recalibrate(True, dense, x)
