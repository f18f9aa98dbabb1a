"""The self-setting reweighted penalty: ``penalty="auto"`` and ``eps="auto"``."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.methods import reweighted
from tf_reweight.pruning import operations


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(3, name="fc2"),
        ]
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


class FirstLoss(keras.callbacks.Callback):
    """Records the loss of the first training batch."""

    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "loss"):
            self.loss = float(logs["loss"])


def _penalties(model):
    return [pk.penalty for w in tfr.pruning.wrappers(model) for pk in w.pruned_kernels]


def _fit(model, epochs=1, **kwargs):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first = FirstLoss()
    model.fit(
        *_data(),
        batch_size=16,
        epochs=epochs,
        verbose=0,
        **kwargs,
        callbacks=[first, tfr.Reweight()],
    )
    return first


def test_auto_eps_matches_numpy_formula():
    rng = np.random.default_rng(1)
    norms = rng.uniform(0.01, 1.0, 40)
    kept = np.zeros(40, bool)
    kept[:10] = True
    expected = 0.01 * np.median(norms) * np.sqrt(40 / 10)
    assert reweighted.auto_eps(norms, kept) == pytest.approx(expected, rel=1e-12)
    # It grows with the compression rate and follows the kernel's scale.
    kept_more = np.ones(40, bool)
    assert reweighted.auto_eps(norms, kept_more) < reweighted.auto_eps(norms, kept)
    assert reweighted.auto_eps(10 * norms, kept) == pytest.approx(
        10 * reweighted.auto_eps(norms, kept), rel=1e-12
    )
    # All-zero norms (a pruned kernel) still give a positive eps.
    assert reweighted.auto_eps(np.zeros(5), np.ones(5, bool)) > 0


def test_auto_penalty_matches_formula_and_refuses_bad_losses():
    assert reweighted.auto_penalty(0.05, 1000) == pytest.approx(2.5 * 0.05 / 1000)
    assert reweighted.auto_penalty(0.0, 10) == pytest.approx(2.5 * 1e-4 / 10)
    for bad in (float("nan"), float("inf"), -1.0, "0.1", None):
        with pytest.raises(ValueError, match="data_loss"):
            reweighted.auto_penalty(bad, 10)


def test_auto_penalty_is_zero_until_calibrated_then_follows_formula():
    pruned = tfr.apply(_model(), "unstructured", "4x", penalty="auto")
    penalties = _penalties(pruned)
    assert all(p.needs_calibration for p in penalties)
    layer = pruned.get_layer("fc1")
    assert float(sum(layer.losses)) == 0.0
    assert operations.calibrated_penalty(pruned) is None
    value = operations.calibrate_penalties(pruned, 0.5)
    assert operations.calibrated_penalty(pruned) == pytest.approx(value, rel=1e-6)
    kept = round(0.25 * (8 * 16 + 16 * 3))
    assert value == pytest.approx(2.5 * 0.5 / kept, rel=1e-6)
    assert not any(p.needs_calibration for p in penalties)
    pk = layer.pruned_kernels[0]
    w = pk.canonical()
    expected = value * np.sum(pk.penalty.alpha.numpy() * np.abs(w).reshape(-1))
    assert float(sum(layer.losses)) == pytest.approx(expected, rel=1e-4)
    # A second call finds nothing waiting.
    assert operations.calibrate_penalties(pruned, 0.5) is None


def test_auto_penalty_counts_the_groups_of_the_final_target():
    pruned = tfr.apply(_model(), "unstructured", "4x", penalty="auto")
    operations.set_sparsity(pruned, 0.2)  # a progressive schedule's first stage
    value = operations.calibrate_penalties(pruned, 0.5)
    assert value == pytest.approx(2.5 * 0.5 / round(0.25 * (8 * 16 + 16 * 3)), rel=1e-6)
    sparsity = [
        float(keras.ops.convert_to_numpy(w.sparsity))
        for w in tfr.pruning.wrappers(pruned)
    ]
    assert sparsity == pytest.approx([0.2 * 0.75] * len(sparsity))  # restored


def test_calibrate_refuses_non_finite_loss_before_changing_anything():
    pruned = tfr.apply(_model(), "unstructured", "4x", penalty="auto")
    with pytest.raises(ValueError, match="data_loss"):
        operations.calibrate_penalties(pruned, float("nan"))
    assert all(p.needs_calibration for p in _penalties(pruned))


def test_fit_sets_lambda_from_first_batch_loss_and_resume_keeps_it(tmp_path):
    pruned = tfr.apply(_model(), "unstructured", "4x", penalty="auto", eps="auto")
    first = _fit(pruned)
    kept = round(0.25 * (8 * 16 + 16 * 3))
    lambdas = [
        float(keras.ops.convert_to_numpy(p.auto_lambda)) for p in _penalties(pruned)
    ]
    np.testing.assert_allclose(lambdas, 2.5 * first.loss / kept, rtol=1e-5)
    path = tmp_path / "auto.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    restored = [
        float(keras.ops.convert_to_numpy(p.auto_lambda)) for p in _penalties(loaded)
    ]
    np.testing.assert_allclose(restored, lambdas, rtol=0)
    assert not any(p.needs_calibration for p in _penalties(loaded))
    eps = [float(keras.ops.convert_to_numpy(p.auto_eps)) for p in _penalties(pruned)]
    assert min(eps) > 0
    np.testing.assert_allclose(
        [float(keras.ops.convert_to_numpy(p.auto_eps)) for p in _penalties(loaded)],
        eps,
        rtol=0,
    )
    _fit(loaded)  # a resumed fit keeps the calibrated lambda
    again = [
        float(keras.ops.convert_to_numpy(p.auto_lambda)) for p in _penalties(loaded)
    ]
    np.testing.assert_allclose(again, lambdas, rtol=0)


def test_auto_eps_refresh_uses_the_kernels_norms_and_kept_share():
    pruned = tfr.apply(_model(), "unstructured", "4x", penalty=1e-3, eps="auto")
    pk = pruned.get_layer("fc1").pruned_kernels[0]
    w = pk.canonical()
    norms = np.abs(w).reshape(-1).astype(np.float64)
    kept = np.zeros(norms.size, bool)
    kept[: norms.size // 4] = True
    pk.penalty.refresh(w, kept)
    eps = 0.01 * np.median(norms) * np.sqrt(4)
    np.testing.assert_allclose(pk.penalty.alpha.numpy(), 1 / (norms + eps), rtol=1e-4)
    assert float(pk.penalty.auto_eps.numpy()) == pytest.approx(eps, rel=1e-5)
    # Later refreshes keep the first eps, however the norms and targets move.
    pk.penalty.refresh(w / 100, np.ones(norms.size, bool))
    np.testing.assert_allclose(
        pk.penalty.alpha.numpy(), 1 / (norms / 100 + eps), rtol=1e-4
    )


def test_auto_config_round_trip_and_bad_strings():
    penalty = tfr.ReweightedGroupPenalty("auto", eps="auto")
    config = penalty.get_config()
    assert config["penalty"] == "auto" and config["eps"] == "auto"
    assert tfr.ReweightedGroupPenalty.from_config(config).get_config() == config
    for kwargs in ({"penalty": "Auto"}, {"penalty": "1e-4"}, {"eps": "big"}):
        with pytest.raises(ValueError, match="Received"):
            tfr.ReweightedGroupPenalty(**kwargs)
    fixed = tfr.apply(_model(), "unstructured", "4x", penalty=1e-4)
    with pytest.raises(ValueError, match="no value to calibrate"):
        _penalties(fixed)[0].calibrate(0.5, 10)


def test_apply_and_recipes_accept_auto():
    setup = tfr.recipes.method_setup("reweighted", "auto", eps="auto")
    assert setup.value == "auto"
    assert setup.penalty.get_config()["penalty"] == "auto"
    with pytest.raises(ValueError, match="penalty"):
        tfr.recipes.method_setup("reweighted", "automatic")
