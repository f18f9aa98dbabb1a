"""Robust benchmark, one run: the methods, the attacks and `Bench`.

`Variant` says how one method prunes (`VARIANTS` names them); `Bench` loads
the data, trains (or loads) the adversarially trained dense checkpoint and
prunes and evaluates one variant from it. `speed` sets the run's mixed
precision policy. The command line, the suites and the measure loop are in
`benchmarks/robust.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path


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
