"""Tests for `tf_reweight.robust.adversarial.AdversarialModel` on real MNIST."""

import keras
import numpy as np
import pytest

from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.robust import attacks
from tf_reweight.robust.adversarial import AdversarialModel
from tf_reweight.robust.attack import Attack

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(**dense_kwargs):
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(64, "relu", **dense_kwargs),
            keras.layers.Dense(10),
        ]
    )


def _pgd_accuracy(model, x, y, eps):
    x_adv = attacks.pgd(model, x, y, eps, steps=10)
    return np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y)


def test_adversarial_training_beats_clean_training_under_pgd(mnist):
    x, y, xt, yt = mnist
    keras.utils.set_random_seed(0)
    clean = _mlp()
    clean.compile(keras.optimizers.Adam(5e-3), CE)
    clean.fit(x, y, epochs=5, batch_size=64, verbose=0)
    keras.utils.set_random_seed(0)
    robust = AdversarialModel(_mlp(), Attack(kind="pgd", epsilon=0.1, steps=3))
    robust.compile(keras.optimizers.Adam(5e-3), CE, metrics=["accuracy"])
    history = robust.fit(x, y, epochs=5, batch_size=64, verbose=0)
    assert {"loss", "accuracy", "adv_loss", "adv_accuracy"} <= set(history.history)

    margin = _pgd_accuracy(robust, xt, yt, 0.1) - _pgd_accuracy(clean, xt, yt, 0.1)
    assert margin >= 0.25  # Seeds 0 to 4 gave margins of 0.43 to 0.47.

    logs = robust.evaluate(xt, yt, verbose=0, return_dict=True)
    clean_acc = np.mean(np.argmax(robust.predict(xt, verbose=0), -1) == yt)
    assert logs["accuracy"] == pytest.approx(clean_acc, abs=1e-6)
    assert logs["adv_accuracy"] < logs["accuracy"] - 0.1
    assert logs["adv_loss"] > logs["loss"]


class ShiftAttack(AdversarialModel):
    """A deterministic stand-in attack, so the objective has a closed form."""

    def adversarial_examples(self, x, y, objective="ce", training=False):
        self.crafted_in_training_mode = training
        return x + self.attack.epsilon


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(clean_weight=0.3), dict(loss_type="trades")]
)
def test_training_objective_matches_numpy(kwargs):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(5, 4)) * 0.5, rng.normal(size=4)
    x, y = rng.uniform(size=(16, 5)).astype("float32"), rng.integers(0, 4, 16)
    l2 = keras.regularizers.L2(0.01)
    net = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, kernel_regularizer=l2)]
    )
    net.set_weights([w, b])
    model = ShiftAttack(net, Attack(epsilon=0.2), trades_beta=2.0, **kwargs)
    model.compile(keras.optimizers.SGD(0.0), CE)
    logs = model.train_on_batch(x, y, return_dict=True)

    lp_clean, lp_adv = _log_softmax(x @ w + b), _log_softmax((x + 0.2) @ w + b)
    ce_clean = -np.mean(lp_clean[np.arange(16), y])
    ce_adv = -np.mean(lp_adv[np.arange(16), y])
    penalty = 0.01 * np.sum(w**2)
    kl = np.mean(np.sum(np.exp(lp_clean) * (lp_clean - lp_adv), -1))
    expected = {
        "ce": (1 - model.clean_weight) * ce_adv + model.clean_weight * ce_clean,
        "trades": ce_clean + 2.0 * kl,
    }[model.loss_type]
    assert logs["loss"] == pytest.approx(expected + penalty, rel=1e-4)
    assert logs["adv_loss"] == pytest.approx(ce_adv + penalty, rel=1e-4)
    assert model.crafted_in_training_mode is True


def test_training_mode_examples_attack_the_function_being_trained():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 5)).astype("float32"), rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )
    bn = net.layers[1]
    bn.moving_mean.assign(np.full(8, 5.0))  # Stale statistics, as after pruning.
    model = AdversarialModel(net, Attack(kind="pgd", epsilon=0.3, steps=10, clip=None))

    def training_loss(inputs):
        return float(CE(y, net(inputs, training=True)))

    in_inference = model.adversarial_examples(x, y)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.full(8, 5.0))
    in_training = model.adversarial_examples(x, y, training=True)
    assert not np.allclose(bn.moving_mean.numpy(), 5.0)  # Updated, as in `fit`.
    assert training_loss(in_training) > training_loss(in_inference) + 0.1


