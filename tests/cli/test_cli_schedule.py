"""``tf-reweight compress`` options: --schedule, and --penalty auto."""

import keras
import pytest

from tf_reweight.cli import args as cli_args
from tf_reweight.cli import main as cli
from tf_reweight.training import data, plans, recipes


def _compress(*argv):
    return cli_args.parser().parse_args(["compress", *argv])


@pytest.mark.parametrize(
    "argv, epochs",
    [
        ((), (6, 6)),  # the command's epochs as before plans
        (("--schedule", "default"), (6, 6)),
        (("--schedule", "paper"), (150, 90)),
        (("--schedule", "progressive"), (12, 8)),
        (("--schedule", "paper", "--reweight-epochs", "4"), (4, 90)),
        (("--schedule", "paper", "--retrain-epochs", "0"), (150, 0)),
        (("--reweight-epochs", "1", "--retrain-epochs", "2"), (1, 2)),
    ],
)
def test_epochs_come_from_the_options_else_the_plan(argv, epochs):
    args = _compress(*argv)
    assert cli_args.compress_epochs(args) == epochs
    assert args.schedule == (argv[1] if argv[:1] == ("--schedule",) else "default")


def test_schedule_choices_are_the_registered_plans():
    for name in plans.PLANS:
        assert _compress("--schedule", name).schedule == name


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--schedule", "nope"], "--schedule"),
        (["--schedule", "progressive", "--reweight-epochs", "4"], "phase1_epochs=4"),
        (["--schedule", "progressive", "--structure", "2:4"], "one target"),
    ],
)
def test_bad_schedule_exits_2_with_one_line_before_any_work(
    argv, named, tmp_path, monkeypatch, capsys
):
    def forbidden(*args, **kwargs):
        raise AssertionError("a refused run must not load data or train")

    monkeypatch.setattr(data, "load", forbidden)
    monkeypatch.setattr(keras.Model, "fit", forbidden)
    monkeypatch.setattr(recipes, "prune", forbidden)
    out = tmp_path / "out"
    code = cli.main(["compress", "--out", str(out), *argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1, err
    assert named in errors[0], errors[0]
    assert not out.exists()


def test_penalty_and_eps_take_auto():
    args = _compress("--penalty", "auto", "--reweight-eps", "auto")
    assert (args.penalty, args.reweight_eps) == ("auto", "auto")
    args = _compress("--penalty", "1e-5", "--reweight-eps", "1e-2")
    assert (args.penalty, args.reweight_eps) == (1e-5, 0.01)
    assert _compress().penalty == "auto"
    assert _compress().reweight_eps is None  # the library's default eps
