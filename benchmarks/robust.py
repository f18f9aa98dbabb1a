"""Robust compression: accuracy and PGD accuracy of adversarially pruned models.

Three suites, each starting every method from the same adversarially trained
dense checkpoint (cached outside the repository under ``--cache-dir``,
default ``~/.cache/tf_reweight/bench``) with the same epoch budget
``--epochs P R`` (P penalized epochs, R masked retraining epochs, all of
them adversarial; `tf_reweight.robust.mrpf.adversarial_prune`):

- ``mnist``: LeNet-5, eps 0.3, PGD-7 adversarial training (step
  ``2.5 * eps / 7``), PGD-40 evaluation with step 0.01;
- ``cifar10``: ResNet-20, eps 8/255, FGSM-RS adversarial training (Wong et
  al., step ``1.25 * eps``), PGD-10 evaluation with step 2/255;
- ``cifar10-paper``: the paper scale, for one GPU: ResNet-18 (11.2M prunable
  weights) on all 50,000 training images, the attacks of ``cifar10``, 15
  dense FGSM-RS epochs, 3 + 3 epochs per method, PGD-10 on the first 2,000
  test images, batch 500 (50,000 = 100 x 500: no ragged last batch for XLA
  to compile again), mixed precision (``mixed_bfloat16``) and XLA-compiled
  steps; methods ``reweighted_auto`` against ``admm`` (global ranking) and
  ``mrs_reweighted_auto`` against ``uniform_reweighted_auto``. Records go
  to ``benchmarks/results/robust_paper.json``.

Time of ``cifar10-paper`` on one H200 (an estimate: the suite has not run on
a GPU yet): an FGSM-RS epoch of ResNet-18 on 50,000 images costs about 7
forward passes (0.56 GMAC each) per image, roughly 8-15 s in bfloat16 with
XLA (10 s planned); each `fit` adds about 30 s of XLA compilation; each pruning run
adds its NumPy work on the 11.2M weights (allocations at every refresh, the
penalty calibration, the hard prune: 7 s each on two busy CPU cores, about
2-3 s on an idle host, some 12 s a run), loading and evaluation (about 15 s,
PGD-10 on 2,000 images included). Dense: 15 x 10 + 30 = 180 s; each of the
four methods: 6 x 10 + 30 + 12 + 15 = about 120 s (the MRS probe adds
about 10 s); with start-up, about 12 minutes in all (10.5 at 8 s an epoch,
15 at 15 s). Records are appended one by one, so a run that stops resumes
where it stopped as long as ``--cache-dir`` (the dense checkpoint) is kept.

Speed switches: ``--mixed-precision [POLICY]`` (``mixed_bfloat16``,
``mixed_float16`` or ``off``) sets Keras' global dtype policy for the run
(`speed`; on by default in ``cifar10-paper`` only). Steps are XLA-compiled by
Keras' own default (``jit_compile="auto"``: XLA on a GPU, not on a CPU). The
data path is Keras' own (in-memory arrays, shuffled and batched by a
prefetching `tf.data` pipeline).

Methods (`VARIANTS`; adding one is one entry): ``reweighted`` (bounded, the
default of adversarial pruning; ``reweighted_unbounded`` without) and ``admm``
rank units globally across layers (one budget for the model);
``mrs_reweighted`` allocates per-layer ratios by Module Robustness
Sensitivity (MRPF, `tf_reweight.robust.mrpf.mrpf`; worst-case relative weight
perturbation probe), ``mrs_prune_reweighted`` by the magnitude-pruning probe
of MRS, and ``uniform_reweighted`` gives every layer the same ratio, all at
exactly the same number of kept weights; the ``_auto`` variants let
reweighting choose its penalty and eps. ``rate`` is dense / nonzero weights
over all prunable kernels (biases and BatchNorm excluded).

With ``--recalibrate-bn N`` each pruned model is evaluated twice: as
trained, and again after `tf_reweight.recalibrate_batchnorm` recomputed its
BatchNorm statistics on N clean training images (``recal_accuracy`` and
``recal_robust_accuracy``); adversarial training leaves statistics of
adversarial inputs behind.

Clean ``accuracy`` uses the whole test set (the first ``--test-limit``
images if given); ``robust_accuracy`` attacks its first ``eval_samples``
images (one random start). Records are appended to
``benchmarks/results/robust.json`` (``robust_paper.json`` for
``cifar10-paper``; ``_quick`` before ``.json`` with ``--quick``, alias
``--tiny``), each with the ``device`` it ran on (``"gpu"`` or ``"cpu"``);
a record whose key is already there is skipped, so a run resumes.
``--seed`` seeds the dense checkpoint and the pruning runs; ``--prune-seed``
reruns the pruning from the same dense checkpoint with another seed.
``--quick`` of ``cifar10-paper`` is a smoke run of the same code path (32
training images, one method, mixed precision, XLA only on a GPU): about 1.5
minutes on two busy CPU cores.

    python benchmarks/robust.py --suite mnist
    python benchmarks/robust.py --suite cifar10 --quick
    python benchmarks/robust.py --suite cifar10-paper        # on one GPU
    python benchmarks/robust.py --suite cifar10-paper --quick  # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import records  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Variant:
    """How one benchmark method prunes: a recipe method and an allocation.

    Attributes:
        method: A `tf_reweight.training.recipes.METHODS` name.
        allocation: ``"global"`` (ranked across layers), ``"mrs"`` or
            ``"uniform"``.
        options: ``(name, value)`` pairs for the method's phase-1 callback.
        mode: The MRS probe (``"perturb"`` or ``"prune"``) of ``"mrs"``.
        penalty: The method's penalty; None for `recipes.DEFAULT_PENALTY`,
            except reweighting, whose None is 1e-4 (the library default the
            records before ``penalty="auto"`` ran with).
        bounded: Bounded reweighting; None for the library default
            (`tf_reweight.robust.mrpf.bounded_option`).
        eps: Reweighting's eps; None is 1e-3 (likewise).
    """

    method: str
    allocation: str = "global"
    options: tuple = ()
    mode: str = "perturb"
    penalty: float | str | None = None
    bounded: bool | None = None
    eps: float | str | None = None

    def penalty_value(self, default: Mapping) -> float | str:
        """The penalty this variant trains with (see ``penalty``)."""
        if self.penalty is not None:
            return self.penalty
        return 1e-4 if self.method == "reweighted" else default[self.method]

    def apply_options(self) -> dict:
        """Reweighting's eps (see ``eps``); nothing for other methods."""
        if self.method != "reweighted":
            return {}
        return {"eps": 1e-3 if self.eps is None else self.eps}


