"""The user-facing entry points: `apply`, `strip` and `report`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import keras
import numpy as np

from tf_reweight import backend_support, budget, structures
from tf_reweight.layouts import SUPPORTED_LAYERS, kernel_layouts
from tf_reweight.pruning import wrappers
from tf_reweight.regularizers import KernelPenalty, ReweightedGroupPenalty
from tf_reweight.wrapper import PruningWrapper


def check_model(model) -> None:
    """Raises `ValueError` unless ``model`` is a built Sequential or Functional."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    if not model.built or not model.inputs:
        raise ValueError(
            "The model must be a built Sequential or Functional model (give it "
            "an Input, or call it on data first). Received: an unbuilt or "
            f"subclassed model {model.name!r}"
        )


def _plan(model, structure, target, skip_first, skip_last, layers):
    """Validates everything and decides per layer: (structure, sparsity, kernels)."""
    candidates = [layer for layer in model.layers if kernel_layouts(layer)]
    if wrappers(model):
        raise ValueError(
            "The model already has pruned layers. Expected a plain model; call "
            f"`tf_reweight.strip` first. Received: model={model.name!r}"
        )
    if not candidates:
        raise ValueError(
            f"The model has no prunable layer. Expected at least one of "
            f"{list(SUPPORTED_LAYERS)}. Received: model={model.name!r}"
        )
    by_name = {layer.name: layer for layer in candidates}
    selected = list(candidates)
    if skip_first:
        selected = selected[1:]
    if skip_last:
        selected = selected[:-1]
    if isinstance(target, Mapping):
        unknown = sorted(set(target) - set(by_name))
        if unknown:
            raise ValueError(
                f"Per-layer targets name layers that are not prunable layers of "
                f"the model. Expected names among {sorted(by_name)}. Received: "
                f"{unknown}"
            )
        selected = [layer for layer in selected if layer.name in target]
    if layers is not None:
        unknown = sorted(set(layers) - set(by_name))
        if unknown:
            raise ValueError(
                f"`layers` names layers that are not prunable. Expected names "
                f"among {sorted(by_name)}. Received: layers={unknown}"
            )
        selected = [layer for layer in selected if layer.name in layers]
    per_layer_structure = isinstance(structure, Mapping)
    plan = {}
    for layer in selected:
        struct = structures.get(
            structure.get(layer.name, "unstructured")
            if per_layer_structure
            else structure
        )
        if isinstance(target, Mapping):
            raw = target[layer.name]
        elif target is None and struct.fixed_sparsity is not None:
            raw = struct.fixed_sparsity
        elif target is None:
            raise ValueError(
                f"A target is needed for structure '{struct!r}'. Expected a "
                "sparsity in (0, 1) or a rate such as '100x'. Received: target=None"
            )
        else:
            raw = target
        sparsity = budget.parse_target(raw)
        kernels = []
        for layout in kernel_layouts(layer):
            if not struct.applies_to(layout):
                warnings.warn(
                    f"Structure '{struct!r}' does not apply to kernel "
                    f"'{layout.attr}' {layout.shape} of layer '{layer.name}'; "
                    "that kernel is left dense.",
                    stacklevel=3,
                )
                continue
            struct.check(layout)
            struct.check_sparsity(layout, sparsity)
            kernels.append(layout.attr)
        if kernels:
            plan[layer.name] = (struct, sparsity, kernels)
    if not plan:
        raise ValueError(
            "No kernel of the model can be pruned with these settings. Expected "
            "at least one prunable kernel the structure applies to. Received: "
            f"structure={structure!r}, layers={layers!r}"
        )
    return plan


