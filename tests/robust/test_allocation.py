"""Tests for `tf_reweight.robust.allocation`: ratios that meet a global budget."""

import numpy as np
import pytest

from tf_reweight.robust.allocation import allocate_ratios, default_max_ratio, mrs_ratios
from tf_reweight.robust.sensitivity import SensitivityTable

SIZES = {"c1": 1_000_000, "c2": 3_000_000, "fc1": 2_000_000, "fc2": 7_919}


def _pruned(ratios, sizes):
    counts = {n: ratios[n] * sizes[n] for n in sizes}
    for count in counts.values():
        assert count == pytest.approx(round(count), abs=1e-6)
    return sum(round(c) for c in counts.values())


SCORES = {"c1": 3.0, "c2": 0.5, "fc1": 1.0, "fc2": 2.0}


@pytest.mark.parametrize("target", [0.3, 0.77, 0.9, 0.999])
def test_allocation_meets_budget_exactly(target):
    ratios = allocate_ratios(SCORES, SIZES, target, max_ratio=1.0)
    total = sum(SIZES.values())
    assert total - _pruned(ratios, SIZES) == round((1 - target) * total)


def test_unclipped_allocation_follows_formula():
    ratios = allocate_ratios(SCORES, SIZES, 0.3, temperature=0.5)
    s = {n: (v - 0.5) / 2.5 for n, v in SCORES.items()}  # Min-max normalized.
    weight = {n: np.exp(-v / 0.5) for n, v in s.items()}
    scale = 0.3 * sum(SIZES.values()) / sum(weight[n] * SIZES[n] for n in SIZES)
    for name in SIZES:
        assert ratios[name] == pytest.approx(scale * weight[name], abs=1 / SIZES[name])


def test_allocation_clips_and_keeps_sensitive_layers_denser():
    ratios = allocate_ratios(SCORES, SIZES, 0.9, min_ratio=0.5, max_ratio=0.95)
    total = sum(SIZES.values())
    assert total - _pruned(ratios, SIZES) == round(0.1 * total)
    assert all(0.5 <= r <= 0.95 for r in ratios.values())
    order = sorted(SCORES, key=SCORES.get)
    assert [ratios[n] for n in order] == sorted(ratios.values(), reverse=True)
    assert ratios["c2"] == 0.95


def test_allocation_with_equal_scores_is_uniform():
    ratios = allocate_ratios(dict.fromkeys("abc", 1.0), dict.fromkeys("abc", 1000), 0.6)
    assert ratios == dict.fromkeys("abc", 0.6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target=1.0), "target"),
        (dict(target=0.0), "target"),
        (dict(min_ratio=0.6), "cannot meet"),
        (dict(max_ratio=0.4), "cannot meet"),
        (dict(temperature=0.0), "temperature"),
        (dict(sizes={"a": 10}), "same layer names"),
        (dict(sizes={"a": 10, "b": 0}), "positive integer"),
        (dict(scores={"a": 1.0, "b": float("nan")}), "finite"),
        (dict(sizes={"a": 1, "b": 1}, target=0.5, max_ratio=0.6), "whole-weight"),
    ],
)
def test_allocation_rejects_bad_input(kwargs, match):
    args = dict(scores={"a": 1.0, "b": 2.0}, sizes={"a": 10, "b": 10}, target=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        allocate_ratios(**args)


def test_mrs_ratios_caps_layers_at_the_default_max_ratio():
    table = SensitivityTable(SCORES, SIZES, 1.0, "prune")
    ratios = mrs_ratios(table, "16x")
    cap = default_max_ratio(1 - 1 / 16)
    assert all(r <= cap + 1e-12 for r in ratios.values())
    total = sum(SIZES.values())
    assert total - _pruned(ratios, SIZES) == round(total / 16)
