"""Sparsity structures: which weights are pruned together.

A structure answers two questions for a kernel in the canonical
``(kh, kw, cin, cout)`` view (see `tf_reweight.core.layouts`):

- `groups(w4)`: the *penalty groups*, a ``(G, S)`` matrix with one row per
  group. The reweighted penalty is ``sum_g alpha_g * ||row_g||``.
- `project(w4, keep)`: a 0/1 mask that keeps exactly ``keep`` *units* (the
  things a budget counts: groups, N:M blocks or pattern kernels).

Everything else (regularizers, hard pruning, ADMM's Z-step, budgets and
sensitivity probes) is written against these two functions.

| name           | penalty group                         | unit kept         |
|----------------|---------------------------------------|-------------------|
| `unstructured` | one weight                            | one weight        |
| `filter`       | one output channel                    | same              |
| `channel`      | one input channel                     | same              |
| `column`       | one ``(kh, kw, in)`` position, all    | same              |
|                | filters (a column of the GEMM view)   |                   |
| `kernel`       | one ``kh x kw`` slice                 | same              |
| `block`        | an ``m x n`` tile of the GEMM view    | same              |
| `n:m`          | one weight                            | N of every M      |
|                |                                       | weights along in  |
| `pattern`      | one weight                            | one ``kh x kw``   |
|                |                                       | kernel, keeping   |
|                |                                       | one library       |
|                |                                       | pattern           |

A structure that has no meaning for a layer (`kernel` or `pattern` on a
`Dense` or 1x1 kernel, `channel` or `n:m` on a depthwise kernel) reports
`applies_to(...) == False`: `tf_reweight.apply` then skips that kernel with a
warning. A structure that applies but whose parameters do not fit the kernel
(N:M with ``cin % M != 0``, a block larger than the kernel) raises
`ValueError` in `check`.
"""

from __future__ import annotations

import math
import re

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
        kept = _top_k(self.unit_scores(w4), keep)
        values = kept.astype(np.float32)[:, None]
        return keras.ops.convert_to_numpy(self.ungroup(values, w4.shape))

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return identifier(self)


