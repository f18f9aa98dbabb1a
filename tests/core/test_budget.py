import math

import numpy as np
import pytest

from tf_reweight.core import budget, structures


@pytest.mark.parametrize(
    "target, expected", [(0.9, 0.9), ("100x", 0.99), ("50x", 0.98), (" 4X ", 0.75)]
)
def test_parse_target(target, expected):
    assert budget.parse_target(target) == pytest.approx(expected)


@pytest.mark.parametrize(
    "target", [0.0, 1.0, -0.1, 1.5, "0.5x", "1x", "ten", True, None]
)
def test_parse_target_rejects(target):
    with pytest.raises(ValueError, match="Received"):
        budget.parse_target(target)


def test_global_unstructured_budget_ranks_weights_across_layers():
    rng = np.random.default_rng(1)
    kernels = [rng.normal(size=(1, 1, 20, 30)), 1.5 * rng.normal(size=(1, 1, 30, 10))]
    s = structures.get("unstructured")
    keep = budget.allocate([s, s], kernels, 0.9)
    total = sum(k.size for k in kernels)
    assert sum(keep) == round(0.1 * total)
    # Global magnitude ranking: the threshold is the same in both layers.
    everything = np.sort(np.abs(np.concatenate([k.ravel() for k in kernels])))[::-1]
    threshold = everything[sum(keep) - 1]
    assert keep == [int((np.abs(k) >= threshold).sum()) for k in kernels]


def test_per_layer_budget_and_minimum_of_one_unit():
    kernels = [np.ones((3, 3, 4, 8)), np.ones((1, 1, 8, 2))]
    f = structures.get("filter")
    assert budget.allocate([f, f], kernels, [0.5, 0.99]) == [4, 1]


def test_fixed_structures_stay_out_of_the_global_pool():
    rng = np.random.default_rng(2)
    kernels = [rng.normal(size=(1, 1, 8, 8)), rng.normal(size=(1, 1, 8, 8))]
    keep = budget.allocate(
        [structures.get("2:4"), structures.get("unstructured")], kernels, 0.75
    )
    assert keep == [16, 16]


def test_rate():
    assert budget.rate(100, 4) == 25
    assert budget.rate(100, 0) == float("inf")


def test_global_structured_budget_is_scale_free_across_layers():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3, 3, 8, 16))
    kernels = [base, 50.0 * base]  # same filters, one layer at a much larger scale
    f = structures.get("filter")
    keep = budget.allocate([f, f], kernels, 0.75)
    assert keep == [4, 4]


def test_the_unit_every_kernel_keeps_counts_against_the_global_budget():
    rng = np.random.default_rng(4)
    # Without a floor, the first kernel's eight live filters outrank all of the
    # second's: ranked alone, the first kernel would take the whole budget and
    # the second get its one filter on top of it.
    first = rng.normal(size=(3, 3, 4, 16))
    first[..., 8:] = 0.0
    second = rng.normal(size=(3, 3, 4, 16))
    f = structures.get("filter")
    keep = budget.allocate([f, f], [first, second], 1 - 4 / 32, max_prune=1.0)
    assert keep == [3, 1]  # four filters in all, as the target says


def _filter_reference(kernels, sparsity, rule):
    """Keep counts of a global filter budget without floors, in plain NumPy."""
    scores, owner, sizes = [], [], []
    for i, w in enumerate(kernels):
        n = w.shape[0] * w.shape[1] * w.shape[2]
        energy = np.sum(np.square(w), axis=(0, 1, 2))
        if rule == "per_weight":
            s = energy / np.sum(np.square(w)) / n
        else:  # the former rule: unit RMS over kernel RMS
            s = np.sqrt(energy / n) / np.sqrt(np.mean(np.square(w)))
        s[np.argmax(s)] = np.inf  # every kernel keeps its best filter
        scores.append(s)
        owner.append(np.full(w.shape[3], i))
        sizes.append(np.full(w.shape[3], n))
    scores, owner, sizes = map(np.concatenate, (scores, owner, sizes))
    order = np.argsort(-scores, kind="stable")
    budget_ = (1 - sparsity) * sum(w.size for w in kernels)
    taken = int(np.argmin(np.abs(np.cumsum(sizes[order]) - budget_))) + 1
    return np.bincount(owner[order[:taken]], minlength=len(kernels)).tolist()


