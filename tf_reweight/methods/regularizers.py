"""All sparsity penalties in one namespace (``tf_reweight.regularizers``).

Each penalty lives in its own module (`penalty`, `reweighted`,
`group_lasso`); this module gathers them for callers that want one import.
"""

from tf_reweight.methods.group_lasso import GroupLassoPenalty
from tf_reweight.methods.penalty import KernelPenalty, get, group_norms
from tf_reweight.methods.reweighted import ReweightedGroupPenalty

__all__ = [
    "GroupLassoPenalty",
    "KernelPenalty",
    "ReweightedGroupPenalty",
    "get",
    "group_norms",
]
