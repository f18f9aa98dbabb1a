"""Sparsity schedules: pure callables of the training step.

They use `keras.ops` only, so they trace inside `tf.function`; the
`tf_reweight.callbacks.ScheduledPruning` callback evaluates them.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_reweight.core.budget import parse_target
from tf_reweight.core.checks import check_int, check_number


def _check_steps(begin_step: int, end_step: int) -> None:
    check_int("begin_step", begin_step, low=0)
    if not begin_step < check_int("end_step", end_step, low=0):
        raise ValueError(
            "Expected 0 <= begin_step < end_step. Received: "
            f"begin_step={begin_step}, end_step={end_step}"
        )


@keras.saving.register_keras_serializable(package="tf_reweight")
class PolynomialSparsity:
    """Gradual pruning schedule of Zhu and Gupta (2017).

    ``s(t) = s_f + (s_i - s_f) * (1 - p)^power`` with
    ``p = clip((t - begin_step) / (end_step - begin_step), 0, 1)``.

    Args:
        final_sparsity: Sparsity reached at ``end_step`` (or a rate "Nx").
        begin_step: First step of pruning.
        end_step: Step at which the final sparsity is reached.
        initial_sparsity: Sparsity at ``begin_step``.
        power: The exponent (3 in the paper).

    Example:
    >>> PolynomialSparsity(0.9, 0, 100)(50)  # 0.9 * (1 - 0.5**3) = 0.7875

    References:
        Zhu and Gupta, "To prune, or not to prune: exploring the efficacy of
        pruning for model compression", arXiv 1710.01878 (2017).
    """

    def __init__(
        self,
        final_sparsity,
        begin_step: int,
        end_step: int,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
    ):
        _check_steps(begin_step, end_step)
        self.final = parse_target(final_sparsity)
        initial = check_number("initial_sparsity", initial_sparsity, 0.0)
        if not initial < self.final:
            raise ValueError(
                "Expected 0 <= initial_sparsity < final_sparsity. Received: "
                f"initial_sparsity={initial_sparsity}"
            )
        self.begin_step, self.end_step = int(begin_step), int(end_step)
        self.initial = initial
        self.power = check_number("power", power, 0.0, strict=True)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        span = float(self.end_step - self.begin_step)
        p = keras.ops.clip((step - self.begin_step) / span, 0.0, 1.0)
        return self.final + (self.initial - self.final) * (1.0 - p) ** self.power

    def get_config(self) -> dict:
        return {
            "final_sparsity": self.final,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "initial_sparsity": self.initial,
            "power": self.power,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_reweight")
class ProgressiveSparsity:
    """Staged compression, for example 2x, 4x, 8x then 16x.

    Stage ``k`` lasts ``steps_per_stage`` steps from ``begin_step`` and
    targets rate ``rates[k]``; the last stage holds afterwards.

    Args:
        rates: Compression rates per stage, increasing, each > 1.
        steps_per_stage: Length of a stage in steps.
        begin_step: Step at which the first stage starts.

    Example:
    >>> ProgressiveSparsity((2, 4), steps_per_stage=10)(15)  # 0.75
    """

    def __init__(
        self, rates: Sequence[float], steps_per_stage: int, begin_step: int = 0
    ):
        if isinstance(rates, str) or not isinstance(rates, Sequence):
            raise ValueError(
                "`rates` must be a sequence of compression rates, such as "
                f"(2, 4, 8). Received: rates={rates!r}"
            )
        rates = [check_number("rates", r, 1.0, strict=True) for r in rates]
        if not rates or rates != sorted(rates):
            raise ValueError(
                "`rates` must be increasing compression rates above 1. "
                f"Received: rates={rates}"
            )
        check_int("steps_per_stage", steps_per_stage, low=1)
        _check_steps(begin_step, begin_step + steps_per_stage)
        self.rates = rates
        self.steps_per_stage, self.begin_step = int(steps_per_stage), int(begin_step)
        self.end_step = self.begin_step + self.steps_per_stage * (len(rates) - 1)
        self.final = 1.0 - 1.0 / rates[-1]

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        stage = keras.ops.floor((step - self.begin_step) / self.steps_per_stage)
        stage = keras.ops.cast(keras.ops.clip(stage, 0, len(self.rates) - 1), "int32")
        sparsities = keras.ops.convert_to_tensor([1.0 - 1.0 / r for r in self.rates])
        return keras.ops.take(sparsities, stage)

    def get_config(self) -> dict:
        return {
            "rates": self.rates,
            "steps_per_stage": self.steps_per_stage,
            "begin_step": self.begin_step,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
