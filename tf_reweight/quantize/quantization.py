"""k-bit weight quantization and the storage size of pruned, quantized kernels.

`quantize` rounds weights onto a symmetric uniform grid with one scale per
output channel, `fake_quantize` does the same in the forward pass with a
straight-through gradient, and `QuantizeConstraint` projects a layer's weights
onto the grid after every optimizer step. `storage_bits` and
`compression_report` count the bits of the sparse, quantized storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

_MIN_BITS, _MAX_BITS = 2, 8


def quantize(w, bits: int, axis: int | None = -1):
    """Quantizes `w` to `bits` bits, symmetric and uniform per output channel.

    With ``L = 2**(bits - 1) - 1`` levels on each side of zero, every channel
    along `axis` gets ``scale = max|w| / L`` (the maximum over all other axes) and
    ``quantize(w) = scale * clip(round(w / scale), -L, L)``, rounding half to
    even. The grid has ``2 * L + 1 = 2**bits - 1`` values, zeros stay exactly
    zero and a channel of zeros stays zero.

    Args:
        w: Floating-point weights, e.g. a `Dense` kernel ``(in, out)`` or a
            `Conv2D` kernel ``(h, w, in, out)``.
        bits: Bits per weight, from 2 to 8.
        axis: Axis of the output channels, each with its own scale; `None` uses
            one scale for the whole tensor.

    Returns:
        A tensor of the shape and dtype of `w` whose values lie on the grid.

    Raises:
        ValueError: If `bits` is not an integer from 2 to 8 or `axis` is out of
            range for `w`.

    Example:

    >>> w = keras.ops.convert_to_tensor([[0.1, -1.0], [0.5, 0.3]])
    >>> keras.ops.convert_to_numpy(quantize(w, bits=2))
    array([[ 0. , -1. ],
           [ 0.5,  0. ]], dtype=float32)

    References:
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
    """
    _check_bits(bits)
    w = ops.convert_to_tensor(w)
    levels = 2 ** (bits - 1) - 1
    scale = ops.max(ops.abs(w), axis=_reduced_axes(w, axis), keepdims=True) / levels
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    return ops.clip(ops.round(w / scale), -levels, levels) * scale


def fake_quantize(w, bits: int, axis: int | None = -1):
    """`quantize` in the forward pass with an identity (straight-through) gradient.

    Computes ``w + stop_gradient(quantize(w) - w)``: the value is the quantized
    `w`, and the gradient with respect to `w` is passed through unchanged, so
    the full-precision weights keep training.

    Args:
        w: Floating-point weights.
        bits: Bits per weight, from 2 to 8.
        axis: Axis of the output channels; `None` for one scale per tensor.

    Returns:
        A tensor equal to ``quantize(w, bits, axis)``.

    Raises:
        ValueError: As `quantize`.

    Example:

    >>> kernel = keras.ops.convert_to_tensor([[0.1, -1.0], [0.5, 0.3]])
    >>> x = keras.ops.ones((1, 2))
    >>> keras.ops.matmul(x, fake_quantize(kernel, bits=4))  # doctest: +SKIP

    References:
        Bengio et al., "Estimating or Propagating Gradients Through Stochastic
        Neurons for Conditional Computation", arXiv:1308.3432, 2013.
    """
    w = ops.convert_to_tensor(w)
    return w + ops.stop_gradient(quantize(w, bits, axis) - w)


@keras.saving.register_keras_serializable(package="tf_reweight")
class QuantizeConstraint(keras.constraints.Constraint):
    """Projects weights onto the `bits`-bit grid of `quantize` after each update.

    Used as a `kernel_constraint`, this gives projected gradient training: the
    optimizer steps in full precision, then the weights are replaced by their
    nearest point on the grid, the projection step of ADMM-style quantization.

    Args:
        bits: Bits per weight, from 2 to 8.
        axis: Axis of the output channels; `None` for one scale per tensor.

    Raises:
        ValueError: If `bits` is not an integer from 2 to 8.

    Example:

    >>> layer = keras.layers.Dense(16, kernel_constraint=QuantizeConstraint(4))

    References:
        Leng et al., "Extremely Low Bit Neural Network: Squeeze the Last Bit
        Out with ADMM", AAAI 2018.
    """

    def __init__(self, bits: int, axis: int | None = -1):
        _check_bits(bits)
        self.bits = bits
        self.axis = axis

    def __call__(self, w):
        return quantize(w, self.bits, self.axis)

    def get_config(self) -> dict:
        return {"bits": self.bits, "axis": self.axis}


def storage_bits(
    nonzeros: int, bits: int, total: int, index_bits: int = 4, fillers: int = 0
) -> dict:
    """Bits of a sparse quantized tensor against its dense float32 storage.

    The tensor is stored as in Deep Compression: every nonzero weight takes
    `bits` bits for its value and `index_bits` bits for the number of zeros
    skipped since the previous stored entry (relative indexing). A run of more
    than ``2**index_bits - 1`` zeros needs filler entries, stored zeros that cost
    as much as a nonzero (`compression_report` counts them)::

        sparse_bits = (nonzeros + fillers) * (bits + index_bits)
        dense_bits = 32 * total
        compression = dense_bits / sparse_bits

    Args:
        nonzeros: Number of nonzero weights.
        bits: Bits per stored value.
        total: Number of weights of the dense tensor.
        index_bits: Bits of each relative index.
        fillers: Number of filler zeros.

    Returns:
        A dict with the inputs and ``"dense_bits"``, ``"sparse_bits"`` and
        ``"compression"`` (``inf`` if nothing is stored).

    Raises:
        ValueError: If a count is negative, `nonzeros` exceeds `total`, or
            `bits` or `index_bits` is not positive.

    Example:

    >>> storage_bits(nonzeros=100, bits=4, total=1000)["compression"]
    40.0

    References:
        Han et al., "Deep Compression: Compressing Deep Neural Networks with
        Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
    """
    if not 0 <= nonzeros <= total or fillers < 0:
        raise ValueError(
            "Expected 0 <= nonzeros <= total and fillers >= 0. "
            f"Received: nonzeros={nonzeros}, total={total}, fillers={fillers}"
        )
    if bits < 1 or index_bits < 1:
        raise ValueError(
            "`bits` and `index_bits` must be positive. "
            f"Received: bits={bits}, index_bits={index_bits}"
        )
    sparse = (nonzeros + fillers) * (bits + index_bits)
    dense = 32 * total
    return {
        "total": total,
        "nonzeros": nonzeros,
        "fillers": fillers,
        "bits": bits,
        "index_bits": index_bits,
        "dense_bits": dense,
        "sparse_bits": sparse,
        "compression": dense / sparse if sparse else math.inf,
    }


def compression_report(
    model_or_kernels: keras.Model | Mapping[str, object] | Sequence[object],
    bits: int,
    index_bits: int = 4,
) -> dict:
    """Storage compression of pruned, `bits`-bit kernels with relative indexing.

    Each kernel is flattened in row-major order and stored as in `storage_bits`;
    the filler zeros come from the actual positions of its nonzeros: a run of
    ``z`` zeros before a nonzero needs ``z // 2**index_bits`` fillers (trailing
    zeros need none). Weights are counted as they are, so quantize them first
    if rounding should turn small weights into zeros.

    Args:
        model_or_kernels: A Keras model, whose variables named ``"kernel"`` are
            counted (biases and normalization weights are left out), or kernels
            as a mapping from name to array or as a sequence of arrays.
        bits: Bits per stored value.
        index_bits: Bits of each relative index.

    Returns:
        The `storage_bits` dict of all kernels together, with a ``"layers"``
        entry mapping each kernel's name (its variable path for a model) to its
        own `storage_bits` dict.

    Raises:
        ValueError: If there are no kernels, or as `storage_bits`.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> report = compression_report(model, bits=4)
    >>> report["nonzeros"] == 32, report["layers"].keys()  # doctest: +SKIP
    (True, dict_keys(['dense/kernel']))
    """
    if isinstance(model_or_kernels, keras.Model):
        kernels = {v.path: v for v in model_or_kernels.weights if v.name == "kernel"}
    elif isinstance(model_or_kernels, Mapping):
        kernels = dict(model_or_kernels)
    else:
        kernels = {f"kernel_{i}": k for i, k in enumerate(model_or_kernels)}
    if not kernels:
        raise ValueError(
            "Expected a model with kernels or a non-empty collection of kernels. "
            f"Received: model_or_kernels={model_or_kernels!r}"
        )
    layers = {}
    for name, kernel in kernels.items():
        flat = ops.convert_to_numpy(kernel).reshape(-1)
        positions = np.flatnonzero(flat)
        zero_runs = np.diff(positions, prepend=-1) - 1
        layers[name] = storage_bits(
            nonzeros=len(positions),
            bits=bits,
            total=flat.size,
            index_bits=index_bits,
            fillers=int(np.sum(zero_runs // 2**index_bits)),
        )
    sums = {
        key: sum(row[key] for row in layers.values())
        for key in ("nonzeros", "total", "fillers")
    }
    report = storage_bits(**sums, bits=bits, index_bits=index_bits)
    report["layers"] = layers
    return report


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not _MIN_BITS <= bits <= _MAX_BITS:
        raise ValueError(
            f"`bits` must be an integer from {_MIN_BITS} to {_MAX_BITS}. "
            f"Received: bits={bits!r}"
        )


def _reduced_axes(w, axis: int | None) -> tuple[int, ...] | None:
    """All axes of `w` but the channel `axis` (`None`: all of them)."""
    if axis is None:
        return None
    rank = len(w.shape)
    if not -rank <= axis < rank:
        raise ValueError(
            f"`axis` must be None or in [-{rank}, {rank}) for weights of shape "
            f"{tuple(w.shape)}. Received: axis={axis}"
        )
    return tuple(i for i in range(rank) if i != axis % rank)
