"""Training plans: the learning rate, refresh milestones, progressive stages."""

import dataclasses
import math

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.callbacks.admm_update import ADMMUpdate
from tf_reweight.callbacks.reweight import Reweight
from tf_reweight.training import plans, recipes
from tf_reweight.training.plans import Plan, get_plan, register_plan, two_phase_lr

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 6)).astype("float32")
Y = RNG.integers(0, 3, size=16)


def _dense():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="d1"),
            keras.layers.Dense(3, name="d2"),
        ]
    )


class Probe(keras.callbacks.Callback):
    """Per epoch: whether alpha was refreshed at its start; per step: state."""

    def __init__(self):
        super().__init__()
        self.refreshed, self.targets, self.masked, self.kept = [], [], [], []
        self._last = None

    def _kernel(self):
        return tfr.pruning.wrappers(self.model)[0]

    def on_epoch_begin(self, epoch, logs=None):
        w = self._kernel()
        pk = w.pruned_kernels[0]
        if pk.penalty is None or w.is_pruned:
            return
        step = int(keras.ops.convert_to_numpy(pk.penalty.refreshed_at))
        if step != self._last:
            self.refreshed.append(epoch)
            self._last = step
        if hasattr(pk.penalty, "alpha"):
            self.kept.append(sum(int(np.sum(a == 0)) for a in self._all("alpha")))

    def _all(self, attr):
        """The values of ``attr`` of every pruned kernel's penalty or itself."""
        return [
            keras.ops.convert_to_numpy(
                getattr(pk.penalty if attr == "alpha" else pk, attr)
            )
            for w in tfr.pruning.wrappers(self.model)
            for pk in w.pruned_kernels
        ]

    def on_train_batch_end(self, batch, logs=None):
        w = self._kernel()
        self.targets.append(float(keras.ops.convert_to_numpy(w.sparsity)))
        masks = self._all("mask")
        zeros = sum(int(np.sum(m == 0)) for m in masks)
        self.masked.append(zeros / sum(m.size for m in masks))


def _prune(probe=None, **kwargs):
    options = dict(target="4x", batch_size=16, verbose=0, recalibrate_bn=None)
    options.update(kwargs)
    return recipes.prune(
        _dense(), (X, Y), callbacks=[probe] if probe else None, **options
    )


def _old_two_phase_lr(phase1_epochs, phase2_epochs, lr=1e-3, final_lr=1e-5):
    """The schedule `prune` used before plans, verbatim."""

    def schedule(epoch, current=None):
        if epoch < phase1_epochs or phase2_epochs <= 1:
            return lr
        p = min((epoch - phase1_epochs) / (phase2_epochs - 1), 1.0)
        return final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * p))

    return schedule


@pytest.mark.parametrize("phases", [(8, 8), (2, 3), (0, 5), (3, 1), (4, 0), (0, 0)])
def test_lr_without_milestones_equals_the_old_schedule_exactly(phases):
    new, old = two_phase_lr(*phases, 3e-3, 2e-5), _old_two_phase_lr(*phases, 3e-3, 2e-5)
    assert [new(e) for e in range(sum(phases) + 3)] == [
        old(e) for e in range(sum(phases) + 3)
    ]


def test_lr_restarts_at_each_milestone_then_decays_in_phase_2():
    schedule = two_phase_lr(
        5, 3, 1e-3, 1e-5, milestones=[3], restart_floor=0.1, retrain_lr=5e-4
    )
    # Hand-computed: periods [0, 3) and [3, 5), cosine from 1e-3 to 1e-4;
    # then 5e-4 -> 1e-5 over 3 epochs, and 1e-5 after.
    expected = [1e-3, 5.5e-4, 1e-4, 1e-3, 1e-4, 5e-4, 2.55e-4, 1e-5, 1e-5]
    np.testing.assert_allclose([schedule(e) for e in range(9)], expected, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"milestones": [5]}, "milestones=[5]"),
        ({"milestones": [0]}, "milestones=[0]"),
        ({"restart_floor": 1.5}, "restart_floor=1.5"),
        ({"retrain_lr": -1.0}, "retrain_lr=-1.0"),
        ({"lr": 0.0}, "lr=0.0"),
    ],
)
def test_lr_refuses_bad_arguments(kwargs, received):
    args = {"phase1_epochs": 5, "phase2_epochs": 2, **kwargs}
    with pytest.raises(ValueError, match=received.replace("[", r"\[")):
        two_phase_lr(**args)


def test_registry_names_read_only_view_and_registration():
    assert {"default", "paper", "progressive"} <= set(plans.PLANS)
    paper = get_plan("paper")
    assert (paper.phase1_epochs, paper.retrain_epochs, paper.refresh_every) == (
        150,
        90,
        10,
    )
    assert paper.milestones(150) == tuple(range(10, 150, 10))
    assert paper.milestones(25) == (10, 20) and paper.milestones(3) == ()
    assert get_plan("default").milestones(8) is None
    assert get_plan("default") == Plan("default")
    with pytest.raises(ValueError, match=r"'default', 'paper'.*schedule='nope'"):
        get_plan("nope")
    with pytest.raises(TypeError):
        plans.PLANS["x"] = Plan("x")
    with pytest.raises(ValueError, match="already registered"):
        register_plan(Plan("paper"))
    short = dataclasses.replace(paper, name="short_test_plan", phase1_epochs=20)
    try:
        assert register_plan(short) is short
        assert get_plan("short_test_plan").milestones(20) == (10,)
        assert plans.PLANS["short_test_plan"] is short
    finally:
        plans._PLANS.pop("short_test_plan")


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"name": "two words"}, "name='two words'"),
        ({"phase1_epochs": -1}, "phase1_epochs=-1"),
        ({"refresh_every": 0}, "refresh_every=0"),
        ({"restart_floor": -0.1}, "restart_floor=-0.1"),
        ({"stages": 1}, "stages=1"),
        ({"stages": (4, 2)}, r"stages=\(4, 2\)"),
        ({"stages": "3"}, "stages='3'"),
        ({"retrain_lr_factor": 0}, "retrain_lr_factor=0"),
    ],
)
def test_plan_refuses_bad_fields(kwargs, received):
    with pytest.raises(ValueError, match=received):
        Plan(**{"name": "p", **kwargs})


