"""The frontier's runner: `Bench` measures the jobs of one `frontier.py` run.

It loads the data, trains (or loads) the shared dense checkpoint, and
measures a job by pruning that checkpoint with
`tf_reweight.training.recipes.prune`, or by running the TFMOT baseline
(``tfmot_baseline.py``) in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.frontier_jobs import SUITES, Job

TFMOT_BASELINE = Path(__file__).resolve().with_name("tfmot_baseline.py")
# Fields of `Bench.run`'s result that only some jobs have.
OPTIONAL_FIELDS = ("method_options", "recalibrate_bn", "accuracy_before_recalibration")


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
            str(TFMOT_BASELINE),
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
