import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.callbacks.base import training_step

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(64, 10)).astype("float32")
Y = RNG.integers(0, 3, size=64)


def _pruned(target=0.75, structure="unstructured"):
    inputs = keras.Input((10,))
    x = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
    outputs = keras.layers.Dense(3, name="d2")(x)
    pruned = tfr.apply(keras.Model(inputs, outputs), structure, target, penalty=1e-3)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned


def test_hard_prune_reaches_exact_sparsity_and_masks_hold_through_fit():
    model = _pruned()
    model.fit(
        X,
        Y,
        epochs=4,
        batch_size=16,
        verbose=0,
        callbacks=[tfr.Reweight(), tfr.HardPrune(2)],
    )
    rep = tfr.report(model)
    assert rep.to_dict()["nonzeros"] == round(0.25 * (10 * 16 + 16 * 3))
    for w in tfr.pruning.wrappers(model):
        pk = w.pruned_kernels[0]
        assert w.is_pruned and not pk.penalty.alpha.numpy().any()
        np.testing.assert_array_equal(pk.variable.numpy() != 0, pk.mask.numpy() == 1)


def test_callbacks_survive_reuse_across_fit_calls():
    model = _pruned()
    callbacks = [tfr.Reweight(every=2), tfr.HardPrune(1), tfr.SparsityMonitor()]
    h1 = model.fit(X, Y, epochs=2, verbose=0, callbacks=callbacks)
    masks = [w.pruned_kernels[0].mask.numpy() for w in tfr.pruning.wrappers(model)]
    h2 = model.fit(X, Y, epochs=2, verbose=0, callbacks=callbacks)
    assert h1.history["sparsity"][-1] == pytest.approx(0.75, abs=0.01)
    assert h2.history["sparsity"] == pytest.approx([h1.history["sparsity"][-1]] * 2)
    for w, m in zip(tfr.pruning.wrappers(model), masks, strict=True):
        np.testing.assert_array_equal(w.pruned_kernels[0].mask.numpy(), m)
    assert "sparsity_d1" in h2.history


def test_scheduled_pruning_follows_polynomial_schedule(tmp_path):
    model = _pruned(target=0.9)
    schedule = tfr.PolynomialSparsity(0.9, begin_step=0, end_step=12)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(tfr.report(self.model).sparsity)

    model.fit(
        X,
        Y,
        epochs=4,
        batch_size=16,
        verbose=0,
        callbacks=[
            tfr.ScheduledPruning(schedule, frequency=4),
            Probe(),
            tfr.SparsityMonitor(str(tmp_path / "tb")),
        ],
    )
    assert seen == sorted(seen)  # monotone
    assert seen[-1] == pytest.approx(0.9, abs=0.01)
    assert all(w.is_pruned for w in tfr.pruning.wrappers(model))
    assert list((tmp_path / "tb").iterdir())


def test_progressive_schedule_stages():
    model = _pruned(target=0.875)
    schedule = tfr.ProgressiveSparsity((2, 4, 8), steps_per_stage=4)
    model.fit(
        X,
        Y,
        epochs=1,
        batch_size=16,
        verbose=0,
        callbacks=[tfr.ScheduledPruning(schedule, frequency=4)],
    )
    assert tfr.report(model).sparsity == pytest.approx(0.75, abs=0.01)
    model.fit(
        X,
        Y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[tfr.ScheduledPruning(schedule, frequency=4)],
    )
    assert tfr.report(model).sparsity == pytest.approx(0.875, abs=0.01)


def test_callback_configs_and_validation():
    for cb in [
        tfr.Reweight(3, "step"),
        tfr.HardPrune(2),
        tfr.SparsityMonitor("x"),
        tfr.ScheduledPruning(tfr.ProgressiveSparsity((2, 4), 5), 7),
    ]:
        assert type(cb).from_config(cb.get_config()).get_config() == cb.get_config()
    with pytest.raises(ValueError, match="every"):
        tfr.Reweight(every=0)
    with pytest.raises(ValueError, match="unit"):
        tfr.Reweight(unit="batch")
    with pytest.raises(ValueError, match="epoch"):
        tfr.HardPrune(-1)
    with pytest.raises(ValueError, match="schedule"):
        tfr.ScheduledPruning(0.5)


X_NAN = X.copy()
X_NAN[5, 3] = np.nan  # one NaN in the first batch


