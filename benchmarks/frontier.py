"""Accuracy vs compression: reweighting and its baselines, two suites.

``--suite mnist`` (the default) measures LeNet-5 on MNIST, unstructured and
structured; ``--suite cifar10`` measures ResNet-20 filter pruning on CIFAR-10
(see "The CIFAR-10 suite" below).

Methods (see `tf_reweight.training.recipes.prune`): ``reweighted`` (reweighted group
regularization), ``admm`` (ADMM with a hard constraint), ``group_lasso``
(static group lasso / L1), ``magnitude`` (one-shot magnitude pruning, then
retraining) and ``tfmot`` (TensorFlow Model Optimization's gradual magnitude
pruning, run by ``benchmarks/tfmot_baseline.py`` in a process of its own
because it needs the legacy ``tf_keras``).

Fairness: every method starts from the same dense checkpoint, trained once
and cached outside the repository (``--cache-dir``, default
``~/.cache/tf_reweight/bench``), and gets the same total epoch budget
``--epochs P R``: ``P`` epochs of penalized training (tfmot: its sparsity
ramp; magnitude: retraining too) and ``R`` epochs of masked retraining, with
the same Adam learning rates (constant, then a cosine decay).

``rate`` is dense weights / nonzero weights over the pruned layers, which are
all four LeNet-5 kernels (conv1, conv2, fc1 and logits: 430,500 weights) for
unstructured sparsity and the first three (425,500 weights) for filter and
column structures: removing whole units of the logits layer would remove
classes, so structured runs leave it dense (``skip_last``). Biases are
excluded. The tf_reweight methods rank units globally across the
four kernels; tfmot gives every layer the same sparsity.

Runs (data from ``TF_REWEIGHT_DATA_DIR``, for example ``../shared/data``):

    python benchmarks/frontier.py            # full frontier (hours on 2 cores)
    python benchmarks/frontier.py --quick    # a subset in under 20 minutes
    python benchmarks/frontier.py --plot     # also draw frontier.png

The full run measures unstructured sparsity at ``--rates`` for every method,
``--structures`` (filter and column) at ``--structured-rates`` for
reweighting and ADMM, and a sweep of reweighting's ``lambda`` at
``--sweep-rate``. Records are appended one by one to
``benchmarks/results/frontier.json`` (``frontier_quick.json`` with
``--quick``); a record whose key (method, structure, target rate, penalty,
epochs, eps, seed, schedule) is already there is skipped, so an interrupted
run resumes. Records also hold the numbers of training and test images used.

``--seed N`` repeats a run with another seed (records without a ``seed``
ran with 0), and ``--schedule NAME`` trains the tf_reweight methods with a
named plan of `tf_reweight.PLANS` (refresh milestones with learning-rate
restarts, progressive stages; ``--epochs`` still sets the budget; records
without a ``schedule`` ran with ``"default"``). TFMOT keeps its two-phase
cosine. For example, the long-schedule point at 630x, two seeds:

    python benchmarks/frontier.py --methods reweighted --rates 630 \
        --structures "" --sweep "" --penalty auto --eps auto \
        --schedule paper --epochs 30 30 --seed 1

The CIFAR-10 suite (``--suite cifar10``): ResNet-20 (`tfr.models.resnet20`)
pruned by whole filters at 2, 4, 8 and 16x with reweighting and ADMM, and
tfmot at the same rates. tfmot has no filter pruning, so its rows are
*unstructured* (structure ``"unstructured"`` in the records, labelled so in
the plot): the same number of nonzero weights, not the same structure.

    python benchmarks/frontier.py --suite cifar10 --plot --verbose 2

Its defaults differ from MNIST's to fit about an hour of 2 CPU cores:
``--train-limit 10000`` (the first 10,000 training images, classes mixed),
``--dense-epochs 10``, ``--epochs 2 2``, accuracy on the whole 10,000-image
test set, no augmentation; jobs ``--methods tfmot --rates 2,4,8,16
--structures filter --structured-methods reweighted,admm --structured-rates
2,4,8,16`` and no lambda sweep (``--sweep ""``); ADMM's Z/U step every 16
steps (``--admm-every 16``: 79 steps per epoch at 10,000 images, so about 5
Z/U steps per epoch as in the MNIST tuning). Every flag overrides them. The
penalties are not tuned for ResNet-20: reweighting ``lambda`` 1e-4 (the
library default; a filter's norm is far larger than a single weight's, so
the per-weight MNIST value 1e-5 would barely press filters) and ADMM
``rho`` 1e-3. Records go to ``benchmarks/results/frontier_cifar10.json``
(``frontier_cifar10.png``; ``--quick``: 5,000 images, 5 dense epochs, 2 + 2
epochs, rates 4 and 16, ADMM every 8 steps, ``frontier_cifar10_quick.json``).
tfmot trains in ``tf_keras``, the other methods in Keras 3 with pruning
wrappers, so ``seconds`` compares frameworks as much as methods (step times
in BENCHMARKS.md).

BatchNorm: after a hard prune, a pruned filter's output is zero but its
BatchNorm layer's moving statistics still describe the old channel, so in
inference mode the channel emits a large constant instead of its shift
``beta`` and the network falls to chance (BENCHMARKS.md). The suite therefore
recomputes the moving statistics of every tf_reweight model on its 10,000
training images after training (``--recalibrate-bn 10000``,
`tf_reweight.recalibrate_batchnorm`, no weight changes) and records the
accuracy before it too (``accuracy_before_recalibration``). tfmot's
unstructured models zero no whole channels and are not recalibrated.

The dense ResNet-20 trains with Adam ``--lr`` decayed by a cosine to 1e-5
over its epochs (LeNet-5's dense training keeps the rate constant): with a
constant rate the dense model ended below the pruned ones (BENCHMARKS.md).

Fairness is as on MNIST: one cached dense checkpoint (its own file in
``--cache-dir``, named after the suite, training images, test images, dense
epochs and seed), the same ``P + R`` epochs, batch size and learning-rate
schedule (constant Adam ``--lr``, then the cosine decay) for every method.

Layer accounting on CIFAR-10: the stem convolution ``conv1`` (432 weights)
and the ``logits`` Dense layer (640) stay dense for every method and
structure (``skip_first`` and ``skip_last``) and are not counted. ``rate`` is
dense / nonzero weights over the 20 other convolution kernels, the 18 3x3
convolutions of the three residual stages and their two 1x1 projection
shortcuts (269,824 weights); ``weights`` in each record is that count.
Biases and BatchNorm are excluded; a pruned filter's BatchNorm shift stays.
tfmot prunes exactly these 20 kernels (``tfmot_baseline.py --layers``) to
one uniform sparsity ``1 - 1/rate``, and counts its nonzeros over them;
reweighting and ADMM rank filters globally across them.

Defaults: ADMM's ``rho`` 1e-3 (x1.2 per Z/U step up to 1, a step every 100
steps), group lasso's ``lambda`` 1e-3, reweighting's ``--penalty 1e-5`` for
MNIST and ``--structured-penalty`` 1e-3 (a unit's pull is
``lambda / ||W_g||``, and a filter's or column's norm is far larger than a
single weight's) come from the tuning runs and the lambda sweep recorded in
BENCHMARKS.md ("Tuning of the frontier's defaults").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import records  # noqa: E402

HERE = Path(__file__).resolve().parent
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


def _parser(suite: str = "mnist") -> argparse.ArgumentParser:
    """The parser, with the defaults of ``suite``."""
    p = argparse.ArgumentParser(
        description="Accuracy vs compression: LeNet-5/MNIST or ResNet-20/CIFAR-10."
    )
    p.add_argument(
        "--suite",
        default="mnist",
        choices=sorted(SUITES),
        help="mnist: LeNet-5, every structure; cifar10: ResNet-20 filters "
        "(its own defaults, see the module docstring)",
    )
    p.add_argument("--quick", action="store_true", help="a subset, < 20 min")
    p.add_argument("--plot", action="store_true", help="write the figure too")
    p.add_argument("--plot-only", action="store_true", help="only draw the figure")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rates", default="10,50,100,200,400,630,1000")
    p.add_argument("--structures", default="filter,column")
    p.add_argument("--structured-methods", default="reweighted,admm")
    p.add_argument("--structured-rates", default="2,4,8")
    p.add_argument("--sweep", default="1e-6,1e-5,1e-4,1e-3", help="lambdas")
    p.add_argument("--sweep-rate", type=float, default=200.0)
    p.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        default=(4, 4),
        metavar=("PHASE1", "RETRAIN"),
        help="penalized (or ramp) epochs, then masked retraining epochs",
    )
    p.add_argument(
        "--schedule",
        default="default",
        help="the plan (tf_reweight.PLANS: refresh milestones, learning rate, "
        "progressive stages) of the tf_reweight methods; TFMOT keeps its own",
    )
    p.add_argument("--dense-epochs", type=int, default=5)
    p.add_argument(
        "--penalty",
        type=records.number_or_auto,
        default=1e-4,
        help="reweighting lambda, or auto",
    )
    p.add_argument(
        "--eps",
        type=records.number_or_auto,
        default=None,
        help="reweighting eps of alpha = 1 / (||W_g|| + eps), or auto (default: 1e-3)",
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=None,
        metavar="N",
        help="recompute BatchNorm statistics on N training images (a fixed "
        "random sample) after pruning, before the test (tf_reweight methods)",
    )
    p.add_argument(
        "--structured-penalty",
        type=records.number_or_auto,
        default=None,
        help="reweighting lambda of the structured jobs (default: --penalty)",
    )
    p.add_argument("--admm-rho", type=float, default=1e-3, help="initial rho")
    p.add_argument("--admm-rho-factor", type=float, default=1.2)
    p.add_argument("--admm-rho-max", type=float, default=1.0)
    p.add_argument("--admm-every", type=int, default=100, help="Z/U update period")
    p.add_argument("--admm-unit", default="step", choices=["epoch", "step"])
    p.add_argument("--lasso-penalty", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--test-limit", type=int, default=None, help="first N images")
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument(
        "--cache-dir",
        default=str(Path("~/.cache/tf_reweight/bench").expanduser()),
        help="where the dense checkpoint and the tfmot inputs are cached",
    )
    p.add_argument("--results", default=None, help="the JSON list of records")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    p.set_defaults(**dict(SUITES[suite].defaults))
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses ``argv`` with the defaults of its ``--suite``, then ``--quick``'s."""
    suite = _parser().parse_known_args(argv)[0].suite
    parser = _parser(suite)
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in SUITES[suite].quick:
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    import tf_reweight as tfr

    try:
        tfr.get_plan(args.schedule)
    except ValueError as error:  # before any training: one clear line, exit 2
        parser.error(str(error))
    return args


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
# Fields of `Bench.run`'s result that only some jobs have.
OPTIONAL_FIELDS = ("method_options", "recalibrate_bn", "accuracy_before_recalibration")


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


