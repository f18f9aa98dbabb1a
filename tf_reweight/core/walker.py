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

Who feeds whom in a Functional graph comes from the model's public config
(`graph`), for shared layers and nested models too. Keras has no public API
for the tracked sublayers of a plain layer; that one private access is wrapped
here, once, and pinned by a test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

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


_TENSOR = "__keras_tensor__"
_SLOT = "__tf_reweight_tensor_slot__"


@dataclasses.dataclass(eq=False)
class Tensor:
    """A symbolic tensor of a model's graph: one output of one call.

    Compared by identity; a `Graph` holds one `Tensor` per graph tensor.

    Attributes:
        shape: Its shape, batch dimension included (None: unknown, for an
            output of a multi-output call that nothing reads).
    """

    shape: tuple | None


@dataclasses.dataclass(eq=False)
class Call:
    """One call of a layer or `keras.ops` operation in a model's graph.

    Attributes:
        op: The layer or operation called (an `InputLayer` for an input).
        inputs: Its input tensors, in the order of its arguments.
        outputs: Its output tensors.
        args: Its positional arguments, a `Tensor` where a tensor went.
        kwargs: Its keyword arguments, likewise.
    """

    op: keras.Operation
    inputs: list[Tensor]
    outputs: list[Tensor]
    args: list
    kwargs: dict

    @property
    def constants(self) -> list:
        """Its non-tensor arguments, None left out."""
        leaves = keras.tree.flatten((self.args, self.kwargs))
        return [a for a in leaves if a is not None and not isinstance(a, Tensor)]

    def __call__(self, values: list) -> Any:
        """Runs the call on ``values`` for `inputs` (same order)."""
        by_id = {id(t): v for t, v in zip(self.inputs, values, strict=True)}
        args, kwargs = _fill((self.args, self.kwargs), lambda t: by_id[id(t)])
        return self.op(*args, **kwargs)


@dataclasses.dataclass(eq=False)
class Graph:
    """The calls of a Sequential or Functional model (see `graph`).

    Attributes:
        calls: Every call, each after the calls that feed it (inputs first).
        outputs: The model's outputs, in the order of ``model.outputs``.
    """

    calls: list[Call]
    outputs: list[Tensor]

    def __post_init__(self):
        self._producers = {id(t): c for c in self.calls for t in c.outputs}

    def producer(self, tensor: Tensor) -> Call:
        """The call that produced ``tensor``."""
        return self._producers[id(tensor)]


def _fill(value, replace):
    """``value`` with every `Tensor` or tensor slot in it replaced."""
    if isinstance(value, Tensor):
        return replace(value)
    if isinstance(value, dict):
        if set(value) == {_SLOT}:
            return replace(value[_SLOT])
        return {key: _fill(item, replace) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(item, replace) for item in value)
    return value


def _arguments(node_config: dict) -> tuple[list, dict, list[dict]]:
    """Positional and keyword arguments of a serialized call.

    Each serialized tensor becomes a slot numbering the returned tensor
    configs, so the arguments deserialize with the public API.
    """
    found = []

    def mark(value):
        if isinstance(value, dict) and value.get("class_name") == _TENSOR:
            found.append(value["config"])
            return {_SLOT: len(found) - 1}
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [mark(item) for item in value]
        return value

    args = keras.saving.deserialize_keras_object(mark(node_config["args"]))
    kwargs = keras.saving.deserialize_keras_object(mark(node_config["kwargs"]))
    return list(args), dict(kwargs), found


def _references(structure) -> list[list]:
    """The ``[name, call, index]`` references in a config's output structure."""
    if isinstance(structure, dict):
        return [r for key in sorted(structure) for r in _references(structure[key])]
    if len(structure) == 3 and isinstance(structure[0], str):
        return [structure]
    return [r for item in structure for r in _references(item)]


