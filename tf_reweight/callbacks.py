"""Callbacks that change pruning state at set times during `fit`.

They store and validate their arguments in ``__init__`` and read everything
else from the model (the training step comes from the optimizer, the pruned
state from the wrappers), so one instance can serve several `fit` calls and
a model resumed from a `.keras` file continues where it stopped.
"""

from __future__ import annotations

import keras

from tf_reweight import backend_support, pruning
from tf_reweight.api import report


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return value


def _step(model: keras.Model) -> int:
    """The optimizer's step; first syncs the JAX state for eager access."""
    backend_support.sync_state(model)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _ConfigurableCallback(keras.callbacks.Callback):
    """A callback rebuilt from its `get_config`."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_reweight")
class Reweight(_ConfigurableCallback):
    """Refreshes ``alpha_g = 1 / (||W_g|| + eps)`` every few epochs or steps.

    The first refresh happens when training begins. In bounded mode the
    groups the current target keeps get ``alpha = 0``. Hard-pruned layers are
    left alone.

    Args:
        every: Refresh period.
        unit: ``"epoch"`` or ``"step"``.

    Example:
    >>> model.fit(x, y, epochs=4, callbacks=[Reweight(every=1)])
    """

    def __init__(self, every: int = 1, unit: str = "epoch"):
        super().__init__()
        self.every = _check_positive_int("every", every)
        if unit not in ("epoch", "step"):
            raise ValueError(
                f"`unit` must be 'epoch' or 'step'. Received: unit={unit!r}"
            )
        self.unit = unit

    def on_train_begin(self, logs=None):
        pruning.refresh_penalties(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "epoch" and (epoch + 1) % self.every == 0:
            pruning.refresh_penalties(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self.unit == "step" and _step(self.model) % self.every == 0:
            pruning.refresh_penalties(self.model)

    def get_config(self):
        return {"every": self.every, "unit": self.unit}


@keras.saving.register_keras_serializable(package="tf_reweight")
class HardPrune(_ConfigurableCallback):
    """Projects to the exact target and installs masks at a chosen epoch.

    From then on the penalties are off and the `MaskConstraint` keeps pruned
    weights at zero after every optimizer step (masked retraining). A model
    that is already pruned (a later `fit` call, or a resumed model) is not
    pruned again.

    Args:
        epoch: The (0-based) epoch at whose start pruning happens; a `fit`
            that starts later (``initial_epoch``) prunes at its first epoch.

    Example:
    >>> model.fit(x, y, epochs=6, callbacks=[Reweight(), HardPrune(epoch=4)])
    """

    def __init__(self, epoch: int = 0):
        super().__init__()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                f"`epoch` must be an integer >= 0. Received: epoch={epoch!r}"
            )
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.epoch and not all(
            w.is_pruned for w in pruning.require_wrappers(self.model)
        ):
            pruning.hard_prune(self.model, final=True)

    def get_config(self):
        return {"epoch": self.epoch}


@keras.saving.register_keras_serializable(package="tf_reweight")
class ScheduledPruning(_ConfigurableCallback):
    """Prunes gradually along a schedule, then hands over to masked retraining.

    Every ``frequency`` steps within the schedule, each wrapper's current
    target becomes its final target times ``schedule(step) / schedule.final``
    and the kernels are projected onto it (magnitude pruning within the
    structure). Reweighting, if used, presses the groups the *current* target
    removes next. At ``schedule.end_step`` the final hard prune happens.

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
        self.frequency = _check_positive_int("frequency", frequency)

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step < self.schedule.begin_step or (
            step % self.frequency and step < self.schedule.end_step
        ):
            return
        if all(w.is_pruned for w in pruning.require_wrappers(self.model)):
            return
        current = float(keras.ops.convert_to_numpy(self.schedule(step)))
        pruning.set_sparsity(self.model, current / self.schedule.final)
        pruning.hard_prune(self.model, final=step >= self.schedule.end_step)

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

    def __init__(self, log_dir: str | None = None):
        super().__init__()
        self.log_dir = log_dir
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
