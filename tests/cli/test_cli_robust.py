"""Smoke tests of the ``robust`` and ``mrs`` subcommands on a slice of MNIST."""

import argparse
import json

import keras
import numpy as np
import pytest

from tf_reweight.cli import args as cli_args
from tf_reweight.cli import robust as cli_robust
from tf_reweight.robust.sensitivity import SensitivityTable
from tf_reweight.training import data

LENET5 = {"conv1": 500, "conv2": 25000, "fc1": 400000, "logits": 5000}
TINY = ["--train-limit", "512", "--pretrain-epochs", "1", "--verbose", "0"]


def _parse(argv):
    parser = argparse.ArgumentParser(prog="tf-reweight")
    cli_args.add_robust_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_robust_mrs_allocation_writes_reports_and_exact_budget(tmp_path, data_dir):
    out = tmp_path / "robust"
    argv = ["robust", "--data-dir", data_dir, "--out", str(out), *TINY]
    argv += ["--adv-epochs", "1", "--attack", "fgsm", "--allocation", "mrs"]
    argv += ["--target", "4x", "--reweight-epochs", "1", "--retrain-epochs", "1"]
    argv += ["--eval-limit", "64", "--eval-steps", "5", "--probe-size", "64"]
    record = cli_robust.run(_parse(argv))

    total = sum(LENET5.values())
    assert record["nonzeros"] == round(total / 4) and record["weights"] == total
    assert set(record["ratios"]) == set(LENET5)
    assert sum(r * LENET5[n] for n, r in record["ratios"].items()) == pytest.approx(
        total - round(total / 4)
    )
    assert record["eps"] == 0.3 and record["attack"] == "pgd-5"
    assert record["train_attack"] == "fgsm-rs" and record["eval_samples"] == 64
    assert 0.0 <= record["robust_accuracy"] <= 1.0
    saved = json.loads((out / "report.json").read_text())
    assert saved["robust_accuracy"] == record["robust_accuracy"]
    for name in ("report.md", "sparsity.png", "accuracy.png", "dense.keras"):
        assert (out / name).exists(), name
    # The stripped model reproduces the reported clean accuracy (NumPy argmax).
    (_, _), (x_test, y_test) = data.load("mnist", data_dir)
    plain = keras.saving.load_model(out / "model.keras")
    logits = plain.predict(x_test, batch_size=1000, verbose=0)
    # Another batch size may flip one near-tie argmax of the 10,000.
    accuracy = np.mean(np.argmax(logits, -1) == y_test)
    assert accuracy == pytest.approx(record["accuracy"], abs=1.5 / len(y_test))
    assert (
        sum(np.count_nonzero(plain.get_layer(n).kernel) for n in LENET5)
        == (record["nonzeros"])
    )


def test_mrs_writes_table_plot_and_ratios(tmp_path, data_dir):
    out = tmp_path / "mrs"
    argv = ["mrs", "--data-dir", data_dir, "--out", str(out), *TINY]
    argv += ["--adv-epochs", "0", "--eps", "8/255", "--target", "0.9"]
    argv += ["--probe-size", "64", "--max-ratio", "0.97"]
    record = cli_robust.run(_parse(argv))

    table = SensitivityTable.from_json(str(out / "mrs.json"))
    ratios = json.loads((out / "ratios.json").read_text())
    assert table.sizes == LENET5 and record["ratios"] == ratios
    assert record["eps"] == pytest.approx(8 / 255)
    total = sum(LENET5.values())
    pruned = sum(round(r * LENET5[n]) for n, r in ratios.items())
    assert pruned == total - round(0.1 * total)
    assert max(ratios.values()) <= 0.97
    ranking = table.ranking()  # most sensitive first: pruned least (up to rounding)
    assert ratios[ranking[0]] <= ratios[ranking[-1]] + 1e-3
    assert (out / "mrs.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--max-ratio", "1.0"], "max-ratio"),
        (["--method", "obd"], "method"),
        (["--structure", "block:1000x1000"], "structure"),
        (["--recalibrate-bn", "64"], "recalibrate-bn"),
        (["--method", "admm", "--no-bounded"], "bounded"),
        (["--probe-ratio", "1"], "probe-ratio"),
    ],
)
def test_bad_options_fail_before_loading_data(tmp_path, extra, match):
    out = tmp_path / "out"
    argv = ["robust", "--data-dir", str(tmp_path / "none"), "--out", str(out)]
    with pytest.raises(ValueError, match=match):
        cli_robust.run(_parse([*argv, *extra]))
    assert not out.exists()


@pytest.mark.parametrize(
    "extra",
    [["--target", "0.5x"], ["--eps", "-1"], ["--structure", "rows"]]
    + [["--eval-limit", "0"], ["--recalibrate-bn", "0"], ["--penalty", "nan"]],
)
def test_bad_values_are_refused_by_the_parser(extra):
    with pytest.raises(SystemExit):
        _parse(["robust", *extra])


def test_mrs_probe_options_reach_the_chosen_probe():
    prune = _parse(["robust", "--probe-ratio", "0.9"])
    perturb = _parse(["mrs", "--mode", "perturb", "--rho", "0.1"])
    assert cli_robust._mrs_options(prune) == {"probe_ratio": 0.9}
    assert cli_robust._mrs_options(perturb) == {"rho": 0.1}


def test_fractions_parse_and_dataset_defaults_apply():
    args = _parse(["robust", "--dataset", "cifar10", "--step-size", "2/255"])
    assert args.step_size == pytest.approx(2 / 255) and args.eps is None
    cli_robust._resolve(args)
    assert args.eps == pytest.approx(8 / 255) and args.eval_steps == 10
    with pytest.raises(SystemExit):
        _parse(["robust", "--eps", "eight"])
