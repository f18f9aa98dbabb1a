"""Training recipes shared by the CLI, the examples and the benchmarks.

A recipe is the whole path a dense model takes to a pruned one: pretrain,
then penalize while refreshing the penalty's state (phase 1), hard-prune to
the exact target and retrain with the masks held (phase 2). `prune` runs it
for reweighting and for the baselines it is compared with (ADMM, static
group lasso, one-shot magnitude pruning), on the same epoch budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from tf_reweight.callbacks import ADMMUpdate, HardPrune, Reweight, SparsityMonitor
from tf_reweight.methods.admm import ADMMPenalty
from tf_reweight.methods.group_lasso import GroupLassoPenalty
from tf_reweight.pruning import api, batchnorm
from tf_reweight.pruning.operations import hard_prune


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
        seconds: Wall time of the pruning `fit` (and recalibration).
        epochs: Epochs run.
        method: The pruning method (see `METHODS`).
        penalty: Its penalty value (``lambda``, or ADMM's initial ``rho``).
        recalibrated_bn: BatchNorm layers whose moving statistics were
            recomputed after training (``recalibrate_bn``); 0 if not asked.
    """

    model: keras.Model
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    epochs: int = 0
    method: str = "reweighted"
    penalty: float = 0.0
    recalibrated_bn: int = 0


METHODS = ("reweighted", "admm", "group_lasso", "magnitude")

#: Default penalty of each method: ``lambda`` of reweighting and group lasso,
#: the initial ``rho`` of ADMM. ADMM and group lasso were tuned for LeNet-5 on
#: MNIST at 200x with Adam 1e-3 and 4 + 4 epochs (``benchmarks/frontier.py``).
DEFAULT_PENALTY = {
    "reweighted": 1e-4,
    "admm": 1e-3,
    "group_lasso": 1e-3,
    "magnitude": 0.0,
}

#: Default phase-1 callback options: ADMM does better with many short Z/U
#: steps (every 100 steps) and a slowly growing ``rho`` than with one per epoch.
DEFAULT_OPTIONS = {
    "reweighted": {},
    "admm": {"every": 100, "unit": "step", "rho_factor": 1.2, "rho_max": 1.0},
    "group_lasso": {},
    "magnitude": {},
}

# Options of `prune` that only the default reweighted penalty understands.
_REWEIGHT_OPTIONS = ("eps", "squared", "bounded")


