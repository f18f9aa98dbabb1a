"""Keras callbacks that change the pruning state during `fit`, and the pure
sparsity schedules they follow."""

from tf_reweight.callbacks.pruning_callbacks import (
    HardPrune,
    Reweight,
    ScheduledPruning,
    SparsityMonitor,
)
from tf_reweight.callbacks.schedules import PolynomialSparsity, ProgressiveSparsity

__all__ = [
    "HardPrune",
    "PolynomialSparsity",
    "ProgressiveSparsity",
    "Reweight",
    "ScheduledPruning",
    "SparsityMonitor",
]
