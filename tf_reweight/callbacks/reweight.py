"""The `Reweight` callback: refreshes the reweighting factors during `fit`."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_reweight.callbacks.base import PruningCallback, training_step
from tf_reweight.core.checks import check_choice, check_int, check_milestones
from tf_reweight.pruning import operations as pruning


@keras.saving.register_keras_serializable(package="tf_reweight")
class Reweight(PruningCallback):
    """Refreshes ``alpha_g = 1 / (||W_g|| + eps)`` every few epochs or steps.

    The first refresh of a model happens when its training begins; then one
    follows every ``every`` epochs (at the end of epochs ``every - 1``,
    ``2 * every - 1``, ...; pass ``initial_epoch`` when resuming) or every
    ``every`` optimizer steps. With ``milestones`` the refreshes after the
    first happen at the start of the listed epochs only (at the end of epoch
    ``m - 1`` for each milestone ``m``). The step of the last refresh is
    saved in the model, so a run resumed from a checkpoint refreshes exactly
    as the uninterrupted run, and a refresh a checkpoint missed is made up at
    the next epoch (or at the start of training). In bounded mode the groups
    the current target keeps get ``alpha = 0``. Hard-pruned layers are left
    alone. Penalties built with ``penalty="auto"`` get their ``lambda`` at the
    end of the first training batch, from its loss
    (`tf_reweight.pruning.operations.calibrate_penalties`).

    Args:
        every: Refresh period. Must stay 1 (the default) with
            ``milestones``: the two are exclusive.
        unit: ``"epoch"`` or ``"step"``.
        milestones: None, or the strictly increasing epochs (> 0) at whose
            start alpha is refreshed, such as ``[10, 20, 30]`` (``[]``: only
            the first refresh); needs ``unit="epoch"``.

    Example:
    >>> model.fit(x, y, epochs=4, callbacks=[Reweight(every=1)])
    >>> model.fit(x, y, epochs=30, callbacks=[Reweight(milestones=[10, 20])])
    """

    def __init__(
        self,
        every: int = 1,
        unit: str = "epoch",
        milestones: Sequence[int] | None = None,
    ):
        super().__init__()
        self.every = check_int("every", every, low=1)
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        self.milestones = check_milestones(milestones)
        if self.milestones is not None and (self.every != 1 or self.unit != "epoch"):
            raise ValueError(
                "`milestones` replace `every` and count epochs. Expected "
                "every=1 and unit='epoch' with milestones. Received: "
                f"every={every!r}, unit={unit!r}, milestones={milestones!r}"
            )
        self._calibrating = False

    def _penalties(self) -> list:
        """The penalties this callback refreshes (of layers not pruned yet)."""
        return [
            pk.penalty
            for w in pruning.require_wrappers(self.model)
            if not w.is_pruned
            for pk in w.pruned_kernels
            if pk.penalty is not None
        ]

    def _refresh(self, first: bool) -> None:
        """Refreshes the penalties; ``first`` is the model's first refresh."""
        del first  # Reweighting's first refresh is like the others.
        pruning.refresh_penalties(self.model)

    def _maybe_refresh(self, when: str, due: bool = True) -> None:
        """Refreshes if the model never was, or if ``due`` and not done yet."""
        penalties = self._penalties()
        if not penalties:
            return
        step = training_step(self.model)
        last = min(int(keras.ops.convert_to_numpy(p.refreshed_at)) for p in penalties)
        if last >= 0 and not (due and last < step):
            return
        self._check_kernels(when)
        self._refresh(first=last < 0)
        for p in penalties:
            p.refreshed_at.assign(step)

    def _due_at_start(self, epoch: int) -> bool:
        """Whether a refresh is due at the start of ``epoch`` (epoch unit)."""
        if self.unit != "epoch":
            return False
        if self.milestones is not None:
            return epoch in self.milestones
        return epoch % self.every == 0

    def on_train_begin(self, logs=None):
        self._calibrating = any(p.needs_calibration for p in self._penalties())
        step = training_step(self.model)
        due = self.unit == "step" and step % self.every == 0
        self._maybe_refresh(f"the start of training (step {step})", due)

    def on_epoch_begin(self, epoch, logs=None):
        if self._due_at_start(epoch):
            self._maybe_refresh(f"the start of epoch {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self._due_at_start(epoch + 1):
            self._maybe_refresh(f"the end of epoch {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        if self._calibrating:
            self._calibrate(logs)
        if self.unit != "step":
            return
        step = training_step(self.model)
        if step % self.every == 0:
            self._check_loss(logs, f"step {step}")
            self._maybe_refresh(f"step {step}")

    def _calibrate(self, logs) -> None:
        """Sets the auto penalties from the loss of the first batch."""
        loss = (logs or {}).get("loss")
        if loss is None:
            raise ValueError(
                "penalty='auto' sets lambda from the training loss of the "
                "first batch, but `fit` logged no 'loss'. Expected a model "
                "whose train step logs its loss. Received: logs="
                f"{sorted(logs or {})}"
            )
        self._check_loss(logs, "the first batch")
        pruning.calibrate_penalties(self.model, float(loss))
        self._calibrating = False

    def get_config(self):
        milestones = None if self.milestones is None else list(self.milestones)
        return {"every": self.every, "unit": self.unit, "milestones": milestones}
