"""The `ScheduledPruning` callback: gradual pruning along a schedule."""

from __future__ import annotations

import warnings

import keras

from tf_reweight.callbacks.base import PruningCallback, training_step
from tf_reweight.core.checks import check_bool, check_int
from tf_reweight.pruning import operations as pruning


@keras.saving.register_keras_serializable(package="tf_reweight")
class ScheduledPruning(PruningCallback):
    """Prunes gradually along a schedule, then hands over to masked retraining.

    Every ``frequency`` steps within the schedule, each wrapper's current
    target becomes its final target times ``schedule(step) / schedule.final``
    and the kernels are projected onto it (magnitude pruning within the
    structure). Reweighting, if used, presses the groups the *current* target
    removes next. At ``schedule.end_step`` the final hard prune happens; a
    `fit` that ends before it warns.

    Args:
        schedule: A `PolynomialSparsity`, `ProgressiveSparsity` or any
            callable of the step with ``final``, ``begin_step`` and
            ``end_step`` attributes.
        frequency: Steps between pruning updates.
        lead: After each intermediate prune (and when training begins), set
            the current target to that of the next update, so that
            reweighting in bounded mode presses exactly the groups the next
            update removes; the masks still follow ``schedule(step)``. For
            staged schedules, with ``frequency`` the stage length.

    Example:
    >>> schedule = PolynomialSparsity(0.9, begin_step=0, end_step=1000)
    >>> model.fit(x, y, epochs=5, callbacks=[ScheduledPruning(schedule, 100)])
    """

    def __init__(self, schedule, frequency: int = 100, lead: bool = False):
        super().__init__()
        missing = [
            a for a in ("final", "begin_step", "end_step") if not hasattr(schedule, a)
        ]
        if not callable(schedule) or missing:
            raise ValueError(
                "`schedule` must be a callable of the step with `final`, "
                f"`begin_step` and `end_step` attributes. Received: "
                f"schedule={schedule!r}"
            )
        self.schedule = schedule
        self.frequency = check_int("frequency", frequency, low=1)
        self.lead = check_bool("lead", lead)

    def _lead(self, step: int) -> None:
        """With ``lead``, sets the target of the first update after ``step``."""
        if not self.lead or self._all_pruned():
            return
        after = max(self.schedule.begin_step, step + 1)
        update = -(-after // self.frequency) * self.frequency
        update = min(update, max(self.schedule.end_step, step + 1))
        ahead = float(keras.ops.convert_to_numpy(self.schedule(update)))
        pruning.set_sparsity(self.model, ahead / self.schedule.final)

    def on_train_begin(self, logs=None):
        pruning.require_wrappers(self.model)
        if self.lead:
            self._lead(training_step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        step = training_step(self.model)
        if step < self.schedule.begin_step or (
            step % self.frequency and step < self.schedule.end_step
        ):
            return
        if self._all_pruned():
            return
        self._check_loss(logs, f"step {step}")
        self._check_kernels(f"step {step}")
        current = float(keras.ops.convert_to_numpy(self.schedule(step)))
        pruning.set_sparsity(self.model, current / self.schedule.final)
        pruning.hard_prune(self.model, final=step >= self.schedule.end_step)
        self._lead(step)

    def on_train_end(self, logs=None):
        if not self._all_pruned():
            step = training_step(self.model)
            warnings.warn(
                f"ScheduledPruning ended at step {step}, before its end_step "
                f"{self.schedule.end_step}: the final hard prune did not happen, "
                "so the model is short of its target and its penalties are "
                f"still on. Train for {self.schedule.end_step - step} more steps "
                "(resume with the same callback) or end the schedule earlier.",
                stacklevel=2,
            )

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "frequency": self.frequency,
            "lead": self.lead,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