def graph(model: keras.Model) -> Graph:
    """The calls of a built Sequential or Functional model and who feeds whom.

    Read from the model's public config, which lists every call of every
    layer and operation with its arguments: shared layers give one `Call`
    per call, a nested model is one `Call` (`graph` it to open it). Nothing
    is called and the model is not changed.

    Args:
        model: A built Sequential or Functional model.

    Returns:
        The model's `Graph`.

    Example:

    ```python
    g = graph(model)
    feeding = [g.producer(t).op for t in g.calls[-1].inputs]
    ```
    """
    if not is_graph_model(model):
        raise ValueError(
            "Expected a built Sequential or Functional model. "
            f"Received: model={model!r}"
        )
    config = model.get_config()
    if "output_layers" in config:
        operations = model.operations
    else:
        # A Sequential config lists no calls; a Functional model over the
        # same tensors calls nothing and has the Functional config.
        view = keras.Model(model.inputs, model.outputs)
        config, operations = view.get_config(), view.operations
    ops = {op.name: op for op in operations}
    calls, tensors = {}, {}

    def tensor(name, call, index, shape=None):
        found = tensors.setdefault((name, call, index), Tensor(None))
        if found.shape is None and shape is not None:
            found.shape = tuple(shape)
        return found

    for layer_config in config["layers"]:
        name = layer_config["name"]
        if isinstance(ops[name], keras.layers.InputLayer):
            calls[name, 0] = Call(ops[name], [], [], [], {})
        for index, node_config in enumerate(layer_config["inbound_nodes"]):
            args, kwargs, found = _arguments(node_config)
            inputs = [tensor(*t["keras_history"], t["shape"]) for t in found]
            args, kwargs = _fill((args, kwargs), inputs.__getitem__)
            calls[name, index] = Call(ops[name], inputs, [], args, kwargs)
    outputs = []
    for (name, call, index), kept in zip(
        _references(config["output_layers"]), model.outputs, strict=True
    ):
        # The config numbers a nested Functional model's calls from 1 here
        # (Keras counts the graph it was built with) but from 0 in arguments.
        op = ops[name]
        if is_graph_model(op) and not isinstance(op, keras.Sequential):
            call -= 1
        outputs.append(tensor(name, call, index, kept.shape))
    for (name, call, index), found in tensors.items():
        produced = calls[name, call].outputs
        produced.extend(Tensor(None) for _ in range(index + 1 - len(produced)))
        produced[index] = found
    return Graph(_in_order(Graph(list(calls.values()), outputs)), outputs)


def _in_order(unordered: Graph) -> list[Call]:
    """The calls that lead to the outputs, each after the calls feeding it."""
    order, done = [], set()
    stack = [(unordered.producer(t), False) for t in unordered.outputs]
    while stack:
        call, expanded = stack.pop()
        if id(call) in done:
            continue
        if not expanded:
            stack.append((call, True))
            stack.extend((unordered.producer(t), False) for t in call.inputs)
            continue
        done.add(id(call))
        order.append(call)
    return order


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


def calls(model: keras.Model) -> Iterator[tuple[Graph, Call]]:
    """Every call of every graph in ``model``, with the graph that holds it.

    Nested Functional and Sequential models are opened (each graphed once);
    a subclassed model is read through the graph models it holds. The call
    of a nested model is listed too, in the graph that calls it.
    """
    opened = set()
    stack = graph_models(model)
    while stack:
        inner = stack.pop()
        if id(inner) in opened:
            continue
        opened.add(id(inner))
        model_graph = graph(inner)
        for call in model_graph.calls:
            if is_graph_model(call.op):
                stack.append(call.op)
            yield model_graph, call


def feeders(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, keras.Operation]]:
    """Every graph layer with the operation that produces its first input.

    The layers are those of `graph_layers` (nested models opened; a
    subclassed model is read through the graph models it holds), each
    once, at its first call; the operation is a layer, a `keras.ops`
    operation, a nested model or an `InputLayer`.
    """
    seen = set()
    for model_graph, call in calls(model):
        if id(call.op) in seen or not call.inputs:
            continue
        seen.add(id(call.op))
        if isinstance(call.op, keras.layers.Layer) and not is_graph_model(call.op):
            yield call.op, model_graph.producer(call.inputs[0]).op


def is_graph_model(layer) -> bool:
    """Whether ``layer`` is a Functional or Sequential model (it has a graph)."""
    return isinstance(layer, keras.Model) and bool(getattr(layer, "inputs", None))


def graph_models(layer: keras.layers.Layer) -> list[keras.Model]:
    """The outermost Functional or Sequential models in ``layer``.

    ``layer`` itself if it is one; otherwise those among its tracked
    sublayers, so that a subclassed model holding a Functional one (such as
    `tf_reweight.AdversarialModel`) is walked through it.
    """
    if is_graph_model(layer):
        return [layer]
    return [inner for sub in sublayers(layer) for inner in graph_models(sub)]


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


def kernel_owner(layer: keras.layers.Layer, key: str) -> keras.layers.Layer:
    """The layer that holds the kernel ``key`` addresses: ``layer`` or a sublayer."""
    return _resolve(layer, key)[0]


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
    model_graph = graph(model)
    stack = [model_graph.producer(t) for t in model_graph.outputs]
    while stack:
        call = stack.pop()
        if id(call.op) in seen:
            continue
        seen.add(id(call.op))
        if is_graph_model(call.op):
            found.extend(output_layers(call.op))
        elif isinstance(call.op, keras.layers.Layer) and find_kernels(call.op):
            found.append(call.op)
        elif not isinstance(call.op, keras.layers.InputLayer):
            stack.extend(model_graph.producer(t) for t in call.inputs)
    return found
