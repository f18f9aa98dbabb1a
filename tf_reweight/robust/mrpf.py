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

from tf_reweight.core import budget, checks, presets
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.pruning import api, batchnorm, sparsity
from tf_reweight.robust.adversarial import AdversarialModel
from tf_reweight.robust.allocation import allocate_ratios, default_max_ratio
from tf_reweight.robust.attack import Attack
from tf_reweight.robust.sensitivity import (
    SensitivityTable,
    module_robustness_sensitivity,
    prunable_layers,
)
from tf_reweight.training import recipes, registry

ALLOCATIONS = ("mrs", "uniform")

#: `adversarial_prune`'s training attack: PGD-7 at L-inf radius 0.3 (MNIST).
DEFAULT_ATTACK = Attack(kind="pgd", epsilon=0.3, steps=7)


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
    attack: Attack = DEFAULT_ATTACK,
    validation_data=None,
    verbose: int = 1,
    method_options: dict | None = None,
    recalibrate_bn: int | bool | None = None,
    bounded: bool | None = None,
    **apply_kwargs,
) -> recipes.PruneResult:
    """`tf_reweight.training.recipes.prune`, with every epoch trained adversarially.

    `recipes.prune` with a ``trainer`` hook: the pruned copy of ``model`` is
    wrapped in an `AdversarialModel` (Madry et al. objective with ``attack``)
    and fit for ``phase1_epochs + retrain_epochs`` epochs with the method's
    callbacks, `HardPrune` after phase 1 (at the start for ``"magnitude"``),
    the `recipes.two_phase_lr` schedule and `SparsityMonitor`. The penalties
    reach the adversarial loss through ``model.losses``. With
    ``recalibrate_bn``, the BatchNorm moving statistics, averaged during
    training over adversarial inputs and the network before its hard prune,
    are then recomputed on clean training inputs (`tf_reweight.recalibrate_batchnorm`).

    Reweighting is *bounded* here by default (``bounded=True``): the groups
    the target keeps are exempt from the penalty from the first refresh on,
    so adversarial training only presses the groups that will be pruned
    (adversarial pruning gains from it, clean pruning does not: see
    BENCHMARKS.md).

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
        attack: The training `Attack` (default `DEFAULT_ATTACK`).
        validation_data: Optional ``(x, y)``; the logs then also hold
            ``val_adv_accuracy`` under the training attack.
        verbose: Keras verbosity.
        method_options: Keyword arguments of the method's phase-1 callback.
        recalibrate_bn: After training, recompute the BatchNorm moving
            statistics on a fixed random sample of this many clean training
            inputs (True: all of them); None or False to keep them.
        bounded: Bounded reweighting (see `ReweightedGroupPenalty`); None
            for True with ``method="reweighted"``. Other methods take None.
        **apply_kwargs: More `tf_reweight.apply` arguments (reweighting's
            ``eps``, ...).

    Returns:
        A `tf_reweight.training.recipes.PruneResult` whose ``model`` is the pruned
        model itself (not the `AdversarialModel` around it).

    Example:
    >>> pgd7 = Attack(kind="pgd", epsilon=0.3, steps=7)
    >>> result = adversarial_prune(dense, (x, y), "16x", attack=pgd7)
    >>> evaluate_robustness(result.model, x_test, y_test, pgd7)

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018; Ye et al., "Adversarial Robustness vs. Model
        Compression, or Both?", ICCV 2019 (ADMM pruning with adversarial
        training).
    """
    AdversarialModel(None, attack)  # Validates the attack.
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
        trainer=lambda pruned: AdversarialModel(pruned, attack),
        **apply_kwargs,
        **bounded_option(method, bounded),
    )