VARIANTS = {
    "reweighted": Variant("reweighted"),
    "admm": Variant("admm", options=(("rho_factor", 1.5), ("rho_max", 1.0))),
    "mrs_reweighted": Variant("reweighted", "mrs"),
    "mrs_prune_reweighted": Variant("reweighted", "mrs", mode="prune"),
    "uniform_reweighted": Variant("reweighted", "uniform"),
    "reweighted_unbounded": Variant("reweighted", bounded=False),
    "reweighted_1e-5": Variant("reweighted", penalty=1e-5),
    "mrs_prune_reweighted_1e-5": Variant(
        "reweighted", "mrs", mode="prune", penalty=1e-5
    ),
    "uniform_reweighted_1e-5": Variant("reweighted", "uniform", penalty=1e-5),
    "reweighted_auto": Variant("reweighted", penalty="auto", eps="auto"),
    "mrs_reweighted_auto": Variant("reweighted", "mrs", penalty="auto", eps="auto"),
    "uniform_reweighted_auto": Variant(
        "reweighted", "uniform", penalty="auto", eps="auto"
    ),
    "magnitude": Variant("magnitude"),
    "mrs_magnitude": Variant("magnitude", "mrs"),
    "uniform_magnitude": Variant("magnitude", "uniform"),
}
DEFAULT_METHODS = (
    "reweighted,admm,mrs_reweighted,mrs_prune_reweighted,uniform_reweighted"
)
# What a suite leaves unset. ``mixed_precision`` is a Keras dtype policy or
# "off"; ``results_name`` names the results file (``<name>.json``, or
# ``<name>_quick.json``).
DEFAULTS = {
    "methods": DEFAULT_METHODS,
    "batch_size": 128,
    "probe_size": 512,
    "mixed_precision": "off",
    "results_name": "robust",
}

