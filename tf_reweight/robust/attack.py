"""`Attack`: one validated description of an L-inf or L2 attack.

Every robust function of `tf_reweight` (adversarial training, robust
evaluation, the MRS probe, MRPF) takes an `Attack` instead of loose
``eps``/``steps``/``step_size`` arguments. The description needs no
TensorFlow; `tf_reweight.robust.attacks.craft` runs it.
"""

from __future__ import annotations

import dataclasses
import math

from tf_reweight.core import checks

KINDS = ("pgd", "fgsm")
NORMS = ("inf", 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attack:
    """An untargeted white-box attack with its budget.

    Attributes:
        kind: ``"pgd"`` (projected gradient descent, Madry et al.) or
            ``"fgsm"`` (one gradient step, Goodfellow et al.; with
            ``random_start`` the "fast" attack of Wong et al.).
        epsilon: Radius of the perturbation ball, ``>= 0``.
        steps: Gradient steps, ``>= 1``; ``"fgsm"`` always takes one.
        step_size: Size of one step, or None for the default rule: PGD
            ``min(epsilon, 2.5 * epsilon / steps)``, FGSM ``epsilon``
            (``1.25 * epsilon`` with ``random_start``). At most ``epsilon``
            for PGD.
        norm: ``"inf"`` or ``2`` (``float("inf")`` is read as ``"inf"``).
        clip: ``(min, max)`` range of valid inputs, or None for no clipping.
        random_start: Start from a uniform random point of the ball (PGD
            without it is BIM).

    Example:
    >>> Attack(kind="pgd", epsilon=0.3, steps=10).resolved_step_size
    0.075
    >>> Attack.from_config(Attack(epsilon=0.1).get_config()) == Attack(epsilon=0.1)
    True
    """

    kind: str = "pgd"
    epsilon: float
    steps: int = 10
    step_size: float | None = None
    norm: str | int = "inf"
    clip: tuple[float, float] | None = (0.0, 1.0)
    random_start: bool = True

    def __post_init__(self):
        checks.check_choice("kind", self.kind, KINDS)
        epsilon = checks.check_number("epsilon", self.epsilon, 0.0)
        steps = checks.check_int("steps", self.steps, low=1)
        step_size = self.step_size
        if step_size is not None:
            step_size = checks.check_number("step_size", step_size, 0.0)
            if self.kind == "pgd" and step_size > epsilon:
                raise ValueError(
                    "`step_size` must not exceed `epsilon`: PGD projects every "
                    "step back onto the ball. Received: "
                    f"step_size={step_size!r}, epsilon={epsilon!r}"
                )
        set_field = object.__setattr__  # The documented way in a frozen dataclass.
        set_field(self, "epsilon", epsilon)
        set_field(self, "steps", steps)
        set_field(self, "step_size", step_size)
        set_field(self, "norm", _norm(self.norm))
        set_field(self, "clip", _clip(self.clip))
        set_field(
            self, "random_start", checks.check_bool("random_start", self.random_start)
        )

    @property
    def resolved_step_size(self) -> float:
        """The step size used: ``step_size``, or the default rule."""
        if self.step_size is not None:
            return self.step_size
        if self.kind == "pgd":
            return min(self.epsilon, 2.5 * self.epsilon / self.steps)
        return 1.25 * self.epsilon if self.random_start else self.epsilon

    @property
    def ord(self) -> float:
        """The norm as a number (``math.inf`` or ``2``)."""
        return math.inf if self.norm == "inf" else 2

    @property
    def label(self) -> str:
        """A short name such as ``"pgd-10"`` or ``"fgsm-rs"``."""
        if self.kind == "pgd":
            return f"pgd-{self.steps}"
        return "fgsm-rs" if self.random_start else "fgsm"

    def get_config(self) -> dict:
        """The fields as a JSON-compatible dict (``clip`` as a list)."""
        config = dataclasses.asdict(self)
        config["clip"] = None if self.clip is None else list(self.clip)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Attack:
        """The `Attack` that `get_config` described."""
        config = dict(config)
        if config.get("clip") is not None:
            config["clip"] = tuple(config["clip"])
        return cls(**config)


def _norm(norm) -> str | int:
    """``"inf"`` or ``2`` for a supported norm, else `ValueError`."""
    if isinstance(norm, str) and norm.strip().lower() == "inf":
        return "inf"
    if not isinstance(norm, str | bool) and norm in (math.inf, 2):
        return "inf" if norm == math.inf else 2
    raise ValueError(
        f"`norm` must be one of {list(NORMS)} (or float('inf')). "
        f"Received: norm={norm!r}"
    )


def _clip(clip) -> tuple[float, float] | None:
    """``clip`` as a float pair with min < max, or None; else `ValueError`."""
    if clip is None:
        return None
    if isinstance(clip, tuple | list) and len(clip) == 2:
        low, high = (checks.check_number("clip", c) for c in clip)
        if low < high:
            return (low, high)
    raise ValueError(
        "`clip` must be None or a pair (min, max) of numbers with min < max. "
        f"Received: clip={clip!r}"
    )