class Bench:
    """Data, the dense checkpoint and the runners of one invocation."""

    def __init__(self, args):
        import keras

        from tf_reweight.core import layouts
        from tf_reweight.training import data, models

        self.args = args
        self.suite = SUITES[args.suite]
        self.keras = keras
        (x, y), (x_test, y_test) = data.load(self.suite.dataset, args.data_dir)
        self.train = (x[: args.train_limit], y[: args.train_limit])
        self.test = (x_test[: args.test_limit], y_test[: args.test_limit])
        self.cache = Path(args.cache_dir).expanduser()
        self.cache.mkdir(parents=True, exist_ok=True)
        limits = (args.train_limit, args.test_limit, args.dense_epochs, args.seed)
        self.stem = self.suite.dense_stem
        # MNIST's default checkpoint keeps its short historical name.
        if args.suite != "mnist" or limits != (None, None, 5, 0):
            self.stem += "_n{}_t{}_e{}_s{}".format(*limits)
        self.dense_path = self.cache / f"{self.stem}.keras"
        self.kernel_layers = [
            layer.name
            for layer in models.get(self.suite.model).layers
            if layouts.kernel_layouts(layer)
        ]
        self.dense_info = self._dense()

    def pruned_layers(self, structure: str) -> list[str]:
        """The layers a structure prunes and ``rate`` counts, as `apply` selects."""
        skips = self.suite.skips(structure)
        first = 1 if skips["skip_first"] else 0
        last = len(self.kernel_layers) - (1 if skips["skip_last"] else 0)
        return self.kernel_layers[first:last]

    def _dense(self) -> dict:
        """Trains (or loads) the shared dense checkpoint; returns its record."""
        from tf_reweight.training import models, recipes

        info_path = self.cache / f"{self.stem}.json"
        if self.dense_path.exists() and info_path.exists():
            print(f"Dense checkpoint: {self.dense_path} (cached)", flush=True)
            return json.loads(info_path.read_text())
        a = self.args
        self.keras.utils.set_random_seed(a.seed)
        model = recipes.compile_classifier(models.get(self.suite.model), a.lr)
        decay = recipes.two_phase_lr(0, a.dense_epochs, a.lr)
        callbacks = [self.keras.callbacks.LearningRateScheduler(decay)]
        start = time.perf_counter()
        model.fit(
            *self.train,
            batch_size=a.batch_size,
            epochs=a.dense_epochs,
            verbose=a.verbose,
            callbacks=callbacks if self.suite.dense_decay else [],
        )
        seconds = time.perf_counter() - start
        info = {
            "accuracy": float(model.evaluate(*self.test, verbose=0)[1]),
            "seconds": round(seconds, 1),
        }
        model.save(self.dense_path)
        np.savez(self.cache / f"{self.stem}.npz", *model.get_weights())
        info_path.write_text(json.dumps(info))
        print(f"Dense checkpoint: {self.dense_path} (trained)", flush=True)
        return info

    def run(self, job: Job) -> dict:
        """Measures one job; returns the method-specific part of its record."""
        if job.method.startswith("tfmot"):
            return self._tfmot(job)
        from tf_reweight.pruning import batchnorm, sparsity
        from tf_reweight.training import recipes

        a = self.args
        self.keras.utils.set_random_seed(a.seed)
        dense = self.keras.saving.load_model(self.dense_path)
        options = None
        if job.method == "admm":
            options = {
                "every": a.admm_every,
                "unit": a.admm_unit,
                "rho_factor": a.admm_rho_factor,
                "rho_max": a.admm_rho_max,
            }
        result = recipes.prune(
            dense,
            self.train,
            method=job.method,
            structure=job.structure,
            target=f"{job.target_rate:g}x",
            penalty=job.penalty,
            phase1_epochs=a.epochs[0],
            retrain_epochs=a.epochs[1],
            schedule=a.schedule,
            batch_size=a.batch_size,
            lr=a.lr,
            verbose=a.verbose,
            method_options=options,
            **self._eps(job),
            **self.suite.skips(job.structure),
        )
        rep = sparsity.report(result.model).to_dict()
        out = {
            "accuracy": float(result.model.evaluate(*self.test, verbose=0)[1]),
            "nonzeros": rep["nonzeros"],
            "weights": rep["weights"],
            "seconds": round(result.seconds, 2),
            "epochs": result.epochs,
        }
        if options:
            out["method_options"] = options
        if a.recalibrate_bn:  # as recipes.prune(recalibrate_bn=N) does it
            out["accuracy_before_recalibration"] = out["accuracy"]
            x = self.train[0]
            size = batchnorm.check_recalibrate(a.recalibrate_bn, result.model, x)
            batchnorm.recalibrate_batchnorm(
                result.model, x, batch_size=a.batch_size, samples=size
            )
            out["accuracy"] = float(result.model.evaluate(*self.test, verbose=0)[1])
            out["recalibrate_bn"] = size
        return out

    @staticmethod
    def _eps(job: Job) -> dict:
        """Reweighting's eps: the job's, else 1e-3 (what records with eps
        None ran with, the library default until ``eps="auto"`` became it)."""
        if job.method != "reweighted":
            return {}
        return {"eps": 1e-3 if job.eps is None else job.eps}

    def _tfmot_data(self) -> Path:
        path = self.cache / f"{self.suite.dataset}_{self.stem}.npz"
        if not path.exists():
            (x, y), (x_test, y_test) = self.train, self.test
            np.savez(
                path,
                x_train=np.rint(x * 255).astype(np.uint8),
                y_train=y,
                x_test=np.rint(x_test * 255).astype(np.uint8),
                y_test=y_test,
            )
        return path

    def _reference_logits(self) -> Path:
        """The dense model's logits on 32 test images, to check tfmot's loading."""
        path = self.cache / f"{self.stem}_logits.npz"
        if not path.exists():
            dense = self.keras.saving.load_model(self.dense_path)
            images = self.test[0][:32]
            np.savez(path, images=images, logits=dense.predict(images, verbose=0))
        return path

    def _global_allocation(self, job: Job) -> str:
        """Per-layer sparsities of a global magnitude ranking of the dense model.

        The ranking covers the layers tfmot prunes, the unstructured ones.
        """
        from tf_reweight.core import budget, layouts, structures

        dense = self.keras.saving.load_model(self.dense_path)
        names = self.pruned_layers("unstructured")
        kernels = [
            lo.to_canonical(getattr(layer, lo.attr).numpy())
            for layer in (dense.get_layer(name) for name in names)
            for lo in layouts.kernel_layouts(layer)
        ]
        unstructured = [structures.get("unstructured")] * len(kernels)
        keep = budget.allocate(unstructured, kernels, 1.0 - 1.0 / job.target_rate)
        return ",".join(
            f"{1.0 - k / w.size:.6f}" for k, w in zip(keep, kernels, strict=True)
        )

    def _tfmot(self, job: Job) -> dict:
        from tf_reweight.training.recipes import two_phase_lr

        a = self.args
        schedule = two_phase_lr(a.epochs[0], a.epochs[1], a.lr)
        lrs = ",".join(f"{schedule(e):.6g}" for e in range(sum(a.epochs)))
        command = [
            sys.executable,
            str(HERE / "tfmot_baseline.py"),
            f"--model={self.suite.model}",
            f"--weights={self.cache / f'{self.stem}.npz'}",
            f"--check-logits={self._reference_logits()}",
            f"--data={self._tfmot_data()}",
            f"--target={1.0 - 1.0 / job.target_rate!r}",
            "--epochs",
            *(str(e) for e in a.epochs),
            f"--batch-size={a.batch_size}",
            f"--lrs={lrs}",
            f"--seed={a.seed}",
        ]
        layers = self.pruned_layers("unstructured")
        if layers != self.kernel_layers:
            command.append(f"--layers={','.join(layers)}")
        if job.method == "tfmot_global":
            command.append(f"--layer-sparsity={self._global_allocation(job)}")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(
                f"tfmot_baseline.py failed ({done.returncode}):\n{done.stderr[-3000:]}"
            )
        return json.loads(lines[-1])


