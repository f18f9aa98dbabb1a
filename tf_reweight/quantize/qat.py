"""Pruning and k-bit weight quantization in one training loop.

`quantize_model` turns a model from `tf_reweight.apply` (or a plain model) into
one whose Dense and convolution kernels train towards a `bits`-bit grid, in
one of two ways:

- ``"projection"`` (ADMM-style projected gradient): after every optimizer step
  the kernel is projected, ``w <- quantize(w * mask, bits)``. The layer's own
  ``kernel_constraint`` becomes a `QuantizeConstraint`, which the
  `PruningWrapper` chains after its mask: ``MaskConstraint(mask,
  then=QuantizeConstraint(bits))``. The weights are on the grid at all times,
  from the call of `quantize_model` on.
- ``"ste"`` (quantization-aware training with a straight-through estimator):
  a `QuantizeWrapper` runs the layer with ``fake_quantize(w * mask, bits)`` in
  place of each kernel, while the optimizer keeps updating the float weights
  ``w``. `finalize` then writes the quantized values into the kernels.

Either way the mask keeps pruned weights at exactly zero (the quantization
grid contains zero), the state lives in layer configs and weights, so a
`.keras` round trip restores it, and `finalize` gives a plain Keras model whose
kernels lie on the grid, ready for `tflite_export.export`. `quantized_prune` is
the whole recipe: reweighted pruning, quantization, fine-tuning and a storage
report.

Example:
>>> pruned = tf_reweight.recipes.reweighted_prune(dense, (x, y), target="50x").model
>>> model = quantize_model(pruned, bits=4, method="ste")
>>> tf_reweight.training.recipes.compile_classifier(model, 1e-4).fit(x, y, epochs=2)
>>> plain = finalize(model)
>>> quantization.compression_report(plain, bits=4)["compression"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np

from tf_reweight.core import backend_support
from tf_reweight.core.checks import check_int
from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.core.layouts import KernelLayout, kernel_layouts
from tf_reweight.pruning import api
from tf_reweight.pruning.wrapper import PruningWrapper
from tf_reweight.quantize.quantization import (
    QuantizeConstraint,
    compression_report,
    fake_quantize,
)
from tf_reweight.training import recipes

METHODS = ("projection", "ste")


def _constraint_key(layout: KernelLayout) -> str:
    """The layer-config key of the constraint of a kernel."""
    if layout.attr == "pointwise_kernel":
        return "pointwise_constraint"
    if layout.depthwise:
        return "depthwise_constraint"
    return "kernel_constraint"


def _kernel_axis(layout: KernelLayout, axis: int | None) -> int | None:
    """Depthwise kernels ``(kh, kw, in, mult)`` get one scale per input channel."""
    return 2 if layout.depthwise and axis is not None else axis


def _inner(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The Dense/Conv layer behind pruning and quantization wrappers."""
    while isinstance(layer, (QuantizeWrapper, PruningWrapper)):
        layer = layer.layer
    return layer


def _masks(layer: keras.layers.Layer) -> dict:
    """``{kernel attribute: mask variable}`` of a pruning wrapper, else empty."""
    if isinstance(layer, PruningWrapper):
        return {pk.layout.attr: pk.mask for pk in layer.pruned_kernels}
    return {}


def _constraints(constraint) -> list:
    """A constraint and the ones chained after it by `MaskConstraint`."""
    chain = []
    while constraint is not None:
        chain.append(constraint)
        constraint = constraint.then if isinstance(constraint, MaskConstraint) else None
    return chain


def _projected(layer: keras.layers.Layer) -> bool:
    inner = _inner(layer)
    return any(
        isinstance(c, QuantizeConstraint)
        for lo in kernel_layouts(inner)
        for c in _constraints(getattr(inner, lo.attr).constraint)
    )


