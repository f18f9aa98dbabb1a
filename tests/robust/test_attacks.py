"""Tests for `tf_reweight.robust.attacks` on a small MLP trained on real MNIST."""

import dataclasses

import keras
import numpy as np
import pytest

from tf_reweight.robust import attacks
from tf_reweight.robust.attack import Attack


def _ce(model, x, y):
    logits = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.mean(log_p[np.arange(len(y)), y])


def test_pgd_linf_stays_in_ball_and_raises_loss(mlp, mnist):
    _, _, x, y = mnist
    x_adv = attacks.pgd(mlp, x, y, eps=0.1, step_size=0.025, steps=10).numpy()
    assert np.max(np.abs(x_adv - x)) <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert _ce(mlp, x_adv, y) > _ce(mlp, x, y) + 1.0


def test_pgd_l2_stays_in_ball_and_raises_loss(mlp, mnist):
    _, _, x, y = mnist
    x_adv = attacks.pgd(mlp, x, y, eps=1.5, step_size=0.5, steps=5, norm=2).numpy()
    assert np.max(np.linalg.norm(x_adv - x, axis=1)) <= 1.5 + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert _ce(mlp, x_adv, y) > _ce(mlp, x, y) + 0.5


def test_pgd_random_start_is_random_and_bim_is_not(mlp, mnist):
    _, _, x, y = mnist
    bim = [attacks.pgd(mlp, x, y, 0.1, 0.05, 2, rand_init=False) for _ in range(2)]
    rand = [attacks.pgd(mlp, x, y, 0.1, 0.05, 2) for _ in range(2)]
    np.testing.assert_array_equal(bim[0], bim[1])
    assert not np.array_equal(rand[0], rand[1])


@pytest.mark.parametrize("norm", [np.inf, 2])
def test_fgsm_matches_numpy_formula_with_true_labels(norm):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 3)), rng.normal(size=3)
    linear = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    linear.set_weights([w, b])
    x = rng.normal(size=(8, 6)).astype("float32")
    logits = x @ w + b
    y = (np.argmax(logits, -1) + 1) % 3  # Never the predicted class.
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    grad = (p - np.eye(3)[y]) @ w.T  # d CE / d x of a linear model.
    if norm == np.inf:
        step = np.sign(grad)
    else:
        step = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    x_adv = attacks.fgsm(linear, x, y, eps=0.3, norm=norm, clip=None)
    np.testing.assert_allclose(x_adv, x + 0.3 * step, atol=1e-5)


def test_fgsm_random_start_stays_in_ball(mlp, mnist):
    _, _, x, y = mnist
    plain = attacks.fgsm(mlp, x, y, eps=0.1).numpy()
    fast = attacks.fgsm(mlp, x, y, eps=0.1, rand_init=True).numpy()
    assert not np.array_equal(plain, fast)
    for x_adv in (plain, fast):
        assert np.max(np.abs(x_adv - x)) <= 0.1 + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert _ce(mlp, x_adv, y) > _ce(mlp, x, y) + 0.5


def test_default_step_size_is_madry_rule_capped_at_eps():
    assert Attack(epsilon=0.3, steps=10).resolved_step_size == pytest.approx(0.075)
    assert Attack(epsilon=0.3, steps=2).resolved_step_size == pytest.approx(0.3)
    assert Attack(kind="fgsm", epsilon=0.2).resolved_step_size == pytest.approx(0.25)
    fgsm = Attack(kind="fgsm", epsilon=0.2, random_start=False)
    assert fgsm.resolved_step_size == pytest.approx(0.2)


def test_attack_config_round_trip_and_labels():
    attack = Attack(kind="pgd", epsilon=0.1, steps=7, norm=np.inf, clip=[0, 1])
    assert attack.norm == "inf" and attack.clip == (0.0, 1.0)
    config = attack.get_config()
    assert config["clip"] == [0.0, 1.0]
    assert Attack.from_config(config) == attack
    assert attack.label == "pgd-7"
    assert Attack(kind="fgsm", epsilon=0.1).label == "fgsm-rs"
    with pytest.raises(dataclasses.FrozenInstanceError):
        attack.epsilon = 0.2


def test_craft_matches_pgd_without_random_start(mlp, mnist):
    _, _, x, y = mnist
    bim = Attack(epsilon=0.1, steps=3, step_size=0.05, random_start=False)
    np.testing.assert_allclose(
        attacks.craft(bim, mlp, x, y),
        attacks.pgd(mlp, x, y, 0.1, 0.05, 3, rand_init=False),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cw"), "kind"),
        (dict(epsilon=float("nan")), "epsilon"),
        (dict(epsilon=True), "epsilon"),
        (dict(steps=2.0), "steps"),
        (dict(step_size=-0.1), "step_size"),
        (dict(step_size=0.2), "must not exceed"),
        (dict(norm="l1"), "norm"),
        (dict(clip=(0.0,)), "clip"),
        (dict(random_start="yes"), "random_start"),
    ],
)
def test_attack_rejects_bad_fields(kwargs, match):
    kwargs = {"epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        Attack(**kwargs)


def test_craft_rejects_a_non_attack(mlp):
    with pytest.raises(ValueError, match="must be an `Attack`"):
        attacks.craft("pgd", mlp, np.zeros((2, 784), "float32"), np.zeros(2, "int64"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps=-0.1), "eps"),
        (dict(steps=0), "steps"),
        (dict(step_size=0.2), "step_size"),
        (dict(norm=1), "norm"),
        (dict(clip=(1.0, 0.0)), "clip"),
        (dict(y=np.zeros((4, 1), "int64")), "integer class ids"),
        (dict(y=np.eye(10, dtype="float32")[:4]), "integer class ids"),
        (dict(y=np.zeros(3, "int64")), "one entry per example"),
        (dict(x=np.zeros((4, 784), "uint8")), "float tensor"),
    ],
)
def test_pgd_rejects_bad_input(mlp, kwargs, match):
    args = dict(x=np.zeros((4, 784), "float32"), y=np.zeros(4, "int64"), eps=0.1)
    args.update(step_size=0.05, steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attacks.pgd(mlp, **args)


def test_fgsm_rejects_labels_of_another_batch(mlp):
    with pytest.raises(ValueError, match="one entry per example"):
        attacks.fgsm(mlp, np.zeros((4, 784), "float32"), np.zeros(5, "int64"), 0.1)
