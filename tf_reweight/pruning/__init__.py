"""Operations on a model: wrapping (`apply`), the wrapper that holds the
pruning state, hard pruning, sparsity reports, BatchNorm handling and `strip`.

The functions of `tf_reweight.pruning.operations` are re-exported here, so that
``tf_reweight.pruning.hard_prune`` and ``tf_reweight.pruning.wrappers`` read as
before.
"""

from tf_reweight.pruning.operations import (
    align_batchnorm,
    allocate,
    calibrate_penalties,
    calibrated_penalty,
    channel_groups,
    couplings,
    hard_prune,
    refresh_penalties,
    require_wrappers,
    selected_masks,
    set_sparsity,
    wrappers,
)

__all__ = [
    "align_batchnorm",
    "allocate",
    "calibrate_penalties",
    "calibrated_penalty",
    "channel_groups",
    "couplings",
    "hard_prune",
    "refresh_penalties",
    "require_wrappers",
    "selected_masks",
    "set_sparsity",
    "wrappers",
]