def test_constraints_keep_pruned_weights_at_zero(mnist):
    x, y, _, _ = mnist
    keras.utils.set_random_seed(0)
    mask = keras.Variable((np.random.rand(784, 64) > 0.5).astype("float32"))
    model = AdversarialModel(
        _mlp(kernel_constraint=MaskConstraint(mask)), Attack(epsilon=0.1, steps=2)
    )
    model.compile("adam", CE)
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    kernel = model.model.layers[0].kernel.numpy()
    off = mask.numpy() == 0
    assert np.all(kernel[off] == 0) and np.all(kernel[~off] != 0)


def test_save_and_load_keeps_predictions_and_attack(mnist, tmp_path):
    x, y, xt, yt = mnist
    keras.utils.set_random_seed(0)
    model = AdversarialModel(
        _mlp(),
        Attack(kind="fgsm", epsilon=0.2, norm=2, clip=(0.0, 1.0), step_size=0.1),
        clean_weight=0.25,
        attack_training=False,
    )
    model.compile("adam", CE, metrics=["accuracy"])
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "adv.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert type(loaded) is AdversarialModel
    np.testing.assert_array_equal(
        loaded.predict(xt, verbose=0), model.predict(xt, verbose=0)
    )
    assert loaded.attack == model.attack
    assert loaded.attack.step_size == 0.1 and loaded.attack.norm == 2
    attack_keys = ["attack", "clean_weight", "loss_type", "attack_training"]
    assert {k: loaded.get_config()[k] for k in attack_keys} == {
        k: model.get_config()[k] for k in attack_keys
    }
    assert loaded.get_config()["attack"]["kind"] == "fgsm"
    logs = loaded.evaluate(xt, yt, verbose=0, return_dict=True)
    assert {"loss", "accuracy", "adv_loss", "adv_accuracy"} <= set(logs)


def test_subclass_with_own_call_trains(mnist):
    x, y, _, _ = mnist

    class Net(AdversarialModel):
        def __init__(self, **kwargs):
            super().__init__(attack=Attack(kind="fgsm", epsilon=0.1), **kwargs)
            self.hidden = keras.layers.Dense(32, "relu")
            self.out = keras.layers.Dense(10)

        def call(self, inputs, training=None):
            return self.out(self.hidden(inputs))

    keras.utils.set_random_seed(0)
    model = Net()
    model.compile(keras.optimizers.Adam(5e-3), CE)
    history = model.fit(x[:1024], y[:1024], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attack="pgd"), "must be an `Attack`"),
        (dict(loss_type="mart"), "loss_type"),
        (dict(clean_weight=1.5), "clean_weight"),
        (dict(loss_type="trades", clean_weight=0.5), "clean_weight"),
        (dict(trades_beta=-1.0), "trades_beta"),
        (dict(model=keras.layers.Dense(3)), "keras.Model"),
    ],
)
def test_rejects_bad_options(kwargs, match):
    kwargs.setdefault("model", _mlp())
    with pytest.raises(ValueError, match=match):
        AdversarialModel(**kwargs)


def test_rejects_labels_of_the_wrong_shape(mnist):
    x, y, _, _ = mnist
    model = AdversarialModel(_mlp(), Attack(epsilon=0.1, steps=1))
    model.compile("adam", CE)
    with pytest.raises(ValueError, match="integer class ids"):
        model.fit(x[:64], y[:64, None], epochs=1, verbose=0)


def test_requires_a_compiled_loss(mnist):
    x, y, _, _ = mnist
    model = AdversarialModel(_mlp(), Attack(epsilon=0.1, steps=1))
    model.compile("adam")
    with pytest.raises(ValueError, match="needs the loss"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)


@pytest.mark.parametrize("kind", ["pgd", "fgsm"])
def test_a_config_saved_before_attack_existed_still_loads(kind):
    config = AdversarialModel(None).get_config()
    config.pop("attack")
    config.update(
        attack=kind, eps=0.1, step_size=0.02, steps=5, norm="inf", clip=[0.0, 1.0]
    )
    restored = AdversarialModel.from_config(config)
    assert restored.attack == Attack(
        kind=kind,
        epsilon=0.1,
        steps=5 if kind == "pgd" else 1,
        step_size=0.02,
        clip=(0.0, 1.0),
        random_start=True,
    )