def test_units_rank_by_importance_per_weight_removed():
    rng = np.random.default_rng(5)
    # A narrow stem (8 filters of 9 weights) and a wide layer (32 filters of 64
    # weights), both at their own scale: a wide filter frees 7x the weights
    # for a quarter of the share of its layer.
    kernels = [0.3 * rng.normal(size=(3, 3, 1, 8)), rng.normal(size=(1, 1, 64, 32))]
    f = structures.get("filter")
    keep = budget.allocate([f, f], kernels, 0.75, max_prune=1.0)
    assert keep == _filter_reference(kernels, 0.75, "per_weight")
    assert keep == [8, 7]  # the stem stays whole, the wide layer pays
    assert keep != _filter_reference(kernels, 0.75, "rms")
    # Scale-free: rescaling one layer changes nothing.
    scaled = [100.0 * kernels[0], kernels[1]]
    assert budget.allocate([f, f], scaled, 0.75, max_prune=1.0) == keep


def _kept_weights(structure, kernels, keep):
    return sum(
        int(np.sum(structure.project(w, k))) for w, k in zip(kernels, keep, strict=True)
    )


def test_no_kernel_loses_more_than_max_prune_and_the_target_is_still_met():
    rng = np.random.default_rng(6)
    shapes = [(3, 3, 1, 32), (3, 3, 32, 64), (1, 1, 64, 128), (1, 1, 128, 64)]
    kernels = [rng.normal(size=s) for s in shapes]
    f = structures.get("filter")
    sparsity = 0.75
    budget_ = (1 - sparsity) * sum(w.size for w in kernels)
    free = budget.allocate([f] * 4, kernels, sparsity, max_prune=1.0)
    # Without a floor the largest kernel, whose filters are the cheapest per
    # weight, keeps only its best filter.
    assert free[1] == 1
    for max_prune in (0.8, 0.9):
        keep = budget.allocate([f] * 4, kernels, sparsity, max_prune=max_prune)
        for k, s in zip(keep, shapes, strict=True):
            assert s[3] - k <= max_prune * s[3]
        # Met as exactly as the units allow: within half the largest unit.
        assert abs(_kept_weights(f, kernels, keep) - budget_) <= 288 / 2
    # Per-kernel overrides; None takes the default.
    keep = budget.allocate([f] * 4, kernels, sparsity, max_prune=[None, 0.75, 1.0, 0.5])
    assert keep[1] >= 16 and keep[3] >= 32
    assert 32 - keep[0] <= budget.DEFAULT_MAX_PRUNE * 32
    assert abs(_kept_weights(f, kernels, keep) - budget_) <= 288 / 2


def test_the_default_floor_relaxes_to_targets_above_it():
    rng = np.random.default_rng(7)
    kernels = [rng.normal(size=(3, 3, 4, 40)), rng.normal(size=(1, 1, 40, 80))]
    f = structures.get("filter")
    sparsity = (1 + budget.DEFAULT_MAX_PRUNE) / 2
    keep = budget.allocate([f, f], kernels, sparsity)
    kept = _kept_weights(f, kernels, keep)
    total = sum(w.size for w in kernels)
    assert abs(kept - (1 - sparsity) * total) <= 40 / 2


def test_unreachable_floors_raise():
    kernels = [np.ones((3, 3, 4, 16)), np.ones((1, 1, 16, 32))]
    f = structures.get("filter")
    with pytest.raises(ValueError, match="floors.*Received: max_prune=0.5"):
        budget.allocate([f, f], kernels, 0.75, max_prune=0.5)
    with pytest.raises(ValueError, match="Received"):
        budget.allocate([f, f], kernels, 0.75, max_prune=[0.5, 0.6])


