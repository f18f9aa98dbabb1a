"""Tests for `tf_reweight.robust.sensitivity`: MRS probes and ratio allocation."""

import os

import keras
import numpy as np
import pytest

from tf_reweight.robust.sensitivity import (
    SensitivityTable,
    allocate_ratios,
    module_robustness_sensitivity,
)


@pytest.fixture(scope="module")
def probe(data_dir):
    with np.load(os.path.join(data_dir, "mnist", "mnist.npz")) as d:
        x = d["x_train"][:2000].reshape(-1, 784).astype("float32") / 255.0
        return x, d["y_train"][:2000].astype("int64")


def _mlp(x, y, offset=0.0):
    """A trained MLP; ``offset`` makes layer ``mid`` fragile, same function.

    ``proj`` is linear, so adding ``offset`` to its bias and subtracting
    ``offset * sum(mid.kernel, 0)`` from ``mid``'s bias leaves every output
    unchanged, while ``mid`` now reads inputs of size ~``offset``: a small
    relative change of its kernel (or pruning it) moves its outputs a lot.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(16, name="proj"),
            keras.layers.Dense(32, "relu", name="mid"),
            keras.layers.Dense(10, name="head"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    proj, mid = model.get_layer("proj"), model.get_layer("mid")
    proj.bias.assign(proj.bias.numpy() + offset)
    mid.bias.assign(mid.bias.numpy() - offset * mid.kernel.numpy().sum(0))
    return model


@pytest.mark.parametrize("mode", ["perturb", "prune"])
def test_fragile_layer_ranks_highest_and_weights_are_restored(probe, mode):
    x, y = probe
    plain, fragile = _mlp(x, y), _mlp(x, y, offset=50.0)
    xp, yp = x[:256], y[:256]
    np.testing.assert_allclose(fragile(xp), plain(xp), atol=1e-3)

    before = [w.copy() for w in fragile.get_weights()]
    table = module_robustness_sensitivity(fragile, xp, yp, eps=0.1, mode=mode)
    for old, new in zip(before, fragile.get_weights(), strict=True):
        assert np.array_equal(old, new)

    assert table.ranking()[0] == "mid"
    assert table.sizes == {"proj": 784 * 16, "mid": 16 * 32, "head": 32 * 10}
    control = module_robustness_sensitivity(plain, xp, yp, eps=0.1, mode=mode)
    assert table.scores["mid"] > 10 * max(control.scores["mid"], 0.01)


def test_perturbation_grows_with_rho(probe):
    x, y = probe
    model = _mlp(x, y)
    small, large = (
        module_robustness_sensitivity(model, x[:256], y[:256], 0.1, rho=rho)
        for rho in (0.01, 0.1)
    )
    for name in small.scores:
        assert 0 < small.scores[name] < large.scores[name]


def test_conv_kernels_are_probed_and_restored(probe):
    x, y = probe
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, activation="relu", name="dw"),
            keras.layers.SeparableConv2D(8, 3, strides=2, name="sep"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, name="fc"),
        ]
    )
    before = [w.copy() for w in model.get_weights()]
    table = module_robustness_sensitivity(
        model, x[:64].reshape(-1, 28, 28, 1), y[:64], eps=0.1, mode="prune"
    )
    assert table.sizes == {
        "conv": 9 * 4,
        "dw": 9 * 4,
        "sep": 9 * 4 + 4 * 8,
        "fc": 8 * 10,
    }
    for old, new in zip(before, model.get_weights(), strict=True):
        assert np.array_equal(old, new)
    subset = module_robustness_sensitivity(
        model, x[:64].reshape(-1, 28, 28, 1), y[:64], 0.1, layers=["sep"]
    )
    assert list(subset.scores) == ["sep"]


def test_table_json_round_trip_and_plot(tmp_path):
    table = SensitivityTable({"a": 0.5, "b": 2.0}, {"a": 10, "b": 20}, 1.25, "prune")
    table.to_json(str(tmp_path / "mrs.json"))
    assert SensitivityTable.from_json(str(tmp_path / "mrs.json")) == table
    table.plot(str(tmp_path / "mrs.png"))
    assert (tmp_path / "mrs.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="saliency"), "mode"),
        (dict(rho=0.0), "rho"),
        (dict(ascent_steps=0), "ascent_steps"),
        (dict(probe_ratio=1.0), "probe_ratio"),
        (dict(layers=["nope"]), "non-prunable"),
    ],
)
def test_measure_rejects_bad_options(kwargs, match):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    x, y = np.zeros((2, 4), "float32"), np.zeros(2, "int64")
    with pytest.raises(ValueError, match=match):
        module_robustness_sensitivity(model, x, y, 0.1, **kwargs)


SIZES = {"c1": 1_000_000, "c2": 3_000_000, "fc1": 2_000_000, "fc2": 7_919}


def _pruned(ratios, sizes):
    counts = {n: ratios[n] * sizes[n] for n in sizes}
    for count in counts.values():
        assert count == pytest.approx(round(count), abs=1e-6)
    return sum(round(c) for c in counts.values())


SCORES = {"c1": 3.0, "c2": 0.5, "fc1": 1.0, "fc2": 2.0}


@pytest.mark.parametrize("target", [0.3, 0.77, 0.9, 0.999])
def test_allocation_meets_budget_exactly(target):
    ratios = allocate_ratios(SCORES, SIZES, target, max_ratio=1.0)
    total = sum(SIZES.values())
    assert total - _pruned(ratios, SIZES) == round((1 - target) * total)


def test_unclipped_allocation_follows_formula():
    ratios = allocate_ratios(SCORES, SIZES, 0.3, temperature=0.5)
    s = {n: (v - 0.5) / 2.5 for n, v in SCORES.items()}  # Min-max normalized.
    weight = {n: np.exp(-v / 0.5) for n, v in s.items()}
    scale = 0.3 * sum(SIZES.values()) / sum(weight[n] * SIZES[n] for n in SIZES)
    for name in SIZES:
        assert ratios[name] == pytest.approx(scale * weight[name], abs=1 / SIZES[name])


def test_allocation_clips_and_keeps_sensitive_layers_denser():
    ratios = allocate_ratios(SCORES, SIZES, 0.9, min_ratio=0.5, max_ratio=0.95)
    total = sum(SIZES.values())
    assert total - _pruned(ratios, SIZES) == round(0.1 * total)
    assert all(0.5 <= r <= 0.95 for r in ratios.values())
    order = sorted(SCORES, key=SCORES.get)
    assert [ratios[n] for n in order] == sorted(ratios.values(), reverse=True)
    assert ratios["c2"] == 0.95


def test_allocation_with_equal_scores_is_uniform():
    ratios = allocate_ratios(dict.fromkeys("abc", 1.0), dict.fromkeys("abc", 1000), 0.6)
    assert ratios == dict.fromkeys("abc", 0.6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target=1.0), "target"),
        (dict(target=0.0), "target"),
        (dict(min_ratio=0.6), "cannot meet"),
        (dict(max_ratio=0.4), "cannot meet"),
        (dict(temperature=0.0), "temperature"),
        (dict(sizes={"a": 10}), "same layer names"),
        (dict(sizes={"a": 10, "b": 0}), "integer >= 1"),
        (dict(scores={"a": 1.0, "b": float("nan")}), "finite"),
        (dict(sizes={"a": 1, "b": 1}, target=0.5, max_ratio=0.6), "whole-weight"),
    ],
)
def test_allocation_rejects_bad_input(kwargs, match):
    args = dict(scores={"a": 1.0, "b": 2.0}, sizes={"a": 10, "b": 10}, target=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        allocate_ratios(**args)
