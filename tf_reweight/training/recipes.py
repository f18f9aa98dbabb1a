"""Training recipes shared by the CLI, the examples and the benchmarks.

A recipe is the whole path a dense model takes to a pruned one: pretrain,
then penalize while refreshing the penalty's state (phase 1), hard-prune to
the exact target and retrain with the masks held (phase 2). `prune` is the
one training path: it runs every method of the registry
(`tf_reweight.training.registry`: reweighting and the baselines it is
compared with, ADMM, static group lasso, one-shot magnitude pruning) on the
same epoch budget, and its ``trainer`` and ``callbacks`` hooks let the
adversarial recipe (`tf_reweight.robust.mrpf.adversarial_prune`) reuse it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from tf_reweight.callbacks import HardPrune, SparsityMonitor
from tf_reweight.core.checks import check_int
from tf_reweight.methods.penalty import KernelPenalty
from tf_reweight.pruning import api, batchnorm
from tf_reweight.pruning.operations import calibrated_penalty, hard_prune, wrappers
from tf_reweight.training import plans, registry
from tf_reweight.training.plans import Plan, two_phase_lr


def compile_classifier(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles a logits classifier with Adam, sparse CE and accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@dataclass
class PruneResult:
    """What a pruning run produced.

    Attributes:
        model: The pruned model (with wrappers).
        history: Keras history of the pruning `fit` (phases 1 and 2).
        seconds: Wall time of the pruning `fit` (and recalibration).
        epochs: Epochs run.
        method: The pruning method (a name of `METHODS`).
        penalty: Its penalty value (``lambda``, or ADMM's initial ``rho``);
            for ``"auto"``, the value it set (``"auto"`` if none was).
        recalibrated_bn: BatchNorm layers whose moving statistics were
            recomputed after training (``recalibrate_bn``); 0 if not asked.
    """

    model: keras.Model
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    epochs: int = 0
    method: str = "reweighted"
    penalty: float | str = 0.0
    recalibrated_bn: int = 0


# Read-only views of the method registry, kept here for existing callers.
METHODS = registry.METHODS
DEFAULT_PENALTY = registry.DEFAULT_PENALTY
DEFAULT_OPTIONS = registry.DEFAULT_OPTIONS


def _check_hooks(trainer, callbacks) -> list[keras.callbacks.Callback]:
    if trainer is not None and not callable(trainer):
        raise ValueError(
            "`trainer` must be None or a callable that wraps the pruned model "
            f"for training. Received: trainer={trainer!r}"
        )
    extra = [] if callbacks is None else callbacks
    if not isinstance(extra, list | tuple) or not all(
        isinstance(c, keras.callbacks.Callback) for c in extra
    ):
        raise ValueError(
            "`callbacks` must be None or a list of keras.callbacks.Callback. "
            f"Received: callbacks={callbacks!r}"
        )
    return list(extra)


@dataclass
class MethodSetup:
    """What `method_setup` validated and built for one run of a method.

    Attributes:
        method: The registry entry (`tf_reweight.training.registry.Method`).
        penalty: The penalty to pass to `tf_reweight.apply` as ``method=``
            (None: no penalty).
        callbacks: The method's phase-1 callbacks.
        value: The penalty value used.
        apply_kwargs: The remaining `tf_reweight.apply` arguments.
    """

    method: registry.Method
    penalty: KernelPenalty | None
    callbacks: list[keras.callbacks.Callback]
    value: float | str
    apply_kwargs: dict

    @property
    def prune_epoch(self) -> int | None:
        """0 for a one-shot method, None for "after phase 1"."""
        return 0 if self.method.one_shot else None


def method_setup(
    method: str,
    penalty: float | None = None,
    method_options: dict | None = None,
    **apply_kwargs,
) -> MethodSetup:
    """Validates a method's settings and builds its penalty and callbacks.

    `prune` starts with this; the CLI and the adversarial recipes call it to
    check their arguments before any training.

    Args:
        method: A registered method name (see `METHODS`).
        penalty: Its penalty value; None for `DEFAULT_PENALTY`.
        method_options: Its phase-1 callback options, merged over
            `DEFAULT_OPTIONS`.
        **apply_kwargs: `tf_reweight.apply` arguments; those of the method's
            `apply_options` (``eps``, ``squared``, ``bounded``,
            ``spare_scale_free`` for ``"reweighted"``) configure its penalty.

    Returns:
        A `MethodSetup`.

    Raises:
        ValueError: For an unknown method, a bad value or option, or an
            option of another method's penalty.

    Example:
    >>> setup = method_setup("reweighted", 1e-4, bounded=True)
    >>> pruned = tfr.apply(model, "filter", "4x", method=setup.penalty)
    """
    entry = registry.get_method(method)
    foreign = sorted(
        {o for m in registry.METHODS for o in registry.get_method(m).apply_options}
        - set(entry.apply_options)
    )
    foreign = [k for k in foreign if k in apply_kwargs]
    if foreign:
        raise ValueError(
            f"{foreign} configure other methods than {entry.name!r}. Expected "
            f"no such option with method={entry.name!r}. Received: {foreign}"
        )
    options = {k: v for k, v in apply_kwargs.items() if k in entry.apply_options}
    rest = {k: v for k, v in apply_kwargs.items() if k not in options}
    value = entry.default_penalty if penalty is None else penalty
    kernel_penalty = entry.penalty(value, **options)
    callbacks = entry.callbacks(**{**entry.default_options, **(method_options or {})})
    value = value if isinstance(value, str) else float(value)
    return MethodSetup(entry, kernel_penalty, list(callbacks), value, rest)


def prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    method: str = "reweighted",
    structure="unstructured",
    target="50x",
    penalty: float | None = None,
    phase1_epochs: int | None = None,
    retrain_epochs: int | None = None,
    schedule: str | Plan = "default",
    batch_size: int = 128,
    lr: float = 1e-3,
    validation_data=None,
    verbose: int = 1,
    method_options: dict | None = None,
    recalibrate_bn: int | bool | str | None = "auto",
    trainer: Callable[[keras.Model], keras.Model] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    **apply_kwargs,
) -> PruneResult:
    """Prunes a trained model with a registered method, in one `fit` call.

    This is the one training path of the library: every method of the
    registry (`tf_reweight.training.registry`, names in `METHODS`) gets the
    same ``phase1_epochs + retrain_epochs`` budget:

    - ``"reweighted"``: phase 1 trains with `ReweightedGroupPenalty`
      (``penalty`` is ``lambda``), ``alpha`` refreshed every epoch by
      `Reweight`; then the hard prune and masked retraining.
    - ``"admm"``: phase 1 trains with `tf_reweight.methods.admm.ADMMPenalty`
      (``penalty`` is the initial ``rho``), Z/U steps by
      `tf_reweight.ADMMUpdate`; then the hard prune and retraining.
    - ``"group_lasso"``: phase 1 trains with the static
      `GroupLassoPenalty` (``lambda``); then the hard prune and retraining.
    - ``"magnitude"``: no penalty; one-shot hard prune of the dense weights
      at the start, then masked retraining for the whole budget.

    The hard prune happens at the start of epoch ``phase1_epochs`` (epoch 0
    for a one-shot method); when training ends before that epoch (no
    retraining epoch), right after the `fit`. The ``schedule`` (a `Plan` of
    `tf_reweight.training.plans`) sets the epochs and the pace: with
    ``"default"`` alpha is refreshed every epoch and the learning rate is
    ``lr`` until the hard prune, then decays by a cosine (`two_phase_lr`);
    ``"paper"`` refreshes every 10 epochs and restarts the learning rate at
    each refresh; ``"progressive"`` reaches the target in stages. With
    ``recalibrate_bn``, the BatchNorm moving statistics are then recomputed
    on training inputs (`tf_reweight.recalibrate_batchnorm`), after the `fit`
    and its history.

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays.
        method: A registered method name (see `METHODS`).
        structure: Sparsity structure (see `tf_reweight.apply`).
        target: Sparsity or rate string.
        penalty: The method's penalty value (>= 0; ADMM: > 0); None for
            `DEFAULT_PENALTY`.
        phase1_epochs: Epochs of penalized training; None for the plan's.
            The plan's refresh milestones stay every ``refresh_every``
            epochs (they are not scaled to a shorter phase 1).
        retrain_epochs: Epochs of masked retraining; None for the plan's.
        schedule: A registered plan name (see `plans.PLANS`: ``"default"``,
            ``"paper"``, ``"progressive"``) or a `Plan`.
        batch_size: Batch size.
        lr: Adam learning rate of phase 1 and start of phase 2.
        validation_data: Optional ``(x, y)`` to monitor per epoch.
        verbose: Keras verbosity.
        method_options: Keyword arguments of the method's phase-1 callback
            (`Reweight` or `ADMMUpdate`, for example ``{"rho_factor": 1.5}``),
            merged over `DEFAULT_OPTIONS`.
        recalibrate_bn: After training, recompute the BatchNorm moving
            statistics on a fixed random sample of this many training inputs
            (True: all of them); ``"auto"`` (the default) for 10,000 of them
            when the model has BatchNorm and nothing otherwise; None or False
            to keep them as training left them. A number or True needs a
            BatchNormalization layer.
        trainer: None to fit the pruned model itself, or a callable that
            wraps it in the model to compile and fit, for example
            ``lambda m: AdversarialModel(m, Attack(epsilon=0.3))``; the pruned model is
            returned either way.
        callbacks: More Keras callbacks, run after the method's own.
        **apply_kwargs: More `tf_reweight.apply` arguments (``eps``,
            ``squared``, ``bounded`` and ``spare_scale_free`` with
            ``"reweighted"`` only).

    Returns:
        A `PruneResult`.

    Raises:
        ValueError: For an invalid argument, before any training.

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
    plan = plans.get_plan(schedule)
    phase1_epochs, retrain_epochs = plan.epochs(phase1_epochs, retrain_epochs)
    setup = method_setup(method, penalty, method_options, **apply_kwargs)
    extra = _check_hooks(trainer, callbacks)
    steps = math.ceil(len(train[0]) / check_int("batch_size", batch_size, low=1))
    epochs = phase1_epochs + retrain_epochs
    prune_epoch = phase1_epochs if setup.prune_epoch is None else setup.prune_epoch
    rates = plan.stage_rates(target, prune_epoch)
    samples = batchnorm.check_recalibrate(recalibrate_bn, model, train[0])
    pruned = api.apply(
        model, structure, target, method=setup.penalty, **setup.apply_kwargs
    )
    fitted = pruned if trainer is None else trainer(pruned)
    compile_classifier(fitted, lr)
    # The one rule: the hard prune happens at the start of epoch `prune_epoch`,
    # or right after the fit when training ends before that epoch.
    pruning = [HardPrune(epoch=prune_epoch)] if prune_epoch < epochs else []
    milestones = plan.milestones(prune_epoch)
    learning_rate = two_phase_lr(
        prune_epoch,
        epochs - prune_epoch,
        lr,
        plan.final_lr,
        milestones=milestones,
        restart_floor=plan.restart_floor,
        retrain_lr=lr * plan.retrain_lr_factor,
    )
    # Stages first: their target is set before the method's first refresh.
    stages = [] if rates is None else [plans.staged_pruning(rates, prune_epoch, steps)]
    hooks = [
        *stages,
        *plans.with_milestones(setup.callbacks, milestones),
        *pruning,
        keras.callbacks.LearningRateScheduler(learning_rate),
        SparsityMonitor(),
        *extra,
    ]
    start = time.perf_counter()
    history = fitted.fit(
        *train,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=hooks,
        validation_data=validation_data,
        verbose=verbose,
    )
    if prune_epoch >= epochs and not all(w.is_pruned for w in wrappers(pruned)):
        hard_prune(pruned)
    recalibrated = 0
    if samples is not None:
        recalibrated = batchnorm.recalibrate_batchnorm(
            pruned, train[0], batch_size=batch_size, samples=samples
        )
    return PruneResult(
        pruned,
        history.history,
        time.perf_counter() - start,
        epochs,
        method,
        _value_used(pruned, setup.value),
        recalibrated,
    )


def _value_used(model: keras.Model, value: float | str) -> float | str:
    """The penalty value a run used: for ``"auto"``, the value it set."""
    calibrated = calibrated_penalty(model) if isinstance(value, str) else None
    return value if calibrated is None else calibrated


def reweighted_prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    penalty: float | str = "auto",
    reweight_epochs: int | None = None,
    retrain_epochs: int | None = None,
    **kwargs,
) -> PruneResult:
    """Reweighted pruning: `prune` with ``method="reweighted"``.

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays.
        penalty: ``lambda``, or ``"auto"`` (the default; see
            `tf_reweight.methods.reweighted.auto_penalty`).
        reweight_epochs: Epochs of penalized training (phase 1); None for
            the plan's (8 with the default ``schedule``).
        retrain_epochs: Epochs of masked retraining; None for the plan's.
        **kwargs: Other `prune` arguments (``structure``, ``target``,
            ``schedule``, ``batch_size``, ``lr``, ...) and `tf_reweight.apply`
            arguments.

    Returns:
        A `PruneResult`.

    Example:
    >>> result = reweighted_prune(dense, (x, y), target="50x")
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
