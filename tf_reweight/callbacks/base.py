"""What the pruning callbacks share: the training step and their base classes.

The callbacks store and validate their arguments in ``__init__`` and read
everything else from the model (the training step comes from the optimizer,
the pruned state from the wrappers, the step of the last refresh from the
penalties), so one instance can serve several `fit` calls and a model resumed
from a `.keras` file (with ``initial_epoch``) continues exactly where it
stopped.

The pruning callbacks stop training with a `RuntimeError` when the loss they
receive or a kernel they read is NaN or infinite, before it reaches the
penalties' state or the masks.

`ConfigurableCallback` and `PruningCallback` are the base classes of the
callbacks in this package; they are not part of the public API.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_reweight.core import backend_support
from tf_reweight.pruning import operations as pruning

_ADVICE = (
    "Lower the learning rate or the penalty (rho for ADMM), check the data for "
    "NaN or inf, and resume from the last good checkpoint."
)


def training_step(model: keras.Model) -> int:
    """The optimizer's step count; first syncs the JAX state for eager access.

    Args:
        model: A compiled model, during or after `fit`.

    Returns:
        ``model.optimizer.iterations`` as an int.

    Example:
    >>> def on_train_batch_end(self, batch, logs=None):
    ...     step = training_step(self.model)
    """
    backend_support.sync_state(model)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class ConfigurableCallback(keras.callbacks.Callback):
    """A callback rebuilt from its `get_config`."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class PruningCallback(ConfigurableCallback):
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
