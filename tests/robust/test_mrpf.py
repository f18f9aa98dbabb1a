"""Tests for `tf_reweight.robust.mrpf` on a tiny MNIST slice model."""

import itertools

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.pruning.operations import wrappers
from tf_reweight.robust import mrpf as mrpf_module
from tf_reweight.robust.allocation import allocate_ratios, default_max_ratio
from tf_reweight.robust.attack import Attack
from tf_reweight.robust.mrpf import adversarial_prune, mrpf, uniform
from tf_reweight.training import data, recipes

TARGET = 0.8
SIZES = {"conv": 3 * 3 * 1 * 4, "fc": 13 * 13 * 4 * 32, "logits": 32 * 10}
FGSM = Attack(kind="fgsm", epsilon=0.1)
FAST = dict(finetune_epochs=2, batch_size=128, verbose=0)


@pytest.fixture(scope="module")
def mnist(data_dir):
    (x, y), _ = data.load("mnist", data_dir)
    return x[:1024], y[:1024]


@pytest.fixture(scope="module")
def dense(mnist):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="fc"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    recipes.compile_classifier(model)
    model.fit(*mnist, batch_size=64, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def result(dense, mnist):
    x, y = mnist
    keras.utils.set_random_seed(0)
    return mrpf(dense, mnist, x[:128], y[:128], TARGET, FGSM, **FAST)


def _zeros(model) -> dict[str, int]:
    return {r.layer: r.weights - r.nonzeros for r in tfr.report(model).rows}


def test_global_target_is_exact_and_sensitive_layers_are_pruned_less(result):
    total = sum(SIZES.values())
    assert result.table.sizes == SIZES
    assert result.counts() == (total, round((1 - TARGET) * total))
    assert result.sparsity == pytest.approx(TARGET, abs=0.5 / total)
    # Each layer holds exactly the zeros its ratio asks for.
    assert _zeros(result.model) == {
        n: round(r * SIZES[n]) for n, r in result.ratios.items()
    }
    expected = allocate_ratios(
        result.table.scores, SIZES, TARGET, max_ratio=default_max_ratio(TARGET)
    )
    assert result.ratios == expected
    assert max(result.ratios.values()) <= default_max_ratio(TARGET) + 1e-12
    scores = result.table.scores
    assert len(set(scores.values())) == 3
    for a, b in itertools.permutations(SIZES, 2):
        if scores[a] > scores[b]:  # rounding to whole weights moves < 1 weight
            slack = 1 / SIZES[a] + 1 / SIZES[b]
            assert result.ratios[a] <= result.ratios[b] + slack, (a, b)
    spread = max(result.ratios.values()) - min(result.ratios.values())
    assert spread > 0.05  # MRS changed something: not the uniform split
    assert "adv_accuracy" in result.history and len(result.history["loss"]) == 2
    assert result.epochs == 2 and result.method == "reweighted"


def test_result_saves_and_loads_as_keras_file(result, mnist, tmp_path):
    path = tmp_path / "mrpf.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    x = mnist[0][:64]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model(x), atol=1e-5)
    assert _zeros(loaded) == _zeros(result.model)
    assert all(w.is_pruned for w in tfr.pruning.wrappers(loaded))


def test_uniform_magnitude_prunes_smallest_dense_weights_at_one_ratio(dense, mnist):
    keras.utils.set_random_seed(0)
    out = uniform(dense, mnist, "5x", FGSM, method="magnitude", **FAST)
    total = sum(SIZES.values())
    assert out.table is None and out.allocation == "uniform"
    assert out.counts()[1] == round(total / 5)
    for name, ratio in out.ratios.items():
        assert abs(ratio - 0.8) < 1 / SIZES[name]
        w = np.abs(dense.get_layer(name).kernel.numpy()).ravel()
        pruned = out.model.get_layer(name).layer.kernel.numpy().ravel()
        # One-shot magnitude pruning of the dense weights, kept through AT.
        smallest = np.argsort(w, kind="stable")[: round(ratio * w.size)]
        np.testing.assert_array_equal(np.flatnonzero(pruned == 0), np.sort(smallest))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"allocation": "greedy"}, "allocation"),
        ({"max_ratio": 0.5}, "max_ratio"),
        ({"max_ratio": 1.0}, "max_ratio"),
        ({"phase1_epochs": 3, "finetune_epochs": 2}, "phase1_epochs"),
        ({"method": "prune"}, "method"),
        ({"attack": "fgsm"}, "must be an `Attack`"),
        ({"probe": "pgd"}, "must be an `Attack`"),
        ({"structure": "rows"}, "rows"),
        ({"layers": ["nope"]}, "nope"),
        ({"recalibrate_bn": -1}, "recalibrate_bn"),
        ({"recalibrate_bn": True}, "no BatchNormalization"),
        ({"method": "admm", "bounded": False}, "bounded"),
    ],
)
def test_invalid_options_raise_before_any_training(dense, kwargs, match):
    before = [w.copy() for w in dense.get_weights()]
    with pytest.raises(ValueError, match=match):
        mrpf(
            dense,
            (None, None),
            np.zeros((2, 28, 28, 1)),
            np.zeros(2, int),
            0.8,
            **{"attack": FGSM, **kwargs},
        )
    for old, new in zip(before, dense.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("bounded, expected", [(None, True), (False, False)])
def test_adversarial_reweighting_is_bounded_by_default(dense, mnist, bounded, expected):
    out = adversarial_prune(
        dense, mnist, 0.8, phase1_epochs=0, retrain_epochs=0, bounded=bounded
    )
    assert [w.method.bounded for w in wrappers(out.model)] == [expected] * 3


def test_mrs_allocation_needs_probe_data(dense):
    with pytest.raises(ValueError, match="probe"):
        mrpf(dense, (None, None), None, None, 0.8, FGSM)


def test_recalibrate_bn_recomputes_statistics_on_clean_inputs_after_fine_tuning():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    keras.utils.set_random_seed(0)
    dense = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    out = uniform(
        dense,
        (x, y),
        0.5,
        FGSM,
        **{**FAST, "finetune_epochs": 1},
        recalibrate_bn=True,
    )
    assert out.recalibrated_bn == 1
    bn = out.model.get_layer("bn")
    moving = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    tfr.recalibrate_batchnorm(out.model, x)
    # Other batchings sum in another float32 order: means near 0 need atol.
    np.testing.assert_allclose(bn.moving_mean.numpy(), moving[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), moving[1], rtol=1e-4)


def test_filter_mrpf_probes_filters_and_passes_reweighting_eps(
    dense, mnist, monkeypatch
):
    calls = []
    probe = mrpf_module.module_robustness_sensitivity

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return probe(*args, **kwargs)

    monkeypatch.setattr(mrpf_module, "module_robustness_sensitivity", spy)
    x, y = mnist
    out = mrpf(
        dense,
        mnist,
        x[:64],
        y[:64],
        0.5,
        FGSM,
        structure="filter",
        layers=["conv", "fc"],
        finetune_epochs=0,
        verbose=0,
        eps=1e-4,
    )
    assert [c["structure"] for c in calls] == ["filter"]
    assert calls[0]["layers"] == ["conv", "fc"]
    assert set(out.table.scores) == {"conv", "fc"}
    assert [w.method.eps for w in wrappers(out.model)] == [1e-4, 1e-4]
