"""ADMM pruning in one namespace (``tf_reweight.admm``).

The penalty and its per-kernel Z/U step live in `tf_reweight.methods.admm`;
the whole-model steps and the `ADMMUpdate` callback in
`tf_reweight.callbacks.admm_update`. This module gathers them.
"""

from tf_reweight.callbacks.admm_update import ADMMUpdate, residual, update
from tf_reweight.methods.admm import ADMMPenalty

__all__ = ["ADMMPenalty", "ADMMUpdate", "residual", "update"]