@pytest.mark.parametrize("max_prune", [0.0, 1.5, -1, True, "0.5", [0.5], [0.5] * 3])
def test_malformed_max_prune_is_rejected(max_prune):
    kernels = [np.ones((3, 3, 4, 16)), np.ones((1, 1, 16, 32))]
    f = structures.get("filter")
    with pytest.raises(ValueError, match="Received: max_prune"):
        budget.allocate([f, f], kernels, 0.5, max_prune=max_prune)


def test_unstructured_stays_global_magnitude_pruning_without_a_floor():
    rng = np.random.default_rng(8)
    # The second layer's weights are all tiny: global magnitude pruning takes
    # all but one of them, past any default floor.
    kernels = [rng.normal(size=(1, 1, 20, 30)), 1e-3 * rng.normal(size=(1, 1, 30, 10))]
    s = structures.get("unstructured")
    keep = budget.allocate([s, s], kernels, 0.7)
    assert keep == [269, 1]
    # An explicit floor applies to single weights too.
    keep = budget.allocate([s, s], kernels, 0.7, max_prune=0.9)
    assert keep == [240, 30]


def test_edge_blocks_count_the_weights_they_hold():
    rng = np.random.default_rng(9)
    # GEMM views 9 x 32 and 64 x 64: the first kernel's last row of 4x4
    # tiles holds one row of weights, not four.
    kernels = [rng.normal(size=(3, 3, 1, 32)), rng.normal(size=(1, 1, 64, 64))]
    b = structures.get("block:4x4")
    keep = budget.allocate([b, b], kernels, 0.75, max_prune=1.0)
    total = sum(w.size for w in kernels)
    assert abs(_kept_weights(b, kernels, keep) - 0.25 * total) <= 16 / 2


def test_block_projection_keeps_the_weights_the_budget_counted_at_the_edges():
    # Kernels whose GEMM sides are not multiples of the tile have partial edge
    # blocks; the projection must rank them as the budget does.
    rng = np.random.default_rng(3)
    block = structures.get("block:4x4")
    kernels = [
        rng.normal(size=(3, 3, 3, 18)).astype("float32"),
        rng.normal(size=(1, 1, 30, 10)).astype("float32"),
        rng.normal(size=(5, 5, 1, 22)).astype("float32"),
    ]
    keep = budget.allocate([block] * 3, kernels, 0.75)
    kept = sum(
        int(block.project(k, n).sum()) for k, n in zip(kernels, keep, strict=True)
    )
    total = sum(k.size for k in kernels)
    assert abs(kept - 0.25 * total) <= 16


def _coupled_kept(kernels, keep, coupling):
    """NumPy reference: weights kept, rows reading removed filters excluded."""
    f = structures.get("filter")
    masks = [f.project(k, n) for k, n in zip(kernels, keep, strict=True)]
    producer, consumer, repeat = coupling
    removed = np.flatnonzero(~masks[producer].any(axis=(0, 1, 2)))
    filters = kernels[producer].shape[3]
    rows = [c + filters * r for c in removed for r in range(repeat)]
    masks[consumer][:, :, rows, :] = 0
    return int(sum(np.count_nonzero(m) for m in masks))


@pytest.mark.parametrize("repeat", [1, 4])
def test_coupled_filters_count_the_rows_they_free(repeat):
    rng = np.random.default_rng(3)
    f = structures.get("filter")
    kernels = [
        rng.normal(size=(3, 3, 16, 32)),
        rng.normal(size=(3, 3, 32 * repeat, 16)),
    ]
    coupling = (0, 1, repeat)
    plain = budget.allocate([f, f], kernels, 0.75)
    keep = budget.allocate([f, f], kernels, 0.75, couplings=[coupling])
    total = sum(k.size for k in kernels)
    kept = _coupled_kept(kernels, keep, coupling)
    # The budget is met on the weights really kept, as closely as a unit allows.
    assert abs(kept - 0.25 * total) <= kernels[1][:, :, :, 0].size
    # Without coupling the same budget keeps fewer filters: their rows were
    # counted as kept although they read nothing.
    assert sum(keep) > sum(plain)
    assert _coupled_kept(kernels, plain, coupling) < kept


