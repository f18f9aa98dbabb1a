"""The `RecalibrateBatchNorm` callback: exact BatchNorm statistics after `fit`."""

from __future__ import annotations

import keras
import numpy as np

from tf_reweight.core.checks import check_int
from tf_reweight.pruning.batchnorm import recalibrate_batchnorm, require_batchnorm


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Recomputes the BatchNorm moving statistics on ``x`` when training ends.

    Pruning changes what every BatchNormalization layer downstream of a pruned
    kernel sees, and the moving averages of training never quite catch up:
    channels whose inputs were mostly pruned have tiny variances, and the
    mismatch between batch and moving statistics grows layer by layer. So a
    pruned network can score far lower in inference mode than `fit` reports.
    This callback runs `tf_reweight.recalibrate_batchnorm` on a fixed sample
    of ``x`` at the end of every `fit`, so that the model `fit` returns is
    consistent in inference mode. `tf_reweight.recipes.prune` does the same by
    default (``recalibrate_bn="auto"``).

    The model is checked on the first hook (``on_train_begin``): a model with
    no trainable BatchNormalization layer raises before any training step.

    Args:
        x: Training inputs (a NumPy array, or anything `np.asarray` turns
            into one with a leading batch axis).
        samples: Number of examples of ``x`` to use (a fixed random sample,
            ``seed``), or None for all of them.
        batch_size: Batch size of the forward passes.
        seed: Seed of the sample.

    Example:
    >>> pruned.fit(x, y, epochs=6, callbacks=[
    ...     tfr.Reweight(), tfr.HardPrune(3), tfr.RecalibrateBatchNorm(x, 10000)])
    """

    def __init__(
        self, x, samples: int | None = None, batch_size: int = 128, seed: int = 0
    ):
        super().__init__()
        x = np.asarray(x)
        if x.ndim < 1 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(
                "`x` must be a non-empty numeric array of training inputs. "
                f"Received: x with shape={x.shape} and dtype={x.dtype}"
            )
        self.x = x
        self.samples = None if samples is None else check_int("samples", samples, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)

    def on_train_begin(self, logs=None):
        require_batchnorm(self.model)

    def on_train_end(self, logs=None):
        # `recalibrate_batchnorm` uses all of ``x`` when ``samples >= len(x)``.
        recalibrate_batchnorm(
            self.model,
            self.x,
            batch_size=self.batch_size,
            samples=self.samples,
            seed=self.seed,
        )
