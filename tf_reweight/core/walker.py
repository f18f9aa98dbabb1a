"""The one layer walker: every layer, sublayer and prunable kernel of a model.

Keras models nest in three ways, and every part of the library walks them the
same way through this module:

- a Functional or Sequential model used as a layer of another model;
- a layer that holds other layers (`MultiHeadAttention` holds four
  `EinsumDense` layers; a user's custom block holds Dense or Conv layers; a
  subclassed model called inside a Functional model holds its attributes);
- keras.ops operation nodes in a Functional graph (``x + 3.0`` in
  MobileNetV3), which are operations, not layers, and hold no weights.

A prunable kernel is addressed inside the layer that owns it by a *key*: the
kernel attribute (``"kernel"``) for the layer's own kernels, or the positions
of the sublayers on the way to it followed by the attribute
(``"2.kernel"``: the kernel of the third tracked sublayer). Keys are stable
across `from_config` clones, unlike auto-generated sublayer names; `kernel_name`
gives the readable form (``"value/kernel"``).

Keras has no public API for a layer's tracked sublayers or for the producer of
a symbolic tensor; the two private accesses are wrapped here, once, and pinned
by tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import keras

from tf_reweight.core.layouts import KernelLayout, kernel_layouts


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers tracked directly by ``layer``, in tracking order.

    For a Functional or Sequential model these are its layers; for any other
    layer, the layers assigned to its attributes (lists and dicts included).
    """
    # Private: `_flatten_layers` is what `Model.layers` itself uses, and the
    # only way to reach the sublayers of a plain `Layer`.
    return list(layer._flatten_layers(include_self=False, recursive=False))


def producer(tensor) -> tuple[keras.Operation, object]:
    """The operation and node that produced a symbolic tensor of a model."""
    # Private: Keras has no public accessor for a KerasTensor's history.
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside ``model``, depth first, each layer once.

    Nested models, sublayers of custom layers and the model an
    `AdversarialModel` wraps are all reached; ``model`` itself is not listed.
    """
    seen = {id(model)}
    stack = list(reversed(sublayers(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(reversed(sublayers(layer)))


def graph_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """The layers that are nodes of a model's graph, nested models opened.

    These are the layers `tf_reweight.apply` can replace by a wrapper: the
    layers of the model and of every Functional or Sequential model nested in
    it (not the nested models themselves), each once. Operation nodes (which
    are not layers) and input layers are skipped.
    """
    seen = set()
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        if is_graph_model(layer):
            yield from graph_layers(layer)
        elif isinstance(layer, keras.layers.Layer):
            yield layer


def is_graph_model(layer) -> bool:
    """Whether ``layer`` is a Functional or Sequential model (it has a graph)."""
    return isinstance(layer, keras.Model) and bool(getattr(layer, "inputs", None))


def find_kernels(layer: keras.layers.Layer) -> list[KernelLayout]:
    """The prunable kernels of a built layer and of all its sublayers.

    Args:
        layer: A built layer. For a Dense or convolution layer these are its
            own kernels; for a layer that holds others (attention, a custom
            block, a subclassed model) those of every prunable sublayer, at
            any depth.

    Returns:
        One `KernelLayout` per kernel, with ``attr`` set to the kernel's key
        (see the module docstring).
    """
    found = list(kernel_layouts(layer))
    if found:
        return found
    for index, child in enumerate(sublayers(layer)):
        for layout in find_kernels(child):
            found.append(dataclasses.replace(layout, attr=f"{index}.{layout.attr}"))
    return found


def _resolve(layer: keras.layers.Layer, key: str):
    *path, attr = key.split(".")
    owner = layer
    names = []
    for index in path:
        children = sublayers(owner)
        if not index.isdigit() or int(index) >= len(children):
            raise ValueError(
                f"Layer '{layer.name}' has no kernel '{key}'. Expected a key from "
                f"`find_kernels`. Received: key={key!r}"
            )
        if not isinstance(owner, keras.layers.Wrapper):
            names.append(children[int(index)].name)
        owner = children[int(index)]
    return owner, names, attr


def kernel_variable(layer: keras.layers.Layer, key: str) -> keras.Variable:
    """The kernel variable that ``key`` addresses inside ``layer``."""
    owner, _, attr = _resolve(layer, key)
    return getattr(owner, attr)


def kernel_name(layer: keras.layers.Layer, key: str) -> str:
    """A readable name for a kernel key, such as ``"value/kernel"``.

    The layer a `keras.layers.Wrapper` wraps adds no name: the kernel of a
    wrapped Dense layer is ``"kernel"``, as for the Dense layer itself.
    """
    _, names, attr = _resolve(layer, key)
    return "/".join([*names, attr])


def output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The graph layers whose kernels produce a model output's units.

    Walking back from each output of a Functional or Sequential model through
    layers and operations without kernels (activations, reshapes, merges), the
    first layers with prunable kernels on every path are the ones whose output
    units (for a classifier, its classes) are the model's outputs. Nested
    models are opened.
    """
    found, seen = [], set()
    stack = list(model.outputs)
    while stack:
        operation, node = producer(stack.pop())
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        if is_graph_model(operation):
            found.extend(output_layers(operation))
        elif isinstance(operation, keras.layers.Layer) and find_kernels(operation):
            found.append(operation)
        elif not isinstance(operation, keras.layers.InputLayer):
            stack.extend(node.input_tensors)
    return found