def test_couplings_of_other_structures_or_misfit_rows_are_ignored():
    rng = np.random.default_rng(4)
    kernels = [rng.normal(size=(1, 1, 8, 16)), rng.normal(size=(1, 1, 16, 8))]
    u, f = structures.get("unstructured"), structures.get("filter")
    assert budget.allocate([u, f], kernels, 0.5, couplings=[(0, 1, 1)]) == (
        budget.allocate([u, f], kernels, 0.5)
    )
    assert budget.allocate([f, f], kernels, 0.5, couplings=[(0, 1, 3)]) == (
        budget.allocate([f, f], kernels, 0.5)
    )


def _filters(structure, view, keep):
    return structure.project(view, keep).any(axis=(0, 1, 2))


def test_a_group_keeps_and_removes_the_same_filters_in_every_kernel():
    rng = np.random.default_rng(5)
    f = structures.get("filter")
    # Two kernels writing one 16-channel stream, read by a third; a fourth
    # kernel elsewhere in the model.
    kernels = [
        rng.normal(size=(3, 3, 4, 16)),
        rng.normal(size=(1, 1, 16, 16)) * 10.0,  # another scale: shares count
        rng.normal(size=(1, 1, 16, 24)),
        rng.normal(size=(3, 3, 8, 32)),
    ]
    coupling = ((0, 1), 2, 1)
    keep, views = budget.select(
        [f] * 4, kernels, 0.8, couplings=[coupling], groups=[(0, 1)]
    )
    assert keep[0] == keep[1] < 16
    kept = [_filters(f, views[i], keep[i]) for i in range(4)]
    np.testing.assert_array_equal(kept[0], kept[1])
    # The joint unit ranks by the sum of the kernels' shares: a filter strong
    # in only one kernel can outrank one that is middling in both.
    shares = [np.square(k).sum(axis=(0, 1, 2)) / np.square(k).sum() for k in kernels]
    joint = (
        shares[0]
        + shares[1]
        + np.square(kernels[2]).sum(axis=(0, 1, 3)) / (np.square(kernels[2]).sum())
    )
    assert set(np.flatnonzero(kept[0])) == set(np.argsort(-joint)[: keep[0]])
    # The budget is met on the weights really kept: removed channels free the
    # reader's rows.
    masks = [f.project(views[i], keep[i]) for i in range(4)]
    masks[2][:, :, ~kept[0], :] = 0
    total = sum(k.size for k in kernels)
    unit = 3 * 3 * 4 + 16 + 24
    assert abs(sum(np.count_nonzero(m) for m in masks) - 0.2 * total) <= unit
    assert (
        budget.allocate([f] * 4, kernels, 0.8, couplings=[coupling], groups=[(0, 1)])
        == keep
    )


@pytest.mark.parametrize(
    "writers, sparsity, floor", [(2, 0.5, 16), (2, 0.75, 8), (2, 0.8, 8), (4, 0.5, 23)]
)
def test_a_stream_keeps_more_the_more_kernels_write_it(
    writers, sparsity, floor, monkeypatch
):
    rng = np.random.default_rng(7)
    f = structures.get("filter")
    kernels = [rng.normal(size=(3, 3, 8, 32)) for _ in range(writers)]
    kernels += [
        rng.normal(size=(3, 3, 32, 32)),  # reads the stream
        rng.normal(size=(1, 1, 8, 64)),
    ]
    weak = np.where(np.arange(32) < 4, 1.0, 0.1)  # 4 strong stream channels
    for i in range(writers):
        kernels[i] *= weak
    kernels[writers] *= weak[:, None]
    stream = tuple(range(writers))
    args = ([f] * len(kernels), kernels, sparsity)
    groups = {"couplings": [(stream, writers, 1)], "groups": [stream]}
    keep = budget.allocate(*args, **groups)
    # The floor: max((1 - sparsity) ** (2 / writers), STREAM_MIN_KEEP) of the
    # 32 channels, rounded up.
    share = budget.stream_max_prune(sparsity, writers)
    assert math.ceil((1 - share) * 32 - 1e-9) == floor
    assert keep[:writers] == [floor] * writers
    reader, other = keep[writers:]
    kept = writers * 72 * floor + 9 * floor * reader + 8 * other
    total = sum(k.size for k in kernels)
    assert abs(kept - (1 - sparsity) * total) <= writers * 72 + 9 * 32
    # Ranked freely, the stream would keep fewer channels.
    monkeypatch.setattr(budget, "stream_max_prune", lambda s, w: 1.0)
    free = budget.allocate(*args, max_prune=1.0, **groups)
    assert free[:writers] == [free[0]] * writers and free[0] < floor


