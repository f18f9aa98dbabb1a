"""Keras callbacks that change the pruning state during `fit`, and the pure
sparsity schedules they follow. Each public class has its own module."""

from tf_reweight.callbacks.admm_update import ADMMUpdate
from tf_reweight.callbacks.hard_prune import HardPrune
from tf_reweight.callbacks.recalibrate_batchnorm import RecalibrateBatchNorm
from tf_reweight.callbacks.reweight import Reweight
from tf_reweight.callbacks.scheduled_pruning import ScheduledPruning
from tf_reweight.callbacks.schedules import PolynomialSparsity, ProgressiveSparsity
from tf_reweight.callbacks.sparsity_monitor import SparsityMonitor

__all__ = [
    "ADMMUpdate",
    "HardPrune",
    "PolynomialSparsity",
    "ProgressiveSparsity",
    "RecalibrateBatchNorm",
    "Reweight",
    "ScheduledPruning",
    "SparsityMonitor",
]
