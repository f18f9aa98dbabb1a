import numpy as np
import pytest

from tf_reweight import budget, structures


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
    # Relative to its layer's RMS, half of the first kernel's filters score
    # about 1.4 and all of the second's about 1: ranked alone, the first
    # kernel would take the whole budget and the second get its one filter on
    # top of it.
    first = rng.normal(size=(3, 3, 4, 16))
    first[..., 8:] = 0.0
    second = rng.normal(size=(3, 3, 4, 16))
    f = structures.get("filter")
    keep = budget.allocate([f, f], [first, second], 1 - 4 / 32)
    assert keep == [3, 1]  # four filters in all, as the target says