def quantized_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The top-level layers of ``model`` whose kernels are being quantized.

    Args:
        model: Any Keras model.

    Returns:
        The `QuantizeWrapper` layers and the layers (pruning-wrapped or not)
        whose kernels carry a `QuantizeConstraint`.
    """
    return [
        layer
        for layer in getattr(model, "layers", [])
        if isinstance(layer, QuantizeWrapper)
        or (kernel_layouts(_inner(layer)) and _projected(layer))
    ]


@keras.saving.register_keras_serializable(package="tf_reweight")
class QuantizeWrapper(keras.layers.Wrapper):
    """Runs a layer with fake-quantized kernels (straight-through QAT).

    In the forward pass each Dense/convolution kernel ``w`` of the wrapped
    layer is replaced by ``fake_quantize(w * mask, bits)`` (``mask`` from a
    wrapped `PruningWrapper`, else none): the layer computes with the quantized
    weights, and the gradient reaches the float weights unchanged (through
    ``mask``), so the optimizer keeps training ``w``. The substitution uses a
    `keras.StatelessScope`, so any layer type works without re-implementing
    its ``call``; weight regularizers (the pruning penalty) still see the float
    weights. Call `finalize` at the end of training to store the quantized
    weights, and export the finalized model (exporting the wrapper itself
    would keep float weights and quantize them at run time).

    Users normally get wrappers from `quantize_model(..., method="ste")`.

    Args:
        layer: A `PruningWrapper` or a Dense/Conv1D/Conv2D/DepthwiseConv2D/
            SeparableConv2D layer.
        bits: Bits per weight, from 2 to 8.
        axis: Output-channel axis of the kernels (one scale per channel), or
            None for one scale per kernel. Depthwise kernels use one scale per
            input channel.
        **kwargs: Base `keras.layers.Layer` arguments.

    Example:
    >>> layer = QuantizeWrapper(keras.layers.Dense(10), bits=4)

    References:
        Bengio et al., "Estimating or Propagating Gradients Through Stochastic
        Neurons for Conditional Computation", arXiv:1308.3432, 2013.
    """

    def __init__(
        self, layer: keras.layers.Layer, bits: int, axis: int | None = -1, **kwargs
    ):
        _check_arguments(bits, "ste", axis)
        if not kernel_layouts(_inner(layer)):
            raise ValueError(
                "QuantizeWrapper needs a Dense or convolution layer, or a "
                "PruningWrapper of one. Received: "
                f"layer={layer.name!r} ({type(layer).__name__})"
            )
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.bits = bits
        self.axis = axis

    def build(self, input_shape=None):
        super().build(input_shape)
        self.built = True

    @property
    def layers(self) -> list[keras.layers.Layer]:
        """The wrapped layer, in a list.

        `tf_reweight.report`, `tf_reweight.pruning.wrappers` and hence the
        pruning callbacks look into layers that have ``layers`` (nested
        models), so they also find a `PruningWrapper` inside this wrapper.
        """
        return [self.layer]

    def quantized_kernels(self) -> list[tuple[keras.Variable, object]]:
        """``(kernel variable, fake-quantized value)`` for every kernel."""
        inner, masks = _inner(self.layer), _masks(self.layer)
        pairs = []
        for layout in kernel_layouts(inner):
            variable = getattr(inner, layout.attr)
            value = keras.ops.convert_to_tensor(variable)
            if layout.attr in masks:
                value = value * keras.ops.cast(masks[layout.attr], value.dtype)
            axis = _kernel_axis(layout, self.axis)
            pairs.append((variable, fake_quantize(value, self.bits, axis)))
        return pairs

    def call(self, inputs, *args, **kwargs):
        # backend hook: maps all the layer's variables (a nested scope does not
        # see the JAX trainer's).
        return backend_support.call_with_values(
            self, self.quantized_kernels(), inputs, *args, **kwargs
        )

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"bits": self.bits, "axis": self.axis})
        return config


def _check_arguments(bits, method: str, axis) -> None:
    QuantizeConstraint(bits, axis)  # raises for bits outside 2..8
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise ValueError(f"`axis` must be an int or None. Received: axis={axis!r}")


def _check_not_quantized(model: keras.Model) -> None:
    done = [layer.name for layer in quantized_layers(model)]
    if done:
        raise ValueError(
            "The model is already quantized. Expected a model from "
            f"`tf_reweight.apply` or a plain model. Received: quantized layers "
            f"{done}; call `finalize` first to start over"
        )


def quantize_model(
    model: keras.Model,
    bits: int,
    method: str = "projection",
    axis: int | None = -1,
) -> keras.Model:
    """Returns a copy of ``model`` whose kernels train on a `bits`-bit grid.

    Every top-level Dense, Conv1D, Conv2D, DepthwiseConv2D and SeparableConv2D
    layer is quantized, pruned (a `PruningWrapper` from `tf_reweight.apply`) or
    not (plain layers are handled directly, without a mask): kernels only, with
    one scale per output channel (`tf_reweight.quantize`); biases and
    normalization layers stay float. The original model is not modified, all
    weights and pruning state (masks, penalty state) are copied, and every
    argument is checked before anything is built.

    - ``"projection"``: each quantized layer gets ``QuantizeConstraint(bits,
      axis)`` as its kernel constraint, chained after the pruning mask, so that
      after every optimizer step ``w <- quantize(w * mask, bits)``. The kernels
      are projected once right away.
    - ``"ste"``: each quantized layer is wrapped in a `QuantizeWrapper`, which
      computes with ``fake_quantize(w * mask, bits)`` and trains the float
      ``w``.

    Compile the result (optimizer state is not copied) and fine-tune it, then
    call `finalize` to get a plain model with on-grid kernels.

    Args:
        model: A built Sequential or Functional model, from `tf_reweight.apply`
            or plain.
        bits: Bits per weight, from 2 to 8.
        method: ``"projection"`` or ``"ste"``.
        axis: Output-channel axis of the kernels (``-1`` for Dense and Conv),
            or None for one scale per kernel. Depthwise kernels always use one
            scale per input channel.

    Returns:
        A new Keras model.

    Raises:
        ValueError: If `bits` is not an integer from 2 to 8, `method` or `axis`
            is invalid, the model is not built, has no quantizable layer, is
            already quantized, or (for ``"projection"``) a layer already has
            another kernel constraint.

    Example:
    >>> model = quantize_model(tf_reweight.apply(dense, target="10x"), bits=4)
    >>> model.layers[1].layer.kernel.constraint  # MaskConstraint(then=Quantize...)

    References:
        Leng et al., "Extremely Low Bit Neural Network: Squeeze the Last Bit
        Out with ADMM", AAAI 2018; Ye et al., "A Unified Framework of DNN Weight
        Pruning and Weight Clustering/Quantization Using ADMM",
        arXiv:1811.01907, 2018.
    """
    _check_arguments(bits, method, axis)
    api.check_model(model)
    _check_not_quantized(model)
    targets = [layer for layer in model.layers if kernel_layouts(_inner(layer))]
    if not targets:
        raise ValueError(
            "The model has no Dense or convolution layer to quantize. Received: "
            f"model={model.name!r}"
        )
    for layer in targets:
        for layout in kernel_layouts(_inner(layer)):
            rank = len(layout.shape)
            if axis is not None and not -rank <= axis < rank:
                raise ValueError(
                    f"`axis` must be None or in [-{rank}, {rank}) for kernel "
                    f"'{layout.attr}' {layout.shape} of layer '{layer.name}'. "
                    f"Received: axis={axis}"
                )
    if method == "projection":
        taken = [
            layer.name
            for layer in targets
            if any(
                _inner(layer).get_config().get(_constraint_key(lo)) is not None
                for lo in kernel_layouts(_inner(layer))
            )
        ]
        if taken:
            raise ValueError(
                "Projection replaces the kernel constraint, but these layers "
                f"already have one: {taken}. Expected layers without kernel "
                "constraints, or use method='ste'."
            )
    names = {layer.name for layer in targets}

    def transform(layer):
        config = keras.saving.serialize_keras_object(layer)
        if layer.name not in names:
            return keras.saving.deserialize_keras_object(config)
        if method == "ste":
            return QuantizeWrapper(
                keras.saving.deserialize_keras_object(config), bits, axis
            )
        inner_config = config["config"]
        while "layer" in inner_config:  # down to the Dense/Conv config
            inner_config = inner_config["layer"]["config"]
        for layout in kernel_layouts(_inner(layer)):
            inner_config[_constraint_key(layout)] = keras.saving.serialize_keras_object(
                QuantizeConstraint(bits, _kernel_axis(layout, axis))
            )
        return keras.saving.deserialize_keras_object(config)

    quantized = _rebuild(model, transform)
    if method == "projection":
        for layer in quantized_layers(quantized):
            inner = _inner(layer)
            for layout in kernel_layouts(inner):
                variable = getattr(inner, layout.attr)
                variable.assign(variable.constraint(variable))
    return quantized


def _rebuild(model: keras.Model, transform) -> keras.Model:
    """Clones ``model`` with ``transform(layer)`` per layer, weights copied.

    ``transform`` returns a new layer whose weights (the wrapped layer's, for
    a `QuantizeWrapper` it adds or removes) match the old layer's.
    """
    pairs = []

    def clone(layer):
        new = transform(layer)
        pairs.append((layer, new))
        return new

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for old, new in pairs:  # a QuantizeWrapper has its layer's weights, no more
        new.set_weights(old.get_weights())
    return rebuilt


def _on_grid(layer: keras.layers.Layer) -> dict:
    """``{kernel attribute: on-grid kernel}`` of a quantized layer, as NumPy."""
    inner = _inner(layer)
    if isinstance(layer, QuantizeWrapper):
        return {
            lo.attr: keras.ops.convert_to_numpy(value)
            for lo, (_, value) in zip(
                kernel_layouts(inner), layer.quantized_kernels(), strict=True
            )
        }
    values = {}
    for layout in kernel_layouts(inner):
        variable = getattr(inner, layout.attr)
        values[layout.attr] = keras.ops.convert_to_numpy(
            variable.constraint(variable)
            if variable.constraint is not None
            else variable
        )
    return values


def finalize(model: keras.Model) -> keras.Model:
    """A plain Keras copy of a quantized model, its kernels on the grid.

    For ``"ste"`` models each kernel becomes ``quantize(w * mask, bits)``, the
    value the forward pass used, so the copy computes what the trained model
    computed. For ``"projection"`` models the kernels are already on the grid
    and are projected once more. Pruning wrappers are removed as by
    `tf_reweight.strip` (zeros kept); the projection's `QuantizeConstraint`
    stays in the layer configs, so further training stays on the grid.

    Args:
        model: A model returned by `quantize_model` (or loaded from its
            `.keras` file).

    Returns:
        A new plain Sequential or Functional model, ready for
        `tflite_export.export` and `quantization.compression_report`.

    Raises:
        ValueError: If the model has no quantized layers.

    Example:
    >>> plain = finalize(model)
    >>> tflite_export.export(plain, "model.tflite", quantization="int8", ...)
    """
    api.check_model(model)
    layers = quantized_layers(model)
    if not layers:
        raise ValueError(
            "The model has no quantized layers. Expected a model returned by "
            f"`quantize_model`. Received: model={model.name!r}"
        )
    values = {layer.name: _on_grid(layer) for layer in layers}

    def unwrap(layer):
        if isinstance(layer, QuantizeWrapper):
            layer = layer.layer
        return layer.__class__.from_config(layer.get_config())

    plain = api.strip(_rebuild(model, unwrap))
    for name, kernels in values.items():
        layer = plain.get_layer(name)
        for attr, value in kernels.items():
            getattr(layer, attr).assign(value)
    return plain


@dataclass
class QuantizedPruneResult:
    """What `quantized_prune` produced.

    Attributes:
        model: The final plain model, kernels pruned and on the grid.
        quantized: The model as fine-tuned (wrappers and constraints in place).
        prune: The `recipes.PruneResult` of the pruning phase.
        history: Keras history of the quantized fine-tuning.
        report: `quantization.compression_report` of ``model``.
        bits: Bits per weight.
        method: ``"projection"`` or ``"ste"``.
        seconds: Wall time of pruning plus fine-tuning.
        epochs: Epochs of pruning plus fine-tuning.
    """

    model: keras.Model
    quantized: keras.Model
    prune: recipes.PruneResult
    history: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    bits: int = 8
    method: str = "projection"
    seconds: float = 0.0
    epochs: int = 0

    def summary(self) -> str:
        """One line: bits, nonzeros and the storage compression."""
        r = self.report
        return (
            f"{self.bits}-bit {self.method}: {r['nonzeros']} of {r['total']} kernel "
            f"weights kept, {r['dense_bits']} dense fp32 bits / {r['sparse_bits']} "
            f"sparse bits ({r['nonzeros']} nonzeros + {r['fillers']} fillers, "
            f"{r['bits']} value + {r['index_bits']} index bits each) = "
            f"{r['compression']:.1f}x"
        )


def quantized_prune(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    *,
    bits: int = 4,
    method: str = "projection",
    finetune_epochs: int = 2,
    finetune_lr: float = 1e-4,
    axis: int | None = -1,
    index_bits: int = 4,
    batch_size: int = 128,
    validation_data=None,
    verbose: int = 1,
    **prune_kwargs,
) -> QuantizedPruneResult:
    """Prune (reweighted), quantize, fine-tune, then report storage compression.

    1. `recipes.reweighted_prune` (reweighted penalty, hard prune, masked
       retraining) with ``prune_kwargs``;
    2. `quantize_model` with ``bits`` and ``method`` (the masks stay);
    3. ``finetune_epochs`` epochs of quantized, masked fine-tuning with Adam
       at ``finetune_lr``;
    4. `finalize`, and `quantization.compression_report` of the result:
       dense fp32 bits / ((nonzeros + fillers) x (bits + index_bits)).

    Args:
        model: A trained dense Keras classifier with logits (left unchanged).
        train: ``(x, y)`` training arrays.
        bits: Bits per weight, from 2 to 8.
        method: ``"projection"`` or ``"ste"``.
        finetune_epochs: Epochs of quantized fine-tuning (>= 0).
        finetune_lr: Adam learning rate of the fine-tuning.
        axis: Output-channel axis of the kernels, or None.
        index_bits: Bits of each relative index in the storage report.
        batch_size: Batch size of every phase.
        validation_data: Optional ``(x, y)`` monitored during fine-tuning.
        verbose: Keras verbosity.
        **prune_kwargs: `recipes.reweighted_prune` arguments (``structure``,
            ``target``, ``penalty``, ``reweight_epochs``, ``retrain_epochs``,
            ``lr``, `tf_reweight.apply` arguments).

    Returns:
        A `QuantizedPruneResult`; ``print(result.summary())`` for the report.

    Raises:
        ValueError: If `bits`, `method`, `axis` or `finetune_epochs` is
            invalid, before any training.

    Example:
    >>> result = quantized_prune(dense, (x, y), bits=4, target="50x",
    ...                          reweight_epochs=4, retrain_epochs=4)
    >>> print(result.summary())

    References:
        Han et al., "Deep Compression: Compressing Deep Neural Networks with
        Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
    """
    _check_arguments(bits, method, axis)
    check_int("finetune_epochs", finetune_epochs)
    start = time.perf_counter()
    pruned = recipes.reweighted_prune(
        model, train, batch_size=batch_size, verbose=verbose, **prune_kwargs
    )
    quantized = quantize_model(pruned.model, bits, method, axis)
    recipes.compile_classifier(quantized, finetune_lr)
    history = {}
    if finetune_epochs:
        history = quantized.fit(
            *train,
            batch_size=batch_size,
            epochs=finetune_epochs,
            validation_data=validation_data,
            verbose=verbose,
        ).history
    final = finalize(quantized)
    return QuantizedPruneResult(
        model=final,
        quantized=quantized,
        prune=pruned,
        history=history,
        report=compression_report(final, bits, index_bits),
        bits=bits,
        method=method,
        seconds=time.perf_counter() - start,
        epochs=pruned.epochs + finetune_epochs,
    )
