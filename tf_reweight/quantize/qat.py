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
  ``w``. `finalize` (or `tf_reweight.strip`) then writes the quantized
  values into the kernels of plain layers.

Either way the mask keeps pruned weights at exactly zero (the quantization
grid contains zero), the state lives in layer configs and weights, so a
`.keras` round trip restores it, and `finalize` (`tf_reweight.strip` with a
check that the model is quantized) gives a plain Keras model whose kernels lie
on the grid, ready for `tflite_export.export`. `quantized_prune` is
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

from tf_reweight.core.checks import check_int
from tf_reweight.core.layouts import KernelLayout, kernel_layouts
from tf_reweight.pruning import api
from tf_reweight.quantize.layers import (
    METHODS,
    QuantizeWrapper,
    check_arguments,
    inner_layer,
    kernel_axis,
    quantized_layers,
)
from tf_reweight.quantize.quantization import QuantizeConstraint, compression_report
from tf_reweight.training import recipes

__all__ = [
    "METHODS",
    "QuantizeWrapper",
    "QuantizedPruneResult",
    "finalize",
    "quantize_model",
    "quantized_layers",
    "quantized_prune",
]


def _constraint_key(layout: KernelLayout) -> str:
    """The layer-config key of the constraint of a kernel."""
    if layout.attr == "pointwise_kernel":
        return "pointwise_constraint"
    if layout.depthwise:
        return "depthwise_constraint"
    return "kernel_constraint"


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
    check_arguments(bits, method, axis)
    api.check_model(model)
    _check_not_quantized(model)
    targets = [layer for layer in model.layers if kernel_layouts(inner_layer(layer))]
    if not targets:
        raise ValueError(
            "The model has no Dense or convolution layer to quantize. Received: "
            f"model={model.name!r}"
        )
    for layer in targets:
        for layout in kernel_layouts(inner_layer(layer)):
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
                inner_layer(layer).get_config().get(_constraint_key(lo)) is not None
                for lo in kernel_layouts(inner_layer(layer))
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
        for layout in kernel_layouts(inner_layer(layer)):
            inner_config[_constraint_key(layout)] = keras.saving.serialize_keras_object(
                QuantizeConstraint(bits, kernel_axis(layout, axis))
            )
        return keras.saving.deserialize_keras_object(config)

    quantized = _rebuild(model, transform)
    if method == "projection":
        for layer in quantized_layers(quantized):
            inner = inner_layer(layer)
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


def finalize(model: keras.Model) -> keras.Model:
    """A plain Keras copy of a quantized model, its kernels on the grid.

    This is `tf_reweight.strip`, with a check that the model is quantized.
    For ``"ste"`` models each kernel becomes ``quantize(w * mask, bits)``, the
    value the forward pass used, so the copy computes what the trained model
    computed. For ``"projection"`` models the kernels are already on the grid
    and are projected once more. Pruning wrappers are removed (zeros kept);
    the projection's `QuantizeConstraint` stays in the layer configs, so
    further training stays on the grid.

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
    if not quantized_layers(model):
        raise ValueError(
            "The model has no quantized layers. Expected a model returned by "
            f"`quantize_model`. Received: model={model.name!r}"
        )
    return api.strip(model)


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
    check_arguments(bits, method, axis)
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