SUITES = {
    "mnist": {
        "model": "lenet5",
        "dataset": "mnist",
        "eps": 0.3,
        "attack": "pgd",
        "attack_steps": 7,
        "pretrain_epochs": 1,
        "adv_epochs": 8,
        "epochs": (2, 2),
        "eval_steps": 40,
        "eval_step_size": 0.01,
        "eval_limit": 10000,
    },
    "cifar10": {
        "model": "resnet20",
        "dataset": "cifar10",
        "eps": 8 / 255,
        "attack": "fgsm",
        "attack_steps": 1,
        "pretrain_epochs": 0,
        "adv_epochs": 10,
        "epochs": (3, 3),
        "eval_steps": 10,
        "eval_step_size": 2 / 255,
        "eval_limit": 1000,
    },
}
# The paper scale (Fan et al., Bai et al.: ResNet-18, all 50,000 images), sized
# for about 12 minutes on one H200 (see the module docstring for the estimate).
SUITES["cifar10-paper"] = {
    **SUITES["cifar10"],
    "model": "resnet18",
    "adv_epochs": 15,
    "epochs": (3, 3),
    "eval_limit": 2000,
    # 50,000 = 100 x 500: no ragged last batch, which XLA compiles once more.
    "batch_size": 500,
    "methods": "reweighted_auto,admm,mrs_reweighted_auto,uniform_reweighted_auto",
    "mixed_precision": "mixed_bfloat16",
    "results_name": "robust_paper",
    # On top of QUICK: a smoke run of the same code path, about 1.5 minutes on
    # two busy CPU cores, mixed precision included.
    "quick": {
        "train_limit": 32,
        "test_limit": 64,
        "eval_limit": 16,
        "eval_steps": 2,
        "probe_size": 32,
        "epochs": (1, 1),
        "batch_size": 32,
        "methods": "reweighted_auto",
    },
}
QUICK = {
    "train_limit": 2048,
    "adv_epochs": 1,
    "epochs": (1, 1),
    "eval_limit": 200,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="mnist", choices=sorted(SUITES))
    p.add_argument("--quick", "--tiny", action="store_true", help="a tiny run")
    p.add_argument("--methods", default=None, help=f"of {list(VARIANTS)}")
    p.add_argument("--rate", type=float, default=16.0, help="target compression")
    p.add_argument("--structure", default="unstructured")
    p.add_argument("--epochs", type=int, nargs=2, default=None, metavar=("P", "R"))
    p.add_argument("--pretrain-epochs", type=int, default=None, help="clean epochs")
    p.add_argument("--adv-epochs", type=int, default=None, help="dense AT epochs")
    p.add_argument("--attack", default=None, choices=["pgd", "fgsm"])
    p.add_argument("--attack-steps", type=int, default=None)
    p.add_argument("--step-size", type=float, default=None, help="training attack")
    p.add_argument("--eval-steps", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None, help="PGD test images")
    p.add_argument(
        "--test-limit", type=int, default=None, help="clean accuracy: first N images"
    )
    p.add_argument("--max-ratio", type=float, default=None, help="MRS allocation")
    p.add_argument("--probe-size", type=int, default=None, help="MRS probe images")
    p.add_argument(
        "--probe-ratio", type=float, default=0.5, help="MRS pruning probe ratio"
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=None,
        metavar="N",
        help="also evaluate after recomputing BatchNorm statistics on N images",
    )
    p.add_argument("--train-limit", type=int, default=None, help="first N images")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--mixed-precision",
        nargs="?",
        const="mixed_bfloat16",
        default=None,
        choices=["mixed_bfloat16", "mixed_float16", "off"],
        help="a Keras dtype policy for the run (bare: mixed_bfloat16), or off",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="dense training and pruning")
    p.add_argument(
        "--prune-seed",
        type=int,
        default=None,
        help="another seed for pruning only, from the same dense checkpoint",
    )
    p.add_argument("--data-dir", default=None, help="default: TF_REWEIGHT_DATA_DIR")
    p.add_argument(
        "--cache-dir", default=str(Path("~/.cache/tf_reweight/bench").expanduser())
    )
    p.add_argument("--results", default=None, help="the JSON list of records")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2])
    return p


