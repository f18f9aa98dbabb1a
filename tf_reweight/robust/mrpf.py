"""MRPF: robustness-aware per-layer pruning ratios, then adversarial fine-tuning.

The MRPF pipeline of Bai et al., "Adaptive Pruning with Module Robustness
Sensitivity" (arXiv 2410.15176), on top of `tf_reweight`:

1. measure the Module Robustness Sensitivity (MRS) of every prunable layer of
   the dense (ideally adversarially trained) model with
   `tf_reweight.robust.sensitivity.module_robustness_sensitivity`;
2. allocate per-layer sparsities that meet the global target exactly, the
   most sensitive layers pruned least (`tf_reweight.allocate_ratios`);
3. wrap the model with those per-layer targets (`tf_reweight.apply` with a
   ``{layer: sparsity}`` target);
4. fine-tune adversarially: `tf_reweight.robust.adversarial.AdversarialModel` around
   the pruned model, with the penalty callbacks (``method="reweighted"``:
   `Reweight`, then `HardPrune`) or a one-shot magnitude prune followed by
   adversarial retraining (``method="magnitude"``).

`uniform` is the control: the same global target, the same sparsity in every
layer, the same fine-tuning. `adversarial_prune` is step 4 alone, for any
target (global, per layer) and any method of `tf_reweight.training.recipes.METHODS`.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "adversarial training with cleverhans")

import dataclasses
import time

import keras

from tf_reweight.core import budget, structures
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.pruning import api, batchnorm, sparsity
from tf_reweight.robust.adversarial import AdversarialModel
from tf_reweight.robust.sensitivity import (
    SensitivityTable,
    _select_layers,
    allocate_ratios,
    module_robustness_sensitivity,
)
from tf_reweight.training import recipes, registry

ALLOCATIONS = ("mrs", "uniform")

#: No layer keeps less than ``1 / MAX_RATE_FACTOR`` of the global keep fraction
#: by default: at a 16x global rate, no layer is pruned beyond 64x.
MAX_RATE_FACTOR = 4.0


def default_max_ratio(target: float) -> float:
    """The default highest per-layer sparsity for a global sparsity ``target``.

    ``1 - (1 - target) / MAX_RATE_FACTOR``: a layer is compressed at most
    `MAX_RATE_FACTOR` times more than the model. Without such a cap a small
    layer that MRS finds insensitive (a first convolution of a few hundred
    weights, say) can be driven to a handful of weights, which costs little
    of the budget but cuts the signal path of the whole network.

    Args:
        target: Global sparsity in (0, 1).

    Returns:
        A sparsity in [target, 1).
    """
    return 1.0 - (1.0 - target) / MAX_RATE_FACTOR


def bounded_option(method: str, bounded: bool | None = None) -> dict:
    """The ``bounded`` keyword adversarial pruning passes to `tf_reweight.apply`.

    ``bounded`` when given, else True for ``"reweighted"`` (see
    `adversarial_prune`); nothing for other methods, whose registry entry
    does not take the keyword (`tf_reweight.training.recipes.prune` rejects
    it there).

    Args:
        method: One of `tf_reweight.training.recipes.METHODS`.
        bounded: The caller's choice; None for the default.

    Returns:
        ``{"bounded": value}``, or ``{}``.

    Example:
    >>> bounded_option("reweighted")
    {'bounded': True}
    """
    if bounded is None and method in registry.METHODS:
        bounded = "bounded" in registry.get_method(method).apply_options or None
    return {} if bounded is None else {"bounded": bounded}


@dataclasses.dataclass
class MRPFResult:
    """What `mrpf` (or `uniform`) produced.

    Attributes:
        model: The pruned model, with `PruningWrapper` layers (save it as
            ``.keras``; `tf_reweight.strip` gives the plain model).
        table: The MRS table of the dense model (None for ``"uniform"``).
        ratios: ``{layer: sparsity}`` allocated to every selected layer; a
            layer allocated 0 is left dense (not wrapped).
        history: Keras history of the adversarial fine-tuning.
        seconds: Wall time of MRS measurement, allocation and fine-tuning.
        epochs: Fine-tuning epochs.
        method: ``"reweighted"``, ``"magnitude"``, ... (`recipes.METHODS`).
        allocation: ``"mrs"`` or ``"uniform"``.
        recalibrated_bn: BatchNorm layers whose moving statistics were
            recomputed after fine-tuning (``recalibrate_bn``); 0 if not asked.
    """

    model: keras.Model
    table: SensitivityTable | None
    ratios: dict[str, float]
    history: dict
    seconds: float
    epochs: int
    method: str
    allocation: str
    recalibrated_bn: int = 0

    def counts(self) -> tuple[int, int]:
        """``(weights, nonzeros)`` over the kernels of the selected layers."""
        rows = [r for r in sparsity.report(self.model).rows if r.layer in self.ratios]
        return sum(r.weights for r in rows), sum(r.nonzeros for r in rows)

    @property
    def sparsity(self) -> float:
        """Global sparsity over the selected layers."""
        weights, nonzeros = self.counts()
        return 1.0 - nonzeros / weights


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"`{name}` must be an integer >= {low}. Received: {name}={value!r}"
        )
    return value


def adversarial_prune(
    model: keras.Model,
    train,
    target,
    *,
    method: str = "reweighted",
    structure="unstructured",
    penalty: float | None = None,
    phase1_epochs: int = 2,
    retrain_epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    attack: str = "pgd",
    eps: float = 0.3,
    steps: int = 7,
    step_size: float | None = None,
    validation_data=None,
    verbose: int = 1,
    method_options: dict | None = None,
    recalibrate_bn: int | bool | None = None,
    bounded: bool | None = None,
    **apply_kwargs,
) -> recipes.PruneResult:
    """`tf_reweight.training.recipes.prune`, with every epoch trained adversarially.

    `recipes.prune` with a ``trainer`` hook: the pruned copy of ``model`` is
    wrapped in an `AdversarialModel` (Madry et al. objective with ``attack``,
    ``eps``, ``steps``, ``step_size``) and fit for
    ``phase1_epochs + retrain_epochs`` epochs with the method's callbacks,
    `HardPrune` after phase 1 (at the start for ``"magnitude"``), the
    `recipes.two_phase_lr` schedule and
    `SparsityMonitor`. The penalties reach the adversarial loss through
    ``model.losses``. With ``recalibrate_bn``, the BatchNorm moving
    statistics, averaged during training over adversarial inputs and the
    network before its hard prune, are then recomputed on clean training
    inputs (`tf_reweight.recalibrate_batchnorm`).

    Reweighting is *bounded* here by default (``bounded=True``): the groups
    the target keeps are exempt from the penalty from the first refresh on,
    so adversarial training only presses the groups that will be pruned; it
    kept more robust accuracy than unbounded reweighting in
    ``benchmarks/robust.py``, while clean pruning (`recipes.prune`) does
    better unbounded (see BENCHMARKS.md).

    Args:
        model: A trained dense Keras model (left unchanged).
        train: ``(x, y)`` training arrays, inputs in [0, 1].
        target: A global sparsity or rate string, or ``{layer: sparsity}``.
        method: One of `tf_reweight.training.recipes.METHODS`.
        structure: Sparsity structure (see `tf_reweight.apply`).
        penalty: The method's penalty; None for `recipes.DEFAULT_PENALTY`.
        phase1_epochs: Epochs of penalized adversarial training.
        retrain_epochs: Epochs of masked adversarial retraining.
        batch_size: Batch size.
        lr: Adam learning rate of phase 1 and start of phase 2.
        attack: Training attack, ``"pgd"`` or ``"fgsm"`` (FGSM-RS).
        eps: L-inf radius of the training attack.
        steps: PGD steps (ignored by ``"fgsm"``).
        step_size: Attack step size; None for `AdversarialModel`'s default.
        validation_data: Optional ``(x, y)``; the logs then also hold
            ``val_adv_accuracy`` under the training attack.
        verbose: Keras verbosity.
        method_options: Keyword arguments of the method's phase-1 callback.
        recalibrate_bn: After training, recompute the BatchNorm moving
            statistics on a fixed random sample of this many clean training
            inputs (True: all of them); None or False to keep them.
        bounded: Bounded reweighting (see `ReweightedGroupPenalty`); None
            for True with ``method="reweighted"``. Other methods take None.
        **apply_kwargs: More `tf_reweight.apply` arguments.

    Returns:
        A `tf_reweight.training.recipes.PruneResult` whose ``model`` is the pruned
        model itself (not the `AdversarialModel` around it).

    Example:
    >>> result = adversarial_prune(dense, (x, y), "16x", eps=0.3, steps=7)
    >>> evaluate_robustness(result.model, x_test, y_test, eps=0.3)

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018; Ye et al., "Adversarial Robustness vs. Model
        Compression, or Both?", ICCV 2019 (ADMM pruning with adversarial
        training).
    """
    adversarial = dict(attack=attack, eps=eps, steps=steps, step_size=step_size)
    AdversarialModel(None, **adversarial)  # Validates the attack settings.
    return recipes.prune(
        model,
        train,
        method=method,
        structure=structure,
        target=target,
        penalty=penalty,
        phase1_epochs=phase1_epochs,
        retrain_epochs=retrain_epochs,
        batch_size=batch_size,
        lr=lr,
        validation_data=validation_data,
        verbose=verbose,
        method_options=method_options,
        recalibrate_bn=recalibrate_bn,
        trainer=lambda pruned: AdversarialModel(pruned, **adversarial),
        **apply_kwargs,
        **bounded_option(method, bounded),
    )


def adversarial_pretrain(
    model: keras.Model,
    train,
    epochs: int,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    verbose: int = 1,
    **attack,
) -> dict:
    """Trains ``model`` in place with `AdversarialModel`, cosine learning rate.

    Args:
        model: A classifier returning logits (clean-pretrained or fresh).
        train: ``(x, y)`` training arrays, inputs in [0, 1].
        epochs: Adversarial training epochs (>= 0).
        batch_size: Batch size.
        lr: Initial Adam learning rate, decayed by a cosine to ``1e-5``.
        verbose: Keras verbosity.
        **attack: `AdversarialModel` options: ``attack`` (``"pgd"`` or
            ``"fgsm"``), ``eps``, ``steps``, ``step_size``, ``loss_type``, ...

    Returns:
        The Keras history dict (clean and adversarial training accuracy).

    Example:
    >>> adversarial_pretrain(model, (x, y), 5, attack="fgsm", eps=8 / 255)
    """
    _check_int("epochs", epochs, 0)
    trainer = AdversarialModel(model, **attack)
    recipes.compile_classifier(trainer, lr)
    schedule = recipes.two_phase_lr(0, epochs, lr)
    history = trainer.fit(
        *train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=[keras.callbacks.LearningRateScheduler(schedule)],
    )
    return history.history


def mrs_ratios(
    table: SensitivityTable,
    target,
    *,
    max_ratio: float | None = None,
    min_ratio: float = 0.0,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities from an MRS table, with `mrpf`'s defaults.

    Args:
        table: A `SensitivityTable`.
        target: Global sparsity or rate string over the table's layers.
        max_ratio: Highest sparsity of a layer; None for `default_max_ratio`.
        min_ratio: Lowest sparsity of a layer.
        temperature: Spread of the ratios (see `allocate_ratios`).

    Returns:
        ``{layer: sparsity}`` keeping exactly ``round((1 - target) * total)``
        weights.

    Example:
    >>> mrs_ratios(SensitivityTable.from_json("mrs.json"), "16x")
    """
    sparsity = budget.parse_target(target)
    if max_ratio is None:
        max_ratio = default_max_ratio(sparsity)
    return allocate_ratios(
        table.scores, table.sizes, sparsity, min_ratio, max_ratio, temperature
    )


