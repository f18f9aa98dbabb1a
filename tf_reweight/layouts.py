"""Kernel layouts: the one place that knows how each layer stores its weights.

Every prunable kernel is viewed through a canonical 4-D layout
``(kh, kw, cin, cout)`` so that structures never see layer-specific shapes:

| layer                         | stored shape          | canonical view              |
|-------------------------------|-----------------------|-----------------------------|
| `Dense`                       | `(in, out)`           | `(1, 1, in, out)`           |
| `Conv1D`                      | `(k, in, out)`        | `(1, k, in, out)`           |
| `Conv2D`                      | `(kh, kw, in, out)`   | `(kh, kw, in, out)`         |
| `DepthwiseConv2D` and the     | `(kh, kw, in, mult)`  | `(kh, kw, 1, in * mult)`    |
| depthwise kernel of           |                       |                             |
| `SeparableConv2D`             |                       |                             |
| pointwise kernel of           | `(1, 1, in, out)`     | `(1, 1, in, out)`           |
| `SeparableConv2D`             |                       |                             |

A depthwise kernel has one filter per output channel ``c * mult + m``, each
reading one input channel, hence ``cin = 1`` in its canonical view.
All views are plain reshapes (no transposes), so going back is a reshape too.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

# (layer class, ((kernel attribute, is depthwise), ...)); subclasses first.
_KERNEL_ATTRS: tuple[tuple[type, tuple[tuple[str, bool], ...]], ...] = (
    (
        keras.layers.SeparableConv2D,
        (("depthwise_kernel", True), ("pointwise_kernel", False)),
    ),
    (keras.layers.DepthwiseConv2D, (("kernel", True),)),
    (keras.layers.Conv1D, (("kernel", False),)),
    (keras.layers.Conv2D, (("kernel", False),)),
    (keras.layers.Dense, (("kernel", False),)),
)

SUPPORTED_LAYERS = tuple(cls.__name__ for cls, _ in _KERNEL_ATTRS)


@dataclass(frozen=True)
class KernelLayout:
    """How one kernel of one layer maps to the canonical 4-D view.

    Attributes:
        attr: The layer attribute holding the kernel variable.
        shape: The stored kernel shape.
        canonical: The canonical ``(kh, kw, cin, cout)`` shape.
        depthwise: Whether the kernel is depthwise (one input channel per
            filter).
    """

    attr: str
    shape: tuple[int, ...]
    canonical: tuple[int, int, int, int]
    depthwise: bool = False

    @property
    def size(self) -> int:
        """Number of weights in the kernel."""
        kh, kw, cin, cout = self.canonical
        return kh * kw * cin * cout

    def to_canonical(self, kernel):
        """Reshapes a stored kernel (tensor or array) to the canonical view."""
        return keras.ops.reshape(kernel, self.canonical)

    def from_canonical(self, kernel4):
        """Reshapes a canonical view back to the stored kernel shape."""
        return keras.ops.reshape(kernel4, self.shape)


def _canonical_shape(
    depthwise: bool, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    if depthwise:
        kh, kw, cin, mult = shape
        return (kh, kw, 1, cin * mult)
    if len(shape) == 2:
        return (1, 1, shape[0], shape[1])
    if len(shape) == 3:
        return (1, shape[0], shape[1], shape[2])
    return tuple(shape)


def _kernel_attrs(layer: keras.layers.Layer) -> tuple[tuple[str, bool], ...]:
    for cls, attrs in _KERNEL_ATTRS:
        if isinstance(layer, cls):
            return attrs
    return ()


def kernel_layouts(layer: keras.layers.Layer) -> list[KernelLayout]:
    """The layouts of the prunable kernels of a built layer.

    Args:
        layer: A built Keras layer.

    Returns:
        One `KernelLayout` per prunable kernel, empty for other layers.
    """
    layouts = []
    for attr, depthwise in _kernel_attrs(layer):
        shape = tuple(int(d) for d in getattr(layer, attr).shape)
        layouts.append(
            KernelLayout(attr, shape, _canonical_shape(depthwise, shape), depthwise)
        )
    return layouts
