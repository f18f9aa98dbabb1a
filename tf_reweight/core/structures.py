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

The interface `Structure` and the structures whose groups are slices of the
kernel live in `tf_reweight.core.group_structures`; this module adds N:M and
pattern pruning and the registry (`get`, `serialize`, `identifier`), and
every structure is importable from here.
"""

from __future__ import annotations

import math
import re

import keras
import numpy as np

from tf_reweight.core.group_structures import (
    Block,
    Channel,
    Column,
    Filter,
    Kernel,
    Structure,
    Unstructured,
    top_k,
)

__all__ = [
    "NAMES",
    "NM",
    "Block",
    "Channel",
    "Column",
    "Filter",
    "Kernel",
    "Pattern",
    "Structure",
    "Unstructured",
    "get",
    "identifier",
    "serialize",
]


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

    def __repr__(self) -> str:
        return f"{self.n}:{self.m}"


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
        kept = top_k(energy.max(axis=1), keep)
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
        identifier: A `Structure`, a name from `NAMES`, ``"block:MxN"``
            (``"block:MxN:magnitude"``: tiles ranked like single weights),
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
        if match := re.fullmatch(r"block:(\d+)x(\d+)(:magnitude)?", key):
            return Block(int(match[1]), int(match[2]), magnitude=bool(match[3]))
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
    return repr(structure)
