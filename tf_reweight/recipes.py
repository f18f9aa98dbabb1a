"""Training recipes shared by the CLI, the examples and the benchmarks.

A recipe is the whole path a dense model takes to a pruned one: pretrain,
then penalize while refreshing the reweighting factors, hard-prune to the
exact target and retrain with the masks held.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from tf_reweight import api
from tf_reweight.callbacks import HardPrune, Reweight, SparsityMonitor
from tf_reweight.pruning import hard_prune


def compile_classifier(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles a logits classifier with Adam, sparse CE and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def two_phase_lr(
    phase1_epochs: int, phase2_epochs: int, lr: float = 1e-3, final_lr: float = 1e-5
):
    """Constant ``lr`` for phase 1, then a cosine decay to ``final_lr``.

    Returns:
        A function of the epoch for `keras.callbacks.LearningRateScheduler`.
    """

    def schedule(epoch, current=None):
        if epoch < phase1_epochs or phase2_epochs <= 1:
            return lr
        p = min((epoch - phase1_epochs) / (phase2_epochs - 1), 1.0)
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * p))

    return schedule


@dataclass
class PruneResult:
    """What a pruning run produced.

    Attributes:
        model: The pruned model (with wrappers).
        history: Keras history of the pruning `fit` (phases 1 and 2).
        seconds: Wall time of the pruning `fit`.
        epochs: Epochs run.
    """

    model: keras.Model
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    epochs: int = 0


def reweighted_prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    structure="unstructured",
    target="50x",
    penalty: float = 1e-4,
    reweight_epochs: int = 8,
    retrain_epochs: int = 8,
    batch_size: int = 128,
    lr: float = 1e-3,
    validation_data=None,
    verbose: int = 1,
    **apply_kwargs,
) -> PruneResult:
    """Reweighted pruning of a trained model, in one `fit` call.

    Phase 1 (``reweight_epochs``): task loss plus the reweighted penalty,
    ``alpha`` refreshed every epoch. Then a hard prune to the exact target.
    Phase 2 (``retrain_epochs``): masked retraining, learning rate decayed
    by a cosine.

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays.
        structure: Sparsity structure (see `tf_reweight.apply`).
        target: Sparsity or rate string.
        penalty: ``lambda``.
        reweight_epochs: Epochs of penalized training.
        retrain_epochs: Epochs of masked retraining.
        batch_size: Batch size.
        lr: Adam learning rate of phase 1 and start of phase 2.
        validation_data: Optional ``(x, y)`` to monitor per epoch.
        verbose: Keras verbosity.
        **apply_kwargs: More `tf_reweight.apply` arguments.

    Returns:
        A `PruneResult`.

    Example:
    >>> result = reweighted_prune(dense, (x, y), target="50x", penalty=1e-4)
    >>> print(tf_reweight.report(result.model))
    """
    pruned = api.apply(model, structure, target, penalty, **apply_kwargs)
    compile_classifier(pruned, lr)
    epochs = reweight_epochs + retrain_epochs
    callbacks = [
        Reweight(every=1),
        HardPrune(epoch=reweight_epochs),
        keras.callbacks.LearningRateScheduler(
            two_phase_lr(reweight_epochs, retrain_epochs, lr)
        ),
        SparsityMonitor(),
    ]
    start = time.perf_counter()
    history = pruned.fit(
        *train,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=callbacks,
        validation_data=validation_data,
        verbose=verbose,
    )
    if retrain_epochs == 0:
        hard_prune(pruned)
    return PruneResult(pruned, history.history, time.perf_counter() - start, epochs)
