"""A run that crashes and resumes from its last checkpoint matches the unbroken run.

Each case trains a tiny pruned model for 4 epochs of 3 steps. The broken run
saves a `.keras` checkpoint after every epoch (`keras.callbacks.ModelCheckpoint`)
and crashes in a callback at the first step of epoch 1; a fresh process would
load the checkpoint and call `fit` with ``initial_epoch=1`` and new callback
instances, as here. Every weight of the model (kernels, masks, alphas, the
refresh counters, ADMM's Z, U and rho, the targets) must then match the
unbroken run: the pruning state lives in the model, not in the callbacks.
"""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight import ADMMPenalty, ADMMUpdate
from tf_reweight.core import backend_support

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(48, 6)).astype("float32")
Y = RNG.integers(0, 3, size=48)
EPOCHS, BATCH = 4, 16  # 3 steps per epoch
CRASH_STEP = 4  # the first step of epoch 1: the last checkpoint is epoch 0's


CASES = {
    "reweight_epoch_1": lambda: [tfr.Reweight(1)],
    "reweight_epoch_2": lambda: [tfr.Reweight(2)],
    "reweight_step_1": lambda: [tfr.Reweight(1, "step")],
    "reweight_step_2": lambda: [tfr.Reweight(2, "step")],
    "hard_prune": lambda: [tfr.Reweight(2), tfr.HardPrune(2)],
    "polynomial": lambda: [
        tfr.ScheduledPruning(tfr.PolynomialSparsity(0.75, 0, 9), frequency=2)
    ],
    "progressive": lambda: [
        tfr.ScheduledPruning(tfr.ProgressiveSparsity((2, 4), 4), frequency=2)
    ],
    "admm": lambda: [ADMMUpdate(1, rho_factor=1.5), tfr.HardPrune(3)],
    "admm_step_2": lambda: [ADMMUpdate(2, "step", rho_factor=1.5)],
}


class Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == CRASH_STEP:
            raise RuntimeError("crash")


def _model(case):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="d1")(inputs)
    outputs = keras.layers.Dense(3, name="d2")(x)
    # method=None would mean no penalty: the reweighted cases take the default.
    penalty = (
        {"method": ADMMPenalty(0.05)} if case.startswith("admm") else {"penalty": 1e-2}
    )
    pruned = tfr.apply(keras.Model(inputs, outputs), "unstructured", 0.75, **penalty)
    pruned.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return pruned


def _fit(model, callbacks, initial_epoch=0):
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=EPOCHS,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


_UNBROKEN = {}


def _unbroken(case):
    """The unbroken run of a case (trained once, shared by its variants)."""
    if case not in _UNBROKEN:
        _UNBROKEN[case] = _model(case)
        _fit(_UNBROKEN[case], CASES[case]())
    return _UNBROKEN[case]


def _values(model) -> dict:
    """Every weight by path; pruned kernels as the model computes with them.

    On JAX the mask applies in the forward pass and optimizer momentum may
    move stored weights at pruned positions, so kernels are read masked.
    """
    values = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    for wrapper in tfr.pruning.wrappers(model):
        for pk in wrapper.pruned_kernels:
            values[pk.variable.path] = backend_support.masked_value(pk)
    return values


def _assert_same_state(resumed, unbroken):
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == EPOCHS * 3
    got, want = _values(resumed), _values(unbroken)
    assert list(got) == list(want)
    assert any("refreshed_at" in path for path in got)
    for path, value in got.items():
        np.testing.assert_allclose(value, want[path], rtol=0, atol=1e-6, err_msg=path)


# Callback order only matters for epoch-end refreshes.
ORDERS = [(case, False) for case in CASES] + [
    ("reweight_epoch_1", True),
    ("admm", True),
]


@pytest.mark.parametrize("case, checkpoint_first", ORDERS)
def test_crash_checkpoint_and_initial_epoch_resume_matches_unbroken_run(
    tmp_path, case, checkpoint_first
):
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.keras"))
    pruning = CASES[case]()
    # A checkpoint listed first saves before the epoch-end refresh; the
    # resumed run must make that refresh up.
    callbacks = [checkpoint, *pruning] if checkpoint_first else [*pruning, checkpoint]
    broken = _model(case)
    with pytest.raises(RuntimeError, match="crash"):
        _fit(broken, [*callbacks, Crash()])

    resumed = keras.saving.load_model(tmp_path / "e1.keras")
    _fit(resumed, CASES[case](), initial_epoch=1)
    _assert_same_state(resumed, _unbroken(case))
