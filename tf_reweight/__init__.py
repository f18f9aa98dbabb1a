"""tf_reweight: reweighted group-sparsity pruning for Keras 3.

Example:
>>> import tf_reweight as tfr
>>> pruned = tfr.apply(model, structure="filter", target="16x", penalty=1e-4)
>>> pruned.compile("adam", loss, metrics=["accuracy"])
>>> pruned.fit(x, y, epochs=8, callbacks=[tfr.Reweight(), tfr.HardPrune(6)])
>>> print(tfr.report(pruned))
>>> plain = tfr.strip(pruned)
"""

# First: imports Keras and TensorFlow without their native log lines.
from tf_reweight.core import backend_support  # noqa: I001

import importlib

import keras

from tf_reweight import admm, callbacks, pruning
from tf_reweight.callbacks import (
    ADMMUpdate,
    HardPrune,
    PolynomialSparsity,
    ProgressiveSparsity,
    RecalibrateBatchNorm,
    Reweight,
    ScheduledPruning,
    SparsityMonitor,
)
from tf_reweight.core import budget, layouts, presets, structures
from tf_reweight.core.budget import parse_target
from tf_reweight.core.constraints import MaskConstraint
from tf_reweight.core.structures import Structure
from tf_reweight.methods import regularizers
from tf_reweight.methods.admm import ADMMPenalty
from tf_reweight.methods.group_lasso import GroupLassoPenalty
from tf_reweight.methods.penalty import KernelPenalty
from tf_reweight.methods.reweighted import ReweightedGroupPenalty
from tf_reweight.pruning import batchnorm
from tf_reweight.pruning.api import apply, strip
from tf_reweight.pruning.batchnorm import recalibrate_batchnorm
from tf_reweight.pruning.operations import hard_prune, refresh_penalties
from tf_reweight.pruning.sparsity import LayerSparsity, SparsityReport, report
from tf_reweight.pruning.wrapper import PruningWrapper
from tf_reweight.quantize import qat, quantization
from tf_reweight.quantize.qat import QuantizeWrapper, quantize_model
from tf_reweight.quantize.quantization import (
    QuantizeConstraint,
    fake_quantize,
    quantize,
)
from tf_reweight.robust.attack import Attack
from tf_reweight.training import models, plans, recipes, registry
from tf_reweight.training.plans import PLANS, Plan, get_plan, register_plan
from tf_reweight.training.registry import Method, get_method, register_method

# The TensorFlow-only parts load on first access (PEP 562), so that the core
# imports on every Keras backend and without TensorFlow installed.
_LAZY_MODULES = {
    "adversarial": "tf_reweight.robust.adversarial",
    "allocation": "tf_reweight.robust.allocation",
    "attacks": "tf_reweight.robust.attacks",
    "data": "tf_reweight.training.data",
    "mrpf": "tf_reweight.robust.mrpf",
    "robustness": "tf_reweight.robust.robustness",
    "sensitivity": "tf_reweight.robust.sensitivity",
}
_LAZY_ATTRIBUTES = {
    "AdversarialModel": "adversarial",
    "evaluate_robustness": "robustness",
    "allocate_ratios": "allocation",
    "module_robustness_sensitivity": "sensitivity",
}


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(_LAZY_MODULES[_LAZY_ATTRIBUTES[name]])
        return getattr(module, name)
    raise AttributeError(f"module 'tf_reweight' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_ATTRIBUTES))


__version__ = "0.1.0"

__all__ = [
    "ADMMPenalty",
    "Attack",
    "ADMMUpdate",
    "GroupLassoPenalty",
    "HardPrune",
    "KernelPenalty",
    "LayerSparsity",
    "MaskConstraint",
    "Method",
    "PLANS",
    "Plan",
    "PolynomialSparsity",
    "ProgressiveSparsity",
    "PruningWrapper",
    "QuantizeConstraint",
    "QuantizeWrapper",
    "RecalibrateBatchNorm",
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
    "get_method",
    "get_plan",
    "hard_prune",
    "layouts",
    "models",
    "parse_target",
    "presets",
    "pruning",
    "qat",
    "quantization",
    "quantize",
    "quantize_model",
    "recalibrate_batchnorm",
    "plans",
    "recipes",
    "refresh_penalties",
    "register_method",
    "register_plan",
    "registry",
    "regularizers",
    "report",
    "strip",
    "structures",
]

if keras.backend.backend() == "tensorflow":
    __all__ += sorted([*_LAZY_MODULES, *_LAZY_ATTRIBUTES])