def test_stage_rates_geometric_or_given_and_their_errors():
    three = Plan("p", stages=3)
    np.testing.assert_allclose(
        three.stage_rates("630x", 12), [630 ** (1 / 3), 630 ** (2 / 3), 630], rtol=1e-9
    )
    assert Plan("p", stages=(50, 200, 630)).stage_rates("630x", 3) == (50, 200, 630)
    assert Plan("p").stage_rates("630x", 3) is None
    with pytest.raises(ValueError, match="ending at 630"):
        Plan("p", stages=(50, 200)).stage_rates("630x", 4)
    with pytest.raises(ValueError, match="phase1_epochs=4"):
        three.stage_rates("630x", 4)
    with pytest.raises(ValueError, match="one target"):
        three.stage_rates({"d1": "4x"}, 3)


def test_with_milestones_changes_only_every_epoch_reweighting():
    admm, every2 = ADMMUpdate(every=100, unit="step"), Reweight(every=2)
    out = plans.with_milestones([Reweight(), admm, every2], (10, 20))
    assert out[0].milestones == (10, 20) and out[1] is admm and out[2] is every2
    assert plans.with_milestones([admm], None) == [admm]


def test_default_schedule_is_the_old_prune():
    implicit, named, given = Probe(), Probe(), Probe()
    a = _prune(implicit)
    b = _prune(named, schedule="default")
    c = _prune(given, phase1_epochs=8, retrain_epochs=8)
    for other in (b, c):
        for wa, wo in zip(
            a.model.get_weights(), other.model.get_weights(), strict=True
        ):
            np.testing.assert_allclose(wa, wo, rtol=0, atol=1e-6)
    old = _old_two_phase_lr(8, 8)
    np.testing.assert_allclose(
        a.history["learning_rate"], [old(e) for e in range(16)], rtol=1e-6
    )
    assert implicit.refreshed == named.refreshed == list(range(8))
    assert a.epochs == 16 and tfr.report(a.model).sparsity == pytest.approx(0.75)


def test_paper_schedule_on_a_tiny_budget():
    probe = Probe()
    result = _prune(probe, schedule="paper", phase1_epochs=3, retrain_epochs=1)
    # Milestones stay every 10 epochs: none within 3, so one period of decay.
    assert probe.refreshed == [0]
    np.testing.assert_allclose(
        result.history["learning_rate"], [1e-3, 5.5e-4, 1e-4, 1e-3], rtol=1e-6
    )
    assert tfr.report(result.model).sparsity == pytest.approx(0.75)


@pytest.mark.parametrize("method", ["reweighted", "group_lasso"])
def test_plan_milestones_refresh_and_restart_the_learning_rate(method):
    probe = Probe()
    plan = Plan(
        "every2", phase1_epochs=5, retrain_epochs=2, refresh_every=2, restart_floor=0.1
    )
    result = _prune(probe, method=method, schedule=plan)
    # Hand-computed: periods [0, 2), [2, 4), [4, 5); retraining 1e-3 -> 1e-5.
    expected = [1e-3, 1e-4, 1e-3, 1e-4, 1e-3, 1e-3, 1e-5]
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-6)
    # Reweighting refreshes at the milestones; group lasso has no refresh.
    assert probe.refreshed == ([0, 2, 4] if method == "reweighted" else [0])


def test_progressive_stages_hold_their_target_and_bound_reweighting():
    probe = Probe()
    plan = Plan("staged", phase1_epochs=6, retrain_epochs=1, stages=(2, 4, 8))
    result = _prune(probe, target="8x", batch_size=8, schedule=plan, bounded=True)
    # Two steps per epoch, two epochs (4 steps) per stage. Step table: the
    # current target after each step, and the masked fraction.
    targets = [0.5] * 3 + [0.75] * 4 + [0.875] * 5 + [0.875] * 2
    masked = [0.0] * 3 + [0.5] * 4 + [0.75] * 4 + [0.875] * 3
    np.testing.assert_allclose(probe.targets, targets, atol=1e-6)
    np.testing.assert_allclose(probe.masked, masked, atol=1e-6)
    # Bounded: at each phase-1 epoch start, alpha = 0 exactly on the groups
    # the current stage keeps (of 6 * 16 + 16 * 3 = 144: 72, 36, then 18).
    assert probe.kept == [72, 72, 36, 36, 18, 18]
    assert tfr.report(result.model).sparsity == pytest.approx(0.875)


def test_bad_schedule_arguments_are_refused_before_training():
    dense = _dense()
    before = [w.copy() for w in dense.get_weights()]
    for kwargs, received in [
        ({"schedule": "nope"}, "schedule='nope'"),
        ({"schedule": 3}, "schedule=3"),
        ({"schedule": "progressive", "phase1_epochs": 4}, "phase1_epochs=4"),
        ({"schedule": "progressive", "method": "magnitude"}, "phase1_epochs=0"),
        ({"schedule": "paper", "retrain_epochs": -1}, "retrain_epochs=-1"),
        ({"batch_size": 0}, "batch_size=0"),
    ]:
        with pytest.raises(ValueError, match=received):
            recipes.prune(dense, (X, Y), verbose=0, **kwargs)
    for w, b in zip(dense.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
