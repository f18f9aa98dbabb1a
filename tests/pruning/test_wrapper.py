import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.core import backend_support

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(64, 8, 8, 3)).astype("float32")
Y = RNG.integers(0, 4, size=64)


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="dense")(x)
    return keras.Model(inputs, outputs)


def _pruned_and_trained(epochs=3, prune_at=1):
    pruned = tfr.apply(_model(), "unstructured", 0.8, penalty=1e-3)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(
        X,
        Y,
        epochs=epochs,
        verbose=0,
        callbacks=[tfr.Reweight(), tfr.HardPrune(prune_at)],
    )
    return pruned


def _state(model):
    # The effective kernel: on JAX stored pruned weights may move (the mask
    # applies in the forward pass), so kernels are read through their masks.
    return [
        (
            keras.ops.convert_to_numpy(pk.mask),
            keras.ops.convert_to_numpy(pk.penalty.alpha),
            backend_support.masked_value(pk),
        )
        for w in tfr.pruning.wrappers(model)
        for pk in w.pruned_kernels
    ]


def test_keras_round_trip_restores_predictions_masks_and_alphas(tmp_path):
    pruned = tfr.apply(_model(), "filter", 0.5, penalty=1e-3)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(X, Y, epochs=1, verbose=0, callbacks=[tfr.Reweight()])
    tfr.hard_prune(pruned, final=False)  # masks installed, alphas still live
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), pruned.predict(X, verbose=0)
    )
    for (m1, a1, _), (m2, a2, _) in zip(_state(pruned), _state(loaded), strict=True):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(a1, a2)
    # The saved state was not trivial: some groups pruned, some still pressed.
    assert any((m == 0).any() for m, _, _ in _state(loaded))
    assert any((a > 0).any() for _, a, _ in _state(loaded))


def test_resumed_fit_keeps_the_same_masks(tmp_path):
    pruned = _pruned_and_trained()
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert all(w.is_pruned for w in tfr.pruning.wrappers(loaded))
    before = _state(loaded)
    loaded.fit(X, Y, epochs=2, verbose=0, callbacks=[tfr.Reweight(), tfr.HardPrune(0)])
    for (m1, _, _), (m2, _, w2) in zip(before, _state(loaded), strict=True):
        np.testing.assert_array_equal(m1, m2)
        assert np.all(w2[m1 == 0] == 0)


def test_wrapper_config_round_trip():
    layer = tfr.PruningWrapper(
        keras.layers.Dense(5, name="d"),
        "block:2x2",
        0.75,
        scope="layer",
        method=tfr.ReweightedGroupPenalty(1e-3),
    )
    again = tfr.PruningWrapper.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert repr(again.structure) == "block:2x2" and again.name == "d"


def test_the_users_kernel_regularizer_is_kept_next_to_the_penalty(tmp_path):
    inputs = keras.Input((16,))
    outputs = keras.layers.Dense(
        8, kernel_regularizer=keras.regularizers.L2(0.5), name="d"
    )(inputs)
    model = keras.Model(inputs, outputs)
    user = float(keras.ops.convert_to_numpy(sum(model.losses)))
    assert user > 0.0
    pruned = tfr.apply(model, target=0.5, penalty=0.0, layers=["d"])
    assert float(keras.ops.convert_to_numpy(sum(pruned.losses))) == pytest.approx(user)
    with_penalty = tfr.apply(model, target=0.5, penalty=1e-2, layers=["d"])
    assert float(keras.ops.convert_to_numpy(sum(with_penalty.losses))) > user + 1e-3
    path = tmp_path / "reg.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert float(keras.ops.convert_to_numpy(sum(loaded.losses))) == pytest.approx(user)
    plain = tfr.strip(pruned)
    assert float(keras.ops.convert_to_numpy(sum(plain.losses))) == pytest.approx(user)


def test_masking_writes_exact_zeros_over_non_finite_weights():
    pruned = tfr.apply(_model(), "unstructured", 0.5, layers=["dense"])
    (pk,) = pruned.get_layer("dense").pruned_kernels
    value = keras.ops.convert_to_numpy(pk.variable).copy()
    value.flat[0] = np.nan
    value.flat[1] = np.inf
    pk.variable.assign(value)
    mask = np.ones(pk.layout.canonical, np.float32)
    mask.flat[0] = mask.flat[1] = 0.0
    pk.assign_mask(mask)
    kernel = keras.ops.convert_to_numpy(pk.variable)
    assert kernel.flat[0] == 0.0 and kernel.flat[1] == 0.0
    assert np.isfinite(
        keras.ops.convert_to_numpy(tfr.strip(pruned).get_layer("dense").kernel)
    ).all()