def _schedule(args, job: Job) -> dict:
    """The record's ``schedule`` field: the plan of a tf_reweight method
    other than the default (the TFMOT baselines keep their own schedule)."""
    if args.schedule == "default" or job.method.startswith("tfmot"):
        return {}
    return {"schedule": args.schedule}


def measure(args, results: Path, command: str) -> int:
    """Runs every job not yet in ``results``; returns the number of failures."""
    todo = jobs(args)
    epochs = sum(args.epochs)
    bench = Bench(args)
    seed = {} if args.seed == 0 else {"seed": args.seed}
    common = {
        "model": bench.suite.model,
        "dataset": bench.suite.dataset,
        "command": command,
    }
    sizes = {"train_images": len(bench.train[0]), "test_images": len(bench.test[0])}
    store = records.Store(results, KEY_FIELDS)
    dense = {"method": "dense", "structure": "dense", "target_rate": 1.0}
    if not store.has({**dense, "epochs": args.dense_epochs, **seed}):
        record = {
            **dense,
            **seed,
            **common,
            "rate": 1.0,
            "accuracy": bench.dense_info["accuracy"],
            "epochs": args.dense_epochs,
            "seconds": bench.dense_info["seconds"],
            "seconds_per_epoch": bench.dense_info["seconds"] / args.dense_epochs,
            "nonzeros": None,
            **sizes,
            "versions": records.tf_versions(),
        }
        store.add(record)
        print(json.dumps(record), flush=True)
    failures = 0
    for i, job in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {job.method} {job.structure} {job.target_rate:g}x"
        if job.penalty is not None:
            label += f" penalty={records.label(job.penalty)}"
        variant = {**seed, **_schedule(args, job)}
        if store.has({**job.key_fields(epochs), **variant}):
            print(f"{label}: already measured, skipped", flush=True)
            continue
        print(f"{label}: running", flush=True)
        try:
            out = bench.run(job)
        except Exception:  # keep measuring the other jobs, report at the end
            traceback.print_exc()
            failures += 1
            continue
        record = {
            "method": job.method,
            **{k: v for k, v in common.items() if k != "command"},
            "structure": job.structure,
            "target_rate": job.target_rate,
            "rate": out["weights"] / max(out["nonzeros"], 1),
            "accuracy": out["accuracy"],
            "epochs": out["epochs"],
            "seconds": out["seconds"],
            "seconds_per_epoch": round(out["seconds"] / max(out["epochs"], 1), 2),
            "nonzeros": out["nonzeros"],
            "weights": out["weights"],
            **({} if job.penalty is None else {"penalty": job.penalty}),
            **({} if job.eps is None else {"eps": job.eps}),
            **variant,
            **{k: out[k] for k in OPTIONAL_FIELDS if k in out},
            **sizes,
            "versions": out.get("versions") or records.tf_versions(),
            "command": command,
        }
        store.add(record)
        print(json.dumps(record), flush=True)
    return failures