def mrpf(
    model: keras.Model,
    train,
    x_probe,
    y_probe,
    target,
    eps: float,
    *,
    structure="unstructured",
    method: str = "reweighted",
    allocation: str = "mrs",
    mode: str = "prune",
    finetune_epochs: int = 4,
    phase1_epochs: int | None = None,
    penalty: float | None = None,
    attack: str = "pgd",
    attack_steps: int = 7,
    step_size: float | None = None,
    probe_steps: int = 10,
    max_ratio: float | None = None,
    min_ratio: float = 0.0,
    temperature: float = 1.0,
    layers: list[str] | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    validation_data=None,
    verbose: int = 1,
    mrs_options: dict | None = None,
    method_options: dict | None = None,
    recalibrate_bn: int | bool | None = None,
    bounded: bool | None = None,
) -> MRPFResult:
    """MRS-guided pruning with adversarial fine-tuning (MRPF).

    Measures the MRS of each selected layer on ``(x_probe, y_probe)``
    (adversarial examples at ``eps``, see
    `tf_reweight.robust.sensitivity.module_robustness_sensitivity`), allocates
    per-layer sparsities with `allocate_ratios` so that exactly
    ``round((1 - target) * total)`` weights of the selected layers stay,
    sensitive layers pruned less, then prunes and fine-tunes adversarially
    with `adversarial_prune`. ``allocation="uniform"`` skips the MRS and
    gives every layer the target (rounded to whole weights, same exact total).

    The global count is exact for unstructured sparsity and single-kernel
    layers. Structured targets are met per layer to the nearest unit (a
    filter, a column, ...), so the total is then within a unit per layer.

    Args:
        model: A trained dense classifier returning logits (left unchanged);
            adversarially trained for MRS to mean robustness.
        train: ``(x, y)`` training arrays, inputs in [0, 1].
        x_probe: Probe inputs for MRS (a few hundred suffice); unused (may be
            None) with ``allocation="uniform"``.
        y_probe: Their integer labels.
        target: Global sparsity in (0, 1) or rate string (``"16x"``) over the
            selected layers' kernels.
        eps: L-inf radius of the MRS probe attack and of the training attack.
        structure: Sparsity structure (see `tf_reweight.apply`).
        method: ``"reweighted"`` (reweighted penalty with `Reweight` during
            the first ``phase1_epochs``, then `HardPrune` and masked
            retraining) or ``"magnitude"`` (one-shot magnitude prune, then
            adversarial retraining for all epochs); also ``"admm"`` or
            ``"group_lasso"`` (`tf_reweight.training.recipes.METHODS`).
        allocation: ``"mrs"`` or ``"uniform"``.
        mode: MRS probe: ``"prune"`` (the adversarial loss increase when
            half of a layer's weights, the smallest, are zeroed) or
            ``"perturb"`` (worst-case weight perturbation of 5% of the layer's
            norm). ``"prune"`` is the default because it measures what
            pruning does: on an adversarially trained LeNet-5 (MNIST, eps
            0.3, 16x) the perturbation probe rates the 400k-weight ``fc1``
            most sensitive, since 5% of its norm spread over all its weights
            is a large change, and starves the three small layers (PGD-40
            accuracy 38.7% vs 52.5% uniform), while the pruning probe gives
            59.6% (``benchmarks/robust.py``).
        finetune_epochs: Total adversarial fine-tuning epochs.
        phase1_epochs: Penalized epochs among them; defaults to half.
        penalty: The method's penalty; None for its default.
        attack: Training attack, ``"pgd"`` or ``"fgsm"`` (FGSM-RS).
        attack_steps: PGD steps of the training attack.
        step_size: Training attack step size; None for the default.
        probe_steps: PGD steps of the MRS probe attack.
        max_ratio: Highest sparsity of a layer, in [sparsity target, 1);
            None for `default_max_ratio` (a layer is compressed at most 4x
            more than the model), which keeps small insensitive layers from
            being starved.
        min_ratio: Lowest sparsity of a layer.
        temperature: Spread of the ratios (see `allocate_ratios`).
        layers: Names of the layers to prune; defaults to every prunable
            layer. Others stay dense and out of the target.
        batch_size: Batch size of fine-tuning.
        lr: Adam learning rate.
        validation_data: Optional ``(x, y)`` to monitor during fine-tuning.
        verbose: Keras verbosity.
        mrs_options: More `module_robustness_sensitivity` arguments
            (``rho``, ``ascent_steps``, ``probe_ratio``, ``step_size``).
        method_options: Keyword arguments of the method's phase-1 callback
            (for ADMM, ``{"rho_factor": 1.5}``).
        recalibrate_bn: After fine-tuning, recompute the BatchNorm moving
            statistics on this many clean training inputs (see
            `adversarial_prune`); None or False to keep them.
        bounded: Bounded reweighting; None for `adversarial_prune`'s
            default (True with ``method="reweighted"``).

    Returns:
        An `MRPFResult` (pruned model, MRS table, ratios, history).

    Raises:
        ValueError: For an invalid option, before any measurement or
            training.

    Example:
    >>> result = mrpf(robust_dense, (x, y), x[:256], y[:256], "16x", eps=0.3)
    >>> result.ratios
    {'conv1': 0.74, 'conv2': 0.9, 'fc1': 0.95, 'logits': 0.81}
    >>> result.model.save("mrpf.keras")

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
    """
    api.check_model(model)
    sparsity = budget.parse_target(target)
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"Unknown allocation. Expected one of {ALLOCATIONS}. "
            f"Received: allocation={allocation!r}"
        )
    _check_int("finetune_epochs", finetune_epochs, 0)
    if phase1_epochs is None:
        phase1_epochs = finetune_epochs // 2
    if _check_int("phase1_epochs", phase1_epochs, 0) > finetune_epochs:
        raise ValueError(
            "`phase1_epochs` must be at most `finetune_epochs`. Received: "
            f"phase1_epochs={phase1_epochs}, finetune_epochs={finetune_epochs}"
        )
    if max_ratio is None:
        max_ratio = default_max_ratio(sparsity)
    if not isinstance(max_ratio, int | float) or not sparsity <= max_ratio < 1:
        raise ValueError(
            "`max_ratio` must lie in [target, 1): a layer cannot lose every "
            f"weight. Received: max_ratio={max_ratio!r}, target={sparsity}"
        )
    structures.get(structure)
    recipes.method_setup(
        method, penalty, method_options, **bounded_option(method, bounded)
    )
    AdversarialModel(None, attack, eps, step_size, attack_steps)
    batchnorm.check_recalibrate(recalibrate_bn, model, train[0])
    if allocation == "mrs" and (x_probe is None or y_probe is None):
        raise ValueError(
            "MRS allocation needs probe data. Expected arrays x_probe, y_probe. "
            "Received: None"
        )
    start = time.perf_counter()
    selected = _select_layers(model, layers)
    if allocation == "mrs":
        table = module_robustness_sensitivity(
            model,
            x_probe,
            y_probe,
            eps,
            mode=mode,
            attack_steps=probe_steps,
            layers=[name for name, _ in selected],
            **(mrs_options or {}),
        )
        scores, sizes = table.scores, table.sizes
    else:
        table = None
        scores = {name: 0.0 for name, _ in selected}
        sizes = {
            name: sum(lo.size for lo in kernel_layouts(layer))
            for name, layer in selected
        }
    ratios = allocate_ratios(scores, sizes, sparsity, min_ratio, max_ratio, temperature)
    result = adversarial_prune(
        model,
        train,
        {name: r for name, r in ratios.items() if r > 0},
        method=method,
        structure=structure,
        penalty=penalty,
        phase1_epochs=phase1_epochs,
        retrain_epochs=finetune_epochs - phase1_epochs,
        attack=attack,
        eps=eps,
        steps=attack_steps,
        step_size=step_size,
        batch_size=batch_size,
        lr=lr,
        validation_data=validation_data,
        verbose=verbose,
        method_options=method_options,
        recalibrate_bn=recalibrate_bn,
        bounded=bounded,
    )
    return MRPFResult(
        model=result.model,
        table=table,
        ratios=ratios,
        history=result.history,
        seconds=time.perf_counter() - start,
        epochs=result.epochs,
        method=method,
        allocation=allocation,
        recalibrated_bn=result.recalibrated_bn,
    )


def uniform(model: keras.Model, train, target, eps: float, **kwargs) -> MRPFResult:
    """The uniform control of `mrpf`: every layer pruned to the same sparsity.

    Same global target (exact count of kept weights), same fine-tuning, no
    MRS measurement.

    Args:
        model: A trained dense classifier returning logits (left unchanged).
        train: ``(x, y)`` training arrays.
        target: Global sparsity or rate string.
        eps: L-inf radius of the training attack.
        **kwargs: Other `mrpf` arguments (``method``, ``finetune_epochs``,
            ``attack``, ``layers``, ...).

    Returns:
        An `MRPFResult` with ``table=None``.

    Example:
    >>> control = uniform(robust_dense, (x, y), "16x", eps=0.3)
    """
    return mrpf(model, train, None, None, target, eps, allocation="uniform", **kwargs)