@pytest.mark.parametrize(
    "callback, where",
    [
        (lambda: tfr.Reweight(), "end of epoch 0"),
        (lambda: tfr.Reweight(1, "step"), "step 1"),
        (lambda: tfr.ScheduledPruning(tfr.PolynomialSparsity(0.75, 0, 8), 2), "step 2"),
        (lambda: tfr.admm.ADMMUpdate(), "end of epoch 0"),
    ],
)
def test_nan_data_stops_training_before_the_state_turns_nan(callback, where):
    # ReLU may hide the NaN from the first loss, not from the d1 kernel.
    message = f"(loss is not finite|holds NaN or inf) at (the )?{where}"
    model = _pruned()
    with pytest.raises(RuntimeError, match=message):
        model.fit(
            X_NAN,
            Y,
            epochs=2,
            batch_size=16,
            shuffle=False,
            verbose=0,
            callbacks=[callback()],
        )
    for w in tfr.pruning.wrappers(model):
        pk = w.pruned_kernels[0]
        assert np.isfinite(pk.penalty.alpha.numpy()).all()
        assert not w.is_pruned and (pk.mask.numpy() == 1).all()


def test_nan_kernel_stops_hard_prune_and_names_the_kernel():
    model = _pruned()
    kernel = model.get_layer("d2").layer.kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(RuntimeError, match="kernel 'kernel' of layer 'd2'.*epoch 0"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[tfr.HardPrune(0)])
    assert not any(w.is_pruned for w in tfr.pruning.wrappers(model))


def test_callbacks_that_never_finished_warn():
    model = _pruned()
    with pytest.warns(UserWarning, match=r"HardPrune\(epoch=5\) never pruned"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[tfr.HardPrune(5)])
    schedule = tfr.PolynomialSparsity(0.75, begin_step=0, end_step=100)
    with pytest.warns(UserWarning, match="before its end_step 100"):
        model.fit(
            X, Y, epochs=1, verbose=0, callbacks=[tfr.ScheduledPruning(schedule, 2)]
        )


def test_pruning_callbacks_refuse_a_plain_model_before_any_step():
    inputs = keras.Input((10,))
    plain = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    plain.compile("sgd", "mse")
    schedule = tfr.PolynomialSparsity(0.75, 0, 8)
    for callback in (tfr.ScheduledPruning(schedule, 2), tfr.HardPrune(1)):
        with pytest.raises(ValueError, match="no pruned layers"):
            plain.fit(X, np.zeros((64, 3)), verbose=0, callbacks=[callback])
        assert int(plain.optimizer.iterations.numpy()) == 0


@pytest.mark.parametrize("bad", [0, True, 2.0, "2", float("nan"), None])
def test_integer_arguments_refuse_bools_floats_and_strings(bad):
    with pytest.raises(ValueError, match="every"):
        tfr.Reweight(every=bad)
    with pytest.raises(ValueError, match="frequency"):
        tfr.ScheduledPruning(tfr.ProgressiveSparsity((2, 4), 5), frequency=bad)
    if bad != 0:
        with pytest.raises(ValueError, match="epoch"):
            tfr.HardPrune(epoch=bad)


def test_one_scheduled_pruning_continues_its_schedule_across_fit_calls():
    model = _pruned(target=0.875)
    schedule = tfr.ProgressiveSparsity((2, 4, 8), steps_per_stage=4)
    callback = tfr.ScheduledPruning(schedule, frequency=4)
    config = callback.get_config()
    with pytest.warns(UserWarning, match="before its end_step 8"):
        model.fit(X, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert tfr.report(model).sparsity == pytest.approx(0.75, abs=0.01)
    assert not any(w.is_pruned for w in tfr.pruning.wrappers(model))
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert tfr.report(model).sparsity == pytest.approx(0.875, abs=0.01)
    assert all(w.is_pruned for w in tfr.pruning.wrappers(model))
    assert callback.get_config() == config


def test_one_admm_update_continues_its_rho_schedule_across_fit_calls():
    inputs = keras.Input((10,))
    outputs = keras.layers.Dense(3, name="d")(inputs)
    model = tfr.apply(
        keras.Model(inputs, outputs), "unstructured", 0.5, method=tfr.ADMMPenalty(0.05)
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfr.ADMMUpdate(every=1, rho_factor=2.0)
    rho = model.get_layer("d").pruned_kernels[0].penalty.rho
    histories = [
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[callback]).history
        for _ in range(2)
    ]
    # The first training begins with a Z-step only; each epoch end grows rho:
    # two one-epoch fits update exactly as one two-epoch fit would.
    assert float(keras.ops.convert_to_numpy(rho)) == pytest.approx(0.05 * 2**2)
    assert all(len(h["admm_residual"]) == 1 for h in histories)


def test_training_step_reads_the_optimizer_steps():
    model = _pruned()
    assert training_step(model) == 0
    steps = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(training_step(self.model))

    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[Probe()])
    assert steps == list(range(1, 9))
    assert training_step(model) == 8
