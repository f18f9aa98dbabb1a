"""tf_reweight: reweighted group-sparsity pruning for Keras 3.

Example:
>>> import tf_reweight as tfr
>>> pruned = tfr.apply(model, structure="filter", target="16x", penalty=1e-4)
>>> pruned.compile("adam", loss, metrics=["accuracy"])
>>> pruned.fit(x, y, epochs=8, callbacks=[tfr.Reweight(), tfr.HardPrune(6)])
>>> print(tfr.report(pruned))
>>> plain = tfr.strip(pruned)
"""

import importlib

import keras

from tf_reweight import (
    admm,
    backend_support,
    batchnorm,
    budget,
    callbacks,
    layouts,
    models,
    pruning,
    qat,
    quantization,
    recipes,
    structures,
)
from tf_reweight.admm import ADMMPenalty, ADMMUpdate
from tf_reweight.api import apply, strip
from tf_reweight.batchnorm import recalibrate_batchnorm
from tf_reweight.budget import parse_target
from tf_reweight.callbacks import HardPrune, Reweight, ScheduledPruning, SparsityMonitor
from tf_reweight.constraints import MaskConstraint
from tf_reweight.pruning import hard_prune, refresh_penalties
from tf_reweight.qat import QuantizeWrapper, quantize_model
from tf_reweight.quantization import QuantizeConstraint, fake_quantize, quantize
from tf_reweight.regularizers import (
    GroupLassoPenalty,
    KernelPenalty,
    ReweightedGroupPenalty,
)
from tf_reweight.schedules import PolynomialSparsity, ProgressiveSparsity
from tf_reweight.sparsity import LayerSparsity, SparsityReport, report
from tf_reweight.structures import Structure
from tf_reweight.wrapper import PruningWrapper

# The TensorFlow-only parts load on first access (PEP 562), so that the core
# imports on every Keras backend and without TensorFlow installed.
_LAZY_MODULES = ("adversarial", "attacks", "data", "mrpf", "robustness", "sensitivity")
_LAZY_ATTRIBUTES = {
    "AdversarialModel": "adversarial",
    "evaluate_robustness": "robustness",
    "allocate_ratios": "sensitivity",
    "module_robustness_sensitivity": "sensitivity",
}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"tf_reweight.{name}")
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(f"tf_reweight.{_LAZY_ATTRIBUTES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'tf_reweight' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_ATTRIBUTES))


__version__ = "0.1.0"

__all__ = [
    "ADMMPenalty",
    "ADMMUpdate",
    "GroupLassoPenalty",
    "HardPrune",
    "KernelPenalty",
    "LayerSparsity",
    "MaskConstraint",
    "PolynomialSparsity",
    "ProgressiveSparsity",
    "PruningWrapper",
    "QuantizeConstraint",
    "QuantizeWrapper",
    "Reweight",
    "ReweightedGroupPenalty",
    "ScheduledPruning",
    "SparsityMonitor",
    "SparsityReport",
    "Structure",
    "admm",
    "backend_support",
    "apply",
    "batchnorm",
    "budget",
    "callbacks",
    "fake_quantize",
    "hard_prune",
    "layouts",
    "models",
    "parse_target",
    "pruning",
    "qat",
    "quantization",
    "quantize",
    "quantize_model",
    "recalibrate_batchnorm",
    "recipes",
    "refresh_penalties",
    "report",
    "strip",
    "structures",
]

if keras.backend.backend() == "tensorflow":
    __all__ += sorted(_LAZY_MODULES + tuple(_LAZY_ATTRIBUTES))
