"""Callbacks that change pruning state at set times during `fit`.

They store and validate their arguments in ``__init__`` and read everything
else from the model (the training step comes from the optimizer, the pruned
state from the wrappers, the step of the last refresh from the penalties), so
one instance can serve several `fit` calls and a model resumed from a
`.keras` file (with ``initial_epoch``) continues exactly where it stopped.

The pruning callbacks stop training with a `RuntimeError` when the loss they
receive or a kernel they read is NaN or infinite, before it reaches the
penalties' state or the masks.
"""

from __future__ import annotations

import math
import os
import warnings

import keras
import numpy as np

from tf_reweight.core import backend_support
from tf_reweight.core.checks import check_int
from tf_reweight.pruning import operations as pruning
from tf_reweight.pruning.sparsity import report

_ADVICE = (
    "Lower the learning rate or the penalty (rho for ADMM), check the data for "
    "NaN or inf, and resume from the last good checkpoint."
)


def _step(model: keras.Model) -> int:
    """The optimizer's step; first syncs the JAX state for eager access."""
    backend_support.sync_state(model)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _ConfigurableCallback(keras.callbacks.Callback):
    """A callback rebuilt from its `get_config`."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _PruningCallback(_ConfigurableCallback):
    """A callback that changes pruning state; it refuses NaN and inf.

    It checks the epoch loss at every epoch end; subclasses check the batch
    loss and the kernels before they act.
    """

    def _check_loss(self, logs, when: str) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise RuntimeError(
                f"{type(self).__name__} stopped training: the loss is not finite "
                f"at {when}. Expected a finite loss. {_ADVICE} Received: "
                f"loss={loss}"
            )

    def _check_kernels(self, when: str) -> None:
        for w in pruning.require_wrappers(self.model):
            for pk in w.pruned_kernels:
                kernel = pk.canonical()
                bad = int(np.count_nonzero(~np.isfinite(kernel)))
                if bad:
                    raise RuntimeError(
                        f"{type(self).__name__} stopped training: kernel "
                        f"'{pk.name}' of layer '{w.name}' holds NaN or inf at "
                        f"{when}. Expected finite weights. {_ADVICE} Received: "
                        f"{bad} non-finite of {kernel.size} weights"
                    )

    def _all_pruned(self) -> bool:
        return all(w.is_pruned for w in pruning.require_wrappers(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self._check_loss(logs, f"the end of epoch {epoch}")


@keras.saving.register_keras_serializable(package="tf_reweight")
class Reweight(_PruningCallback):
    """Refreshes ``alpha_g = 1 / (||W_g|| + eps)`` every few epochs or steps.

    The first refresh of a model happens when its training begins; then one
    follows every ``every`` epochs (at the end of epochs ``every - 1``,
    ``2 * every - 1``, ...; pass ``initial_epoch`` when resuming) or every
    ``every`` optimizer steps. The step of the last refresh is saved in the
    model, so a run resumed from a checkpoint refreshes exactly as the
    uninterrupted run, and a refresh a checkpoint missed is made up at the
    next epoch (or at the start of training). In bounded mode the groups the
    current target keeps get ``alpha = 0``. Hard-pruned layers are left
    alone.

    Args:
        every: Refresh period.
        unit: ``"epoch"`` or ``"step"``.

    Example:
    >>> model.fit(x, y, epochs=4, callbacks=[Reweight(every=1)])
    """

    def __init__(self, every: int = 1, unit: str = "epoch"):
        super().__init__()
        self.every = check_int("every", every, low=1)
        if unit not in ("epoch", "step"):
            raise ValueError(
                f"`unit` must be 'epoch' or 'step'. Received: unit={unit!r}"
            )
        self.unit = unit

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
        step = _step(self.model)
        last = min(int(keras.ops.convert_to_numpy(p.refreshed_at)) for p in penalties)
        if last >= 0 and not (due and last < step):
            return
        self._check_kernels(when)
        self._refresh(first=last < 0)
        for p in penalties:
            p.refreshed_at.assign(step)

    def on_train_begin(self, logs=None):
        step = _step(self.model)
        due = self.unit == "step" and step % self.every == 0
        self._maybe_refresh(f"the start of training (step {step})", due)

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch" and epoch % self.every == 0:
            self._maybe_refresh(f"the start of epoch {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.unit == "epoch" and (epoch + 1) % self.every == 0:
            self._maybe_refresh(f"the end of epoch {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        if self.unit != "step":
            return
        step = _step(self.model)
        if step % self.every == 0:
            self._check_loss(logs, f"step {step}")
            self._maybe_refresh(f"step {step}")

    def get_config(self):
        return {"every": self.every, "unit": self.unit}


@keras.saving.register_keras_serializable(package="tf_reweight")
class HardPrune(_PruningCallback):
    """Projects to the exact target and installs masks at a chosen epoch.

    From then on the penalties are off and the `MaskConstraint` keeps pruned
    weights at zero after every optimizer step (masked retraining). A model
    that is already pruned (a later `fit` call, or a resumed model) is not
    pruned again. A `fit` that ends before ``epoch`` warns that nothing was
    pruned.

    Args:
        epoch: The (0-based) epoch at whose start pruning happens; a `fit`
            that starts later (``initial_epoch``) prunes at its first epoch.

    Example:
    >>> model.fit(x, y, epochs=6, callbacks=[Reweight(), HardPrune(epoch=4)])
    """

    def __init__(self, epoch: int = 0):
        super().__init__()
        self.epoch = check_int("epoch", epoch, low=0)

    def on_train_begin(self, logs=None):
        pruning.require_wrappers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch and not self._all_pruned():
            self._check_kernels(f"the start of epoch {epoch}")
            pruning.hard_prune(self.model, final=True)

    def on_train_end(self, logs=None):
        if not self._all_pruned():
            warnings.warn(
                f"HardPrune(epoch={self.epoch}) never pruned: training ended "
                f"before epoch {self.epoch} began, so the model is not pruned "
                f"and its penalties are still on. Fit for more than {self.epoch} "
                "epochs (or resume with `initial_epoch`), lower `epoch`, or "
                "call `tf_reweight.hard_prune(model)`.",
                stacklevel=2,
            )

    def get_config(self):
        return {"epoch": self.epoch}


@keras.saving.register_keras_serializable(package="tf_reweight")
class ScheduledPruning(_PruningCallback):
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

    Example:
    >>> schedule = PolynomialSparsity(0.9, begin_step=0, end_step=1000)
    >>> model.fit(x, y, epochs=5, callbacks=[ScheduledPruning(schedule, 100)])
    """

    def __init__(self, schedule, frequency: int = 100):
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

    def on_train_begin(self, logs=None):
        pruning.require_wrappers(self.model)

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
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

    def on_train_end(self, logs=None):
        if not self._all_pruned():
            step = _step(self.model)
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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_reweight")
class SparsityMonitor(_ConfigurableCallback):
    """Writes per-layer sparsity into ``logs`` and, optionally, TensorBoard.

    Adds ``sparsity`` (over the pruned kernels) and ``sparsity_<layer>`` for
    each pruned layer to the epoch logs, so they land in `History`.

    Args:
        log_dir: A TensorBoard log directory, or None.

    Example:
    >>> history = model.fit(x, y, callbacks=[SparsityMonitor("runs/tb")])
    >>> history.history["sparsity"]
    """

    def __init__(self, log_dir: str | os.PathLike | None = None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                "`log_dir` must be a directory path or None. Received: "
                f"log_dir={log_dir!r}"
            )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        rep = report(self.model)
        values = {"sparsity": rep.sparsity}
        for row in rep.pruned_rows:
            suffix = "" if row.kernel == "kernel" else f"_{row.kernel}"
            values[f"sparsity_{row.layer}{suffix}"] = row.sparsity
        if logs is not None:
            logs.update(values)
        if self.log_dir is not None:
            self._write(epoch, values)

    def _write(self, epoch, values):
        backend_support.require(
            "SparsityMonitor(log_dir=...)", "tf.summary", backend=None
        )
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(
                    name.replace("sparsity_", "sparsity/"), value, step=epoch
                )
        self._writer.flush()

    def get_config(self):
        return {"log_dir": self.log_dir}
