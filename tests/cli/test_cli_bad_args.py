"""Every bad argument of the command-line tools is refused up front.

Each case must exit with code 2, print one ``error:`` line that names the
argument (no traceback), leave ``--out`` as it was, and neither load data nor
train (both are made to fail loudly here).
"""

import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.cli import main as cli
from tf_reweight.cli import tflite as tflite_cli
from tf_reweight.core import checks
from tf_reweight.training import data

L = keras.layers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Broken and valid input files, shared by the cases."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "garbage.keras").write_bytes(b"not a zip archive" * 10)
    with zipfile.ZipFile(root / "foreign.keras", "w") as archive:
        archive.writestr("readme.txt", "a zip, but not a Keras model")
    keras.Sequential([keras.Input((32, 32, 3)), L.Flatten(), L.Dense(10)]).save(
        root / "cifar_shaped.keras"
    )
    keras.Sequential([keras.Input((4,)), L.Dense(2)]).save(root / "small.keras")
    (root / "garbage.npy").write_bytes(b"junk" * 10)
    np.save(root / "wrong_shape.npy", np.zeros((8, 5), np.float32))
    np.save(root / "strings.npy", np.array([["a"] * 4] * 2))
    np.save(root / "good.npy", np.zeros((8, 4), np.float32))
    (root / "garbage.tflite").write_bytes(b"junk" * 10)
    (root / "header.tflite").write_bytes(b"\0\0\0\0TFL3" + b"junk" * 10)
    (root / "a_file").write_text("not a directory")
    return root


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Makes loading data, training and converting fail if anything tries."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a refused run must not load data, train or convert")

    monkeypatch.setattr(data, "load", forbidden)
    monkeypatch.setattr(keras.Model, "fit", forbidden)
    monkeypatch.setattr(tfr, "strip", forbidden)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))


def _refused(main, argv, name, capsys):
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert name in errors[0], errors[0]
    # Refused by checks, not after work: pretraining alone takes minutes.
    assert seconds < 10.0
    return errors[0]


def _path(value, files, tmp_path):
    return str(value).format(files=files, tmp=tmp_path)