def apply(
    model: keras.Model,
    structure="unstructured",
    target=None,
    penalty: float = 1e-4,
    *,
    method: KernelPenalty | None = None,
    eps: float = 1e-3,
    squared: bool = False,
    bounded: bool = False,
    scope: str = "global",
    skip_first: bool = False,
    skip_last: bool = False,
    layers: list[str] | None = None,
) -> keras.Model:
    """Returns a copy of ``model`` whose prunable layers are set up for pruning.

    Each selected Dense/Conv layer is wrapped in a `PruningWrapper` that owns
    a mask per kernel and the penalty's state; the weights are copied over.
    The original model is never modified, and every argument is validated
    before anything is built.

    Args:
        model: A built Sequential or Functional Keras model.
        structure: A structure name (``"unstructured"``, ``"filter"``,
            ``"channel"``, ``"column"``, ``"kernel"``, ``"block:4x4"``,
            ``"2:4"``, ``"pattern"``), a `Structure`, or a dict from layer
            name to structure (others default to unstructured).
        target: A sparsity in (0, 1), a rate string such as ``"100x"``, or a
            dict from layer name to either (only those layers are pruned). May
            be None for N:M, which fixes its own sparsity.
        penalty: ``lambda`` of the default reweighted penalty (>= 0).
        method: A `KernelPenalty` instead of the default
            ``ReweightedGroupPenalty(penalty, eps, squared, bounded)``.
        eps: Reweighting's ``eps`` (> 0).
        squared: Use squared group norms.
        bounded: Exempt the groups the target keeps from the penalty (off by
            default; see `ReweightedGroupPenalty`).
        scope: With a single target, ``"global"`` ranks units across layers
            (one budget for the model) and ``"layer"`` gives every layer the
            same sparsity.
        skip_first: Leave the first prunable layer dense.
        skip_last: Leave the last prunable layer dense.
        layers: Restrict pruning to these layer names.

    Returns:
        A new Keras model, ready to compile and fit with the callbacks of
        `tf_reweight.callbacks`.

    Example:
    >>> pruned = tf_reweight.apply(model, structure="filter", target="16x",
    ...                            penalty=1e-4)
    >>> pruned.compile("adam", loss, metrics=["accuracy"])
    >>> pruned.fit(x, y, epochs=6, callbacks=[tf_reweight.callbacks.Reweight(),
    ...                                       tf_reweight.callbacks.HardPrune(4)])
    """
    check_model(model)
    if method is None:
        method = ReweightedGroupPenalty(
            penalty, eps=eps, squared=squared, bounded=bounded
        )
    elif not isinstance(method, KernelPenalty):
        raise ValueError(
            f"`method` must be a tf_reweight KernelPenalty. Received: method={method!r}"
        )
    if scope not in ("global", "layer"):
        raise ValueError(
            f"`scope` must be 'global' or 'layer'. Received: scope={scope!r}"
        )
    plan = _plan(model, structure, target, skip_first, skip_last, layers)
    if isinstance(target, Mapping):
        scope = "layer"
    pairs = []

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        if layer.name in plan:
            struct, sparsity, kernels = plan[layer.name]
            wrapped = PruningWrapper(
                new, struct, sparsity, scope=scope, method=method, kernels=kernels
            )
            pairs.append((layer, new))
            return wrapped
        pairs.append((layer, new))
        return new

    pruned = keras.models.clone_model(model, clone_function=clone)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return pruned


def strip(model: keras.Model) -> keras.Model:
    """Returns a plain Keras copy of a pruned model: zeros kept, no wrappers.

    Masks are applied to the kernels one last time, so the result holds
    exactly the pruned weights; penalties and constraints are gone. On a model
    without wrappers this returns a plain copy.

    Args:
        model: A model returned by `apply` (or loaded from its `.keras` file).

    Returns:
        A new Sequential or Functional model with the original layer types.
    """
    check_model(model)
    pairs = []

    def clone(layer):
        source = layer.layer if isinstance(layer, PruningWrapper) else layer
        new = source.__class__.from_config(source.get_config())
        pairs.append((layer, source, new))
        return new

    plain = keras.models.clone_model(model, clone_function=clone)
    for old, source, new in pairs:
        new.set_weights(source.get_weights())
        if isinstance(old, PruningWrapper):
            for pk in old.pruned_kernels:
                kernel = getattr(new, pk.layout.attr)
                kernel.assign(backend_support.masked_value(pk))  # backend hook
    return plain


