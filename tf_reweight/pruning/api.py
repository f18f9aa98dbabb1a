"""The user-facing entry points: `apply` and `strip`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import keras

from tf_reweight.core import budget, presets, structures, walker
from tf_reweight.core.checks import check_bool
from tf_reweight.core.layouts import SUPPORTED_LAYERS, unsupported_reason
from tf_reweight.methods.regularizers import KernelPenalty, ReweightedGroupPenalty
from tf_reweight.pruning.operations import wrappers
from tf_reweight.pruning.wrapper import PruningWrapper


def check_model(model) -> None:
    """Raises `ValueError` unless ``model`` is a built Sequential or Functional.

    A subclassed model has no graph of layers to rewrite. Call it on a
    `keras.Input` inside a Functional model instead; `apply` then prunes the
    kernels of its sublayers inside it.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    if not walker.is_graph_model(model):
        raise ValueError(
            "The model must be a built Sequential or Functional model. A "
            "subclassed model has no layer graph to rewrite: call it inside a "
            "Functional model, `inputs = keras.Input(shape); "
            "tf_reweight.apply(keras.Model(inputs, model(inputs)), ...)`, and "
            "the kernels of its sublayers are pruned. An unbuilt Sequential "
            "model needs an Input or a call on data first. Received: "
            f"model={model.name!r} ({type(model).__name__}, no inputs)"
        )


def _check_names(kind: str, names, by_name) -> set[str]:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`{kind}` must name layers with a list or dict of strings. "
            f"Received: {kind}={names!r}"
        )
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise ValueError(
            f"`{kind}` names layers that are not prunable layers of the model. "
            f"Expected names among {sorted(by_name)}. Received: {unknown}"
        )
    return set(names)


def _warn_dense(kernels: list[str], why: str) -> None:
    if kernels:
        warnings.warn(
            f"{why}; these kernels are left dense: {', '.join(kernels)}.",
            stacklevel=4,
        )


