"""Tests for `tf_reweight.robust.sensitivity`: MRS probes and ratio allocation."""

import os

import keras
import numpy as np
import pytest

from tf_reweight.robust import sensitivity
from tf_reweight.robust.attack import Attack
from tf_reweight.robust.sensitivity import (
    SensitivityTable,
    module_robustness_sensitivity,
    prunable_layers,
)

PGD = Attack(epsilon=0.1)


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
    table = module_robustness_sensitivity(fragile, xp, yp, PGD, mode=mode)
    for old, new in zip(before, fragile.get_weights(), strict=True):
        assert np.array_equal(old, new)

    assert table.ranking()[0] == "mid"
    assert table.sizes == {"proj": 784 * 16, "mid": 16 * 32, "head": 32 * 10}
    control = module_robustness_sensitivity(plain, xp, yp, PGD, mode=mode)
    assert table.scores["mid"] > 10 * max(control.scores["mid"], 0.01)


def test_perturbation_grows_with_rho(probe):
    x, y = probe
    model = _mlp(x, y)
    small, large = (
        module_robustness_sensitivity(model, x[:256], y[:256], PGD, rho=rho)
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
        model, x[:64].reshape(-1, 28, 28, 1), y[:64], PGD, mode="prune"
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
        model, x[:64].reshape(-1, 28, 28, 1), y[:64], PGD, layers=["sep"]
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
        (dict(structure="rows"), "structure"),
        (dict(attack=0.1), "must be an `Attack`"),
    ],
)
def test_measure_rejects_bad_options(kwargs, match):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    x, y = np.zeros((2, 4), "float32"), np.zeros(2, "int64")
    with pytest.raises(ValueError, match=match):
        module_robustness_sensitivity(model, x, y, **{"attack": PGD, **kwargs})


def test_filter_probe_zeroes_whole_filters(probe, monkeypatch):
    x, y = probe
    model = _mlp(x, y)
    probed = {}  # The first value assigned to each kernel: its probe.
    assign = sensitivity._assign

    def spy(variable, value):
        probed.setdefault(variable.path, np.array(value))
        assign(variable, value)

    monkeypatch.setattr(sensitivity, "_assign", spy)
    before = {w.path: w.numpy().copy() for w in model.weights}
    table = module_robustness_sensitivity(
        model, x[:64], y[:64], PGD, mode="prune", probe_ratio=0.25, structure="filter"
    )
    for w in model.weights:
        assert np.array_equal(w.numpy(), before[w.path])
    assert set(table.scores) == {"proj", "mid", "head"}
    for name, filters in (("proj", 16), ("mid", 32), ("head", 10)):
        path = model.get_layer(name).kernel.path
        kernel, original = probed[path], before[path]
        dead = np.all(kernel == 0, axis=0)  # Whole output columns: filters.
        assert dead.sum() == round(0.25 * filters)
        np.testing.assert_array_equal(kernel[:, ~dead], original[:, ~dead])
        norms = np.linalg.norm(original, axis=0)
        assert norms[dead].max() <= norms[~dead].min()  # The weakest filters.


def test_prunable_layers_follow_the_model_and_the_names():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="a"),
            keras.layers.ReLU(),
            keras.layers.Dense(2, name="b"),
        ]
    )
    assert [n for n, _ in prunable_layers(model)] == ["a", "b"]
    assert [n for n, _ in prunable_layers(model, ["b"])] == ["b"]


def test_scores_are_float32_under_mixed_precision(probe):
    x, y = probe[0][:256], probe[1][:256]
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((784,)), keras.layers.Dense(8), keras.layers.Dense(10)]
        )
        table = module_robustness_sensitivity(
            model, x, y, Attack(epsilon=0.0, steps=1), mode="prune"
        )
        logits = keras.ops.cast(model(x, training=False), "float32")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        expected = float(loss(y, logits))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # bfloat16 keeps about 3 significant digits; the loss of bfloat16 logits
    # is computed in float32.
    assert table.base_loss == pytest.approx(expected, rel=1e-5)
