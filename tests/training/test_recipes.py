"""A short real-data run: LeNet-300-100 on a slice of MNIST."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.training import data, models, recipes


def test_lenet_300_100_reaches_90_percent_sparsity_at_95_percent_accuracy(data_dir):
    (x, y), (x_test, y_test) = data.load("mnist", data_dir)
    train = (x[:12000], y[:12000])
    keras.utils.set_random_seed(0)
    dense = recipes.compile_classifier(models.lenet_300_100())
    dense.fit(*train, batch_size=64, epochs=3, verbose=0)
    result = recipes.reweighted_prune(
        dense,
        train,
        target=0.9,
        penalty=1e-5,
        reweight_epochs=2,
        retrain_epochs=2,
        batch_size=64,
        verbose=0,
    )
    rep = tfr.report(result.model)
    accuracy = result.model.evaluate(x_test, y_test, verbose=0)[1]
    assert rep.sparsity >= 0.9 - 1e-6
    assert accuracy >= 0.95, accuracy
    assert np.isfinite(result.history["loss"]).all()


def test_two_phase_lr_is_constant_then_cosine():
    schedule = recipes.two_phase_lr(2, 3, lr=1e-3, final_lr=1e-5)
    np.testing.assert_allclose(
        [schedule(e) for e in range(5)], [1e-3, 1e-3, 1e-3, 5.05e-4, 1e-5], rtol=1e-6
    )


def _bn_classifier() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _moving(model) -> list[np.ndarray]:
    bn = model.get_layer("bn")
    return [bn.moving_mean.numpy(), bn.moving_variance.numpy()]


def test_prune_recalibrates_batchnorm_on_a_sample_of_training_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 96)
    keras.utils.set_random_seed(0)
    options = dict(method="magnitude", phase1_epochs=0, retrain_epochs=1, verbose=0)
    result = recipes.prune(
        _bn_classifier(), (x, y), batch_size=32, recalibrate_bn=40, **options
    )
    assert result.recalibrated_bn == 1
    moving = _moving(result.model)
    sample = x[np.sort(np.random.default_rng(0).choice(96, 40, replace=False))]
    tfr.recalibrate_batchnorm(result.model, sample, batch_size=32)
    for old, new in zip(moving, _moving(result.model), strict=True):
        # Float32 moments pooled in another order: about 1e-6 off; margin.
        np.testing.assert_allclose(old, new, rtol=1e-4, atol=1e-5)
    plain = recipes.prune(_bn_classifier(), (x, y), recalibrate_bn=None, **options)
    assert plain.recalibrated_bn == 0
    # The default, "auto", recalibrates a model with BatchNorm.
    assert recipes.prune(_bn_classifier(), (x, y), **options).recalibrated_bn == 1
    lenet = recipes.prune(models.lenet_300_100((8, 8, 1)), (x, y), **options)
    assert lenet.recalibrated_bn == 0


@pytest.mark.parametrize(
    "model, value, match",
    [
        (_bn_classifier, 0, "recalibrate_bn=0"),
        (_bn_classifier, "all", "recalibrate_bn='all'"),
        (models.lenet_300_100, True, "no BatchNormalization"),
    ],
)
def test_prune_checks_recalibrate_bn_before_training(model, value, match):
    with pytest.raises(ValueError, match=match):
        recipes.prune(model(), (np.zeros((4, 8, 8, 1)), None), recalibrate_bn=value)


def _mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="a"),
            keras.layers.Dense(3, name="b"),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)


FAST = dict(target=0.75, batch_size=32, verbose=0)


@pytest.mark.parametrize(
    "method, phase1, retrain, pruned_from",
    [
        ("reweighted", 1, 1, 1),  # at the start of epoch phase1_epochs
        ("reweighted", 2, 0, None),  # training ends first: right after the fit
        ("reweighted", 0, 0, None),
        ("magnitude", 1, 1, 0),  # one-shot: at the start of epoch 0
        ("magnitude", 0, 0, None),
    ],
)
def test_one_prune_epoch_rule(method, phase1, retrain, pruned_from):
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            # Runs after the method's callbacks, HardPrune among them.
            seen.append(self.model.get_layer("a").is_pruned)

    keras.utils.set_random_seed(0)
    result = recipes.prune(
        _mlp(),
        _data(),
        method=method,
        phase1_epochs=phase1,
        retrain_epochs=retrain,
        callbacks=[Watch()],
        **FAST,
    )
    expected = [pruned_from is not None and e >= pruned_from for e in range(len(seen))]
    assert seen == expected
    assert len(seen) == phase1 + retrain
    assert result.model.get_layer("a").is_pruned
    assert tfr.report(result.model).sparsity == pytest.approx(0.75, abs=0.01)


def test_trainer_hook_fits_the_wrapper_and_returns_the_pruned_model():
    wrapped = []

    def trainer(pruned):
        inputs = keras.Input((6,))
        outer = keras.Model(inputs, pruned(inputs), name="trainer")
        wrapped.append((pruned, outer))
        return outer

    fitted = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            fitted.append(self.model)

    keras.utils.set_random_seed(0)
    result = recipes.prune(
        _mlp(),
        _data(),
        phase1_epochs=1,
        retrain_epochs=1,
        trainer=trainer,
        callbacks=[Record()],
        **FAST,
    )
    ((pruned, outer),) = wrapped
    assert result.model is pruned
    assert fitted == [outer]
    assert outer.compiled and not pruned.compiled
    assert pruned.get_layer("a").is_pruned
    assert set(result.history) >= {"loss", "accuracy", "sparsity_a"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"trainer": "adversarial"}, "trainer='adversarial'"),
        ({"callbacks": "monitor"}, "callbacks='monitor'"),
        ({"callbacks": [object()]}, "keras.callbacks.Callback"),
        ({"phase1_epochs": -1}, "phase1_epochs=-1"),
        ({"retrain_epochs": 1.0}, "retrain_epochs=1.0"),
        ({"method": "admm", "bounded": True}, r"\['bounded'\] configure other"),
    ],
)
def test_prune_checks_its_arguments_before_training(kwargs, match):
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        recipes.prune(model, _data(), **{**FAST, **kwargs})
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_method_setup_builds_the_penalty_and_leaves_apply_arguments():
    setup = recipes.method_setup(
        "reweighted", 1e-3, bounded=True, spare_scale_free=False, layers=["a"]
    )
    assert isinstance(setup.penalty, tfr.ReweightedGroupPenalty)
    assert setup.penalty.bounded and setup.penalty.lam == 1e-3
    assert setup.penalty.spare_scale_free is False
    assert [type(c) for c in setup.callbacks] == [tfr.Reweight]
    assert setup.apply_kwargs == {"layers": ["a"]} and setup.prune_epoch is None
    magnitude = recipes.method_setup("magnitude")
    assert (magnitude.penalty, magnitude.callbacks, magnitude.prune_epoch) == (
        None,
        [],
        0,
    )


def test_prune_with_auto_penalty_reports_the_lambda_it_set():
    model = recipes.compile_classifier(_mlp())
    result = recipes.prune(
        model,
        _data(),
        penalty="auto",
        eps="auto",
        target="4x",
        phase1_epochs=1,
        retrain_epochs=1,
        batch_size=16,
        verbose=0,
    )
    assert isinstance(result.penalty, float) and result.penalty > 0
    set_values = {
        pk.penalty.calibrated
        for w in tfr.pruning.wrappers(result.model)
        for pk in w.pruned_kernels
    }
    assert set_values == {result.penalty}
    assert tfr.report(result.model).sparsity == pytest.approx(0.75, abs=0.02)
