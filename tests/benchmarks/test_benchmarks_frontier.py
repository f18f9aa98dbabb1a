"""Smoke test of the frontier benchmark on a slice of MNIST (tiny budgets)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import frontier_jobs
from benchmarks import records as record_store


@pytest.fixture(scope="module")
def frontier():
    from benchmarks import frontier as module

    return module


def _tiny(data_dir, tmp_path, results, train: int, test: int) -> list[str]:
    """Arguments of a smoke run: a data slice, one dense and 1 + 1 epochs."""
    return [
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        f"--train-limit={train}",
        f"--test-limit={test}",
        "--dense-epochs=1",
        "--epochs",
        "1",
        "1",
    ]


def test_every_method_measures_resumes_and_plots(frontier, data_dir, tmp_path):
    results = tmp_path / "frontier.json"
    argv = [
        *_tiny(data_dir, tmp_path, results, 256, 200),
        "--rates=10",
        f"--methods={','.join(frontier_jobs.METHODS)},tfmot_global",
        "--structures=filter",
        "--structured-methods=admm",
        "--structured-rates=2",
        "--sweep=1e-4",  # off the main lambda (1e-5): a sweep point
        "--sweep-rate=10",
    ]
    assert frontier.main(argv) == 0
    records = json.loads(results.read_text())
    methods = [r["method"] for r in records]
    assert methods == [
        "dense",
        *frontier_jobs.METHODS,
        "tfmot_global",
        "admm",
        "reweighted",
    ]
    weights = 5 * 5 * 20 + 5 * 5 * 20 * 50 + 800 * 500 + 500 * 10
    for r in records[1:]:
        # Structured runs leave the logits layer (500 x 10) dense and uncounted.
        counted = weights - (500 * 10 if r["structure"] == "filter" else 0)
        assert r["rate"] == pytest.approx(counted / r["nonzeros"])
        assert r["epochs"] == 2 and 0.0 <= r["accuracy"] <= 1.0
        assert r["command"].startswith("python benchmarks/frontier.py ")
    unstructured = records[1:7]
    assert all(r["rate"] == pytest.approx(10, rel=0.01) for r in unstructured)
    assert set(records[3]["versions"]) == {"tensorflow", "tf_keras", "tfmot"}
    assert (
        records[0]["versions"] == records[1]["versions"] == record_store.tf_versions()
    )
    assert records[7]["structure"] == "filter" and records[7]["rate"] >= 1.9
    assert records[8]["penalty"] == 1e-4

    assert frontier.main([*argv, "--plot"]) == 0  # everything is already there
    assert json.loads(results.read_text()) == records
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_cifar10_suite_counts_the_same_kernels(frontier, data_dir, tmp_path):
    if not Path(data_dir, "cifar10", "cifar10-jpg.tar.gz").exists():
        pytest.skip(f"No local CIFAR-10 copy under {data_dir}")
    from tf_reweight.training import models

    results = tmp_path / "frontier_cifar10.json"
    argv = [
        "--suite=cifar10",
        *_tiny(data_dir, tmp_path, results, 128, 100),
        "--rates=2",
        "--structured-rates=2",
        "--plot",
    ]
    assert frontier.main(argv) == 0
    records = json.loads(results.read_text())
    assert [(r["method"], r["structure"]) for r in records] == [
        ("dense", "dense"),
        ("tfmot", "unstructured"),
        ("reweighted", "filter"),
        ("admm", "filter"),
    ]
    kernels = {
        layer.name: int(np.prod(layer.kernel.shape))
        for layer in models.resnet20().layers
        if hasattr(layer, "kernel")
    }
    # Every method counts the convolutions of the residual stages only: the stem
    # convolution and the logits stay dense.
    counted = sum(kernels.values()) - kernels["conv1"] - kernels["logits"]
    assert counted == 269_824 and len(kernels) == 22
    for r in records[1:]:
        assert (r["model"], r["dataset"]) == ("resnet20", "cifar10")
        assert r["weights"] == counted
        assert r["rate"] == pytest.approx(counted / r["nonzeros"])
        assert r["rate"] == pytest.approx(2.0, rel=0.01)
        assert r["epochs"] == 2 and r["test_images"] == 100
    assert records[3]["method_options"]["every"] == 16  # the suite's ADMM default
    # tf_reweight's models are tested after BatchNorm recalibration, tfmot's not.
    assert [r.get("recalibrate_bn") for r in records[1:]] == [None, 128, 128]
    assert 0.0 <= records[2]["accuracy_before_recalibration"] <= 1.0
    assert (tmp_path / "frontier_cifar10.png").stat().st_size > 10_000


def test_tf_keras_resnet20_loads_the_keras3_weights(tmp_path):
    """The tfmot baseline's ResNet-20 gives the Keras 3 logits (another process)."""
    import keras

    from tf_reweight.training import models

    keras.utils.set_random_seed(1)
    model = models.resnet20()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # random statistics, so that a swap would show
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma),
                    rng.normal(0.0, 0.2, beta),
                    rng.normal(0.0, 0.2, mean),
                    rng.uniform(0.5, 1.5, var),
                ]
            )
    images = rng.uniform(0.0, 1.0, (8, 32, 32, 3)).astype("float32")
    logits = model.predict(images, verbose=0)
    np.savez(tmp_path / "ref.npz", images=images, logits=logits)
    weights = model.get_weights()
    np.savez(tmp_path / "good.npz", *weights)
    # Two same-shape stage-1 kernels swapped: the check must notice.
    first, second = [i for i, w in enumerate(weights) if w.shape == (3, 3, 16, 16)][:2]
    weights[first], weights[second] = weights[second], weights[first]
    np.savez(tmp_path / "bad.npz", *weights)

    def check(name):
        return subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parents[2] / "benchmarks" / "tfmot_baseline.py"),
                "--model=resnet20",
                f"--weights={tmp_path / name}",
                f"--check-logits={tmp_path / 'ref.npz'}",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        )

    good = check("good.npz")
    assert good.returncode == 0, good.stderr[-2000:]
    record = json.loads(good.stdout.splitlines()[-1])
    assert record["check_max_abs_diff"] < 1e-4 * np.abs(logits).max()
    bad = check("bad.npz")
    assert bad.returncode != 0 and "wrong layers" in bad.stderr


def test_seed_and_schedule_are_keys_absent_at_their_defaults(frontier, tmp_path):
    job = frontier_jobs.Job("reweighted", "unstructured", 630.0, "auto", "auto")
    default = frontier.parse_args([])
    paper = frontier.parse_args(["--schedule=paper", "--seed=1"])
    assert frontier._schedule(default, job) == {}
    assert frontier._schedule(paper, job) == {"schedule": "paper"}
    tfmot = frontier_jobs.Job("tfmot_global", "unstructured", 630.0, None)
    assert frontier._schedule(paper, tfmot) == {}  # TFMOT keeps its own
    store = record_store.Store(tmp_path / "frontier.json", frontier_jobs.KEY_FIELDS)
    store.add({**job.key_fields(8), "accuracy": 0.99})  # an old record: seed 0
    assert store.has(job.key_fields(8))
    assert not store.has({**job.key_fields(8), "seed": 1})
    assert not store.has({**job.key_fields(8), "schedule": "paper"})
    with pytest.raises(SystemExit) as exit_info:
        frontier.parse_args(["--schedule=nope"])
    assert exit_info.value.code == 2
