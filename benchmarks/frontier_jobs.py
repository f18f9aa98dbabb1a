"""The frontier's suites, methods and jobs: what `frontier.py` measures.

`Suite` and `SUITES` (a model on a dataset, with its parser defaults), the
method names, `Job` (one measurement) and `KEY_FIELDS` (what identifies its
record), the main penalty of each method's frontier line (`main_penalties`,
`main_configs`) and `jobs`, every measurement of a run in order.
"""

from __future__ import annotations

import dataclasses

METHODS = ("reweighted", "admm", "tfmot", "group_lasso", "magnitude")
# Opt-in (--methods): tfmot with per-layer targets from a global magnitude
# ranking of the dense weights (the allocation the other methods start from)
# instead of tfmot's one sparsity for every layer.
EXTRA_METHODS = ("tfmot_global",)
# tfmot prunes single weights only; the others take any tf_reweight structure.
STRUCTURED_METHODS = tuple(m for m in METHODS if m != "tfmot")
QUICK = {
    "methods": "reweighted,admm,tfmot",
    "rates": "50,200,630",
    "epochs": (2, 2),
    "structures": "",
    "sweep": "",
}


@dataclasses.dataclass(frozen=True)
class Suite:
    """A model on a dataset, with its parser defaults (over MNIST's)."""

    name: str
    model: str  # a `tf_reweight.training.models` name and a `tfmot_baseline.py --model`
    dataset: str  # a `tf_reweight.training.data` name
    title: str
    counted: str  # the kernels that ``rate`` counts, for the plot
    dense_stem: str  # file stem of the dense checkpoint in the cache
    skip_first: bool = False  # the first prunable layer stays dense
    skip_last: bool = False  # the last one stays dense (always if structured)
    zoom: float | None = None  # bottom of the right panel; None: below dense
    label_structures: bool = False  # "(unstructured)" in the legend too
    dense_decay: bool = False  # a cosine decay of the dense training's rate
    defaults: tuple = ()  # (argument, value) pairs
    quick: tuple = ()

    def skips(self, structure: str) -> dict:
        """The `tf_reweight.apply` layer skips of a structure."""
        return {
            "skip_first": self.skip_first,
            "skip_last": self.skip_last or structure != "unstructured",
        }


SUITES = {
    "mnist": Suite(
        "mnist",
        "lenet5",
        "mnist",
        "LeNet-5 on MNIST",
        "4 kernels",
        "lenet5_dense",
        zoom=95.0,
        defaults=(("penalty", 1e-5), ("structured_penalty", 1e-3)),
        quick=tuple(QUICK.items()),
    ),
    "cifar10": Suite(
        "cifar10",
        "resnet20",
        "cifar10",
        "ResNet-20 on CIFAR-10",
        "20 stage convolutions",
        "frontier_resnet20_cifar10_dense_cos",
        skip_first=True,
        skip_last=True,
        label_structures=True,
        dense_decay=True,
        defaults=(
            ("methods", "tfmot"),
            ("rates", "2,4,8,16"),
            ("structures", "filter"),
            ("structured_methods", "reweighted,admm"),
            ("structured_rates", "2,4,8,16"),
            ("sweep", ""),
            ("epochs", (2, 2)),
            ("dense_epochs", 10),
            ("train_limit", 10000),
            ("admm_every", 16),
            ("recalibrate_bn", 10000),
        ),
        quick=(
            ("rates", "4,16"),
            ("structured_rates", "4,16"),
            ("epochs", (2, 2)),
            ("dense_epochs", 5),
            ("train_limit", 5000),
            ("admm_every", 8),
        ),
    ),
}


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _names(text: str, allowed=None) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(allowed)) if allowed else []
    if unknown:
        raise SystemExit(f"Unknown names {unknown}; expected some of {list(allowed)}")
    return names


@dataclasses.dataclass(frozen=True)
class Job:
    """One measurement: a method at a target rate (and penalty)."""

    method: str
    structure: str
    target_rate: float
    penalty: float | None
    eps: float | None = None  # reweighting's eps; None: 1e-3 (see Bench._eps)

    def key_fields(self, epochs: int) -> dict:
        """The `KEY_FIELDS` of the job's record, run for ``epochs`` in all."""
        return {
            "method": self.method,
            "structure": self.structure,
            "target_rate": self.target_rate,
            "penalty": self.penalty,
            "epochs": epochs,
            "eps": self.eps,
        }


# The fields that identify a record: a run skips the jobs already stored.
KEY_FIELDS = ("method", "structure", "target_rate", "penalty", "epochs", "eps")
KEY_FIELDS += ("seed", "schedule")  # absent: seed 0, the default schedule


def main_penalties(args, structured: bool = False) -> dict:
    """The penalty of each penalized method on the (structured) frontier lines."""
    penalties = {
        "reweighted": args.penalty,
        "admm": args.admm_rho,
        "group_lasso": args.lasso_penalty,
    }
    if structured and args.structured_penalty is not None:
        penalties["reweighted"] = args.structured_penalty
    return penalties


def main_configs(args) -> dict:
    """``{(method, structured): (penalty, eps)}`` of the frontier lines."""
    return {
        (method, structured): (penalty, args.eps if method == "reweighted" else None)
        for structured in (False, True)
        for method, penalty in main_penalties(args, structured).items()
    }


def jobs(args) -> list[Job]:
    """Every measurement of the run, in order."""
    penalties = main_penalties(args)
    structured = main_penalties(args, structured=True)
    methods = _names(args.methods, METHODS + EXTRA_METHODS)
    found = [
        Job(m, "unstructured", rate, penalties.get(m))
        for rate in _floats(args.rates)
        for m in methods
    ]
    found += [
        Job(m, s, rate, structured.get(m))
        for s in _names(args.structures)
        for rate in _floats(args.structured_rates)
        for m in _names(args.structured_methods, STRUCTURED_METHODS)
    ]
    found += [
        Job("reweighted", "unstructured", args.sweep_rate, lam)
        for lam in _floats(args.sweep)
    ]
    if args.eps is not None:
        found = [
            dataclasses.replace(j, eps=args.eps) if j.method == "reweighted" else j
            for j in found
        ]
    return list(dict.fromkeys(found))
