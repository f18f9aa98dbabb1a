"""Export benchmark, the models: data, the model cache and training.

`Models` loads the data of one run (cut to ``--train-limit`` and
``--test-limit``) and trains, or loads from the cache, the dense and the
pruned Keras models (`Trained`) that `benchmarks/export_measure.py` exports.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import tf_reweight as tfr


@dataclass
class Trained:
    """A trained Keras model with what its training cost."""

    name: str
    model: keras.Model
    meta: dict


class Models:
    """The data and the trained models of one run, cached."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cache = Path(args.cache_dir).expanduser()
        self._data: dict[str, tuple] = {}

    def data(self, name: str):
        """``((x_train, y_train), (x_test, y_test))``, cut to the limits."""
        if name not in self._data:
            (x, y), (xt, yt) = tfr.data.load(name, self.args.data_dir)
            n, nt = self.args.train_limit, self.args.test_limit
            self._data[name] = ((x[:n], y[:n]), (xt[:nt], yt[:nt]))
        return self._data[name]

    def cached(self, name: str, train: Callable[[], tuple]) -> Trained:
        """Loads ``name`` from the cache or trains it with ``train()``.

        ``train`` returns ``(plain_model, meta)``; both are written to the
        cache (``name.keras`` and ``name.json``).
        """
        path, meta_path = self.cache / f"{name}.keras", self.cache / f"{name}.json"
        if path.is_file() and meta_path.is_file():
            print(f"[cache] {name}", flush=True)
            return Trained(
                name, keras.saving.load_model(path), json.loads(meta_path.read_text())
            )
        print(f"[train] {name}", flush=True)
        model, meta = train()
        self.cache.mkdir(parents=True, exist_ok=True)
        model.save(path)
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        return Trained(name, model, meta)

    def dense(self, model_name: str, dataset: str, epochs: int) -> Trained:
        """A dense model pretrained with Adam for ``epochs`` epochs."""
        a = self.args
        name = _slug(
            f"{model_name}_{dataset}_dense_e{epochs}_b{a.batch_size}_lr{a.lr:g}"
            f"_n{a.train_limit}_s{a.seed}"
        )

        def train():
            train_data, test = self.data(dataset)
            keras.utils.set_random_seed(a.seed)
            model = tfr.models.get(
                model_name, input_shape=train_data[0].shape[1:], num_classes=10
            )
            tfr.recipes.compile_classifier(model, a.lr)
            start = time.perf_counter()
            if epochs:
                model.fit(
                    *train_data,
                    batch_size=a.batch_size,
                    epochs=epochs,
                    verbose=a.verbose,
                )
            seconds = time.perf_counter() - start
            return model, {
                "epochs": epochs,
                "seconds": round(seconds, 1),
                "keras_accuracy": _accuracy(model, test),
            }

        return self.cached(name, train)

    def pruned(
        self,
        dense: Trained,
        dataset: str,
        structure: str,
        target: str,
        epochs: tuple[int, int],
        **apply_kwargs,
    ) -> Trained:
        """``dense`` pruned by `tfr.recipes.reweighted_prune`, stripped."""
        a = self.args
        extra = "".join(f"_{k}" for k, v in sorted(apply_kwargs.items()) if v)
        name = _slug(
            f"{dense.name}__{structure}_{target}_l{a.penalty:g}"
            f"_r{epochs[0]}_t{epochs[1]}{extra}"
        )

        def train():
            train_data, test = self.data(dataset)
            keras.utils.set_random_seed(a.seed)
            result = tfr.recipes.reweighted_prune(
                dense.model,
                train_data,
                structure=_per_layer(structure),
                target=_per_layer(target),
                penalty=a.penalty,
                reweight_epochs=epochs[0],
                retrain_epochs=epochs[1],
                batch_size=a.batch_size,
                lr=a.lr,
                verbose=a.verbose,
                **apply_kwargs,
            )
            report = tfr.report(result.model)
            print(report, flush=True)
            plain = tfr.strip(result.model)
            return plain, {
                "epochs": result.epochs,
                "seconds": round(result.seconds, 1),
                "keras_accuracy": _accuracy(plain, test),
                "rate": report.rate,
                "model_rate": report.model_rate,
            }

        return self.cached(name, train)

    def train_size(self, dataset: str) -> int:
        return len(self.data(dataset)[0][0])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)


def _accuracy(model: keras.Model, test) -> float:
    logits = model.predict(test[0], batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == test[1]))


def _per_layer(text: str):
    """``"fc1=block:16x1,conv2=filter"`` as a dict; a text without ``=`` as is.

    Per-layer targets (``"fc1=126x,conv1=0.6"``) are rate strings or floats.
    """
    if "=" not in text:
        return text
    pairs = [item.split("=", 1) for item in text.split(",")]
    return {
        name.strip(): value.strip()
        if not value.strip().replace(".", "", 1).isdigit()
        else float(value)
        for name, value in pairs
    }
