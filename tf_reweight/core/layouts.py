"""Kernel layouts: the one place that knows how each layer stores its weights.

Every prunable kernel is viewed through a canonical 4-D layout
``(kh, kw, cin, cout)`` so that structures never see layer-specific shapes:

| layer                       | stored shape            | canonical view           |
|-----------------------------|-------------------------|--------------------------|
| `Dense`                     | `(in, out)`             | `(1, 1, in, out)`        |
| `EinsumDense`               | see below               | `(1, 1, in, out)`        |
| `Conv1D`                    | `(k, in, out)`          | `(1, k, in, out)`        |
| `Conv2D`                    | `(kh, kw, in, out)`     | `(kh, kw, in, out)`      |
| `Conv3D`                    | `(kd, kh, kw, in, out)` | `(kd * kh, kw, in, out)` |
| `Conv1DTranspose`           | `(k, out, in)`          | `(1, k, in, out)`        |
| `Conv2DTranspose`           | `(kh, kw, out, in)`     | `(kh, kw, in, out)`      |
| `Conv3DTranspose`           | `(kd, kh, kw, out, in)` | `(kd * kh, kw, in, out)` |
| `DepthwiseConv2D` and the   | `(kh, kw, in, mult)`    | `(kh, kw, 1, in * mult)` |
| depthwise kernel of         |                         |                          |
| `SeparableConv2D`           |                         |                          |
| pointwise kernel of         | `(1, 1, in, out)`       | `(1, 1, in, out)`        |
| `SeparableConv2D`           |                         |                          |

A depthwise kernel has one filter per output channel ``c * mult + m``, each
reading one input channel, hence ``cin = 1`` in its canonical view.

A `Conv3D` kernel folds depth into the rows: ``kernel`` structures then
group the whole ``kd x kh x kw`` slice of one (in, out) pair, and a
``pattern`` library is written for ``kernel_size=(kd * kh, kw)`` with flat
indices ``d * kh * kw + h * kw + w``; a ``(1, 3, 3)`` kernel is a 3x3 one.

`EinsumDense` (the projections of `MultiHeadAttention`) reads its equation
``"input,kernel->output"``: kernel axes summed against the input form
``cin`` and those found only in the output form ``cout``, flattened in the
order of the input and output axes, so that canonical channels are the
layer's flattened input and output features. A kernel axis found in both the
input and the output is one weight slice per group (no single GEMM); such a
kernel has no layout, and `unsupported_reason` says why.

Transposed convolutions, and EinsumDense kernels whose axes are not already
in that (contracted, output) order, are transposed (`KernelLayout.perm`)
before the reshape;
`to_canonical` and `from_canonical` are exact inverses either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class KernelLayout:
    """How one kernel of one layer maps to the canonical 4-D view.

    Attributes:
        attr: The layer attribute holding the kernel variable.
        shape: The stored kernel shape.
        canonical: The canonical ``(kh, kw, cin, cout)`` shape.
        depthwise: Whether the kernel is depthwise (one input channel per
            filter).
        perm: Stored axes in canonical order, applied before the reshape, or
            None when the view is a plain reshape.

    Example:
    >>> layout = KernelLayout("kernel", (3, 3, 8, 4), (3, 3, 4, 8),
    ...                       perm=(0, 1, 3, 2))
    >>> layout.to_canonical(np.zeros((3, 3, 8, 4))).shape
    (3, 3, 4, 8)
    """

    attr: str
    shape: tuple[int, ...]
    canonical: tuple[int, int, int, int]
    depthwise: bool = False
    perm: tuple[int, ...] | None = None

    def __post_init__(self):
        if len(self.canonical) != 4 or math.prod(self.canonical) != math.prod(
            self.shape
        ):
            raise ValueError(
                "The canonical view must be 4-D and hold as many weights as the "
                f"stored kernel {self.shape}. Received: canonical={self.canonical}"
            )
        if self.perm is not None and sorted(self.perm) != list(range(len(self.shape))):
            raise ValueError(
                f"`perm` must be a permutation of the {len(self.shape)} axes of "
                f"kernel {self.shape}. Received: perm={self.perm}"
            )

    @property
    def weight_name(self) -> str:
        """``attr`` as a variable name (a sublayer key's dots would trip torch)."""
        return self.attr.replace(".", "_")

    @property
    def size(self) -> int:
        """Number of weights in the kernel."""
        return math.prod(self.canonical)

    def to_canonical(self, kernel):
        """The canonical view of a stored kernel.

        Args:
            kernel: The stored kernel, a NumPy array or a backend tensor.

        Returns:
            A NumPy array for a NumPy input, otherwise a backend tensor.
        """
        ops = _ops(kernel)
        if self.perm is not None:
            kernel = ops.transpose(kernel, self.perm)
        return ops.reshape(kernel, self.canonical)

    def from_canonical(self, kernel4):
        """The stored kernel of a canonical view (inverse of `to_canonical`).

        Args:
            kernel4: The canonical view, a NumPy array or a backend tensor.

        Returns:
            A NumPy array for a NumPy input, otherwise a backend tensor.
        """
        ops = _ops(kernel4)
        if self.perm is None:
            return ops.reshape(kernel4, self.shape)
        permuted = ops.reshape(kernel4, tuple(self.shape[i] for i in self.perm))
        return ops.transpose(permuted, tuple(int(i) for i in np.argsort(self.perm)))


def _ops(x):
    """NumPy for NumPy arrays (results stay arrays), `keras.ops` otherwise."""
    return np if isinstance(x, np.ndarray) else keras.ops


def _layout(
    attr: str, shape: tuple[int, ...], perm: tuple[int, ...] | None = None
) -> KernelLayout:
    """A convolution or Dense layout; ``perm`` puts ``in`` before ``out``."""
    view = shape if perm is None else tuple(shape[i] for i in perm)
    spatial, cin, cout = view[:-2], view[-2], view[-1]
    if len(spatial) == 3:
        spatial = (spatial[0] * spatial[1], spatial[2])
    kh, kw = (1,) * (2 - len(spatial)) + tuple(spatial)
    return KernelLayout(attr, shape, (kh, kw, cin, cout), perm=perm)


def _depthwise(attr: str, shape: tuple[int, ...]) -> KernelLayout:
    kh, kw, cin, mult = shape
    return KernelLayout(attr, shape, (kh, kw, 1, cin * mult), depthwise=True)


def _shape(layer: keras.layers.Layer, attr: str) -> tuple[int, ...]:
    return tuple(int(d) for d in getattr(layer, attr).shape)


def _conv(layer) -> list[KernelLayout]:
    return [_layout("kernel", _shape(layer, "kernel"))]


def _conv_transpose(layer) -> list[KernelLayout]:
    shape = _shape(layer, "kernel")
    rank = len(shape)
    return [_layout("kernel", shape, (*range(rank - 2), rank - 1, rank - 2))]


def _depthwise_conv(layer) -> list[KernelLayout]:
    return [_depthwise("kernel", _shape(layer, "kernel"))]


def _separable_conv(layer) -> list[KernelLayout]:
    return [
        _depthwise("depthwise_kernel", _shape(layer, "depthwise_kernel")),
        _layout("pointwise_kernel", _shape(layer, "pointwise_kernel")),
    ]


def _einsum_axes(equation: str) -> tuple[str, str, str]:
    """``(input, kernel, output)`` axis letters of an EinsumDense equation."""
    lhs, output = equation.replace(" ", "").replace("...", "").split("->")
    inputs, kernel = lhs.split(",")
    return inputs, kernel, output


def _einsum_plan(layer) -> tuple[KernelLayout | None, str | None]:
    """The layout of an EinsumDense kernel, or None and the reason."""
    inputs, kernel, output = _einsum_axes(layer.equation)
    for axis in kernel:
        if axis in inputs and axis in output:
            return None, (
                f"kernel axis '{axis}' of equation '{layer.equation}' is in "
                "both the input and the output, so the kernel of EinsumDense "
                f"'{layer.name}' has no (in, out) matrix view; it is left dense"
            )
    shape = _shape(layer, "kernel")
    contracted = sorted(
        (i for i, axis in enumerate(kernel) if axis in inputs),
        key=lambda i: inputs.index(kernel[i]),
    )
    produced = sorted(
        (i for i, axis in enumerate(kernel) if axis in output),
        key=lambda i: output.index(kernel[i]),
    )
    perm = (*contracted, *produced)
    cin = math.prod(shape[i] for i in contracted)
    cout = math.prod(shape[i] for i in produced)
    return KernelLayout(
        "kernel",
        shape,
        (1, 1, cin, cout),
        perm=None if perm == tuple(range(len(shape))) else perm,
    ), None


def _einsum_dense(layer) -> list[KernelLayout]:
    layout, _ = _einsum_plan(layer)
    return [] if layout is None else [layout]


# Layer classes and their layouts; subclasses before their bases.
_LAYOUTS: tuple[tuple[type, Callable[..., list[KernelLayout]]], ...] = (
    (keras.layers.SeparableConv2D, _separable_conv),
    (keras.layers.DepthwiseConv2D, _depthwise_conv),
    (keras.layers.Conv1DTranspose, _conv_transpose),
    (keras.layers.Conv2DTranspose, _conv_transpose),
    (keras.layers.Conv3DTranspose, _conv_transpose),
    (keras.layers.Conv1D, _conv),
    (keras.layers.Conv2D, _conv),
    (keras.layers.Conv3D, _conv),
    (keras.layers.Dense, _conv),
    (keras.layers.EinsumDense, _einsum_dense),
)

SUPPORTED_LAYERS = tuple(cls.__name__ for cls, _ in _LAYOUTS)


def kernel_layouts(layer: keras.layers.Layer) -> list[KernelLayout]:
    """The layouts of the prunable kernels of a built layer.

    Args:
        layer: A built Keras layer.

    Returns:
        One `KernelLayout` per prunable kernel, empty for other layers and for
        kernels without a GEMM view (see `unsupported_reason`).

    Example:
    >>> layer = keras.layers.Conv2DTranspose(8, 3)
    >>> layer.build((None, 16, 16, 4))
    >>> kernel_layouts(layer)[0].canonical
    (3, 3, 4, 8)
    """
    for cls, layouts in _LAYOUTS:
        if isinstance(layer, cls):
            return layouts(layer)
    return []


def unsupported_reason(layer: keras.layers.Layer) -> str | None:
    """Why a layer of a supported type has a kernel that cannot be pruned.

    Args:
        layer: A built Keras layer.

    Returns:
        A short sentence for a warning, or None when every kernel of the layer
        has a layout (or the layer has no kernel to prune at all).

    Example:
    >>> layer = keras.layers.EinsumDense("abc,bcd->abd", output_shape=(4, 8))
    >>> layer.build((None, 4, 6))
    >>> unsupported_reason(layer) is not None
    True
    """
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_plan(layer)[1]
    return None
