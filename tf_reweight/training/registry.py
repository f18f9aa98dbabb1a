"""The registry of pruning methods that `tf_reweight.training.recipes.prune` runs.

A `Method` says everything the training path needs to know about a method:
the penalty `tf_reweight.apply` installs, the phase-1 callbacks that update
its state, its default settings, the `apply` options only it understands,
and whether it hard-prunes at the start (one-shot). Adding a method is one
`register_method` call; `recipes.prune` and the tools built on it (the
adversarial and quantized recipes, the CLI, the benchmarks) then run it.

Example:
>>> import tf_reweight as tfr
>>> tfr.register_method(tfr.Method(
...     "l1", penalty=lambda value: tfr.GroupLassoPenalty(value),
...     default_penalty=1e-4))
>>> tfr.recipes.prune(dense, (x, y), method="l1", target="10x")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import keras

from tf_reweight.callbacks import ADMMUpdate, Reweight
from tf_reweight.core.checks import check_bool, check_number_or_auto
from tf_reweight.methods.admm import ADMMPenalty
from tf_reweight.methods.regularizers import (
    GroupLassoPenalty,
    KernelPenalty,
    ReweightedGroupPenalty,
)


def no_callbacks(**options) -> list[keras.callbacks.Callback]:
    """The callbacks factory of a method without phase-1 callbacks.

    Args:
        **options: Must be empty: there is no callback to configure.

    Returns:
        An empty list.

    Raises:
        ValueError: If any option is given.
    """
    if options:
        raise ValueError(
            "The method has no phase-1 callback to configure. Expected "
            f"method_options=None. Received: method_options={options}"
        )
    return []


@dataclass(frozen=True)
class Method:
    """A pruning method that `tf_reweight.training.recipes.prune` can run.

    Attributes:
        name: The name ``prune(method=...)`` takes.
        penalty: ``penalty(value, **options) -> KernelPenalty | None``: the
            penalty to train with, from the penalty value and the method's
            `apply_options` the caller gave; None for no penalty. It raises a
            `ValueError` for a bad value.
        callbacks: ``callbacks(**options) -> list[Callback]``: the phase-1
            callbacks, from ``prune``'s ``method_options`` merged over
            `default_options`; it raises a `ValueError` for bad options.
        default_penalty: The penalty value used when ``prune`` gets
            ``penalty=None``: a number >= 0, or ``"auto"`` where the method's
            penalty sets itself.
        default_options: The default ``callbacks`` options.
        apply_options: The `tf_reweight.apply` keywords only this method
            understands; they go to ``penalty`` instead of ``apply``.
        one_shot: Hard-prune at epoch 0 (then retrain for the whole budget)
            instead of after phase 1.

    Example:
    >>> Method("l1", penalty=lambda value: GroupLassoPenalty(value))
    """

    name: str
    penalty: Callable[..., KernelPenalty | None]
    callbacks: Callable[..., list[keras.callbacks.Callback]] = no_callbacks
    default_penalty: float | str = 0.0
    default_options: Mapping = field(default_factory=dict)
    apply_options: tuple[str, ...] = ()
    one_shot: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                "`name` must be a method name such as 'group_lasso'. "
                f"Received: name={self.name!r}"
            )
        for attr in ("penalty", "callbacks"):
            if not callable(getattr(self, attr)):
                raise ValueError(
                    f"`{attr}` must be a callable factory. Received: "
                    f"{attr}={getattr(self, attr)!r}"
                )
        check_number_or_auto("default_penalty", self.default_penalty, 0.0)
        if not isinstance(self.default_options, Mapping):
            raise ValueError(
                "`default_options` must be a dict of callback options. "
                f"Received: default_options={self.default_options!r}"
            )
        if isinstance(self.apply_options, str) or not all(
            isinstance(o, str) for o in self.apply_options
        ):
            raise ValueError(
                "`apply_options` must be a tuple of keyword names. "
                f"Received: apply_options={self.apply_options!r}"
            )
        check_bool("one_shot", self.one_shot)
        object.__setattr__(self, "apply_options", tuple(self.apply_options))
        object.__setattr__(
            self, "default_options", MappingProxyType(dict(self.default_options))
        )


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, *, override: bool = False) -> Method:
    """Registers a pruning method under its name.

    Args:
        method: The `Method`.
        override: Replace a method registered under the same name.

    Returns:
        ``method``.

    Raises:
        ValueError: If ``method`` is not a `Method`, or its name is taken and
            ``override`` is False.

    Example:
    >>> register_method(Method("l1", penalty=lambda v: GroupLassoPenalty(v)))
    """
    if not isinstance(method, Method):
        raise ValueError(f"Expected a tf_reweight Method. Received: method={method!r}")
    if method.name in _REGISTRY and not check_bool("override", override):
        raise ValueError(
            f"A method named {method.name!r} is already registered. Expected a "
            "new name, or override=True to replace it. Received: "
            f"method.name={method.name!r}"
        )
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered `Method` called ``name``.

    Args:
        name: A registered name (see `METHODS`).

    Returns:
        The `Method`.

    Raises:
        ValueError: Listing the registered names, if ``name`` is not one.

    Example:
    >>> get_method("admm").default_penalty
    0.001
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"Unknown pruning method. Expected one of {list(_REGISTRY)}. "
            f"Received: method={name!r}"
        )
    return _REGISTRY[name]


class _Column(Mapping):
    """A read-only, live view of one attribute of every registered method."""

    def __init__(self, attr: str):
        self._attr = attr

    def __getitem__(self, name: str):
        if name not in _REGISTRY:
            raise KeyError(name)
        return getattr(_REGISTRY[name], self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: The registered method names (a live, read-only view).
METHODS = _REGISTRY.keys()
#: Each method's default penalty value (read-only view).
DEFAULT_PENALTY: Mapping[str, float | str] = _Column("default_penalty")
#: Each method's default phase-1 callback options (read-only view).
DEFAULT_OPTIONS: Mapping[str, Mapping] = _Column("default_options")


def _reweighted(value, **options) -> KernelPenalty:
    return ReweightedGroupPenalty(value, **options)


def _admm(value) -> KernelPenalty:
    return ADMMPenalty(value)


def _group_lasso(value) -> KernelPenalty:
    return GroupLassoPenalty(value)


def _reweight_callbacks(**options) -> list[keras.callbacks.Callback]:
    return [Reweight(**options)]


def _admm_callbacks(**options) -> list[keras.callbacks.Callback]:
    return [ADMMUpdate(**options)]


def _no_penalty(value) -> None:
    if value:
        raise ValueError(
            "Magnitude pruning uses no penalty. Expected penalty=None or 0. "
            f"Received: penalty={value!r}"
        )
    return None


# Default values: see BENCHMARKS.md for how ADMM's and group lasso's were
# tuned. ADMM takes many short Z/U steps and a slowly growing ``rho``.
for _method in (
    Method(
        "reweighted",
        _reweighted,
        _reweight_callbacks,
        default_penalty="auto",
        apply_options=("eps", "squared", "bounded", "spare_scale_free"),
    ),
    Method(
        "admm",
        _admm,
        _admm_callbacks,
        default_penalty=1e-3,
        default_options={
            "every": 100,
            "unit": "step",
            "rho_factor": 1.2,
            "rho_max": 1.0,
        },
    ),
    Method("group_lasso", _group_lasso, default_penalty=1e-3),
    Method("magnitude", _no_penalty, one_shot=True),
):
    register_method(_method)
del _method