def lines(stored: list[dict], mains: dict) -> tuple[dict, list, list]:
    """Splits records into frontier lines, single sweep points and dense rows.

    A line is one method, structure and configuration (penalty, eps,
    schedule; seeds share a line) measured
    at several rates; its label names the configuration unless it is the
    method's main one (``mains``, from `main_configs`). A lone unstructured
    record off the main configuration is a sweep point.

    Returns:
        ``(lines, sweep, dense)``: ``{label: [records]}`` and two lists.
    """
    groups: dict[tuple, list] = {}
    dense = []
    for r in stored:
        if r["method"] == "dense":
            dense.append(r)
            continue
        config = (r.get("penalty"), r.get("eps"), r.get("schedule"))
        groups.setdefault((r["method"], r["structure"], config), []).append(r)
    found, sweep = {}, []
    for (method, structure, (penalty, eps, schedule)), rows in groups.items():
        main = mains.get((method, structure != "unstructured"), (None, None))
        main = penalty in (None, main[0]) and eps == main[1] and schedule is None
        if not main and len(rows) == 1 and structure == "unstructured":
            sweep.extend(rows)
            continue
        label = method if structure == "unstructured" else f"{method} ({structure})"
        if not main:
            label += f" λ={records.label(penalty)}"
            label += "" if eps is None else f" eps={records.label(eps)}"
            label += "" if schedule is None else f" {schedule} schedule"
        found[label] = sorted(rows, key=lambda r: r["rate"])
    return found, sweep, dense


