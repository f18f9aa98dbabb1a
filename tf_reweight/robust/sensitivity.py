"""Module Robustness Sensitivity (MRS) and sensitivity-aware pruning ratios.

Definition used here. Let ``x_adv`` be PGD adversarial examples for a batch
``(x, y)``, crafted once against the unmodified model, and
``L(theta) = CE(y, f_theta(x_adv))`` the adversarial loss on that fixed batch.
For each prunable layer ``i`` with kernels ``theta_i`` (``kernel``,
``depthwise_kernel`` or ``pointwise_kernel`` of `Dense`, `Conv1D`, `Conv2D`,
`DepthwiseConv2D`, `SeparableConv2D`):

- ``mode="perturb"`` (default)::

      MRS_i = max_{||d|| <= rho * ||theta_i||} L(theta_i + d) - L(theta)

  a relative worst-case weight perturbation (as in SAM / AWP), the max being
  approximated by ``ascent_steps`` steps of normalized gradient ascent, each of
  length ``rho * ||theta_i||`` and followed by projection onto the ball
  (Frobenius norm over all kernels of the layer);
- ``mode="prune"``::

      MRS_i = L(theta_i magnitude-pruned at probe_ratio) - L(theta)

  the smallest-magnitude ``probe_ratio`` of each kernel set to zero.

Only layer ``i`` changes while it is probed and its kernels are restored
exactly afterwards. Perturbed kernels pass through their variable constraint,
so the masks of already pruned layers stay applied. A high MRS marks a module
whose weights the robustness depends on; `allocate_ratios` prunes it less.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "cleverhans attacks and tf.function")

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_reweight.core import walker
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.robust import attacks

MODES = ("perturb", "prune")


@dataclasses.dataclass
class SensitivityTable:
    """Per-layer MRS scores and prunable sizes.

    Attributes:
        scores: ``{layer name: MRS}``, in model order.
        sizes: ``{layer name: number of prunable kernel weights}``.
        base_loss: Adversarial loss of the unmodified model on the probe batch.
        mode: ``"perturb"`` or ``"prune"``.
    """

    scores: dict[str, float]
    sizes: dict[str, int]
    base_loss: float
    mode: str

    def ranking(self) -> list[str]:
        """Layer names from the most to the least sensitive."""
        return sorted(self.scores, key=self.scores.get, reverse=True)

    def to_json(self, path: str) -> None:
        """Writes the table to a JSON file (read back with `from_json`)."""
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)

    @classmethod
    def from_json(cls, path: str) -> SensitivityTable:
        """Reads a table written by `to_json`."""
        with open(path) as f:
            return cls(**json.load(f))

    def plot(self, path: str) -> None:
        """Saves a bar plot of the scores, one bar per layer, to an image file."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = list(self.scores)
        fig = Figure(figsize=(max(4.0, 0.5 * len(names) + 2.0), 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.bar(range(len(names)), [self.scores[n] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
        ax.set_ylabel("increase in adversarial loss")
        ax.set_title(f"Module robustness sensitivity ({self.mode})")
        fig.tight_layout()
        fig.savefig(path)


def module_robustness_sensitivity(
    model: keras.Model,
    x,
    y,
    eps: float,
    mode: str = "perturb",
    rho: float = 0.05,
    ascent_steps: int = 3,
    probe_ratio: float = 0.5,
    attack_steps: int = 10,
    step_size: float | None = None,
    norm: float | str = np.inf,
    clip: tuple[float, float] | None = (0.0, 1.0),
    layers: Sequence[str] | None = None,
) -> SensitivityTable:
    """Measures the Module Robustness Sensitivity of each prunable layer.

    See the module docstring for the definition. The model's weights are
    identical before and after the call.

    Args:
        model: A built classifier returning logits.
        x: One probe batch of float inputs (a few hundred examples suffice).
        y: Integer class ids, shape ``(batch,)``.
        eps: Radius of the PGD perturbation ball for ``x_adv``; 0 probes the
            clean loss.
        mode: ``"perturb"`` (worst-case relative weight perturbation) or
            ``"prune"`` (magnitude pruning at ``probe_ratio``).
        rho: Relative radius of the weight perturbation, ``> 0``.
        ascent_steps: Gradient-ascent steps on the weights, ``>= 1``.
        probe_ratio: Fraction in (0, 1) of each kernel zeroed by
            ``mode="prune"``.
        attack_steps: PGD steps for ``x_adv``.
        step_size: PGD step size; defaults to ``min(eps, 2.5 * eps / steps)``.
        norm: PGD norm, ``np.inf`` (or ``"inf"``) or ``2``.
        clip: ``(min, max)`` range of valid inputs, or None.
        layers: Names of the layers to probe; defaults to all prunable ones.

    Returns:
        A `SensitivityTable`.

    Raises:
        ValueError: If an option is out of range, a name in ``layers`` is not
            a prunable layer, or the model has no prunable layer.

    Example:

    ```python
    table = module_robustness_sensitivity(model, x[:256], y[:256], eps=0.1)
    table.plot("mrs.png")
    ratios = allocate_ratios(table.scores, table.sizes, target=0.9)
    ```

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
        Wu et al., "Adversarial Weight Perturbation Helps Robust
        Generalization", NeurIPS 2020, https://arxiv.org/abs/2004.05884.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode. Expected one of {MODES}. Received: {mode=}")
    if not attacks.is_number(rho) or not 0 < rho < math.inf:
        raise ValueError(f"`rho` must be a finite number > 0. Received: rho={rho!r}")
    attacks.check_positive_int(ascent_steps, "ascent_steps")
    if not attacks.is_number(probe_ratio) or not 0 < probe_ratio < 1:
        raise ValueError(
            f"`probe_ratio` must lie in (0, 1). Received: probe_ratio={probe_ratio!r}"
        )
    step_size = attacks.check_budget(eps, step_size, attack_steps)
    probed = _select_layers(model, layers)

    x_adv = attacks.pgd(model, x, y, eps, step_size, attack_steps, norm, clip=clip)
    y = tf.cast(y, tf.int64)

    def adv_loss():
        logits = model(x_adv, training=False)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    base = float(adv_loss())
    scores, sizes = {}, {}
    for name, layer in probed:
        variables = [getattr(layer, lo.attr) for lo in kernel_layouts(layer)]
        original = [v.numpy() for v in variables]
        try:
            if mode == "perturb":
                _worst_case_perturbation(
                    variables, original, rho, ascent_steps, adv_loss
                )
            else:
                for v, w in zip(variables, original, strict=True):
                    _assign(v, _magnitude_prune(w, probe_ratio))
            scores[name] = float(adv_loss()) - base
        finally:
            for v, w in zip(variables, original, strict=True):
                v.assign(w)
        sizes[name] = int(sum(w.size for w in original))
    return SensitivityTable(scores, sizes, base, mode)


def allocate_ratios(
    scores: Mapping[str, float],
    sizes: Mapping[str, int],
    target: float,
    min_ratio: float = 0.0,
    max_ratio: float = 0.99,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Per-layer sparsities that meet a global budget, pruning sensitive layers less.

    Scores are min-max normalized to ``s_i`` in [0, 1] (all equal: uniform
    ratios) and each layer gets ``r_i = clip(c * exp(-s_i / temperature),
    min_ratio, max_ratio)``; the scale ``c`` is found by bisection so that
    ``sum(r_i * size_i) / sum(size_i) == target``. The ratios are then rounded
    to whole weights (largest remainders first, within the bounds) so that
    exactly ``round((1 - target) * total)`` weights are kept.

    Args:
        scores: ``{layer: sensitivity}``; higher means prune less.
        sizes: ``{layer: number of prunable weights}``, same keys, all ``>= 1``.
        target: Global sparsity in (0, 1).
        min_ratio: Lowest sparsity of a layer, in [0, max_ratio].
        max_ratio: Highest sparsity of a layer, in [min_ratio, 1].
        temperature: ``> 0``; lower values spread the ratios further apart.

    Returns:
        ``{layer: sparsity}``, where each ``sparsity * size`` is an integer.

    Raises:
        ValueError: If the keys differ, a size or option is out of range, or
            the bounds cannot meet ``target``.

    Example:

    >>> allocate_ratios({"a": 0.0, "b": 1.0}, {"a": 100, "b": 100}, 0.5)
    {'a': 0.73, 'b': 0.27}

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
    """
    names = list(scores)
    _check_allocation(scores, sizes, target, min_ratio, max_ratio, temperature)
    size = np.array([sizes[n] for n in names], np.int64)
    s = np.array([scores[n] for n in names], np.float64)
    spread = s.max() - s.min()
    s = (s - s.min()) / spread if spread > 0 else np.zeros_like(s)
    weight = np.exp(-s / temperature)  # In (0, 1], largest for the least sensitive.
    total = int(size.sum())

    def ratios(c: float) -> np.ndarray:
        return np.clip(c * weight, min_ratio, max_ratio)

    lo, hi = 0.0, max_ratio / weight.min()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratios(mid) @ size < target * total else (lo, mid)
    pruned = _round_counts(
        ratios(hi) * size,
        total - round((1.0 - target) * total),
        np.ceil(min_ratio * size - 1e-9).astype(np.int64),
        np.floor(max_ratio * size + 1e-9).astype(np.int64),
    )
    return {n: int(p) / int(k) for n, p, k in zip(names, pruned, size, strict=True)}


def _select_layers(model, names):
    found = {}
    for layer in walker.iter_layers(model):
        if kernel_layouts(layer):
            if layer.name in found:
                raise ValueError(
                    "Prunable layers must have unique names. "
                    f"Received two layers named {layer.name!r}."
                )
            found[layer.name] = layer
    if not found:
        raise ValueError(
            "The model has no prunable layer (Dense, Conv1D, Conv2D, "
            f"DepthwiseConv2D, SeparableConv2D). Received: model={model.name!r}"
        )
    if names is None:
        return list(found.items())
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(
            f"Unknown or non-prunable layers {unknown}. Expected names among "
            f"{list(found)}. Received: layers={list(names)!r}"
        )
    return [(n, found[n]) for n in names]


def _assign(variable, value) -> None:
    """Assigns ``value`` through the variable's constraint, if any."""
    value = tf.convert_to_tensor(value, variable.dtype)
    if variable.constraint is not None:
        value = variable.constraint(value)
    variable.assign(value)


def _worst_case_perturbation(variables, original, rho, steps, loss_fn) -> None:
    """Moves ``variables`` to ``original + d`` with ``d`` ascending ``loss_fn``."""
    radius = rho * math.sqrt(sum(float(np.sum(np.square(w))) for w in original))
    delta = [np.zeros_like(w) for w in original]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch([v.value for v in variables])
            loss = loss_fn()
        grads = [g.numpy() for g in tape.gradient(loss, [v.value for v in variables])]
        grad_norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads))
        if grad_norm == 0.0:
            return
        delta = [d + radius * g / grad_norm for d, g in zip(delta, grads, strict=True)]
        delta_norm = math.sqrt(sum(float(np.sum(np.square(d))) for d in delta))
        delta = [d * min(1.0, radius / delta_norm) for d in delta]
        for v, w, d in zip(variables, original, delta, strict=True):
            _assign(v, w + d)


def _magnitude_prune(w: np.ndarray, ratio: float) -> np.ndarray:
    """``w`` with its ``round(ratio * size)`` smallest magnitudes set to zero."""
    pruned = w.copy().reshape(-1)
    pruned[np.argsort(np.abs(pruned), kind="stable")[: round(ratio * w.size)]] = 0
    return pruned.reshape(w.shape)


def _round_counts(values, total, lower, upper) -> np.ndarray:
    """Integers near ``values`` within bounds that sum to ``total``."""
    counts = np.clip(np.floor(values + 1e-9), lower, upper).astype(np.int64)
    while counts.sum() != total:
        step = 1 if counts.sum() < total else -1
        room = counts < upper if step > 0 else counts > lower
        residual = np.where(room, step * (values - counts), -np.inf)
        counts[int(np.argmax(residual))] += step
    return counts


def _check_allocation(scores, sizes, target, min_ratio, max_ratio, temperature):
    if not scores or set(scores) != set(sizes):
        raise ValueError(
            "`scores` and `sizes` must be non-empty with the same layer names. "
            f"Received: scores keys={list(scores)}, sizes keys={list(sizes)}"
        )
    bad = {n: s for n, s in sizes.items() if not _is_count(s)}
    if bad:
        raise ValueError(f"Every size must be an integer >= 1. Received: sizes={bad}")
    if any(not attacks.is_number(s) or not math.isfinite(s) for s in scores.values()):
        raise ValueError(f"Every score must be a finite number. Received: {scores=}")
    if not attacks.is_number(target) or not 0 < target < 1:
        raise ValueError(f"`target` must lie in (0, 1). Received: target={target!r}")
    if not attacks.is_number(temperature) or not temperature > 0:
        raise ValueError(
            f"`temperature` must be a number > 0. Received: temperature={temperature!r}"
        )
    feasible = (
        attacks.is_number(min_ratio)
        and attacks.is_number(max_ratio)
        and 0 <= min_ratio <= target <= max_ratio <= 1
    )
    if not feasible:
        raise ValueError(
            "The ratio bounds cannot meet the target: expected "
            "0 <= min_ratio <= target <= max_ratio <= 1. Received: "
            f"min_ratio={min_ratio!r}, target={target!r}, max_ratio={max_ratio!r}"
        )
    total = sum(sizes.values())
    kept = round((1.0 - target) * total)
    low = sum(math.ceil(min_ratio * k - 1e-9) for k in sizes.values())
    high = sum(math.floor(max_ratio * k + 1e-9) for k in sizes.values())
    if not low <= total - kept <= high:
        raise ValueError(
            f"No whole-weight allocation prunes {total - kept} of {total} weights "
            f"within min_ratio={min_ratio!r} and max_ratio={max_ratio!r}."
        )


def _is_count(value) -> bool:
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and value >= 1
    )