COMPRESS = [
    (["--penalty", "-1"], "--penalty"),
    (["--penalty", "nan"], "--penalty"),
    (["--penalty", "1e999"], "--penalty"),
    (["--penalty", "Auto"], "--penalty"),
    (["--reweight-eps", "0"], "--reweight-eps"),
    (["--reweight-eps", "automatic"], "--reweight-eps"),
    (["--reweight-epochs", "-1"], "--reweight-epochs"),
    (["--retrain-epochs", "-1"], "--retrain-epochs"),
    (["--pretrain-epochs", "-1"], "--pretrain-epochs"),
    (["--train-limit", "0"], "--train-limit"),
    (["--train-limit", "-5"], "--train-limit"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--seed", "-1"], "--seed"),
    (["--target", "0.5x"], "--target"),
    (["--target", "1.5"], "--target"),
    (["--structure", "rows"], "--structure"),
    (["--structure", "block:1000x1000"], "--structure"),
    (["--model", "resnet1"], "--model"),
    (["--checkpoint", "{files}/garbage.keras"], "--checkpoint"),
    (["--checkpoint", "{files}/foreign.keras"], "--checkpoint"),
    (["--checkpoint", "{files}/missing.keras"], "--checkpoint"),
    (["--checkpoint", "{files}/cifar_shaped.keras"], "--checkpoint"),
    (["--data-dir", "{tmp}/nowhere"], "--data-dir"),
]
ROBUST = [
    (["--eps", "-1"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--attack-steps", "0"], "--attack-steps"),
    (["--step-size", "0"], "--step-size"),
    (["--adv-epochs", "-1"], "--adv-epochs"),
    (["--target", "0.5x"], "--target"),
    (["--max-ratio", "1.5"], "--max-ratio"),
    (["--max-ratio", "0.5"], "--max-ratio"),
    (["--probe-size", "0"], "--probe-size"),
    (["--probe-ratio", "1"], "--probe-ratio"),
    (["--method", "obd"], "--method"),
    (["--method", "admm", "--no-bounded"], "--method"),
    (["--method", "magnitude", "--penalty", "1e-4"], "--method"),
    (["--penalty", "-1"], "--penalty"),
    (["--structure", "rows"], "--structure"),
    (["--structure", "block:1000x1000"], "--structure"),
    (["--eval-limit", "0"], "--eval-limit"),
    (["--eval-steps", "0"], "--eval-steps"),
    (["--eval-restarts", "0"], "--eval-restarts"),
    (["--recalibrate-bn", "0"], "--recalibrate-bn"),
    (["--recalibrate-bn", "64"], "--recalibrate-bn"),  # LeNet-5 has no BatchNorm
    (["--checkpoint", "{files}/garbage.keras"], "--checkpoint"),
    (["--batch-size", "0"], "--batch-size"),
]
MRS = [
    (["--rho", "0"], "--rho"),
    (["--rho", "-1"], "--rho"),
    (["--probe-size", "0"], "--probe-size"),
    (["--eps", "-0.1"], "--eps"),
    (["--checkpoint", "{files}/foreign.keras"], "--checkpoint"),
    (["--data-dir", "{tmp}/nowhere"], "--data-dir"),
]
TABLE = (
    [("compress", *case) for case in COMPRESS]
    + [("robust", *case) for case in ROBUST]
    + [("mrs", *case) for case in MRS]
)


@pytest.mark.parametrize(
    "command, extra, name", TABLE, ids=[f"{c}{' '.join(e)}" for c, e, _ in TABLE]
)
def test_tf_reweight_refuses_bad_arguments(
    command, extra, name, files, tmp_path, no_work, capsys
):
    out = tmp_path / "out"
    argv = [command, "--out", str(out), *(_path(a, files, tmp_path) for a in extra)]
    _refused(cli.main, argv, name, capsys)
    assert not out.exists()


@pytest.mark.parametrize("command", ["compress", "robust", "mrs"])
@pytest.mark.parametrize("out", ["/dev/null/sub", "{files}/a_file", "{files}/a_file/x"])
def test_tf_reweight_refuses_an_output_that_is_no_directory(
    command, out, files, tmp_path, no_work, capsys
):
    _refused(cli.main, [command, "--out", _path(out, files, tmp_path)], "--out", capsys)
    assert (files / "a_file").read_text() == "not a directory"


def test_a_refused_run_leaves_an_existing_out_unchanged(
    files, tmp_path, no_work, capsys
):
    out = tmp_path / "previous_run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    argv = ["compress", "--out", str(out), "--structure", "block:1000x1000"]
    _refused(cli.main, argv, "--structure", capsys)
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


@pytest.fixture
def corrupt_mnist(tmp_path, data_dir):
    """A data directory whose mnist.npz is cut off after its first 100 kB."""
    path = tmp_path / "data" / "mnist" / "mnist.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(Path(data_dir, "mnist", "mnist.npz").read_bytes()[:100_000])
    return path


@pytest.mark.parametrize("command", ["compress", "robust", "mrs"])
def test_a_corrupt_dataset_is_named_and_nothing_is_written(
    command, corrupt_mnist, tmp_path, monkeypatch, capsys
):
    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may train on a corrupt dataset")

    monkeypatch.setattr(keras.Model, "fit", forbidden)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("TF_REWEIGHT_DATA_DIR", str(corrupt_mnist.parents[1]))
    out = tmp_path / "out"
    _refused(cli.main, [command, "--out", str(out)], str(corrupt_mnist), capsys)
    assert not out.exists()


CONVERT = [
    (["{files}/garbage.keras", "{tmp}/m.tflite"], "model"),
    (["{files}/foreign.keras", "{tmp}/m.tflite"], "model"),
    (["{files}/missing.keras", "{tmp}/m.tflite"], "model"),
    (["{files}/small.keras", "{tmp}"], "output"),
    (["{files}/small.keras", "{tmp}/missing/m.tflite"], "output"),
    (["{files}/small.keras", "/dev/null/m.tflite"], "output"),
    (["{files}/small.keras", "{tmp}/m.tflite", "--quantization", "int4"], "quant"),
    (["{files}/small.keras", "{tmp}/m.tflite", "--quantization", "int8"], "repres"),
    (["{files}/small.keras", "{tmp}/m.tflite", "--per-tensor-dense"], "per_channel"),
    (
        ["{files}/small.keras", "{tmp}/m.tflite", "--representative-npy"],
        "--representative-npy",
    ),
    (
        [
            "{files}/small.keras",
            "{tmp}/m.tflite",
            "--representative-npy",
            "{files}/garbage.npy",
        ],
        "--representative-npy",
    ),
    (
        [
            "{files}/small.keras",
            "{tmp}/m.tflite",
            "--representative-npy",
            "{files}/strings.npy",
        ],
        "--representative-npy",
    ),
    (
        [
            "{files}/small.keras",
            "{tmp}/m.tflite",
            "--quantization",
            "int8",
            "--representative-npy",
            "{files}/wrong_shape.npy",
        ],
        "representative_data",
    ),
    (
        ["{files}/small.keras", "{tmp}/m.tflite", "--sample-npy", "{files}/none.npy"],
        "--sample-npy",
    ),
    (
        [
            "{files}/small.keras",
            "{tmp}/m.tflite",
            "--sample-npy",
            "{files}/wrong_shape.npy",
        ],
        "sample",
    ),
    (["{files}/small.keras", "{tmp}/m.tflite", "--min-agreement", "2"], "agreement"),
]
VERIFY = [
    ([], "--reference"),
    (["{files}/garbage.tflite", "--reference", "{files}/small.keras"], "tflite"),
    (["{files}/missing.tflite", "--reference", "{files}/small.keras"], "tflite"),
    (["{files}/garbage.npy", "--reference", "{files}/small.keras"], "tflite"),
    (["{files}/header.tflite", "--reference", "{files}/garbage.keras"], "--reference"),
    (
        ["{files}/header.tflite", "--reference", "{files}/small.keras"]
        + ["--dense-reference", "{files}/garbage.tflite"],
        "--dense-reference",
    ),
    (
        ["{files}/header.tflite", "--reference", "{files}/small.keras"]
        + ["--sample-npy", "{files}/garbage.npy"],
        "--sample-npy",
    ),
    (
        ["{files}/garbage.tflite", "--reference", "{files}/small.keras", "--runs", "0"],
        "--runs",
    ),
    (
        ["{files}/garbage.tflite", "--reference", "{files}/small.keras"]
        + ["--samples", "-1"],
        "--samples",
    ),
]


@pytest.mark.parametrize(
    "argv, name",
    [(["convert", *a], n) for a, n in CONVERT]
    + [(["verify", *a], n) for a, n in VERIFY],
)
def test_tflite_export_refuses_bad_arguments(
    argv, name, files, tmp_path, no_work, capsys
):
    argv = [_path(a, files, tmp_path) for a in argv]
    if name == "--representative-npy" and argv[-1] == "--representative-npy":
        argv.append(str(files / "nowhere.npy"))
    before = sorted(p.name for p in tmp_path.iterdir())
    _refused(tflite_cli.main, argv, name, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# What a valid number is, and its wording, come from the one validator module.
WORDING = [
    ("compress", ["--batch-size", "0"], "--batch-size", checks.expected_int(1)),
    ("compress", ["--seed", "1.5"], "--seed", checks.expected_int(0)),
    ("compress", ["--lr", "0"], "--lr", checks.expected_number(0.0, strict=True)),
    ("compress", ["--penalty", "nan"], "--penalty", checks.expected_number(0.0)),
    ("robust", ["--eps", "1/0"], "--eps", checks.expected_number(0.0)),
    (
        "mrs",
        ["--probe-ratio", "1.5"],
        "--probe-ratio",
        checks.expected_number(0.0, high=1.0),
    ),
]


@pytest.mark.parametrize(
    "command, extra, name, expected", WORDING, ids=[" ".join(w[1]) for w in WORDING]
)
def test_numeric_options_are_worded_by_the_core_checks(
    command, extra, name, expected, tmp_path, no_work, capsys
):
    argv = [command, "--out", str(tmp_path / "out"), *extra]
    line = _refused(cli.main, argv, name, capsys)
    assert f"expected {expected}" in line, line
    assert f"Received: {extra[1]!r}" in line, line