def plot(
    stored: list[dict], path: Path, mains: dict, suite: Suite = SUITES["mnist"]
) -> None:
    """Accuracy vs compression rate (log x), one line per method and structure.

    The left panel shows the whole accuracy range, the right one zooms on
    ``suite.zoom``-100% (default: 20 points below the dense accuracy up to 5
    above). Sweep records (a penalty other than the line's) are crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, sweep, dense = lines(stored, mains)
    zoom = (suite.zoom, 100.0)
    if suite.zoom is None:
        top = 100 * max((r["accuracy"] for r in dense), default=1.0)
        zoom = (max(0.0, 10 * np.floor(top / 10) - 20), min(100.0, top + 5))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, limits in zip(axes, (None, zoom), strict=True):
        colors = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]
        ax.set_prop_cycle(color=colors)  # distinct colors for up to 20 lines
        for r in dense:
            ax.axhline(100 * r["accuracy"], color="gray", lw=0.8, ls=":", label="dense")
        for label, rows in sorted(series.items()):
            unstructured = rows[0]["structure"] == "unstructured"
            if unstructured and suite.label_structures:
                label += " (unstructured)"
            ax.plot(
                [r["rate"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                "-o" if unstructured else "--s",
                ms=4,
                label=label,
            )
        for r in sweep:
            xy = (r["rate"], 100 * r["accuracy"])
            ax.plot(*xy, "kx")
            ax.annotate(f"λ={records.label(r['penalty'])}", xy, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(f"compression rate (dense / nonzero weights, {suite.counted})")
        ax.set_ylabel("test accuracy (%)")
        if limits is not None:
            ax.set_ylim(*limits)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(f"{suite.title}: same dense start and epoch budget")
    axes[1].set_title(f"zoom: {zoom[0]:g}-{zoom[1]:g}%")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Wrote {path}", flush=True)


def table(stored: list[dict], mains: dict) -> str:
    """A Markdown table: accuracy (and achieved rate) per target and line.

    Rows are (structure, target rate), columns the lines of `lines` (a
    structured line shares its method's column); sweep points are left out,
    as in the plot.
    """
    series, _, _ = lines(stored, mains)
    cells, columns = {}, []
    for label, rows in series.items():
        column = label.split(" (")[0] if "(" in label and "λ" not in label else label
        columns.append(column)
        for r in rows:
            row = (r["structure"] != "unstructured", r["structure"], r["target_rate"])
            cells[row, column] = f"{100 * r['accuracy']:.2f} ({r['rate']:.4g}x)"
    known = [m for m in (*METHODS, *EXTRA_METHODS) if m in columns]
    order = known + sorted(set(columns) - set(known))
    out = [
        "| structure | target | " + " | ".join(order) + " |",
        "|---|---|" + "---|" * len(order),
    ]
    for row in sorted({key for key, _ in cells}):
        values = [cells.get((row, c), "") for c in order]
        out.append(f"| {row[1]} | {row[2]:g}x | " + " | ".join(values) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    suite = SUITES[args.suite]
    stem = "frontier" if suite.name == "mnist" else f"frontier_{suite.name}"
    default = f"{stem}_quick.json" if args.quick else f"{stem}.json"
    results = Path(args.results) if args.results else HERE / "results" / default
    command = records.command("frontier", argv)
    print(f"Command: {command}\nResults: {results}", flush=True)
    failures = 0
    if not args.plot_only:
        failures = measure(args, results, command)
    mains = main_configs(args)
    if args.plot or args.plot_only:
        plot(records.load(results), results.with_suffix(".png"), mains, suite)
    print(table(records.load(results), mains), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
