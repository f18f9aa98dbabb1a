import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import structures


def _wrapped(structure="filter", target=0.5, **penalty):
    inputs = keras.Input((6, 6, 4))
    outputs = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    # Naming the output layer lets filter pruning prune it.
    pruned = tfr.apply(model, structure, target, layers=["conv"], **penalty)
    return pruned.get_layer("conv")


def test_penalty_value_matches_numpy_formula():
    layer = _wrapped(penalty=3e-3)
    pk = layer.pruned_kernels[0]
    alpha = np.random.default_rng(0).uniform(size=8).astype("float32")
    pk.penalty.alpha.assign(alpha)
    w = pk.canonical()
    expected = 3e-3 * np.sum(alpha * np.sqrt((w**2).sum(axis=(0, 1, 2))))
    assert float(pk.penalty(pk.variable)) == pytest.approx(expected, rel=1e-5)
    assert float(sum(layer.losses)) == pytest.approx(expected, rel=1e-5)


def test_squared_penalty_and_refresh():
    layer = _wrapped(penalty=1e-2, squared=True, eps=0.5)  # unbounded by default
    pk = layer.pruned_kernels[0]
    w = pk.canonical()
    sq = (w**2).sum(axis=(0, 1, 2))
    pk.penalty.refresh(w, np.zeros(8, bool))
    np.testing.assert_allclose(pk.penalty.alpha.numpy(), 1 / (sq + 0.5), rtol=1e-5)
    assert float(pk.penalty(pk.variable)) == pytest.approx(
        1e-2 * np.sum(sq / (sq + 0.5)), rel=1e-5
    )


def test_alpha_update_is_inverse_norm_and_bounded_zeroes_kept_groups():
    layer = _wrapped(eps=1e-3, bounded=True)
    model = keras.Sequential([layer])
    model.build((None, 6, 6, 4))
    tfr.refresh_penalties(model)
    pk = layer.pruned_kernels[0]
    norms = np.sqrt((pk.canonical() ** 2).sum(axis=(0, 1, 2)))
    top = np.argsort(-norms)[:4]
    alpha = pk.penalty.alpha.numpy()
    np.testing.assert_array_equal(alpha[top], 0.0)
    rest = np.setdiff1d(np.arange(8), top)
    np.testing.assert_allclose(alpha[rest], 1 / (norms[rest] + 1e-3), rtol=1e-5)


def test_unbound_penalty_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="bound to a kernel"):
        tfr.ReweightedGroupPenalty()(keras.ops.ones((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        tfr.ReweightedGroupPenalty(penalty=-1.0)
    with pytest.raises(ValueError, match="eps"):
        tfr.ReweightedGroupPenalty(eps=0.0)


def test_config_round_trip():
    p = tfr.ReweightedGroupPenalty(2e-4, eps=0.1, squared=True, bounded=False)
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(p)
    )
    assert isinstance(again, tfr.ReweightedGroupPenalty)
    assert again.get_config() == p.get_config()
    assert structures.get("filter").get_config() == {}


def _lasso_layer(structure, lam):
    return _wrapped(structure, 0.5, method=tfr.regularizers.GroupLassoPenalty(lam))


def test_group_norms_helper_matches_numpy():
    w = np.random.default_rng(3).normal(size=(3, 3, 4, 8)).astype("float32")
    filt = structures.get("filter")
    norms = tfr.regularizers.group_norms(filt, w)
    np.testing.assert_allclose(norms, np.sqrt((w**2).sum(axis=(0, 1, 2))), rtol=1e-6)
    sq = tfr.regularizers.group_norms(structures.get("column"), w, squared=True)
    np.testing.assert_allclose(sq, (w**2).sum(axis=3).reshape(-1), rtol=1e-6)


def test_group_lasso_is_static_group_norm_sum_and_l1_when_unstructured():
    layer = _lasso_layer("filter", 2e-3)
    pk = layer.pruned_kernels[0]
    w = pk.canonical()
    expected = 2e-3 * np.sqrt((w**2).sum(axis=(0, 1, 2))).sum()
    assert float(pk.penalty(pk.variable)) == pytest.approx(expected, rel=1e-5)
    model = keras.Sequential([layer])
    model.build((None, 6, 6, 4))
    tfr.refresh_penalties(model)  # nothing to refresh: alpha stays 1
    assert float(sum(layer.losses)) == pytest.approx(expected, rel=1e-5)
    pk = _lasso_layer("unstructured", 1e-3).pruned_kernels[0]
    l1 = 1e-3 * np.abs(pk.canonical()).sum()
    assert float(pk.penalty(pk.variable)) == pytest.approx(l1, rel=1e-4)


def test_group_lasso_switches_off_at_hard_prune_and_stays_off_after_load(tmp_path):
    layer = _lasso_layer("filter", 1e-3)
    model = keras.Sequential([keras.Input((6, 6, 4)), layer])
    tfr.hard_prune(model)
    assert float(sum(layer.losses)) == 0.0
    model.save(tmp_path / "lasso.keras")
    loaded = keras.saving.load_model(tmp_path / "lasso.keras").layers[0]
    assert isinstance(
        loaded.pruned_kernels[0].penalty, tfr.regularizers.GroupLassoPenalty
    )
    assert float(sum(loaded.losses)) == 0.0


def test_group_lasso_config_and_bad_penalty():
    p = tfr.regularizers.GroupLassoPenalty(3e-5)
    config = keras.saving.serialize_keras_object(p)
    again = tfr.regularizers.get(config)
    assert isinstance(again, tfr.regularizers.GroupLassoPenalty)
    assert again.get_config() == {"penalty": 3e-5}
    with pytest.raises(ValueError, match="non-negative"):
        tfr.regularizers.GroupLassoPenalty(-1e-5)


@pytest.mark.parametrize("bad", ["1e-4", float("inf"), float("nan"), None, True])
def test_penalties_refuse_strings_inf_nan_none_and_bools(bad):
    with pytest.raises(ValueError, match=r"`penalty` must be .*Received: penalty="):
        tfr.ReweightedGroupPenalty(penalty=bad)
    with pytest.raises(ValueError, match="`penalty` must be"):
        tfr.regularizers.GroupLassoPenalty(bad)
    with pytest.raises(ValueError, match=r"`eps` must be a positive finite number"):
        tfr.ReweightedGroupPenalty(eps=bad)
    with pytest.raises(ValueError, match="penalty"):
        tfr.apply(
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
            target=0.5,
            penalty=bad,
        )


def test_penalty_flags_must_be_bools():
    with pytest.raises(ValueError, match="`squared` must be True or False"):
        tfr.ReweightedGroupPenalty(squared="False")
    with pytest.raises(ValueError, match="`bounded` must be True or False"):
        tfr.ReweightedGroupPenalty(bounded=1)
    assert tfr.ReweightedGroupPenalty(1, eps=np.float32(0.1)).get_config()["eps"] == (
        pytest.approx(0.1)
    )


def test_every_penalty_starts_with_an_unrefreshed_counter():
    for method in (tfr.ReweightedGroupPenalty(), tfr.regularizers.GroupLassoPenalty()):
        pk = _wrapped(method=method).pruned_kernels[0]
        assert int(pk.penalty.refreshed_at.numpy()) == -1
