"""Smoke test of the robust-compression benchmark (tiny budgets, not timed)."""

import json

import pytest

from benchmarks import records as record_store

FIELDS = {
    "accuracy",
    "attack",
    "command",
    "dataset",
    "epochs",
    "eval_samples",
    "method",
    "model",
    "nonzeros",
    "rate",
    "robust_accuracy",
    "seconds",
    "structure",
    "versions",
}


@pytest.fixture(scope="module")
def robust():
    from benchmarks import robust as module

    return module


def test_methods_measure_at_equal_budget_and_resume(robust, data_dir, tmp_path):
    results = tmp_path / "robust.json"
    argv = [
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        "--train-limit=256",
        "--pretrain-epochs=0",
        "--adv-epochs=1",
        "--attack=fgsm",
        "--epochs",
        "1",
        "1",
        "--eval-limit=32",
        "--eval-steps=3",
        "--probe-size=64",
        "--methods=admm,mrs_reweighted,uniform_reweighted",
    ]
    assert robust.main(argv) == 0
    records = json.loads(results.read_text())
    methods = ["dense", "admm", "mrs_reweighted", "uniform_reweighted"]
    assert [r["method"] for r in records] == methods
    weights = 5 * 5 * 20 + 5 * 5 * 20 * 50 + 800 * 500 + 500 * 10
    for r in records:
        assert FIELDS <= set(r) and r["eval_samples"] == 32
        assert r["attack"] == "pgd-3" and r["train_attack"] == "fgsm-rs"
        assert 0.0 <= r["robust_accuracy"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert r["command"].startswith("python benchmarks/robust.py ")
    for r in records[1:]:
        assert r["rate"] == pytest.approx(weights / r["nonzeros"])
        assert r["rate"] == pytest.approx(16, rel=0.01) and r["epochs"] == 2
    mrs, uniform = records[2], records[3]
    # Equal budgets to the weight: MRS and uniform keep the same count.
    assert mrs["nonzeros"] == uniform["nonzeros"] == round(weights / 16)
    assert mrs["allocated"] != uniform["allocated"]
    dense_dir = next((tmp_path / "cache" / "robust").iterdir())
    assert (dense_dir / "dense.keras").exists()

    assert robust.main(argv) == 0  # everything is already there
    assert json.loads(results.read_text()) == records
    assert [r.get("bounded") for r in records[1:]] == [None, True, True]
    store = record_store.Store(results, robust.KEY_FIELDS)
    assert all(store.has(r) for r in records)
    for seed in ("seed", "prune_seed"):
        assert not store.has({**records[1], seed: 1})
    assert records[1]["versions"] == record_store.tf_versions()

    # Another evaluation size evaluates the cached dense model again.
    same = [a for a in argv if not a.startswith(("--eval-limit", "--methods"))]
    more = ["--eval-limit=16", "--methods=reweighted_unbounded"]
    assert robust.main([*same, *more]) == 0
    dense, unbounded = json.loads(results.read_text())[len(records) :]
    assert dense["eval_samples"] == unbounded["eval_samples"] == 16
    assert dense["seconds"] == records[0]["seconds"]
    assert unbounded["bounded"] is False

    args = robust._configure([*same, *more])
    lines = robust.table(json.loads(results.read_text()), args).splitlines()
    assert lines[0].startswith("| method | rate | clean (s0) | PGD-3 (s0) |")
    pgd = f"{100 * unbounded['robust_accuracy']:.2f}"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| dense",
        "| reweighted_unbounded",
    ]
    assert lines[3].endswith(f" | {pgd} |")


def test_quick_suite_settings(robust):
    args = robust._configure(["--suite", "cifar10", "--quick", "--eval-limit", "50"])
    assert (args.model, args.attack, args.eval_steps) == ("resnet20", "fgsm", 10)
    assert args.train_limit == 2048 and args.eval_limit == 50
    assert args.epochs == (1, 1) and args.eps == pytest.approx(8 / 255)
    with pytest.raises(SystemExit):
        robust._configure(["--methods", "reweighted,obd"])


def test_paper_suite_settings(robust):
    args = robust._configure(["--suite", "cifar10-paper"])
    assert (args.model, args.dataset, args.attack) == ("resnet18", "cifar10", "fgsm")
    assert args.train_limit is None and args.eval_steps == 10
    assert (args.adv_epochs, args.epochs, args.batch_size) == (15, (3, 3), 500)
    assert args.mixed_precision == "mixed_bfloat16"
    assert robust._names(args.methods) == [
        "reweighted_auto",
        "admm",
        "mrs_reweighted_auto",
        "uniform_reweighted_auto",
    ]
    assert robust.results_path(args).name == "robust_paper.json"
    tiny = robust._configure(["--suite", "cifar10-paper", "--tiny"])
    assert tiny.quick and robust.results_path(tiny).name == "robust_paper_quick.json"
    assert tiny.train_limit == 32 and tiny.mixed_precision == "mixed_bfloat16"
    off = ["--mixed-precision", "off", "--batch-size", "256"]
    args = robust._configure(["--suite", "cifar10-paper", *off])
    assert (args.mixed_precision, args.batch_size) == ("off", 256)
    # The other suites keep their settings: float32, batch 128.
    args = robust._configure(["--suite", "cifar10"])
    assert (args.mixed_precision, args.batch_size) == ("off", 128)
    assert robust.results_path(args).name == "robust.json"


def test_paper_suite_quick_run_records_the_device(robust, data_dir, tmp_path):
    """The paper-scale suite's smoke run: ResNet-18, mixed precision, on CPU."""
    import keras

    results = tmp_path / "robust_paper.json"
    argv = [
        "--suite=cifar10-paper",
        "--quick",
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
    ]
    assert robust.main(argv) == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    dense, pruned = json.loads(results.read_text())
    assert [dense["method"], pruned["method"]] == ["dense", "reweighted_auto"]
    for r in (dense, pruned):
        assert FIELDS | {"device", "precision", "batch_size", "train_attack"} <= set(r)
        assert r["device"] == robust.device() and r["device"] in ("cpu", "gpu")
        assert (r["model"], r["precision"], r["batch_size"]) == (
            "resnet18",
            "mixed_bfloat16",
            32,
        )
        assert (r["train_samples"], r["test_samples"], r["eval_samples"]) == (
            32,
            64,
            16,
        )
        assert r["attack"] == "pgd-2" and r["train_attack"] == "fgsm-rs"
    assert pruned["rate"] == pytest.approx(16, rel=0.01) and pruned["epochs"] == 2
    assert robust.main(argv) == 0  # resumed: nothing measured again
    assert json.loads(results.read_text()) == [dense, pruned]


def test_batchnorm_recalibration_is_measured_too(robust, data_dir, tmp_path):
    results = tmp_path / "robust.json"
    argv = [
        "--suite=cifar10",
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        "--train-limit=128",
        "--adv-epochs=1",
        "--epochs",
        "1",
        "0",
        "--eval-limit=16",
        "--eval-steps=2",
        "--methods=reweighted",
        "--recalibrate-bn=64",
    ]
    assert robust.main(argv) == 0
    dense, pruned = json.loads(results.read_text())
    assert dense["recalibrate_bn"] == pruned["recalibrate_bn"] == 64
    assert 0.0 <= pruned["recal_accuracy"] <= 1.0
    assert 0.0 <= pruned["recal_robust_accuracy"] <= 1.0
    # A run without recalibration is a different record, not a resumed one.
    plain = {k: v for k, v in pruned.items() if k != "recalibrate_bn"}
    store = record_store.Store(results, robust.KEY_FIELDS)
    assert store.has(pruned) and not store.has(plain)
