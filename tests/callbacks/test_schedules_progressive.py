"""Progressive stages: ScheduledPruning(lead=True) sets the next update's target."""

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.callbacks.scheduled_pruning import ScheduledPruning
from tf_reweight.callbacks.schedules import ProgressiveSparsity

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(8, 6)).astype("float32")
Y = RNG.integers(0, 3, size=8)


def _pruned():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(4, name="d")(inputs)
    pruned = tfr.apply(keras.Model(inputs, outputs), "unstructured", "8x", penalty=1e-3)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return pruned


class Targets(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.at_begin, self.after_step = None, []

    def _target(self):
        wrapper = tfr.pruning.wrappers(self.model)[0]
        return float(keras.ops.convert_to_numpy(wrapper.sparsity))

    def on_train_begin(self, logs=None):
        self.at_begin = self._target()

    def on_train_batch_end(self, batch, logs=None):
        self.after_step.append(self._target())


def _fit(model, callback, epochs, initial_epoch=0):
    probe = Targets()
    model.fit(
        X,
        Y,
        batch_size=len(X),
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        callbacks=[callback, probe],
    )
    return probe


def _schedule():
    # Updates at steps 2 (prune to 2x), 4 (4x) and 6 (8x, final).
    return ProgressiveSparsity((2, 4, 8), steps_per_stage=2, begin_step=2)


def test_lead_holds_the_next_update_target_at_each_step():
    probe = _fit(_pruned(), ScheduledPruning(_schedule(), 2, lead=True), 6)
    assert probe.at_begin == pytest.approx(0.5)
    np.testing.assert_allclose(
        probe.after_step, [0.5, 0.75, 0.75, 0.875, 0.875, 0.875], atol=1e-6
    )


def test_without_lead_the_first_stage_is_bounded_by_the_final_target():
    probe = _fit(_pruned(), ScheduledPruning(_schedule(), 2), 6)
    assert probe.at_begin == pytest.approx(0.875)  # as before: the final target
    np.testing.assert_allclose(
        probe.after_step, [0.875, 0.5, 0.5, 0.75, 0.75, 0.875], atol=1e-6
    )


def test_a_resumed_run_leads_as_the_unbroken_one():
    model = _pruned()
    with pytest.warns(UserWarning, match="before its end_step"):
        _fit(model, ScheduledPruning(_schedule(), 2, lead=True), 3)
    probe = _fit(model, ScheduledPruning(_schedule(), 2, lead=True), 6, 3)
    assert probe.at_begin == pytest.approx(0.75)  # step 3: the update at 4
    np.testing.assert_allclose(probe.after_step, [0.875, 0.875, 0.875], atol=1e-6)


def test_lead_config_round_trip_and_validation():
    callback = ScheduledPruning(_schedule(), 2, lead=True)
    again = ScheduledPruning.from_config(callback.get_config())
    assert again.lead is True and again.get_config() == callback.get_config()
    assert ScheduledPruning(_schedule(), 2).get_config()["lead"] is False
    with pytest.raises(ValueError, match="Received: lead='yes'"):
        ScheduledPruning(_schedule(), 2, lead="yes")