def _top_k(scores: np.ndarray, keep: int) -> np.ndarray:
    """A boolean vector selecting exactly ``keep`` largest scores (stable)."""
    kept = np.zeros(scores.shape[0], bool)
    kept[np.argsort(-scores, kind="stable")[:keep]] = True
    return kept


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
    """

    name = "block"

    def __init__(self, rows: int = 4, cols: int = 4):
        if int(rows) < 1 or int(cols) < 1:
            raise ValueError(
                "Block sides must be positive integers. "
                f"Received: rows={rows}, cols={cols}"
            )
        self.rows, self.cols = int(rows), int(cols)

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
        return {"rows": self.rows, "cols": self.cols}


def _gemm_shape(shape4) -> tuple[int, int]:
    kh, kw, cin, cout = shape4
    return kh * kw * cin, cout


@keras.saving.register_keras_serializable(package="tf_reweight")
class NM(Unstructured):
    """N:M sparsity: N weights kept in every M consecutive input channels.

    Penalty groups are single weights; the projection keeps the N largest of
    every M consecutive weights along the input dimension, so the sparsity is
    fixed at ``1 - N / M`` (the 2:4 pattern of sparse tensor cores).

    Args:
        n: Weights kept per block.
        m: Block length along the input channels.
    """

    name = "n:m"

    def __init__(self, n: int = 2, m: int = 4):
        if not 0 < int(n) < int(m):
            raise ValueError(f"N:M needs 0 < N < M. Received: n={n}, m={m}")
        self.n, self.m = int(n), int(m)

    def applies_to(self, layout):
        return not layout.depthwise

    def check(self, layout):
        cin = layout.canonical[2]
        if cin % self.m:
            raise ValueError(
                f"N:M {self.n}:{self.m} needs the input dimension of kernel "
                f"'{layout.attr}' {layout.shape} to be a multiple of {self.m}. "
                f"Received: input dimension={cin}"
            )

    def check_sparsity(self, layout, sparsity):
        if not math.isclose(sparsity, self.fixed_sparsity, abs_tol=1e-6):
            raise ValueError(
                f"N:M {self.n}:{self.m} fixes the sparsity at "
                f"{self.fixed_sparsity:g}. Expected that target or none. "
                f"Received: target={sparsity}"
            )

    @property
    def fixed_sparsity(self):
        return 1.0 - self.n / self.m

    def _blocks(self, w4):
        return np.reshape(np.transpose(w4, (0, 1, 3, 2)), (-1, self.m))

    def num_units(self, shape4):
        return math.prod(shape4) // self.m

    def unit_weights(self, shape4):
        return self.n

    def keep_for(self, shape4, sparsity):
        return self.num_units(shape4)

    def project(self, w4, keep):
        w4 = np.asarray(w4, np.float32)
        blocks = np.abs(self._blocks(w4))
        order = np.argsort(-blocks, axis=1, kind="stable")[:, : self.n]
        mask = np.zeros_like(blocks)
        np.put_along_axis(mask, order, 1.0, axis=1)
        kh, kw, cin, cout = w4.shape
        return np.transpose(np.reshape(mask, (kh, kw, cout, cin)), (0, 1, 3, 2))

    def get_config(self):
        return {"n": self.n, "m": self.m}


# The eight 4-entry patterns of a 3x3 kernel that contain the centre: the four
# 2x2 squares around it and the four "T" shapes (PatDNN-style library).
_DEFAULT_PATTERNS_3X3 = (
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (3, 4, 6, 7),
    (4, 5, 7, 8),
    (1, 3, 4, 5),
    (1, 4, 5, 7),
    (3, 4, 5, 7),
    (1, 3, 4, 7),
)


@keras.saving.register_keras_serializable(package="tf_reweight")
class Pattern(Unstructured):
    """Pattern pruning with connectivity pruning (PatDNN style).

    Every kept ``kh x kw`` kernel keeps exactly one pattern from a library
    (the pattern holding the most energy); kernels beyond the budget are
    removed whole. The lowest sparsity is therefore ``1 - k / (kh * kw)``.

    Args:
        library: Patterns as lists of flat indices into the ``kh x kw`` slice,
            all of the same length ``k``. Defaults to eight 4-entry patterns of
            a 3x3 kernel; other kernel sizes need an explicit library.
        kernel_size: The ``(kh, kw)`` the library is written for.
    """

    name = "pattern"
    layer_relative_scores = True

    def __init__(self, library=None, kernel_size=(3, 3)):
        library = _DEFAULT_PATTERNS_3X3 if library is None else library
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.library = tuple(tuple(int(i) for i in p) for p in library)
        cells = self.kernel_size[0] * self.kernel_size[1]
        sizes = {len(p) for p in self.library}
        if (
            not self.library
            or len(sizes) != 1
            or any(not 0 <= i < cells for p in self.library for i in p)
            or any(len(set(p)) != len(p) for p in self.library)
        ):
            raise ValueError(
                "A pattern library must hold patterns of equal length with "
                f"distinct indices below kh*kw={cells}. Received: "
                f"library={library}"
            )
        self.k = sizes.pop()
        self._table = np.zeros((len(self.library), cells), np.float32)
        for i, p in enumerate(self.library):
            self._table[i, list(p)] = 1.0

    def applies_to(self, layout):
        return layout.canonical[0] * layout.canonical[1] > 1

    def check(self, layout):
        if tuple(layout.canonical[:2]) != self.kernel_size:
            raise ValueError(
                f"The pattern library is for {self.kernel_size} kernels but "
                f"kernel '{layout.attr}' is {tuple(layout.canonical[:2])}. "
                "Expected a `library=` written for that kernel size. Received: "
                f"kernel_size={self.kernel_size}"
            )

    def check_sparsity(self, layout, sparsity):
        floor = 1.0 - self.k / (self.kernel_size[0] * self.kernel_size[1])
        if sparsity < floor - 1e-9:
            raise ValueError(
                f"Pattern pruning keeps at most {self.k} of "
                f"{self.kernel_size[0] * self.kernel_size[1]} weights per kernel, "
                f"so sparsity must be at least {floor:g}. Received: "
                f"target={sparsity}"
            )

    def _kernels(self, w4):
        kh, kw, cin, cout = w4.shape
        return np.reshape(np.transpose(w4, (2, 3, 0, 1)), (cin * cout, kh * kw))

    def num_units(self, shape4):
        return shape4[2] * shape4[3]

    def unit_weights(self, shape4):
        return self.k

    def keep_for(self, shape4, sparsity):
        units = self.num_units(shape4)
        kept = round((1.0 - sparsity) * math.prod(shape4) / self.k)
        return int(np.clip(kept, 1, units))

    def _energy(self, w4):
        return np.square(self._kernels(np.asarray(w4, np.float32))) @ self._table.T

    def unit_scores(self, w4):
        return np.sqrt(self._energy(w4).max(axis=1) / self.k)

    def project(self, w4, keep):
        w4 = np.asarray(w4, np.float32)
        energy = self._energy(w4)
        kept = _top_k(energy.max(axis=1), keep)
        masks = self._table[energy.argmax(axis=1)] * kept[:, None]
        kh, kw, cin, cout = w4.shape
        return np.transpose(np.reshape(masks, (cin, cout, kh, kw)), (2, 3, 0, 1))

    def get_config(self):
        return {
            "library": [list(p) for p in self.library],
            "kernel_size": list(self.kernel_size),
        }


_BY_NAME = {
    cls.name: cls
    for cls in (Unstructured, Filter, Channel, Column, Kernel, Block, NM, Pattern)
}
NAMES = tuple(_BY_NAME)


def get(identifier) -> Structure:
    """Returns a structure from a name, an instance or a config.

    Args:
        identifier: A `Structure`, a name from `NAMES`, ``"block:MxN"``,
            ``"N:M"`` (for example ``"2:4"``), or a dict
            ``{"name": ..., "config": {...}}``.

    Returns:
        A `Structure` instance.

    Example:
    >>> get("2:4").fixed_sparsity
    0.5
    """
    if isinstance(identifier, Structure):
        return identifier
    if isinstance(identifier, dict) and identifier.get("name") in _BY_NAME:
        return _BY_NAME[identifier["name"]](**identifier.get("config", {}))
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        if match := re.fullmatch(r"(\d+):(\d+)", key):
            return NM(int(match[1]), int(match[2]))
        if match := re.fullmatch(r"block:(\d+)x(\d+)", key):
            return Block(int(match[1]), int(match[2]))
    raise ValueError(
        f"Unknown structure. Expected one of {list(NAMES)}, 'N:M' such as "
        f"'2:4', 'block:MxN', or a Structure instance. Received: "
        f"structure={identifier!r}"
    )


def serialize(structure: Structure) -> dict:
    """A JSON-friendly config that `get` turns back into the structure."""
    return {"name": structure.name, "config": structure.get_config()}


def identifier(structure: Structure) -> str:
    """A short human-readable name such as ``"filter"`` or ``"2:4"``."""
    if isinstance(structure, NM):
        return f"{structure.n}:{structure.m}"
    if isinstance(structure, Block):
        return f"block:{structure.rows}x{structure.cols}"
    return structure.name
