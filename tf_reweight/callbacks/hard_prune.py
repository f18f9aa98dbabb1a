"""The `HardPrune` callback: the final hard prune at a chosen epoch."""

from __future__ import annotations

import warnings

import keras

from tf_reweight.callbacks.base import PruningCallback
from tf_reweight.core.checks import check_int
from tf_reweight.pruning import operations as pruning


@keras.saving.register_keras_serializable(package="tf_reweight")
class HardPrune(PruningCallback):
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
