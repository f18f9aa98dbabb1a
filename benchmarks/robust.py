"""Robust compression: accuracy and PGD accuracy of adversarially pruned models.

Two suites, each starting every method from the same adversarially trained
dense checkpoint (cached outside the repository under ``--cache-dir``,
default ``~/.cache/tf_reweight/bench``) with the same epoch budget
``--epochs P R`` (P penalized epochs, R masked retraining epochs, all of
them adversarial; `tf_reweight.robust.mrpf.adversarial_prune`):

- ``mnist``: LeNet-5, eps 0.3, PGD-7 adversarial training (step
  ``2.5 * eps / 7``), PGD-40 evaluation with step 0.01;
- ``cifar10``: ResNet-20, eps 8/255, FGSM-RS adversarial training (Wong et
  al., step ``1.25 * eps``), PGD-10 evaluation with step 2/255.

Methods (`VARIANTS`; adding one is one entry): ``reweighted`` (bounded, the
default of adversarial pruning; ``reweighted_unbounded`` without) and ``admm``
rank units globally across layers (one budget for the model);
``mrs_reweighted`` allocates per-layer ratios by Module Robustness
Sensitivity (MRPF, `tf_reweight.robust.mrpf.mrpf`; worst-case relative weight
perturbation probe), ``mrs_prune_reweighted`` by the magnitude-pruning probe
of MRS, and ``uniform_reweighted`` gives every layer the same ratio, all at
exactly the same number of kept weights. ``rate`` is dense / nonzero weights
over all prunable kernels (biases and BatchNorm excluded).

With ``--recalibrate-bn N`` each pruned model is evaluated twice: as
trained, and again after `tf_reweight.recalibrate_batchnorm` recomputed its
BatchNorm statistics on N clean training images (``recal_accuracy`` and
``recal_robust_accuracy``); adversarial training leaves statistics of
adversarial inputs behind.

Clean ``accuracy`` uses the whole test set; ``robust_accuracy`` attacks its
first ``eval_samples`` images (one random start). Records are appended to
``benchmarks/results/robust.json`` (``robust_quick.json`` with ``--quick``);
a record whose key is already there is skipped, so a run resumes.
``--seed`` seeds the dense checkpoint and the pruning runs; ``--prune-seed``
reruns the pruning from the same dense checkpoint with another seed.

    python benchmarks/robust.py --suite mnist
    python benchmarks/robust.py --suite cifar10 --quick
"""

from __future__ import annotations

import argparse
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
QUICK = {
    "train_limit": 2048,
    "adv_epochs": 1,
    "epochs": (1, 1),
    "eval_limit": 200,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="mnist", choices=sorted(SUITES))
    p.add_argument("--quick", action="store_true", help="a tiny run")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"of {list(VARIANTS)}")
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
    p.add_argument("--max-ratio", type=float, default=None, help="MRS allocation")
    p.add_argument("--probe-size", type=int, default=512, help="MRS probe images")
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
    p.add_argument("--batch-size", type=int, default=128)
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
    settings = dict(SUITES[args.suite])
    if args.quick:
        settings.update(QUICK)
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
    "recalibrate_bn",
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
        train, self.test = data.load(args.dataset, args.data_dir)
        self.train = (train[0][: args.train_limit], train[1][: args.train_limit])
        stem = (
            f"{args.model}_{args.dataset}_{train_attack(args)}_eps{args.eps:.4g}"
            f"_c{args.pretrain_epochs}_a{args.adv_epochs}_n{len(self.train[1])}"
            f"_s{args.seed}"
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
        "dense_adv_epochs": args.adv_epochs,
        **({"recalibrate_bn": args.recalibrate_bn} if args.recalibrate_bn else {}),
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
    }
    same = [
        r
        for r in stored
        if all(r.get(k) == v for k, v in wanted.items())
        and (args.train_limit is None or r["train_samples"] <= args.train_limit)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _configure(argv)
    default = "robust_quick.json" if args.quick else "robust.json"
    results = Path(args.results) if args.results else HERE / "results" / default
    command = records.command("robust", argv)
    print(f"Command: {command}\nResults: {results}", flush=True)
    failures = measure(args, results, command)
    print(table(records.load(results), args), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
