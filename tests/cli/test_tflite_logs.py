"""The CLIs and library imports print their own output only, not native log lines."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tf_reweight.core import backend_support
from tf_reweight.core.backend_support import quiet_native_logs, show_native_logs

NATIVE = (
    b"I0000 00:00:1796140405.103504    2891 port.cc:153] oneDNN custom operations\n"
    b"W0000 00:00:1796140542.853978    3395 helpers.cc:364] Ignored output_format.\n"
    b"WARNING: All log messages before absl::InitializeLog() is called are written\n"
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)
KEPT = (
    b"E0000 00:00:1796140541.590926    3395 kernel.cc:52] a real error\n"
    b"a line of the program itself\n"
)
NOISE_MARKS = ("I0000", "W0000", "absl::InitializeLog", "XNNPACK delegate")


def _write_lines():
    os.write(2, NATIVE[:60])  # C++ writes straight to fd 2, in pieces
    os.write(2, NATIVE[60:] + KEPT)


def test_native_lines_are_held_back_and_others_kept(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_logs():
        _write_lines()
        print("python's stderr", file=sys.stderr)

    err = capfd.readouterr().err
    assert "a real error" in err and "a line of the program itself" in err
    assert "python's stderr" in err
    assert not any(mark in err for mark in NOISE_MARKS), err

    show_native_logs()  # --verbose: the held-back lines, then everything
    shown = capfd.readouterr().err
    assert all(mark in shown for mark in NOISE_MARKS), shown
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_a_failing_call_writes_back_everything(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with pytest.raises(RuntimeError, match="conversion failed"):
        with quiet_native_logs():
            _write_lines()
            raise RuntimeError("conversion failed")
    err = capfd.readouterr().err
    assert all(mark in err for mark in NOISE_MARKS) and "a real error" in err


@pytest.mark.parametrize(
    "level, hidden",
    [("0", ()), ("1", ("I0000",)), ("3", ("I0000", "W0000", "E0000"))],
)
def test_the_users_level_decides(capfd, monkeypatch, level, hidden):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    with quiet_native_logs():
        _write_lines()
    err = capfd.readouterr().err
    for mark in ("I0000", "W0000", "E0000"):
        assert (mark in err) == (mark not in hidden), (level, err)
    assert backend_support.native_log_level() == int(level)


def _run(code_or_args, env_level=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if env_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = env_level
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _assert_quiet(run):
    output = run.stdout + run.stderr
    for mark in ("I0000", "absl::InitializeLog", "W0000", "INFO:", "fully_quantize"):
        assert mark not in output, output
    assert "cuda" not in output.lower(), output


def test_library_imports_print_nothing_and_the_users_level_wins():
    code = (
        "import os, tf_reweight, tflite_export, tflite_export.convert; "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    run = _run(code)
    assert run.returncode == 0, run.stderr
    _assert_quiet(run)
    assert run.stdout.strip() == "2" and run.stderr == ""
    chosen = _run(code, env_level="0")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == "0"


def test_tflite_export_cli_prints_its_report_only(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    tflite = str(tmp_path / "m.tflite")
    cli = ["-m", "tf_reweight.cli.tflite"]

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((16, 4), "float32"))
    convert = [*cli, "convert", str(tmp_path / "m.keras"), tflite, "--quantization"]
    calibration = ["--representative-npy", str(tmp_path / "x.npy")]
    run = _run([*convert, "int8", *calibration, "--min-agreement", "0"])
    assert run.returncode == 0, run.stderr
    _assert_quiet(run)
    assert "gzipped" in run.stdout and "encoding: " in run.stdout
    assert "delegate " in run.stdout and "latency_ms" in run.stdout

    verify = [*cli, "verify", tflite, "--reference", str(tmp_path / "m.keras")]
    run = _run([*verify, "--runs", "2", "--dense-reference", tflite])
    assert run.returncode == 0, run.stderr
    _assert_quiet(run)
    assert "gzip_bytes" in run.stdout and "dense_reference_delegate" in run.stdout

    verbose = _run([*verify, "--runs", "2", "--verbose"])
    assert verbose.returncode == 0, verbose.stderr
    assert "argmax_agreement" in verbose.stdout


def test_main_job_prints_its_report_only(tmp_path, data_dir):
    out = tmp_path / "run"
    run = _run(
        [
            *("-m", "tf_reweight.cli", "compress", "--out", str(out)),
            *("--data-dir", data_dir, "--train-limit", "128", "--verbose", "0"),
            *("--pretrain-epochs", "0", "--reweight-epochs", "1"),
            *("--retrain-epochs", "1"),
        ]
    )
    assert run.returncode == 0, run.stderr
    _assert_quiet(run)
    # stderr may hold only the library's own Python warnings (the sparse file
    # of this 1-epoch model can fall off XNNPACK), never native log lines.
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert all("Warning: " in line or line.startswith("  ") for line in lines), (
        run.stderr
    )
    assert "gzipped" in run.stdout and "encoding: " in run.stdout
    assert (out / "model_int8.tflite").is_file()