def test_a_stream_floor_that_would_break_the_budget_gives_way():
    rng = np.random.default_rng(7)
    f = structures.get("filter")
    # No reader frees rows, so keeping half the stream keeps half its weights.
    kernels = [
        rng.normal(size=(3, 3, 64, 32)),
        rng.normal(size=(3, 3, 64, 32)),
        rng.normal(size=(1, 1, 8, 32)),
    ]
    keep = budget.allocate([f] * 3, kernels, 0.75, groups=[(0, 1)])
    assert keep[0] == keep[1] < 16
    kept = 2 * 576 * keep[0] + 8 * keep[2]
    assert abs(kept - 0.25 * sum(k.size for k in kernels)) <= 2 * 576


def test_groups_of_other_structures_or_widths_are_ranked_alone():
    rng = np.random.default_rng(6)
    f, u = structures.get("filter"), structures.get("unstructured")
    kernels = [rng.normal(size=(1, 1, 8, 16)), rng.normal(size=(1, 1, 16, 8))]
    for structs in ([u, f], [f, f]):  # unstructured, or 16 against 8 filters
        alone = budget.select(structs, kernels, 0.5)
        grouped = budget.select(structs, kernels, 0.5, groups=[(0, 1)])
        assert grouped[0] == alone[0]
        assert all(a is b for a, b in zip(grouped[1], alone[1], strict=True))


def test_partial_selection_matches_a_full_stable_sort(monkeypatch):
    """`top_k` and the global order pick what a stable descending sort picks."""
    from tf_reweight.core.group_structures import top_k

    rng = np.random.default_rng(0)
    for n, keep in [(1, 0), (1, 1), (50, 7), (1000, 999), (1000, 500), (64, 64)]:
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        expected = np.zeros(n, bool)
        expected[np.argsort(-scores, kind="stable")[:keep]] = True
        np.testing.assert_array_equal(top_k(scores, keep), expected)
    scores = np.array([1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(top_k(scores, 3), [True, True, True, False])
    # Global budgets with ties across the threshold, against full sorts.
    kernels = [rng.normal(size=(3, 3, 8, 16)), rng.normal(size=(1, 1, 16, 32))]
    kernels[0][0, 0, :4] = 0.5
    kernels[1] = np.round(kernels[1], 1)
    single = [structures.get("unstructured")] * 2
    flat = np.concatenate([np.abs(k).ravel() for k in kernels])
    owner = np.repeat([0, 1], [k.size for k in kernels])
    for sparsity in (0.3, 0.75, 0.97):
        # Global magnitude pruning: the best units whose count is nearest
        # the budget, ties to the earlier kernel.
        taken = int(
            np.argmin(np.abs(np.arange(1, flat.size + 1) - (1 - sparsity) * flat.size))
        )
        best = np.argsort(-flat, kind="stable")[: taken + 1]
        expected = np.bincount(owner[best], minlength=2).tolist()
        assert budget.allocate(single, kernels, sparsity) == expected
    mixed = [
        [structures.get(s) for s in names]
        for names in (["filter", "unstructured"], ["block:4x4", "filter"])
    ]
    found = [budget.allocate(c, kernels, s) for c in mixed for s in (0.3, 0.75, 0.97)]
    monkeypatch.setattr(
        budget,
        "_descending",
        lambda scores, *_args, **_kw: np.argsort(-scores, kind="stable"),
    )
    expected = [
        budget.allocate(c, kernels, s) for c in mixed for s in (0.3, 0.75, 0.97)
    ]
    assert found == expected