def _configure(argv: list[str]) -> argparse.Namespace:
    """Parses ``argv`` and fills unset options from the suite (and ``--quick``)."""
    args = _parser().parse_args(argv)
    settings = {**DEFAULTS, **SUITES[args.suite]}
    quick = settings.pop("quick", {})
    if args.quick:
        settings.update({**QUICK, **quick})
    for name, value in settings.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.epochs = tuple(args.epochs)
    args.checkpoint = None
    unknown = sorted(set(_names(args.methods)) - set(VARIANTS))
    if unknown:
        raise SystemExit(
            f"Unknown methods {unknown}; expected some of {list(VARIANTS)}"
        )
    return args


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def attacks(args):
    """``(training, evaluation)`` `Attack` of the suite's settings."""
    from tf_reweight import Attack

    training = Attack(
        kind=args.attack,
        epsilon=args.eps,
        steps=args.attack_steps,
        step_size=args.step_size,
    )
    evaluation = Attack(
        kind="pgd",
        epsilon=args.eps,
        steps=args.eval_steps,
        step_size=args.eval_step_size,
    )
    return training, evaluation


def train_attack(args) -> str:
    return attacks(args)[0].label


def device() -> str:
    """``"gpu"`` when TensorFlow sees a GPU, else ``"cpu"``."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


@contextlib.contextmanager
def speed(args):
    """The run's mixed precision policy, undone on exit.

    ``args.mixed_precision`` (unless "off") becomes Keras' global dtype
    policy, so the models built inside compute in bfloat16 (or float16) with
    float32 variables; a saved checkpoint keeps its layers' policy.
    """
    import keras

    policy = keras.mixed_precision.global_policy()
    try:
        if args.mixed_precision != "off":
            keras.mixed_precision.set_global_policy(args.mixed_precision)
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


# The fields that identify a record: a run skips the methods already stored.
KEY_FIELDS = (
    "method",
    "model",
    "dataset",
    "structure",
    "target_rate",
    "epochs",
    "train_attack",
    "attack",
    "eval_samples",
    "train_samples",
    "test_samples",
    "recalibrate_bn",
    "precision",
    "max_ratio",
    "probe_ratio",
    "seed",
    "prune_seed",
)


class Bench:
    """Data, the robust dense checkpoint and the runners of one invocation."""

    def __init__(self, args):
        import keras

        from tf_reweight.training import data

        self.args = args
        self.keras = keras
        train, test = data.load(args.dataset, args.data_dir)
        self.train = (train[0][: args.train_limit], train[1][: args.train_limit])
        self.test = (test[0][: args.test_limit], test[1][: args.test_limit])
        stem = (
            f"{args.model}_{args.dataset}_{train_attack(args)}_eps{args.eps:.4g}"
            f"_c{args.pretrain_epochs}_a{args.adv_epochs}_n{len(self.train[1])}"
            f"_s{args.seed}"
            + (f"_b{args.batch_size}" if args.batch_size != 128 else "")
            + (f"_{args.mixed_precision}" if args.mixed_precision != "off" else "")
        )
        self.dir = Path(args.cache_dir).expanduser() / "robust" / stem
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dense_info = self._dense()

    def _dense(self) -> dict:
        """Trains (or loads) the robust dense checkpoint; returns its facts."""
        info_path = self.dir / "dense.json"
        if info_path.exists() and (self.dir / "dense.keras").exists():
            print(f"Dense checkpoint: {self.dir / 'dense.keras'} (cached)", flush=True)
            return json.loads(info_path.read_text())
        self.keras.utils.set_random_seed(self.args.seed)
        start = time.perf_counter()
        model = self._train_dense()
        info = {
            "seconds": round(time.perf_counter() - start, 1),
            **self.evaluate(model),
        }
        info_path.write_text(json.dumps(info))
        print(f"Dense checkpoint: {self.dir / 'dense.keras'} (trained)", flush=True)
        return info

    def _train_dense(self):
        """Clean, then adversarial training of a new model; saves dense.keras."""
        from tf_reweight.robust.adversarial import adversarial_pretrain
        from tf_reweight.training import data, models, recipes

        a = self.args
        self.keras.utils.set_random_seed(a.seed)
        shape = data.image_shape(a.dataset)
        model = models.get(a.model, input_shape=shape, num_classes=10)
        recipes.compile_classifier(model, a.lr)
        schedule = recipes.two_phase_lr(0, a.pretrain_epochs, a.lr)
        model.fit(
            *self.train,
            batch_size=a.batch_size,
            epochs=a.pretrain_epochs,
            callbacks=[self.keras.callbacks.LearningRateScheduler(schedule)],
            verbose=a.verbose,
        )
        if a.adv_epochs:
            adversarial_pretrain(
                model,
                self.train,
                a.adv_epochs,
                attack=attacks(a)[0],
                batch_size=a.batch_size,
                lr=a.lr,
                verbose=a.verbose,
            )
        model.save(self.dir / "dense.keras")
        return model

    def dense_metrics(self) -> dict:
        """The dense checkpoint's facts, evaluated like this run's models.

        The cached facts hold the evaluation of the run that trained the
        checkpoint; another ``--eval-limit`` evaluates the checkpoint again.
        """
        info = self.dense_info
        wanted = min(self.args.eval_limit, len(self.test[1]))
        if (info["eval_samples"], info.get("attack")) == (wanted, self.attack):
            return dict(info)
        dense = self.keras.saving.load_model(self.dir / "dense.keras")
        return {"seconds": info["seconds"], **self.evaluate(dense)}

    @property
    def attack(self) -> str:
        return attacks(self.args)[1].label

    def evaluate(self, model) -> dict:
        """Clean accuracy, PGD accuracy, the number attacked and the attack."""
        from tf_reweight.robust.robustness import measure_robustness

        evaluation = attacks(self.args)[1]
        metrics = measure_robustness(
            model, self.test, evaluation, limit=self.args.eval_limit
        )
        return {**metrics, "attack": self.attack}

    def run(self, variant: Variant) -> dict:
        """Prunes and evaluates one variant; returns its measured facts."""
        from tf_reweight.pruning import sparsity
        from tf_reweight.robust import mrpf
        from tf_reweight.training.recipes import DEFAULT_PENALTY

        a = self.args
        seed = a.seed if a.prune_seed is None else a.prune_seed
        self.keras.utils.set_random_seed(seed)
        dense = self.keras.saving.load_model(self.dir / "dense.keras")
        options = {
            "method": variant.method,
            "structure": a.structure,
            "penalty": variant.penalty_value(DEFAULT_PENALTY),
            **variant.apply_options(),
            "batch_size": a.batch_size,
            "lr": a.lr,
            "verbose": a.verbose,
            "method_options": dict(variant.options) or None,
            "bounded": variant.bounded,
        }  # recalibrate_bn is measured separately below
        target, ratios = f"{a.rate:g}x", None
        if variant.allocation == "global":
            result = mrpf.adversarial_prune(
                dense,
                self.train,
                target,
                phase1_epochs=a.epochs[0],
                retrain_epochs=a.epochs[1],
                attack=attacks(a)[0],
                **options,
            )
        else:
            probe = {"probe_ratio": a.probe_ratio} if variant.mode == "prune" else {}
            result = mrpf.mrpf(
                dense,
                self.train,
                self.train[0][: a.probe_size],
                self.train[1][: a.probe_size],
                target,
                attacks(a)[0],
                allocation=variant.allocation,
                mode=variant.mode,
                finetune_epochs=sum(a.epochs),
                phase1_epochs=a.epochs[0],
                max_ratio=a.max_ratio,
                mrs_options=probe,
                **options,
            )
            ratios = result.ratios
        rep = sparsity.report(result.model)
        out = {
            "penalty": variant.penalty_value(DEFAULT_PENALTY),
            **variant.apply_options(),
            "bounded": mrpf.bounded_option(variant.method, variant.bounded).get(
                "bounded"
            ),
            **self.evaluate(result.model),
            "nonzeros": rep.to_dict()["nonzeros"],
            "weights": rep.to_dict()["weights"],
            "seconds": round(result.seconds, 1),
            "epochs": result.epochs,
            "layer_sparsity": ",".join(f"{r.layer}:{r.sparsity:.4f}" for r in rep.rows),
        }
        if ratios is not None:
            out["allocated"] = ",".join(f"{n}:{r:.4f}" for n, r in ratios.items())
        if a.recalibrate_bn:  # as recipes.prune(recalibrate_bn=N) does it
            from tf_reweight.pruning import batchnorm

            x = self.train[0]
            size = batchnorm.check_recalibrate(a.recalibrate_bn, result.model, x)
            batchnorm.recalibrate_batchnorm(result.model, x, a.batch_size, samples=size)
            recal = self.evaluate(result.model)
            out["recal_accuracy"] = recal["accuracy"]
            out["recal_robust_accuracy"] = recal["robust_accuracy"]
        return out


def measure(args, results: Path, command: str) -> int:
    """Runs every method not yet in ``results``; returns the number of failures."""
    bench = Bench(args)
    common = {
        "model": args.model,
        "dataset": args.dataset,
        "eps": args.eps,
        "train_attack": train_attack(args),
        "attack": f"pgd-{args.eval_steps}",
        "eval_step_size": args.eval_step_size,
        "train_samples": len(bench.train[1]),
        **({} if args.test_limit is None else {"test_samples": len(bench.test[1])}),
        "dense_adv_epochs": args.adv_epochs,
        "batch_size": args.batch_size,
        "device": device(),
        **({"recalibrate_bn": args.recalibrate_bn} if args.recalibrate_bn else {}),
        **(
            {"precision": args.mixed_precision} if args.mixed_precision != "off" else {}
        ),
        **({"max_ratio": args.max_ratio} if args.max_ratio else {}),
        **({"probe_ratio": args.probe_ratio} if args.probe_ratio != 0.5 else {}),
        **({"seed": args.seed} if args.seed else {}),
        **({} if args.prune_seed is None else {"prune_seed": args.prune_seed}),
    }
    jobs = [("dense", None)] + [(m, VARIANTS[m]) for m in _names(args.methods)]
    store = records.Store(results, KEY_FIELDS)
    failures = 0
    for i, (name, variant) in enumerate(jobs):
        key_fields = {"method": name, "structure": args.structure, **common}
        if variant is None:
            key_fields.update(structure="dense", target_rate=1.0)
            # The same dense checkpoint whatever the pruning options.
            for option in ("prune_seed", "probe_ratio", "max_ratio"):
                key_fields.pop(option, None)
            key_fields["epochs"] = args.pretrain_epochs + args.adv_epochs
        else:
            key_fields.update(target_rate=args.rate, epochs=sum(args.epochs))
        key_fields["eval_samples"] = min(args.eval_limit, len(bench.test[1]))
        label = f"[{i}/{len(jobs) - 1}] {name} {args.rate:g}x"
        if store.has(key_fields):
            print(f"{label}: already measured, skipped", flush=True)
            continue
        print(f"{label}: running", flush=True)
        try:
            out = bench.dense_metrics() if variant is None else bench.run(variant)
        except Exception:  # keep measuring the other methods, report at the end
            traceback.print_exc()
            failures += 1
            continue
        if variant is None:
            out.update(rate=1.0, nonzeros=None)
        else:
            out["rate"] = out["weights"] / max(out["nonzeros"], 1)
        versions = records.tf_versions()
        record = {**key_fields, **out, "versions": versions, "command": command}
        store.add(record)
        print(json.dumps(record), flush=True)
    return failures


def table(stored: list[dict], args) -> str:
    """A Markdown table of the records measured with ``args``' settings.

    One row per method; each accuracy cell lists the runs (``seed`` /
    ``prune_seed`` pairs, the column header) separated by slashes, then
    their mean. Records of other suites, budgets or evaluations are left
    out.
    """
    wanted = {
        "dataset": args.dataset,
        "model": args.model,
        "train_attack": train_attack(args),
        "attack": f"pgd-{args.eval_steps}",
        "eval_samples": args.eval_limit,
        "recalibrate_bn": args.recalibrate_bn or None,
        "dense_adv_epochs": args.adv_epochs,
        "precision": None if args.mixed_precision == "off" else args.mixed_precision,
    }
    same = [
        r
        for r in stored
        if all(r.get(k) == v for k, v in wanted.items())
        and (args.train_limit is None or r["train_samples"] <= args.train_limit)
        and (
            r.get("test_samples") is None
            if args.test_limit is None
            else r.get("test_samples", args.test_limit + 1) <= args.test_limit
        )
        and (
            r["method"] == "dense"
            or (r["epochs"], r["target_rate"]) == (sum(args.epochs), args.rate)
        )
    ]
    runs = sorted(
        {(r.get("seed", 0), r.get("prune_seed")) for r in same},
        key=lambda run: (run[0], -1 if run[1] is None else run[1]),
    )
    fields = [("accuracy", "clean"), ("robust_accuracy", f"PGD-{args.eval_steps}")]
    if args.recalibrate_bn:
        fields += [
            ("recal_accuracy", "clean, BN recal"),
            ("recal_robust_accuracy", f"PGD-{args.eval_steps}, BN recal"),
        ]
    head = " / ".join(f"s{s}" + ("" if p is None else f" p{p}") for s, p in runs)
    out = [
        "| method | rate | " + " | ".join(f"{h} ({head})" for _, h in fields) + " |",
        "|---|---|" + "---|" * len(fields),
    ]

    def label(r: dict) -> str:
        if r["method"] == "dense":
            return "dense"
        options = [
            f"{name} {r[key]:g}"
            for key, name in (("probe_ratio", "probe"), ("max_ratio", "cap"))
            if r.get(key) is not None
        ]
        return r["method"] + (f" ({', '.join(options)})" if options else "")

    methods = sorted(dict.fromkeys(map(label, same)), key=lambda m: m != "dense")
    for method in methods:
        # The dense checkpoint belongs to a seed: it shows under its prune seed None.
        rows = {
            (r.get("seed", 0), r.get("prune_seed")): r
            for r in same
            if label(r) == method
        }
        cells = []
        for field, _ in fields:
            values = [rows.get(run, {}).get(field) for run in runs]
            shown = [v for v in values if v is not None]
            text = " / ".join("–" if v is None else f"{100 * v:.2f}" for v in values)
            if len(shown) > 1:
                text += f" (mean {100 * sum(shown) / len(shown):.2f})"
            cells.append(text if shown else "")
        rate = "1x" if method == "dense" else f"{args.rate:g}x"
        out.append(f"| {method} | {rate} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def results_path(args) -> Path:
    """``--results``, else the suite's file (``_quick`` with ``--quick``)."""
    if args.results:
        return Path(args.results)
    suffix = "_quick" if args.quick else ""
    return HERE / "results" / f"{args.results_name}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _configure(argv)
    results = results_path(args)
    command = records.command("robust", argv)
    print(f"Command: {command}\nResults: {results}", flush=True)
    with speed(args):
        failures = measure(args, results, command)
    print(table(records.load(results), args), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
