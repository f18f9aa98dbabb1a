"""Named training schedules (plans) for `tf_reweight.training.recipes.prune`.

A `Plan` says how long each phase of a pruning run lasts and how it is
paced: the epochs of penalized training (phase 1) and of masked retraining
(phase 2), the refresh milestones of reweighting, the learning rate (restarted
at each refresh in phase 1, then a cosine decay in phase 2) and optional
progressive targets within phase 1. ``prune(..., schedule=NAME)`` runs a
registered plan; adding one is one `register_plan` call, like the methods of
`tf_reweight.training.registry`.

Registered plans:

- ``"default"``: 8 + 8 epochs, alpha refreshed every epoch, constant learning
  rate then a cosine decay (what `prune` always did).
- ``"paper"``: the long schedule of the reweighted-pruning paper: 150
  reweighted epochs with alpha refreshed every 10 epochs and the learning
  rate restarted at each refresh (cosine to a tenth of it within each
  period), then 90 epochs of masked retraining with a cosine decay.
- ``"progressive"``: 12 + 8 epochs with three progressive targets in phase 1
  (geometric rates ending at the target, such as 8.6x, 73.5x, 630x),
  refreshed every epoch.

Example:
>>> import dataclasses
>>> short = dataclasses.replace(get_plan("paper"), name="short", phase1_epochs=30)
>>> register_plan(short)
>>> recipes.prune(dense, (x, y), target="50x", schedule="short")
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import keras

from tf_reweight.callbacks import ProgressiveSparsity, Reweight, ScheduledPruning
from tf_reweight.core.budget import parse_target
from tf_reweight.core.checks import (
    check_bool,
    check_int,
    check_milestones,
    check_number,
)


def _cosine(start: float, end: float, index: int, length: int) -> float:
    """Cosine from ``start`` (at index 0) to ``end`` (at ``length - 1``)."""
    if length <= 1 or start == end:
        return start
    p = min(index / (length - 1), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * p))


def two_phase_lr(
    phase1_epochs: int,
    phase2_epochs: int,
    lr: float = 1e-3,
    final_lr: float = 1e-5,
    *,
    milestones: Sequence[int] | None = None,
    restart_floor: float = 1.0,
    retrain_lr: float | None = None,
) -> Callable[..., float]:
    """The learning rate of a pruning run, as a function of the epoch.

    Phase 1 is split into periods at the ``milestones`` (the refresh epochs
    of reweighting); in each period the rate starts at ``lr`` and decays by a
    cosine to ``lr * restart_floor`` at the period's last epoch. With the
    default ``restart_floor=1`` phase 1 is constant at ``lr``. Phase 2 decays
    by a cosine from ``retrain_lr`` to ``final_lr`` at its last epoch, and
    stays there after it.

    Args:
        phase1_epochs: Epochs of phase 1.
        phase2_epochs: Epochs of phase 2.
        lr: The rate at the start of each phase-1 period.
        final_lr: The rate at the end of phase 2.
        milestones: None, or the increasing epochs (in ``(0,
            phase1_epochs)``) at which the rate restarts.
        restart_floor: The fraction of ``lr`` each phase-1 period ends at,
            in ``[0, 1]``.
        retrain_lr: The rate at the start of phase 2; None for ``lr``.

    Returns:
        A function of the epoch for `keras.callbacks.LearningRateScheduler`.

    Raises:
        ValueError: For a bad argument.

    Example:
    >>> schedule = two_phase_lr(20, 10, 1e-3, milestones=[10], restart_floor=0.1)
    >>> [round(schedule(e), 6) for e in (0, 9, 10, 20, 29)]
    [0.001, 0.0001, 0.001, 0.001, 1e-05]
    """
    phase1_epochs = check_int("phase1_epochs", phase1_epochs)
    phase2_epochs = check_int("phase2_epochs", phase2_epochs)
    lr = check_number("lr", lr, 0.0, strict=True)
    final_lr = check_number("final_lr", final_lr, 0.0)
    floor = check_number("restart_floor", restart_floor, 0.0, high=1.0)
    start2 = lr if retrain_lr is None else check_number("retrain_lr", retrain_lr, 0.0)
    milestones = check_milestones(milestones) or ()
    if milestones and milestones[-1] >= phase1_epochs:
        raise ValueError(
            "`milestones` must lie within phase 1. Expected milestones < "
            f"phase1_epochs={phase1_epochs}. Received: milestones={list(milestones)}"
        )
    bounds = (0, *milestones, phase1_epochs)

    def schedule(epoch, current=None):
        if epoch < phase1_epochs:
            k = max(i for i, b in enumerate(bounds[:-1]) if b <= epoch)
            return _cosine(lr, lr * floor, epoch - bounds[k], bounds[k + 1] - bounds[k])
        return _cosine(start2, final_lr, epoch - phase1_epochs, phase2_epochs)

    return schedule


def _check_stages(stages):
    """None, a number of stages (>= 2), or a tuple of increasing rates."""
    if stages is None:
        return None
    if isinstance(stages, Sequence) and not isinstance(stages, str):
        rates = tuple(check_number("stages", r, 1.0, strict=True) for r in stages)
        if len(rates) >= 2 and list(rates) == sorted(set(rates)):
            return rates
    elif isinstance(stages, numbers.Integral) and not isinstance(stages, bool):
        if stages >= 2:
            return int(stages)
    raise ValueError(
        "`stages` must be None, a number of progressive stages >= 2, or "
        "increasing compression rates such as (50, 200, 630). Received: "
        f"stages={stages!r}"
    )


@dataclass(frozen=True)
class Plan:
    """A named training schedule for `tf_reweight.training.recipes.prune`.

    Attributes:
        name: The name ``prune(schedule=...)`` and ``--schedule`` take.
        phase1_epochs: Epochs of penalized training, unless `prune` is given
            its own.
        retrain_epochs: Epochs of masked retraining, unless `prune` is given
            its own.
        refresh_every: Epochs between the refresh milestones of reweighting
            (milestones ``refresh_every, 2 * refresh_every, ...`` within
            phase 1, whatever its length), or None to refresh every epoch.
            They replace the every-epoch refresh of the method's `Reweight`
            callbacks; methods without one (or with their own period, such
            as ADMM's per-step updates) keep theirs.
        restart_floor: Each phase-1 period (between milestones) decays its
            learning rate by a cosine from ``lr`` to ``lr * restart_floor``;
            1 keeps it constant.
        stages: None, the number of progressive targets within phase 1
            (geometric rates ending at the target), or the rates themselves,
            ending at the target's rate, such as ``(50, 200, 630)``. Phase 1
            is split into equal stages of whole epochs; each ends with an
            intermediate hard prune to its rate, and bounded reweighting
            presses the groups the current stage removes.
        retrain_lr_factor: Phase 2 starts at ``lr * retrain_lr_factor``.
        final_lr: The learning rate at the end of phase 2.

    Example:
    >>> Plan("long", phase1_epochs=60, retrain_epochs=30, refresh_every=10,
    ...      restart_floor=0.1)
    """

    name: str
    phase1_epochs: int = 8
    retrain_epochs: int = 8
    refresh_every: int | None = None
    restart_floor: float = 1.0
    stages: int | tuple[float, ...] | None = None
    retrain_lr_factor: float = 1.0
    final_lr: float = 1e-5

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                "`name` must be a plan name such as 'paper'. "
                f"Received: name={self.name!r}"
            )
        check_int("phase1_epochs", self.phase1_epochs)
        check_int("retrain_epochs", self.retrain_epochs)
        if self.refresh_every is not None:
            check_int("refresh_every", self.refresh_every, low=1)
        check_number("restart_floor", self.restart_floor, 0.0, high=1.0)
        object.__setattr__(self, "stages", _check_stages(self.stages))
        check_number("retrain_lr_factor", self.retrain_lr_factor, 0.0, strict=True)
        check_number("final_lr", self.final_lr, 0.0)

    def epochs(self, phase1_epochs=None, retrain_epochs=None) -> tuple[int, int]:
        """The phase lengths: the plan's, or the given numbers instead.

        Args:
            phase1_epochs: None for the plan's, or an int >= 0.
            retrain_epochs: None for the plan's, or an int >= 0.

        Returns:
            ``(phase1_epochs, retrain_epochs)``.
        """
        if phase1_epochs is None:
            phase1_epochs = self.phase1_epochs
        if retrain_epochs is None:
            retrain_epochs = self.retrain_epochs
        return (
            check_int("phase1_epochs", phase1_epochs),
            check_int("retrain_epochs", retrain_epochs),
        )

    def milestones(self, phase1_epochs: int) -> tuple[int, ...] | None:
        """The refresh milestones within a phase 1 of this length.

        Args:
            phase1_epochs: The run's phase-1 epochs.

        Returns:
            None (refresh every epoch) without ``refresh_every``, else the
            milestones, possibly none (a phase 1 shorter than the period
            refreshes at its start only).
        """
        if self.refresh_every is None:
            return None
        every = self.refresh_every
        return tuple(range(every, phase1_epochs, every))

    def stage_rates(self, target, phase1_epochs: int) -> tuple[float, ...] | None:
        """The compression rate of each progressive stage, or None.

        Args:
            target: The run's target (a sparsity or a rate string).
            phase1_epochs: The run's phase-1 epochs (0 for one-shot methods).

        Returns:
            None without stages, else the rates (the last one the target's).

        Raises:
            ValueError: For a per-layer target, rates that do not end at the
                target, or a phase 1 that does not split into the stages.
        """
        if self.stages is None:
            return None
        if target is None or isinstance(target, Mapping):
            raise ValueError(
                f"Plan {self.name!r} has progressive stages, which need one "
                f"target for the model. Received: target={target!r}"
            )
        rate = 1.0 / (1.0 - parse_target(target))
        if isinstance(self.stages, int):
            rates = tuple(rate ** ((k + 1) / self.stages) for k in range(self.stages))
            rates = (*rates[:-1], rate)
        else:
            rates = self.stages
            if not math.isclose(rates[-1], rate, rel_tol=1e-6):
                raise ValueError(
                    "The last progressive stage must be the target. Expected "
                    f"stages ending at {rate:g}. Received: stages={rates}, "
                    f"target={target!r}"
                )
        if phase1_epochs == 0 or phase1_epochs % len(rates):
            raise ValueError(
                f"Plan {self.name!r} splits phase 1 into {len(rates)} equal "
                "stages of whole epochs. Expected phase1_epochs a positive "
                f"multiple of {len(rates)} (and a method that trains before "
                f"the hard prune). Received: phase1_epochs={phase1_epochs}"
            )
        return rates


def with_milestones(
    callbacks: list[keras.callbacks.Callback], milestones: Sequence[int] | None
) -> list[keras.callbacks.Callback]:
    """The callbacks, each every-epoch `Reweight` refreshing at ``milestones``.

    Args:
        callbacks: A method's phase-1 callbacks.
        milestones: None (nothing changes), or the refresh epochs (empty:
            the first refresh only).

    Returns:
        A new list; the `Reweight` callbacks (and subclasses) with
        ``unit="epoch"``, ``every=1`` and no milestones are rebuilt with
        them, the others are passed through.
    """
    if milestones is None:
        return list(callbacks)
    return [
        type(c).from_config({**c.get_config(), "milestones": list(milestones)})
        if isinstance(c, Reweight)
        and c.unit == "epoch"
        and c.every == 1
        and c.milestones is None
        else c
        for c in callbacks
    ]


def staged_pruning(
    rates: Sequence[float], phase1_epochs: int, steps_per_epoch: int
) -> ScheduledPruning:
    """The `ScheduledPruning` of progressive stages over phase 1.

    Stage ``k`` covers epochs ``[k * E, (k + 1) * E)`` with
    ``E = phase1_epochs / len(rates)``: during it the current target is
    ``rates[k]`` (so bounded reweighting presses the groups that rate
    removes), and at its end the kernels are projected onto ``rates[k]``
    (the last stage's projection is the final hard prune).

    Args:
        rates: The stage rates (from `Plan.stage_rates`).
        phase1_epochs: Epochs of phase 1, a multiple of ``len(rates)``.
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        A `ScheduledPruning` with ``lead=True``.
    """
    stage = (
        phase1_epochs
        // len(rates)
        * check_int("steps_per_epoch", steps_per_epoch, low=1)
    )
    schedule = ProgressiveSparsity(rates, steps_per_stage=stage, begin_step=stage)
    return ScheduledPruning(schedule, frequency=stage, lead=True)


_PLANS: dict[str, Plan] = {}

#: The registered plans by name (a live, read-only view).
PLANS: Mapping[str, Plan] = MappingProxyType(_PLANS)


def register_plan(plan: Plan, *, override: bool = False) -> Plan:
    """Registers a training plan under its name.

    Args:
        plan: The `Plan`.
        override: Replace a plan registered under the same name.

    Returns:
        ``plan``.

    Raises:
        ValueError: If ``plan`` is not a `Plan`, or its name is taken and
            ``override`` is False.

    Example:
    >>> register_plan(Plan("long", phase1_epochs=60, refresh_every=10))
    """
    if not isinstance(plan, Plan):
        raise ValueError(f"Expected a tf_reweight Plan. Received: plan={plan!r}")
    if plan.name in _PLANS and not check_bool("override", override):
        raise ValueError(
            f"A plan named {plan.name!r} is already registered. Expected a new "
            f"name, or override=True to replace it. Received: plan.name={plan.name!r}"
        )
    _PLANS[plan.name] = plan
    return plan


def get_plan(schedule: str | Plan) -> Plan:
    """The `Plan` a ``schedule`` argument names (a `Plan` is returned as is).

    Args:
        schedule: A registered name (see `PLANS`) or a `Plan`.

    Returns:
        The `Plan`.

    Raises:
        ValueError: Listing the registered names, for anything else.

    Example:
    >>> get_plan("paper").phase1_epochs
    150
    """
    if isinstance(schedule, Plan):
        return schedule
    if not isinstance(schedule, str) or schedule not in _PLANS:
        raise ValueError(
            f"Unknown training schedule. Expected a Plan or one of {list(_PLANS)}. "
            f"Received: schedule={schedule!r}"
        )
    return _PLANS[schedule]


for _plan in (
    Plan("default"),
    Plan(
        "paper",
        phase1_epochs=150,
        retrain_epochs=90,
        refresh_every=10,
        restart_floor=0.1,
    ),
    Plan("progressive", phase1_epochs=12, retrain_epochs=8, stages=3),
):
    register_plan(_plan)
del _plan
