"""Structure presets: one structure per layer, chosen by how a format stores it.

A preset is a structure name that `tf_reweight.apply` resolves layer by layer
into a real structure (`tf_reweight.core.structures`). Its choice depends on
what the layer becomes in the deployment format, because that decides how
many bytes each kept weight costs in the file.

``"litert"`` follows LiteRT's sparse tensor encoding (the converter's
``EXPERIMENTAL_SPARSITY``):

- Dense and EinsumDense kernels become ``FULLY_CONNECTED`` weights of shape
  ``(out, in)``. The converter stores them in 1x16 blocks (int8) or 1x4 blocks
  (float) along ``in`` when the blocks are mostly empty, and in a compressed
  sparse row format with a 16-bit column index per value otherwise. Pruned in
  16x1 tiles (16 consecutive inputs of one output), every stored block is
  full: an int8 weight costs 1 + 2/16 bytes, where a single pruned weight costs
  3 (1 value and a 2-byte index) or a whole padded block. The same tiles fill
  the float format's 1x4 blocks exactly. The tiles are a storage unit, not a
  width, so they are ranked like single weights (``block:16x1:magnitude``: by
  RMS across layers, with no per-kernel floor). A kernel with fewer than 16
  inputs is pruned weight by weight.
- Convolution kernels are stored row by row along the input channels with one
  index per value whatever their structure, so single weights (the most
  accurate structure) cost no more there: ``unstructured``.

A layer that holds sublayers (`MultiHeadAttention`, a custom block) takes the
fully connected structure only when every kernel it holds is fully connected.

Example:
>>> resolve("litert", keras.layers.Dense(10))  # a built Dense layer
'block:16x1:magnitude'
>>> resolve("filter", keras.layers.Dense(10))  # not a preset: unchanged
'filter'
"""

from __future__ import annotations

import dataclasses

import keras

from tf_reweight.core import structures, walker


@dataclasses.dataclass(frozen=True)
class Preset:
    """A structure per kind of layer.

    Attributes:
        fully_connected: The structure of Dense and EinsumDense kernels.
        other: The structure of every other kernel (convolutions).
        min_rows: Fully connected kernels with fewer inputs than this take
            ``other`` (a block must fit the kernel).
    """

    fully_connected: str
    other: str
    min_rows: int = 1


PRESETS = {
    "litert": Preset(
        fully_connected="block:16x1:magnitude",
        other="unstructured",
        min_rows=16,
    ),
}
FULLY_CONNECTED = (keras.layers.Dense, keras.layers.EinsumDense)


def is_preset(identifier) -> bool:
    """Whether ``identifier`` names a preset."""
    return isinstance(identifier, str) and identifier.strip().lower() in PRESETS


def _fully_connected(layer: keras.layers.Layer, layouts) -> bool:
    return bool(layouts) and all(
        isinstance(walker.kernel_owner(layer, layout.attr), FULLY_CONNECTED)
        for layout in layouts
    )


def resolve(identifier, layer: keras.layers.Layer):
    """The structure a preset gives one layer; any other identifier unchanged.

    Args:
        identifier: A preset name or anything `structures.get` takes.
        layer: A built layer with prunable kernels.

    Returns:
        A structure identifier for ``layer``.
    """
    if not is_preset(identifier):
        return identifier
    preset = PRESETS[identifier.strip().lower()]
    layouts = walker.find_kernels(layer)
    if _fully_connected(layer, layouts) and all(
        layout.canonical[2] >= preset.min_rows for layout in layouts
    ):
        return preset.fully_connected
    return preset.other


def check(identifier) -> None:
    """Raises `ValueError` unless ``identifier`` is a preset or a structure.

    Args:
        identifier: A preset name or anything `structures.get` takes.

    Raises:
        ValueError: Naming the presets and the structures.
    """
    if is_preset(identifier):
        return
    try:
        structures.get(identifier)
    except ValueError as error:
        raise ValueError(
            f"{error} Or a preset that picks a structure per layer: {sorted(PRESETS)}."
        ) from None


def fixed_sparsity(identifier) -> float | None:
    """The sparsity a structure imposes by itself (N:M), None for presets."""
    return None if is_preset(identifier) else structures.get(identifier).fixed_sparsity