def mrpf(
    model: keras.Model,
    train,
    x_probe,
    y_probe,
    target,
    attack: Attack,
    *,
    probe: Attack | None = None,
    structure="unstructured",
    method: str = "reweighted",
    allocation: str = "mrs",
    mode: str = "prune",
    finetune_epochs: int = 4,
    phase1_epochs: int | None = None,
    penalty: float | None = None,
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
    **apply_kwargs,
) -> MRPFResult:
    """MRS-guided pruning with adversarial fine-tuning (MRPF).

    Measures the MRS of each selected layer on ``(x_probe, y_probe)``
    (adversarial examples of ``probe``, pruning in the run's ``structure``,
    see `tf_reweight.robust.sensitivity.module_robustness_sensitivity`), allocates
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
        attack: The training `Attack`.
        probe: The `Attack` of the MRS probe; None for PGD-10 at
            ``attack``'s epsilon, norm and clip (default step size).
        structure: Sparsity structure (see `tf_reweight.apply`).
        method: One of `tf_reweight.training.recipes.METHODS` (see
            `adversarial_prune`).
        allocation: ``"mrs"`` or ``"uniform"``.
        mode: MRS probe: ``"prune"`` (the adversarial loss increase when
            half of a layer's weights, the smallest, are zeroed) or
            ``"perturb"`` (worst-case weight perturbation of 5% of the layer's
            norm). ``"prune"`` is the default because it measures what
            pruning does (see BENCHMARKS.md).
        finetune_epochs: Total adversarial fine-tuning epochs.
        phase1_epochs: Penalized epochs among them; defaults to half.
        penalty: The method's penalty; None for its default.
        max_ratio: Highest sparsity of a layer, in [sparsity target, 1);
            None for `tf_reweight.robust.allocation.default_max_ratio`.
        min_ratio: Lowest sparsity of a layer.
        temperature: Spread of the ratios (see `allocate_ratios`).
        layers: Names of the layers to prune; defaults to every prunable
            layer. Others stay dense and out of the target.
        batch_size: Batch size of fine-tuning.
        lr: Adam learning rate.
        validation_data: Optional ``(x, y)`` to monitor during fine-tuning.
        verbose: Keras verbosity.
        mrs_options: More `module_robustness_sensitivity` arguments
            (``rho``, ``ascent_steps``, ``probe_ratio``).
        method_options: Keyword arguments of the method's phase-1 callback
            (for ADMM, ``{"rho_factor": 1.5}``).
        recalibrate_bn: As in `adversarial_prune`.
        bounded: As in `adversarial_prune`.
        **apply_kwargs: More `tf_reweight.apply` arguments (reweighting's
            ``eps``, ...).

    Returns:
        An `MRPFResult` (pruned model, MRS table, ratios, history).

    Raises:
        ValueError: For an invalid option, before any measurement or
            training.

    Example:
    >>> pgd7 = Attack(kind="pgd", epsilon=0.3, steps=7)
    >>> result = mrpf(robust_dense, (x, y), x[:256], y[:256], "16x", pgd7)
    >>> result.ratios
    {'conv1': ..., 'conv2': ..., 'fc1': ..., 'logits': ...}
    >>> result.model.save("mrpf.keras")

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial
        Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083.
    """
    api.check_model(model)
    sparsity = budget.parse_target(target)
    checks.check_choice("allocation", allocation, ALLOCATIONS)
    checks.check_int("finetune_epochs", finetune_epochs, low=0)
    if phase1_epochs is None:
        phase1_epochs = finetune_epochs // 2
    if checks.check_int("phase1_epochs", phase1_epochs, low=0) > finetune_epochs:
        raise ValueError(
            "`phase1_epochs` must be at most `finetune_epochs`. Received: "
            f"phase1_epochs={phase1_epochs}, finetune_epochs={finetune_epochs}"
        )
    if max_ratio is None:
        max_ratio = default_max_ratio(sparsity)
    if not sparsity <= checks.check_number("max_ratio", max_ratio) < 1:
        raise ValueError(
            "`max_ratio` must lie in [target, 1): a layer cannot lose every "
            f"weight. Received: max_ratio={max_ratio!r}, target={sparsity}"
        )
    presets.check(structure)
    recipes.method_setup(
        method, penalty, method_options, **bounded_option(method, bounded)
    )
    AdversarialModel(None, attack)  # Validates the attack.
    if probe is None:
        probe = Attack(
            kind="pgd", epsilon=attack.epsilon, norm=attack.norm, clip=attack.clip
        )
    AdversarialModel(None, probe)
    batchnorm.check_recalibrate(recalibrate_bn, model, train[0])
    if allocation == "mrs" and (x_probe is None or y_probe is None):
        raise ValueError(
            "MRS allocation needs probe data. Expected arrays x_probe, y_probe. "
            "Received: None"
        )
    start = time.perf_counter()
    selected = prunable_layers(model, layers)
    if allocation == "mrs":
        table = module_robustness_sensitivity(
            model,
            x_probe,
            y_probe,
            probe,
            mode=mode,
            layers=[name for name, _ in selected],
            structure=structure,
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
        batch_size=batch_size,
        lr=lr,
        validation_data=validation_data,
        verbose=verbose,
        method_options=method_options,
        recalibrate_bn=recalibrate_bn,
        bounded=bounded,
        **apply_kwargs,
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


def uniform(model: keras.Model, train, target, attack: Attack, **kwargs) -> MRPFResult:
    """The uniform control of `mrpf`: every layer pruned to the same sparsity.

    Same global target (exact count of kept weights), same fine-tuning, no
    MRS measurement.

    Args:
        model: A trained dense classifier returning logits (left unchanged).
        train: ``(x, y)`` training arrays.
        target: Global sparsity or rate string.
        attack: The training `Attack`.
        **kwargs: Other `mrpf` arguments (``method``, ``finetune_epochs``,
            ``layers``, ...).

    Returns:
        An `MRPFResult` with ``table=None``.

    Example:
    >>> control = uniform(robust_dense, (x, y), "16x", Attack(epsilon=0.3))
    """
    return mrpf(
        model, train, None, None, target, attack, allocation="uniform", **kwargs
    )