def _setup(method, penalty, options, apply_kwargs):
    """Validates a method and returns (apply kwargs, callbacks, prune epoch).

    The prune epoch is None for "after phase 1" and 0 for one-shot pruning.
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown pruning method. Expected one of {list(METHODS)}. "
            f"Received: method={method!r}"
        )
    if options and method in ("group_lasso", "magnitude"):
        raise ValueError(
            f"Method {method!r} has no phase-1 callback to configure. Expected "
            f"method_options=None. Received: method_options={options}"
        )
    options = {**DEFAULT_OPTIONS[method], **(options or {})}
    foreign = [k for k in _REWEIGHT_OPTIONS if k in apply_kwargs]
    if method != "reweighted" and foreign:
        raise ValueError(
            f"{foreign} configure the reweighted penalty only. Expected no such "
            f"option with method={method!r}. Received: {foreign}"
        )
    value = DEFAULT_PENALTY[method] if penalty is None else penalty
    if method == "reweighted":
        return {"penalty": value}, [Reweight(**options)], None
    if method == "admm":
        return {"method": ADMMPenalty(value)}, [ADMMUpdate(**options)], None
    if method == "group_lasso":
        return {"method": GroupLassoPenalty(value)}, [], None
    if penalty:
        raise ValueError(
            "Magnitude pruning uses no penalty. Expected penalty=None or 0. "
            f"Received: penalty={penalty!r}"
        )
    return {"method": GroupLassoPenalty(0.0)}, [], 0


def _check_epochs(**epochs) -> None:
    for name, value in epochs.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"`{name}` must be an integer >= 0. Received: {name}={value!r}"
            )


def _check_recalibrate(recalibrate_bn, model: keras.Model, x) -> int | None:
    """Validates a ``recalibrate_bn`` option before any training.

    Args:
        recalibrate_bn: None or False (off), True (all of ``x``) or a
            positive number of examples.
        model: The model whose BatchNorm layers will be recalibrated.
        x: The training inputs.

    Returns:
        The number of examples to recalibrate on, or None for no
        recalibration.

    Raises:
        ValueError: If the option is invalid or the model has no trainable
            BatchNormalization layer.
    """
    if recalibrate_bn is None or recalibrate_bn is False:
        return None
    if recalibrate_bn is not True and (
        not isinstance(recalibrate_bn, int | np.integer) or recalibrate_bn < 1
    ):
        raise ValueError(
            "`recalibrate_bn` must be None, a bool or a positive number of "
            f"examples. Received: recalibrate_bn={recalibrate_bn!r}"
        )
    batchnorm._check_layers(model)
    return len(x) if recalibrate_bn is True else min(int(recalibrate_bn), len(x))


def _recalibrate(model: keras.Model, x, size: int | None, batch_size: int) -> int:
    """Recalibrates BatchNorm on ``size`` examples of ``x`` (all if ``len(x)``).

    The examples are a fixed random sample (seed 0), so that sorted training
    data still give every class its share.

    Args:
        model: The pruned model.
        x: The training inputs.
        size: From `_check_recalibrate`; None does nothing.
        batch_size: Batch size of the forward passes.

    Returns:
        The number of BatchNorm layers recalibrated (0 for ``size=None``).
    """
    if size is None:
        return 0
    if size < len(x):
        rows = np.random.default_rng(0).choice(len(x), size, replace=False)
        x = x[np.sort(rows)]
    return batchnorm.recalibrate_batchnorm(model, x, batch_size=batch_size)


def prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    method: str = "reweighted",
    structure="unstructured",
    target="50x",
    penalty: float | None = None,
    phase1_epochs: int = 8,
    retrain_epochs: int = 8,
    batch_size: int = 128,
    lr: float = 1e-3,
    validation_data=None,
    verbose: int = 1,
    method_options: dict | None = None,
    recalibrate_bn: int | bool | None = None,
    **apply_kwargs,
) -> PruneResult:
    """Prunes a trained model with one of `METHODS`, in one `fit` call.

    Every method gets the same ``phase1_epochs + retrain_epochs`` budget:

    - ``"reweighted"``: phase 1 trains with `ReweightedGroupPenalty`
      (``penalty`` is ``lambda``), ``alpha`` refreshed every epoch by
      `Reweight`; then the hard prune and masked retraining.
    - ``"admm"``: phase 1 trains with `tf_reweight.methods.admm.ADMMPenalty`
      (``penalty`` is the initial ``rho``), Z/U steps every epoch by
      `tf_reweight.ADMMUpdate`; then the hard prune and retraining.
    - ``"group_lasso"``: phase 1 trains with the static
      `GroupLassoPenalty` (``lambda``); then the hard prune and retraining.
    - ``"magnitude"``: one-shot hard prune of the dense weights at the start,
      then masked retraining for the whole budget.

    The learning rate is ``lr`` until the hard prune, then decays by a
    cosine (`two_phase_lr`). With ``recalibrate_bn``, the BatchNorm moving
    statistics are then recomputed on training inputs
    (`tf_reweight.recalibrate_batchnorm`), after the `fit` and its history.

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays.
        method: One of `METHODS`.
        structure: Sparsity structure (see `tf_reweight.apply`).
        target: Sparsity or rate string.
        penalty: The method's penalty value (>= 0; ADMM: > 0); None for
            `DEFAULT_PENALTY`.
        phase1_epochs: Epochs of penalized training.
        retrain_epochs: Epochs of masked retraining.
        batch_size: Batch size.
        lr: Adam learning rate of phase 1 and start of phase 2.
        validation_data: Optional ``(x, y)`` to monitor per epoch.
        verbose: Keras verbosity.
        method_options: Keyword arguments of the method's phase-1 callback
            (`Reweight` or `ADMMUpdate`, for example ``{"rho_factor": 1.5}``),
            merged over `DEFAULT_OPTIONS`.
        recalibrate_bn: After training, recompute the BatchNorm moving
            statistics on a fixed random sample of this many training inputs
            (True: all of them); None or False to keep them as training left
            them. The model needs a BatchNormalization layer.
        **apply_kwargs: More `tf_reweight.apply` arguments (``eps``,
            ``squared`` and ``bounded`` with ``"reweighted"`` only).

    Returns:
        A `PruneResult`.

    Example:
    >>> result = prune(dense, (x, y), method="admm", target="50x", penalty=3e-3)
    >>> print(tf_reweight.report(result.model))

    References:
        Fan, Zhang, Ma et al., "A Unified DNN Weight Compression Framework
        Using Reweighted Optimization Methods", Intelligent Systems with
        Applications 27 (2025); Zhang et al., ECCV 2018 (ADMM pruning); Han
        et al., "Learning both Weights and Connections for Efficient Neural
        Networks", NeurIPS 2015 (magnitude pruning).
    """
    _check_epochs(phase1_epochs=phase1_epochs, retrain_epochs=retrain_epochs)
    setup, callbacks, prune_epoch = _setup(
        method, penalty, method_options, apply_kwargs
    )
    calibration = _check_recalibrate(recalibrate_bn, model, train[0])
    pruned = api.apply(model, structure, target, **setup, **apply_kwargs)
    compile_classifier(pruned, lr)
    epochs = phase1_epochs + retrain_epochs
    prune_epoch = phase1_epochs if prune_epoch is None else prune_epoch
    callbacks += [
        HardPrune(epoch=prune_epoch),
        keras.callbacks.LearningRateScheduler(
            two_phase_lr(prune_epoch, epochs - prune_epoch, lr)
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
    if epochs == prune_epoch:
        hard_prune(pruned)
    recalibrated = _recalibrate(pruned, train[0], calibration, batch_size)
    value = DEFAULT_PENALTY[method] if penalty is None else float(penalty)
    return PruneResult(
        pruned,
        history.history,
        time.perf_counter() - start,
        epochs,
        method,
        value,
        recalibrated,
    )


def reweighted_prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    penalty: float = 1e-4,
    reweight_epochs: int = 8,
    retrain_epochs: int = 8,
    **kwargs,
) -> PruneResult:
    """Reweighted pruning: `prune` with ``method="reweighted"``.

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays.
        penalty: ``lambda``.
        reweight_epochs: Epochs of penalized training (phase 1).
        retrain_epochs: Epochs of masked retraining.
        **kwargs: Other `prune` arguments (``structure``, ``target``,
            ``batch_size``, ``lr``, ...) and `tf_reweight.apply` arguments.

    Returns:
        A `PruneResult`.

    Example:
    >>> result = reweighted_prune(dense, (x, y), target="50x", penalty=1e-4)
    """
    return prune(
        model,
        train,
        method="reweighted",
        penalty=penalty,
        phase1_epochs=reweight_epochs,
        retrain_epochs=retrain_epochs,
        **kwargs,
    )
