"""tf_reweight: reweighted group-sparsity pruning for Keras 3.

Example:
>>> import tf_reweight as tfr
>>> pruned = tfr.apply(model, structure="filter", target="16x", penalty=1e-4)
>>> pruned.compile("adam", loss, metrics=["accuracy"])
>>> pruned.fit(x, y, epochs=8, callbacks=[tfr.Reweight(), tfr.HardPrune(6)])
>>> print(tfr.report(pruned))
>>> plain = tfr.strip(pruned)
"""

from tf_reweight import (
    admm,
    adversarial,
    batchnorm,
    budget,
    callbacks,
    data,
    layouts,
    models,
    mrpf,
    pruning,
    qat,
    quantization,
    recipes,
    robustness,
    sensitivity,
    structures,
)
from tf_reweight.admm import ADMMPenalty, ADMMUpdate
from tf_reweight.adversarial import AdversarialModel
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
from tf_reweight.robustness import evaluate_robustness
from tf_reweight.schedules import PolynomialSparsity, ProgressiveSparsity
from tf_reweight.sensitivity import allocate_ratios, module_robustness_sensitivity
from tf_reweight.sparsity import LayerSparsity, SparsityReport, report
from tf_reweight.structures import Structure
from tf_reweight.wrapper import PruningWrapper

__version__ = "0.1.0"

__all__ = [
    "AdversarialModel",
    "adversarial",
    "allocate_ratios",
    "evaluate_robustness",
    "module_robustness_sensitivity",
    "mrpf",
    "robustness",
    "sensitivity",
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
    "apply",
    "batchnorm",
    "budget",
    "callbacks",
    "data",
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