@dataclass
class LayerSparsity:
    """Sparsity of one prunable kernel."""

    layer: str
    kernel: str
    shape: tuple
    structure: str
    weights: int
    nonzeros: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.weights

    @property
    def rate(self) -> float:
        return budget.rate(self.weights, self.nonzeros)


@dataclass
class SparsityReport:
    """Per-kernel sparsity of a model, with totals over the pruned kernels.

    ``rate`` is dense weights / nonzero weights over the kernels that are
    pruned (wrapped); ``model_rate`` counts every prunable kernel of the model
    (biases and BatchNorm excluded in both).
    """

    rows: list[LayerSparsity]

    def _totals(self, rows):
        weights = sum(r.weights for r in rows)
        nonzeros = sum(r.nonzeros for r in rows)
        return weights, nonzeros

    @property
    def pruned_rows(self) -> list[LayerSparsity]:
        return [r for r in self.rows if r.structure != "dense"]

    @property
    def sparsity(self) -> float:
        weights, nonzeros = self._totals(self.pruned_rows)
        return 1.0 - nonzeros / weights if weights else 0.0

    @property
    def rate(self) -> float:
        return budget.rate(*self._totals(self.pruned_rows))

    @property
    def model_rate(self) -> float:
        return budget.rate(*self._totals(self.rows))

    def to_dict(self) -> dict:
        weights, nonzeros = self._totals(self.pruned_rows)
        return {
            "layers": [
                {**asdict(r), "sparsity": r.sparsity, "rate": _finite(r.rate)}
                for r in self.rows
            ],
            "weights": weights,
            "nonzeros": nonzeros,
            "sparsity": self.sparsity,
            "rate": _finite(self.rate),
            "model_rate": _finite(self.model_rate),
        }

    def __str__(self) -> str:
        head = (
            f"{'layer':<24}{'kernel':<18}{'structure':<14}{'weights':>10}"
            f"{'nonzeros':>10}{'sparsity':>10}{'rate':>9}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.layer:<24}{r.kernel:<18}{r.structure:<14}{r.weights:>10}"
                f"{r.nonzeros:>10}{r.sparsity:>10.2%}{r.rate:>8.1f}x"
            )
        weights, nonzeros = self._totals(self.pruned_rows)
        lines.append("-" * len(head))
        lines.append(
            f"{'pruned kernels':<56}{weights:>10}{nonzeros:>10}"
            f"{self.sparsity:>10.2%}{self.rate:>8.1f}x"
        )
        return "\n".join(lines)


def _finite(value: float):
    return None if math.isinf(value) else value


def report(model: keras.Model) -> SparsityReport:
    """Per-layer sparsity and compression of a pruned or plain model.

    Args:
        model: Any built model; wrapped layers report their structure, other
            prunable layers are listed as ``"dense"``.

    Returns:
        A `SparsityReport`; ``print`` it for a table.
    """
    rows = []
    for layer in _flat_layers(model):
        if isinstance(layer, PruningWrapper):
            kernels = {pk.layout.attr: pk for pk in layer.pruned_kernels}
            inner = layer.layer
        else:
            kernels, inner = {}, layer
        for layout in kernel_layouts(inner):
            if layout.attr in kernels:  # backend hook: pruned kernels read masked
                value = backend_support.masked_value(kernels[layout.attr])
            else:
                value = keras.ops.convert_to_numpy(getattr(inner, layout.attr))
            rows.append(
                LayerSparsity(
                    layer=layer.name,
                    kernel=layout.attr,
                    shape=layout.shape,
                    structure=repr(layer.structure)
                    if layout.attr in kernels
                    else "dense",
                    weights=int(value.size),
                    nonzeros=int(np.count_nonzero(value)),
                )
            )
    return SparsityReport(rows)


def _flat_layers(model):
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and not isinstance(layer, PruningWrapper):
            yield from _flat_layers(layer)
        else:
            yield layer
