import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.callbacks import admm_update
from tf_reweight.callbacks.admm_update import ADMMUpdate
from tf_reweight.core import structures
from tf_reweight.methods.admm import ADMMPenalty

SHAPE = (3, 3, 4, 8)  # fits every structure: 3x3 patterns, 4 | cin, 2x2 blocks


def _conv_model(structure, rho=1e-2, target=0.75):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, SHAPE[2]))
    outputs = keras.layers.Conv2D(SHAPE[3], SHAPE[0], name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    struct = structures.get(structure)
    target = None if struct.fixed_sparsity is not None else target
    pruned = tfr.apply(model, struct, target, method=ADMMPenalty(rho), layers=["conv"])
    return pruned, pruned.get_layer("conv").pruned_kernels[0]


@pytest.mark.parametrize(
    "name",
    ["unstructured", "filter", "channel", "column", "kernel", "block:2x2", "2:4"]
    + ["pattern"],
)
def test_z_step_keeps_exactly_the_kept_units_of_w_plus_u(name):
    model, pk = _conv_model(name)
    struct = pk.penalty.structure
    u = np.random.default_rng(1).normal(0, 0.05, SHAPE).astype("float32")
    pk.penalty.u.assign(u)
    v = pk.canonical() + u
    keep = struct.keep_for(SHAPE, 0.75)
    admm_update.update(model)
    z = keras.ops.convert_to_numpy(pk.penalty.z)
    kept = z != 0
    np.testing.assert_array_equal(kept, struct.project(v, keep) > 0)
    assert np.count_nonzero(z) == keep * struct.unit_weights(SHAPE)
    np.testing.assert_allclose(z[kept], v[kept], rtol=1e-6)
    np.testing.assert_allclose(pk.penalty.u.numpy(), v - z, atol=1e-7)


def test_z_step_matches_numpy_top_k_for_unstructured_and_filter():
    for name, axes in (("unstructured", None), ("filter", (0, 1, 2))):
        model, pk = _conv_model(name)
        v = pk.canonical()
        admm_update.update(model, dual=False)
        z = pk.penalty.z.numpy()
        if axes is None:
            top = np.argsort(-np.abs(v).ravel())[: round(0.25 * v.size)]
            expected = np.zeros(v.size, bool)
            expected[top] = True
            expected = expected.reshape(v.shape)
        else:
            norms = np.sqrt((v**2).sum(axis=axes))
            expected = np.broadcast_to(
                np.isin(np.arange(8), np.argsort(-norms)[:2]), v.shape
            )
        np.testing.assert_array_equal(z != 0, expected)
        np.testing.assert_array_equal(pk.penalty.u.numpy(), 0.0)  # no dual step


def test_penalty_value_rho_schedule_and_deactivate():
    model, pk = _conv_model("unstructured", rho=0.5)
    rng = np.random.default_rng(2)
    z, u = (rng.normal(size=SHAPE).astype("float32") for _ in range(2))
    pk.penalty.z.assign(z)
    pk.penalty.u.assign(u)
    w = pk.canonical()
    expected = 0.25 * np.sum((w - z + u) ** 2)
    assert float(pk.penalty(pk.variable)) == pytest.approx(expected, rel=1e-5)
    pk.penalty.set_rho(2.0)  # the scaled dual is rescaled by old / new
    np.testing.assert_allclose(pk.penalty.u.numpy(), u / 4, rtol=1e-6)
    for _ in range(3):
        admm_update.update(model, rho_factor=3.0, rho_max=10.0)
    assert float(pk.penalty.rho.numpy()) == pytest.approx(10.0)
    tfr.hard_prune(model)
    assert float(pk.penalty.rho.numpy()) == 0.0
    assert float(pk.penalty(pk.variable)) == 0.0
    assert admm_update.residual(model) is None
    before = pk.penalty.z.numpy()
    admm_update.update(model)  # pruned layers are left alone
    np.testing.assert_array_equal(pk.penalty.z.numpy(), before)


def test_refresh_penalties_drives_a_full_admm_step():
    model, pk = _conv_model("filter")
    other, opk = _conv_model("filter")
    tfr.refresh_penalties(model)
    admm_update.update(other)
    np.testing.assert_allclose(pk.penalty.z.numpy(), opk.penalty.z.numpy())
    np.testing.assert_allclose(pk.penalty.u.numpy(), opk.penalty.u.numpy())


def _fit_small(epochs, callback):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int64")
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, "relu"), keras.layers.Dense(2)]
    )
    pruned = tfr.apply(model, "unstructured", 0.8, method=ADMMPenalty(0.05))
    pruned.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = pruned.fit(
        x, y, batch_size=32, epochs=epochs, callbacks=[callback], verbose=0
    )
    return pruned, history.history