def _plan(model, structure, target, skip_first, skip_last, layers, strict):
    """Validates everything and decides per layer: (structure, sparsity, kernels)."""
    if wrappers(model):
        raise ValueError(
            "The model already has pruned layers. Expected a plain model; call "
            f"`tf_reweight.strip` first. Received: model={model.name!r}"
        )
    candidates = [
        layer for layer in walker.graph_layers(model) if walker.find_kernels(layer)
    ]
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
    named: set[str] = set()
    if isinstance(structure, Mapping):
        named |= _check_names("structure", structure, by_name)
    if isinstance(target, Mapping):
        named |= _check_names("target", target, by_name)
        selected = [layer for layer in selected if layer.name in target]
    if layers is not None:
        named |= _check_names("layers", layers, by_name)
        selected = [layer for layer in selected if layer.name in layers]
    outputs = {id(layer) for layer in walker.output_layers(model)}
    plan, not_applicable, unfit, protected, reason = {}, [], [], [], ""

    for layer in selected:
        struct = structures.get(
            presets.resolve(
                structure.get(layer.name, "unstructured")
                if isinstance(structure, Mapping)
                else structure,
                layer,
            )
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
        if struct.removes_outputs and id(layer) in outputs:
            if layer.name not in named:
                protected.append(layer.name)
                continue
        kernels = []
        for layout in walker.find_kernels(layer):
            name = f"{layer.name}/{walker.kernel_name(layer, layout.attr)}"
            if not struct.applies_to(layout):
                not_applicable.append(name)
                continue
            try:
                struct.check(layout)
            except ValueError as error:
                if strict:
                    raise
                unfit.append(f"{name} {layout.shape}")
                reason = reason or str(error)
                continue
            struct.check_sparsity(layout, sparsity)
            kernels.append(layout.attr)
        if kernels:
            plan[layer.name] = (struct, sparsity, kernels)
    if not plan:
        raise ValueError(
            "No kernel of the model can be pruned with these settings. Expected "
            "at least one prunable kernel the structure applies to and fits. "
            f"Received: structure={structure!r}, layers={layers!r}"
            + (f". It fits none of {unfit}: {reason}" if unfit else "")
            + (
                f". Filter pruning leaves {protected}, which produce the "
                "model's outputs, dense unless they are named in `layers`"
                if protected
                else ""
            )
        )
    _warn_dense(
        [
            f"{layer.name} ({reason})"
            for layer in walker.iter_layers(model)
            if (reason := unsupported_reason(layer))
        ],
        "No canonical view exists for some kernels",
    )
    _warn_dense(not_applicable, f"Structure '{structure!r}' does not apply there")
    _warn_dense(unfit, "The structure does not fit them (strict=True raises)")
    if protected:
        warnings.warn(
            f"Layers {protected} produce the model's outputs; filter pruning "
            "would remove output units (classes), so they are left dense. Name "
            "them in `layers`, `target` or `structure` to prune them anyway.",
            stacklevel=3,
        )
    return plan


class _Default:
    """An argument's default value, told apart from the same value given."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _penalty(method, options: dict) -> KernelPenalty | None:
    """The penalty `apply` installs, after checking ``method`` and ``options``."""
    given = {k: v for k, v in options.items() if not isinstance(v, _Default)}
    if isinstance(method, str) and method == "reweighted":
        values = {k: getattr(v, "value", v) for k, v in options.items()}
        return ReweightedGroupPenalty(**values)
    if method is not None and not isinstance(method, KernelPenalty):
        raise ValueError(
            "`method` must be a tf_reweight KernelPenalty, None (no penalty) or "
            f"'reweighted' (the default). Received: method={method!r}"
        )
    if given:
        received = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValueError(
            f"{list(given)} configure the default reweighted penalty only. "
            f"Expected none of them with method={method!r}. Received: {received}"
        )
    return method


def apply(
    model: keras.Model,
    structure="unstructured",
    target=None,
    penalty: float | str = _Default("auto"),
    *,
    method: KernelPenalty | str | None = "reweighted",
    eps: float | str = _Default("auto"),
    squared: bool = _Default(False),
    bounded: bool = _Default(False),
    spare_scale_free: bool = _Default(True),
    scope: str = "global",
    skip_first: bool = False,
    skip_last: bool = False,
    layers: list[str] | None = None,
    strict: bool = False,
    max_prune: float | Mapping[str, float] | None = None,
) -> keras.Model:
    """Returns a copy of ``model`` whose prunable layers are set up for pruning.

    Each selected layer with prunable kernels is wrapped in a `PruningWrapper`
    that owns a mask per kernel and the penalty's state; the weights are
    copied over. Layers of nested Functional or Sequential models are wrapped
    where they are; a layer that holds prunable sublayers (attention, a
    custom block) is wrapped whole and its sublayers' kernels are pruned.
    The original model is never modified, and every argument is validated
    before anything is built.

    A kernel the structure has no meaning for (see the README's table), or
    does not fit (N:M on a 3-channel stem, a block larger than the kernel),
    is left dense with one warning that names the kernels. Filter pruning
    leaves the layers that produce the model's outputs dense (it would remove
    classes) unless they are named in ``layers``, ``target`` or ``structure``.

    Args:
        model: A built Sequential or Functional Keras model.
        structure: A structure name (``"unstructured"``, ``"filter"``,
            ``"channel"``, ``"column"``, ``"kernel"``, ``"block:4x4"``,
            ``"2:4"``, ``"pattern"``), a `Structure`, a preset that picks
            the structure per layer by how a format stores it (``"litert"``:
            Dense kernels in LiteRT's 1x16 sparse blocks, and
            convolutions unstructured; see `tf_reweight.core.presets`), or a
            dict from layer name to any of these (others default to
            unstructured).
        target: A sparsity in (0, 1), a rate string such as ``"100x"``, or a
            dict from layer name to either (only those layers are pruned). May
            be None for N:M, which fixes its own sparsity.
        penalty: ``lambda`` of the default reweighted penalty (>= 0), or
            ``"auto"`` (the default): set from the first training batch's
            loss by `tf_reweight.callbacks.Reweight`, so training without
            that callback adds no penalty.
        method: ``"reweighted"`` for the default
            ``ReweightedGroupPenalty(penalty, eps, squared, bounded,
            spare_scale_free)``, another
            `KernelPenalty`, or None for no penalty at all (masks only, as
            magnitude pruning needs: nothing is added to the loss).
            ``penalty``, ``eps``, ``squared``, ``bounded`` and
            ``spare_scale_free`` configure the default penalty only: giving
            one with another ``method`` raises.
        eps: Reweighting's ``eps`` (> 0), or ``"auto"`` (the default: set
            per kernel at the first refresh).
        squared: Use squared group norms.
        bounded: Exempt the groups the target keeps from the penalty (off by
            default; see `ReweightedGroupPenalty`).
        spare_scale_free: Leave unpenalized the filter-pruned kernels whose
            filters only BatchNorm reads (the default; see
            `ReweightedGroupPenalty`).
        scope: With a single target, ``"global"`` ranks units across layers
            (one budget for the model) and ``"layer"`` gives every layer the
            same sparsity.
        skip_first: Leave the first prunable layer dense.
        skip_last: Leave the last prunable layer dense.
        layers: Restrict pruning to these layer names.
        strict: Raise instead of leaving kernels the structure does not fit
            dense.
        max_prune: The largest share of its units a kernel may lose under a
            global budget: a float in (0, 1], or a dict from layer name to
            one (per-layer overrides; other layers take the default). None
            uses `tf_reweight.core.budget.DEFAULT_MAX_PRUNE` for structured
            kernels (raised to the target when the target is higher) and no
            floor for single weights.

    Returns:
        A new Keras model, ready to compile and fit with the callbacks of
        `tf_reweight.callbacks`.

    Example:
    >>> pruned = tf_reweight.apply(model, structure="filter", target="16x")
    >>> pruned.compile("adam", loss, metrics=["accuracy"])
    >>> pruned.fit(x, y, epochs=6, callbacks=[tf_reweight.callbacks.Reweight(),
    ...                                       tf_reweight.callbacks.HardPrune(4)])
    """
    check_model(model)
    for name, value in (
        ("skip_first", skip_first),
        ("skip_last", skip_last),
        ("strict", strict),
    ):
        check_bool(name, value)
    method = _penalty(
        method,
        {
            "penalty": penalty,
            "eps": eps,
            "squared": squared,
            "bounded": bounded,
            "spare_scale_free": spare_scale_free,
        },
    )
    if scope not in ("global", "layer"):
        raise ValueError(
            f"`scope` must be 'global' or 'layer'. Received: scope={scope!r}"
        )
    plan = _plan(model, structure, target, skip_first, skip_last, layers, strict)
    floors = _max_prune(max_prune, plan)
    if isinstance(target, Mapping):
        scope = "layer"

    def wrap(layer, new):
        if layer.name not in plan:
            return new
        struct, sparsity, kernels = plan[layer.name]
        return PruningWrapper(
            new,
            struct,
            sparsity,
            scope=scope,
            method=method,
            kernels=kernels,
            max_prune=floors.get(layer.name),
        )

    return _clone(model, wrap, lambda layer: layer)


def _max_prune(max_prune, plan) -> dict:
    """Validates ``max_prune``; returns the floor of each planned layer."""
    if max_prune is None:
        return {}
    if isinstance(max_prune, Mapping):
        _check_names("max_prune", max_prune, plan)
        floors = dict(max_prune)
    else:
        floors = dict.fromkeys(plan, max_prune)
    return {
        name: budget.check_max_prune(value, max_prune) for name, value in floors.items()
    }


def _clone(model, wrap, source_of):
    """Clones ``model`` layer by layer and copies the weights over.

    ``source_of(layer)`` is the layer whose config and weights are cloned
    (the wrapped layer, for a wrapper) and ``wrap(layer, new)`` what takes
    its place. Operation nodes are cloned without weights; nested models are
    cloned recursively, shared layers once.
    """
    pairs = []

    def clone(layer):
        source = source_of(layer)
        try:
            new = source.__class__.from_config(source.get_config())
        except Exception as error:
            raise ValueError(
                f"Layer '{source.name}' ({type(source).__name__}) cannot be "
                "rebuilt from its config, which pruning needs to copy the "
                "model. Expected a layer whose `get_config()` returns its "
                "constructor arguments (and, to save it, one registered with "
                "`keras.saving.register_keras_serializable`). Received: "
                f"{type(error).__name__}: {error}"
            ) from error
        if isinstance(source, keras.layers.Layer):
            if source.built and source.get_build_config() and not new.built:
                new.build_from_config(source.get_build_config())
            if len(new.weights) != len(source.weights):
                raise ValueError(
                    f"Layer '{source.name}' ({type(source).__name__}) does not "
                    "create its weights when built from its config (its "
                    "sublayers are built only when it is called). Expected a "
                    "`build()` that builds its sublayers, as Keras' own layers "
                    f"do. Received: {len(new.weights)} weights after build, "
                    f"{len(source.weights)} in the model"
                )
            pairs.append((source, new))
        return wrap(layer, new)

    cloned = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for source, new in pairs:
        new.set_weights(source.get_weights())
    return cloned


def strip(model: keras.Model) -> keras.Model:
    """Returns a plain Keras copy of a pruned model: zeros kept, no wrappers.

    Every layer that strips itself (a `PruningWrapper`, a
    `tf_reweight.QuantizeWrapper`: any layer with the methods
    ``stripped_layer()`` and ``stripped_kernels()``) is replaced by the plain
    layer it names, and that layer's kernels get the final values the wrapper
    gives: masked one last time, so the result holds exactly the pruned
    weights, and on the quantization grid for a quantized model. Penalties and
    masks are gone. On a model without wrappers this returns a plain copy.

    Args:
        model: A model returned by `apply` or `tf_reweight.quantize_model`
            (or loaded from its `.keras` file).

    Returns:
        A new Sequential or Functional model with the original layer types.

    Example:
    >>> plain = tf_reweight.strip(pruned)
    >>> plain.save("pruned.keras")
    """
    check_model(model)
    stripped = []

    def strips_itself(layer) -> bool:
        return hasattr(layer, "stripped_layer") and hasattr(layer, "stripped_kernels")

    def wrap(layer, new):
        if strips_itself(layer):
            stripped.append((layer, new))
        return new

    plain = _clone(
        model,
        wrap,
        lambda layer: layer.stripped_layer() if strips_itself(layer) else layer,
    )
    for wrapper, new in stripped:
        for key, value in wrapper.stripped_kernels().items():
            walker.kernel_variable(new, key).assign(value)
    return plain
