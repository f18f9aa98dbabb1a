"""The structure interface and the structures that group slices of a kernel.

`Structure` is the interface every sparsity structure implements (see
`tf_reweight.core.structures` for the table of structures and `get`). The
structures here make each penalty group a slice of the canonical
``(kh, kw, cin, cout)`` kernel: one weight, one filter, one input channel,
one GEMM column, one ``kh x kw`` kernel, or one tile of the GEMM view; the
unit a budget counts is the group itself.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_reweight.core.layouts import KernelLayout


class Structure:
    """Base class of the sparsity structures.

    Subclasses define the penalty groups (`groups`/`ungroup`); units default to
    the penalty groups and can be overridden (`N:M`, `pattern`).
    """

    name = ""
    # Global budgets rank units of different layers together. Structured units
    # are ranked relative to their layer's RMS (layers are initialized and
    # trained at different scales); single weights by plain magnitude.
    layer_relative_scores = True
    # Whether pruning a unit removes one of the layer's outputs (a filter):
    # `tf_reweight.apply` then leaves the layers producing model outputs dense.
    removes_outputs = False

    def applies_to(self, layout: KernelLayout) -> bool:
        """Whether the structure has a meaning for this kernel."""
        del layout
        return True

    def check(self, layout: KernelLayout) -> None:
        """Raises `ValueError` if the structure's parameters do not fit."""
        del layout

    def check_sparsity(self, layout: KernelLayout, sparsity: float) -> None:
        """Raises `ValueError` if ``sparsity`` is unreachable for this kernel."""
        del layout, sparsity

    # -- penalty groups -------------------------------------------------------
    def groups(self, w4):
        """The ``(G, S)`` penalty-group view of a canonical kernel."""
        raise NotImplementedError

    def ungroup(self, values, shape4):
        """Inverse of `groups`: ``(G, S)`` or ``(G, 1)`` values to ``shape4``."""
        raise NotImplementedError

    def group_norms(self, w4) -> np.ndarray:
        """L2 norm of each penalty group, as a NumPy vector."""
        g = keras.ops.convert_to_numpy(self.groups(np.asarray(w4, np.float32)))
        return np.sqrt(np.sum(np.square(g), axis=1))

    def group_mask(self, mask4) -> np.ndarray:
        """Which penalty groups a 0/1 kernel mask keeps (any weight kept)."""
        g = keras.ops.convert_to_numpy(self.groups(np.asarray(mask4, np.float32)))
        return np.any(g != 0, axis=1)

    def num_groups(self, shape4) -> int:
        """Number of penalty groups."""
        return int(self.groups(np.zeros(shape4, np.float32)).shape[0])

    # -- units ------------------------------------------------------------------
    def num_units(self, shape4) -> int:
        """Number of units a budget counts."""
        return self.num_groups(shape4)

    def unit_weights(self, shape4) -> int:
        """Weights kept by one kept unit."""
        return int(self.groups(np.zeros(shape4, np.float32)).shape[1])

    def unit_sizes(self, shape4) -> np.ndarray:
        """Weights each unit holds (an edge block holds fewer than a tile)."""
        units = self.num_units(shape4)
        if units == self.num_groups(shape4):
            ones = keras.ops.convert_to_numpy(self.groups(np.ones(shape4, np.float32)))
            return np.count_nonzero(ones, axis=1)
        return np.full(units, self.unit_weights(shape4))

    def unit_scores(self, w4) -> np.ndarray:
        """Per-unit importance: the RMS of the weights the unit holds."""
        return self.group_norms(w4) / np.sqrt(self.unit_sizes(np.shape(w4)))

    def keep_for(self, shape4, sparsity: float) -> int:
        """Units to keep so that the kernel reaches ``sparsity``."""
        units = self.num_units(shape4)
        return int(np.clip(round((1.0 - sparsity) * units), 1, units))

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity the structure itself imposes (N:M), else None."""
        return None

    def project(self, w4, keep: int) -> np.ndarray:
        """A 0/1 mask of the kernel keeping exactly ``keep`` units.

        Args:
            w4: The canonical kernel (array-like).
            keep: Number of units to keep, the largest by `unit_scores`.

        Returns:
            A float32 NumPy mask shaped like ``w4``.
        """
        w4 = np.asarray(w4, np.float32)
        kept = top_k(self.unit_scores(w4), keep)
        values = kept.astype(np.float32)[:, None]
        return keras.ops.convert_to_numpy(self.ungroup(values, w4.shape))

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        """A short human-readable name such as ``"filter"`` or ``"2:4"``."""
        return self.name


def top_k(scores: np.ndarray, keep: int) -> np.ndarray:
    """A boolean vector selecting exactly ``keep`` largest scores (stable).

    The same units as the first ``keep`` of a stable descending sort (ties go
    to the lower index, NaN last), found by partition in linear time.
    """
    n = scores.shape[0]
    keep = min(max(int(keep), 0), n)
    kept = np.zeros(n, bool)
    if keep in (0, n):
        kept[:keep] = True
        return kept
    negative = -scores
    threshold = np.partition(negative, keep - 1)[keep - 1]
    np.less(negative, threshold, out=kept)
    ties = np.flatnonzero(negative == threshold)[: keep - int(np.count_nonzero(kept))]
    kept[ties] = True
    if np.count_nonzero(kept) < keep:  # NaN scores: the sort's order
        kept[:] = False
        kept[np.argsort(negative, kind="stable")[:keep]] = True
    return kept


def top_indices(scores: np.ndarray, count: int) -> np.ndarray:
    """The indices of the ``count`` largest scores (`top_k`), in index order."""
    return np.flatnonzero(top_k(scores, count))


class _PermutedStructure(Structure):
    """Groups formed by permuting the canonical axes then splitting rows."""

    perm: tuple[int, int, int, int] = (0, 1, 2, 3)
    lead = 4  # leading permuted axes that index the groups

    def groups(self, w4):
        t = keras.ops.transpose(w4, self.perm)
        rows = math.prod(t.shape[: self.lead])
        return keras.ops.reshape(t, (rows, -1))

    def ungroup(self, values, shape4):
        pshape = tuple(shape4[i] for i in self.perm)
        rows = math.prod(pshape[: self.lead])
        full = keras.ops.broadcast_to(values, (rows, math.prod(pshape[self.lead :])))
        return keras.ops.transpose(
            keras.ops.reshape(full, pshape), tuple(np.argsort(self.perm))
        )


@keras.saving.register_keras_serializable(package="tf_reweight")
class Unstructured(_PermutedStructure):
    """Every weight is its own group (irregular, element-wise sparsity)."""

    name = "unstructured"
    layer_relative_scores = False


@keras.saving.register_keras_serializable(package="tf_reweight")
class Filter(_PermutedStructure):
    """One group per output channel (filter pruning)."""

    name = "filter"
    removes_outputs = True
    perm = (3, 0, 1, 2)
    lead = 1


@keras.saving.register_keras_serializable(package="tf_reweight")
class Channel(_PermutedStructure):
    """One group per input channel (channel pruning)."""

    name = "channel"
    perm = (2, 0, 1, 3)
    lead = 1

    def applies_to(self, layout):
        return layout.canonical[2] > 1


@keras.saving.register_keras_serializable(package="tf_reweight")
class Column(_PermutedStructure):
    """One group per ``(kh, kw, in)`` position across all filters."""

    name = "column"
    lead = 3


@keras.saving.register_keras_serializable(package="tf_reweight")
class Kernel(_PermutedStructure):
    """One group per ``kh x kw`` slice (connectivity pruning)."""

    name = "kernel"
    perm = (2, 3, 0, 1)
    lead = 2

    def applies_to(self, layout):
        return layout.canonical[0] * layout.canonical[1] > 1


@keras.saving.register_keras_serializable(package="tf_reweight")
class Block(Structure):
    """``m x n`` tiles of the GEMM view ``(kh * kw * in, out)``.

    Edge tiles of a kernel whose sides are not multiples of the tile are
    partial (zero padded for the norms).

    Args:
        rows: Tile height ``m`` (along ``kh * kw * in``).
        cols: Tile width ``n`` (along ``out``).
        magnitude: Rank tiles across layers by their RMS, as single weights
            rank by magnitude, with no per-kernel floor (``"block:MxN:magnitude"``):
            tiles that are a storage format's unit (LiteRT's 1x16), pruned
            like single weights. By default tiles rank relative to their
            layer, as other structured units do.
    """

    name = "block"

    def __init__(self, rows: int = 4, cols: int = 4, magnitude: bool = False):
        if int(rows) < 1 or int(cols) < 1:
            raise ValueError(
                "Block sides must be positive integers. "
                f"Received: rows={rows}, cols={cols}"
            )
        if not isinstance(magnitude, bool):
            raise ValueError(
                f"`magnitude` must be a bool. Received: magnitude={magnitude!r}"
            )
        self.rows, self.cols = int(rows), int(cols)
        self.magnitude = magnitude
        self.layer_relative_scores = not magnitude

    def check(self, layout):
        r, c = _gemm_shape(layout.canonical)
        if self.rows > r or self.cols > c:
            raise ValueError(
                f"Block {self.rows}x{self.cols} is larger than the GEMM view "
                f"{r}x{c} of kernel '{layout.attr}' {layout.shape}. Expected a "
                f"block no larger than the kernel. Received: block="
                f"{self.rows}x{self.cols}"
            )

    def _padded(self, shape4):
        r, c = _gemm_shape(shape4)
        return r, c, -(-r // self.rows) * self.rows, -(-c // self.cols) * self.cols

    def groups(self, w4):
        r, c, rp, cp = self._padded(tuple(w4.shape))
        w2 = keras.ops.pad(keras.ops.reshape(w4, (r, c)), ((0, rp - r), (0, cp - c)))
        t = keras.ops.reshape(
            w2, (rp // self.rows, self.rows, cp // self.cols, self.cols)
        )
        return keras.ops.reshape(
            keras.ops.transpose(t, (0, 2, 1, 3)), (-1, self.rows * self.cols)
        )

    def ungroup(self, values, shape4):
        r, c, rp, cp = self._padded(shape4)
        nr, nc = rp // self.rows, cp // self.cols
        full = keras.ops.broadcast_to(values, (nr * nc, self.rows * self.cols))
        t = keras.ops.reshape(full, (nr, nc, self.rows, self.cols))
        w2 = keras.ops.reshape(keras.ops.transpose(t, (0, 2, 1, 3)), (rp, cp))
        return keras.ops.reshape(w2[:r, :c], shape4)

    def get_config(self):
        config = {"rows": self.rows, "cols": self.cols}
        return {**config, "magnitude": True} if self.magnitude else config

    def __repr__(self) -> str:
        return f"block:{self.rows}x{self.cols}" + (":magnitude" * self.magnitude)


def _gemm_shape(shape4) -> tuple[int, int]:
    kh, kw, cin, cout = shape4
    return kh * kw * cin, cout