def test_residual_shrinks_over_updates_and_state_survives_keras_file(tmp_path):
    callback = ADMMUpdate(every=1, rho_factor=2.0, rho_max=1.0)
    model, history = _fit_small(6, callback)
    residuals = history["admm_residual"]
    assert len(residuals) == 6
    assert residuals[-1] < 0.5 * residuals[0], residuals
    path = tmp_path / "admm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for old, new in zip(
        tfr.pruning.wrappers(model), tfr.pruning.wrappers(loaded), strict=True
    ):
        a, b = old.pruned_kernels[0].penalty, new.pruned_kernels[0].penalty
        assert isinstance(b, ADMMPenalty)
        for name in ("z", "u", "rho"):
            np.testing.assert_array_equal(
                getattr(a, name).numpy(), getattr(b, name).numpy()
            )
    assert float(b.rho.numpy()) == pytest.approx(min(0.05 * 2**6, 1.0))
    assert admm_update.residual(loaded) == pytest.approx(residuals[-1], rel=1e-5)


def test_configs_round_trip():
    p = ADMMPenalty(rho=3e-3)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(p)
    )
    assert isinstance(again, ADMMPenalty) and again.get_config() == {"rho": 3e-3}
    cb = ADMMUpdate(every=50, unit="step", rho_factor=1.5, rho_max=0.1)
    assert ADMMUpdate.from_config(cb.get_config()).get_config() == cb.get_config()
    assert ADMMUpdate().get_config()["rho_max"] is None


@pytest.mark.parametrize("rho", [0.0, -1e-3, float("inf"), True, "1e-3", None])
def test_bad_rho_raises(rho):
    with pytest.raises(ValueError, match="rho"):
        ADMMPenalty(rho)


def test_bad_update_arguments_raise():
    for kwargs, match in (
        ({"every": 0}, "every"),
        ({"unit": "batch"}, "unit"),
        ({"rho_factor": 0.5}, "rho_factor"),
        ({"rho_max": 0.0}, "rho_max"),
        ({"rho_factor": float("nan")}, "rho_factor"),
        ({"rho_factor": "1.5"}, "rho_factor"),
        ({"rho_max": float("inf")}, "rho_max"),
        ({"every": 2.0}, "every"),
    ):
        with pytest.raises(ValueError, match=match):
            ADMMUpdate(**kwargs)


def test_bad_update_step_arguments_raise_before_any_change():
    model, pk = _conv_model("filter", rho=0.5)
    for kwargs, match in (
        ({"rho_factor": 0.5}, "rho_factor"),
        ({"rho_factor": "2"}, "rho_factor"),
        ({"rho_max": 0.0}, "rho_max"),
        ({"rho_max": float("nan")}, "rho_max"),
        ({"dual": "yes"}, "dual"),
    ):
        with pytest.raises(ValueError, match=match):
            admm_update.update(model, **kwargs)
        np.testing.assert_array_equal(pk.penalty.z.numpy(), 0.0)
        assert float(pk.penalty.rho.numpy()) == 0.5


def test_prune_recipe_runs_admm_and_validates_before_building():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    dense = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    result = tfr.recipes.prune(
        dense,
        (x, y),
        method="admm",
        target=0.75,
        penalty=0.05,
        phase1_epochs=2,
        retrain_epochs=1,
        batch_size=32,
        verbose=0,
        method_options={"every": 1, "rho_factor": 2.0},
    )
    assert len(result.history["admm_residual"]) == 2  # logged while ADMM is on
    assert result.method == "admm" and result.penalty == 0.05
    assert tfr.report(result.model).sparsity == pytest.approx(0.75)
    for kwargs, match in (
        ({"method": "l0"}, "Unknown pruning method"),
        ({"method": "admm", "penalty": 0.0}, "rho"),
        ({"method": "admm", "eps": 0.1}, "configure other methods than 'admm'"),
        ({"method": "magnitude", "penalty": 1e-4}, "no penalty"),
        ({"method": "group_lasso", "method_options": {"every": 2}}, "phase-1"),
        ({"phase1_epochs": -1}, "phase1_epochs"),
    ):
        with pytest.raises(ValueError, match=match):
            tfr.recipes.prune(dense, (x, y), target=0.75, **kwargs)
