"""Sparsity reports: per-kernel sparsity and compression of a model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import numpy as np

from tf_reweight.core import backend_support, budget, walker
from tf_reweight.pruning.wrapper import PruningWrapper


@dataclass
class LayerSparsity:
    """Sparsity of one prunable kernel."""

    layer: str
    kernel: str
    shape: tuple
    structure: str
    weights: int
    nonzeros: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.weights

    @property
    def rate(self) -> float:
        return budget.rate(self.weights, self.nonzeros)


@dataclass
class SparsityReport:
    """Per-kernel sparsity of a model, with totals over the pruned kernels.

    ``rate`` is dense weights / nonzero weights over the kernels that are
    pruned (wrapped); ``model_rate`` counts every prunable kernel of the model
    (biases and BatchNorm excluded in both).
    """

    rows: list[LayerSparsity]

    def _totals(self, rows):
        weights = sum(r.weights for r in rows)
        nonzeros = sum(r.nonzeros for r in rows)
        return weights, nonzeros

    @property
    def pruned_rows(self) -> list[LayerSparsity]:
        return [r for r in self.rows if r.structure != "dense"]

    @property
    def sparsity(self) -> float:
        weights, nonzeros = self._totals(self.pruned_rows)
        return 1.0 - nonzeros / weights if weights else 0.0

    @property
    def rate(self) -> float:
        return budget.rate(*self._totals(self.pruned_rows))

    @property
    def model_rate(self) -> float:
        return budget.rate(*self._totals(self.rows))

    def to_dict(self) -> dict:
        weights, nonzeros = self._totals(self.pruned_rows)
        return {
            "layers": [
                {**asdict(r), "sparsity": r.sparsity, "rate": _finite(r.rate)}
                for r in self.rows
            ],
            "weights": weights,
            "nonzeros": nonzeros,
            "sparsity": self.sparsity,
            "rate": _finite(self.rate),
            "model_rate": _finite(self.model_rate),
        }

    def __str__(self) -> str:
        # The structure column widens for long names ("block:16x1:magnitude").
        wide = max([14, *(len(r.structure) + 2 for r in self.rows)])
        head = (
            f"{'layer':<24}{'kernel':<18}{'structure':<{wide}}{'weights':>10}"
            f"{'nonzeros':>10}{'sparsity':>10}{'rate':>9}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.layer:<24}{r.kernel:<18}{r.structure:<{wide}}{r.weights:>10}"
                f"{r.nonzeros:>10}{r.sparsity:>10.2%}{r.rate:>8.1f}x"
            )
        weights, nonzeros = self._totals(self.pruned_rows)
        lines.append("-" * len(head))
        lines.append(
            f"{'pruned kernels':<{42 + wide}}{weights:>10}{nonzeros:>10}"
            f"{self.sparsity:>10.2%}{self.rate:>8.1f}x"
        )
        return "\n".join(lines)


def _finite(value: float):
    return None if math.isinf(value) else value


def report(model: keras.Model) -> SparsityReport:
    """Per-layer sparsity and compression of a pruned or plain model.

    Args:
        model: Any built model; wrapped layers report their structure, other
            prunable layers (nested models and sublayers included) are listed
            as ``"dense"``.

    Returns:
        A `SparsityReport`; ``print`` it for a table.
    """
    rows = []
    for layer in walker.graph_layers(model):
        # The wrapper may itself be wrapped (straight-through quantization).
        wrapper = next(
            (
                w
                for w in (layer, *walker.iter_layers(layer))
                if isinstance(w, PruningWrapper)
            ),
            None,
        )
        if wrapper is not None:
            pruned = {pk.layout.attr: pk for pk in wrapper.pruned_kernels}
            inner = wrapper.layer
        else:
            pruned, inner = {}, layer
        for layout in walker.find_kernels(inner):
            pk = pruned.get(layout.attr)
            if pk is None:
                value = keras.ops.convert_to_numpy(
                    walker.kernel_variable(inner, layout.attr)
                )
            else:
                value = backend_support.masked_value(pk)
            rows.append(
                LayerSparsity(
                    layer=layer.name,
                    kernel=walker.kernel_name(inner, layout.attr),
                    shape=layout.shape,
                    structure="dense" if pk is None else repr(wrapper.structure),
                    weights=int(value.size),
                    nonzeros=int(np.count_nonzero(value)),
                )
            )
    return SparsityReport(rows)
