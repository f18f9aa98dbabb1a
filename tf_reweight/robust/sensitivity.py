"""Module Robustness Sensitivity (MRS): how much each layer's robustness costs.

Definition used here. Let ``x_adv`` be adversarial examples (an `Attack`) for a batch
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

      MRS_i = L(theta_i pruned at probe_ratio) - L(theta)

  the smallest ``probe_ratio`` of each kernel's units of the run's
  structure set to zero (single weights, or whole filters, ...).

Only layer ``i`` changes while it is probed and its kernels are restored
exactly afterwards. Perturbed kernels pass through their variable constraint,
so the masks of already pruned layers stay applied. A high MRS marks a module
whose weights the robustness depends on;
`tf_reweight.robust.allocation.allocate_ratios` prunes it less.
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "cleverhans attacks and tf.function")

import dataclasses
import json
import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_reweight.core import checks, presets, structures, walker
from tf_reweight.core.layouts import kernel_layouts
from tf_reweight.robust import attacks
from tf_reweight.robust.attack import Attack

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
    attack: Attack,
    mode: str = "perturb",
    rho: float = 0.05,
    ascent_steps: int = 3,
    probe_ratio: float = 0.5,
    layers: Sequence[str] | None = None,
    structure="unstructured",
) -> SensitivityTable:
    """Measures the Module Robustness Sensitivity of each prunable layer.

    See the module docstring for the definition. The model's weights are
    identical before and after the call.

    Args:
        model: A built classifier returning logits.
        x: One probe batch of float inputs (a few hundred examples suffice).
        y: Integer class ids, shape ``(batch,)``.
        attack: The `Attack` that crafts ``x_adv``; ``epsilon=0`` probes the
            clean loss.
        mode: ``"perturb"`` (worst-case relative weight perturbation) or
            ``"prune"`` (pruning ``probe_ratio`` of each kernel).
        rho: Relative radius of the weight perturbation, ``> 0``.
        ascent_steps: Gradient-ascent steps on the weights, ``>= 1``.
        probe_ratio: Fraction in (0, 1) of each kernel's units zeroed by
            ``mode="prune"``.
        layers: Names of the layers to probe; defaults to all prunable ones.
        structure: The sparsity structure of the run (see
            `tf_reweight.apply`): ``mode="prune"`` zeroes the smallest units
            of that structure (whole filters for ``"filter"``), so that the
            scores rank what the run will prune. Kernels the structure does
            not apply to are left unpruned. Unused by ``"perturb"``.

    Returns:
        A `SensitivityTable`.

    Raises:
        ValueError: If an option is out of range, a name in ``layers`` is not
            a prunable layer, or the model has no prunable layer.

    Example:

    ```python
    attack = Attack(kind="pgd", epsilon=0.1)
    table = module_robustness_sensitivity(model, x[:256], y[:256], attack)
    table.plot("mrs.png")
    ```

    References:
        Bai et al., "Adaptive Pruning with Module Robustness Sensitivity:
        Balancing Compression and Robustness", https://arxiv.org/abs/2410.15176.
        Wu et al., "Adversarial Weight Perturbation Helps Robust
        Generalization", NeurIPS 2020, https://arxiv.org/abs/2004.05884.
    """
    checks.check_choice("mode", mode, MODES)
    checks.check_number("rho", rho, 0.0, strict=True)
    checks.check_int("ascent_steps", ascent_steps, low=1)
    if checks.check_number("probe_ratio", probe_ratio, 0.0, strict=True) >= 1:
        raise ValueError(
            f"`probe_ratio` must lie in (0, 1). Received: probe_ratio={probe_ratio!r}"
        )
    if not isinstance(attack, Attack):
        raise ValueError(f"`attack` must be an `Attack`. Received: attack={attack!r}")
    presets.check(structure)
    probed = prunable_layers(model, layers)

    x_adv = attacks.craft(attack, model, x, y)
    y = tf.cast(y, tf.int64)

    def adv_loss():
        # In float32 under mixed precision: bfloat16 rounds the scores.
        logits = tf.cast(model(x_adv, training=False), tf.float32)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    base = float(adv_loss())
    scores, sizes = {}, {}
    for name, layer in probed:
        layouts = kernel_layouts(layer)
        variables = [getattr(layer, lo.attr) for lo in layouts]
        original = [v.numpy() for v in variables]
        try:
            if mode == "perturb":
                _worst_case_perturbation(
                    variables, original, rho, ascent_steps, adv_loss
                )
            else:
                struct = structures.get(presets.resolve(structure, layer))
                for v, w, lo in zip(variables, original, layouts, strict=True):
                    _assign(v, _prune_units(w, lo, struct, probe_ratio))
            scores[name] = float(adv_loss()) - base
        finally:
            for v, w in zip(variables, original, strict=True):
                v.assign(w)
        sizes[name] = int(sum(w.size for w in original))
    return SensitivityTable(scores, sizes, base, mode)


def prunable_layers(
    model: keras.Model, names: Sequence[str] | None = None
) -> list[tuple[str, keras.layers.Layer]]:
    """The prunable layers of ``model`` (`tf_reweight.core.walker` order).

    Args:
        model: A built model.
        names: The layers wanted, in this order; None for every prunable one.

    Returns:
        ``[(name, layer), ...]``.

    Raises:
        ValueError: If two prunable layers share a name, the model has none,
            or a name in ``names`` is not a prunable layer.

    Example:
    >>> [name for name, _ in prunable_layers(model)]
    ['conv1', 'conv2', 'fc1', 'logits']
    """
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


def _prune_units(w: np.ndarray, layout, structure, ratio: float) -> np.ndarray:
    """``w`` with the smallest ``ratio`` of its ``structure`` units zeroed."""
    if not structure.applies_to(layout):
        return w
    w4 = layout.to_canonical(w)
    keep = structure.num_units(w4.shape) - round(ratio * structure.num_units(w4.shape))
    mask = structure.project(w4, max(keep, 1))
    return keras.ops.convert_to_numpy(layout.from_canonical(w4 * mask))
