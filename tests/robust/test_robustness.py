"""Tests for `tf_reweight.robust.robustness.evaluate_robustness` on real MNIST."""

import keras
import numpy as np
import pytest

from tf_reweight.robust.attack import Attack
from tf_reweight.robust.robustness import evaluate_robustness, measure_robustness

PGD = Attack(epsilon=0.05)


def test_accuracies_are_ordered_and_clean_matches_numpy(mlp, mnist):
    _, _, x, y = mnist
    result = evaluate_robustness(mlp, x, y, PGD, batch_size=128, verbose=0)
    assert set(result) == {"clean", "fgsm", "pgd"}
    clean = np.mean(np.argmax(mlp.predict(x, verbose=0), -1) == y)
    assert result["clean"] == pytest.approx(clean, abs=1e-9)
    assert result["clean"] - 0.2 > result["fgsm"] >= result["pgd"] - 0.02
    assert result["pgd"] < result["clean"]


def test_batching_does_not_change_deterministic_accuracies(mlp, mnist):
    _, _, x, y = mnist
    one = evaluate_robustness(mlp, x, y, PGD, ("clean", "fgsm"), verbose=0)
    many = evaluate_robustness(
        mlp, x, y, PGD, ("fgsm", "clean"), batch_size=64, verbose=0
    )
    # Other batch sizes give float32 logits and gradients a few ulps apart; a
    # near tie or a gradient sign at ~0 may move one example of the 500.
    assert one.keys() == many.keys()
    for name in one:
        assert one[name] == pytest.approx(many[name], abs=1.5 / len(y))


def test_restarts_never_increase_accuracy(mlp, mnist):
    _, _, x, y = mnist
    results = []
    for restarts in (1, 3):
        keras.utils.set_random_seed(1)  # Same first restart in both runs.
        results.append(
            evaluate_robustness(
                mlp,
                x,
                y,
                Attack(epsilon=0.05, steps=3),
                ("pgd",),
                restarts=restarts,
                verbose=0,
            )["pgd"]
        )
    assert results[1] <= results[0]


def test_zero_eps_gives_clean_accuracy(mlp, mnist):
    _, _, x, y = mnist
    result = evaluate_robustness(mlp, x, y, Attack(epsilon=0.0), restarts=2, verbose=0)
    assert result["pgd"] == result["fgsm"] == result["clean"]


def test_progress_bar_is_shown(mlp, mnist, capsys):
    _, _, x, y = mnist
    evaluate_robustness(mlp, x[:20], y[:20], PGD, ("clean",), batch_size=10)
    assert "2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attacks=("clean", "cw")), "attacks"),
        (dict(attacks=("pgd", "pgd")), "attacks"),
        (dict(restarts=0), "restarts"),
        (dict(batch_size=0), "batch_size"),
        (dict(attack=Attack(kind="fgsm", epsilon=0.1)), "kind 'pgd'"),
        (dict(attack=0.1), "must be an `Attack`"),
        (dict(x=np.full((4, 784), 255.0, "float32")), "clip"),
        (dict(y=np.zeros(5, "int64")), "one entry per example"),
    ],
)
def test_rejects_bad_input(mlp, kwargs, match):
    args = dict(x=np.zeros((4, 784), "float32"), y=np.zeros(4, "int64"))
    args["attack"] = Attack(epsilon=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(mlp, verbose=0, **args)


def test_measure_robustness_attacks_only_the_first_limit(mlp, mnist):
    _, _, x, y = mnist
    keras.utils.set_random_seed(0)
    out = measure_robustness(mlp, (x, y), PGD, limit=100)
    clean = np.mean(np.argmax(mlp.predict(x, verbose=0), -1) == y)
    assert out["accuracy"] == pytest.approx(clean, abs=1e-9)
    assert out["eval_samples"] == 100
    keras.utils.set_random_seed(0)
    first = evaluate_robustness(mlp, x[:100], y[:100], PGD, ("pgd",), verbose=0)
    assert out["robust_accuracy"] == pytest.approx(first["pgd"], abs=1.5 / 100)
    with pytest.raises(ValueError, match="limit"):
        measure_robustness(mlp, (x, y), PGD, limit=0)
