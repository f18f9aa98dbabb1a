import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tf_reweight.cli import main as cli


def test_compress_main_job_writes_reports(tmp_path, data_dir):
    out = tmp_path / "run"
    code = cli.main(
        [
            "compress",
            "--data-dir",
            data_dir,
            "--out",
            str(out),
            "--train-limit",
            "3000",
            "--pretrain-epochs",
            "1",
            "--reweight-epochs",
            "1",
            "--retrain-epochs",
            "1",
            "--target",
            "10x",
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    record = json.loads((out / "report.json").read_text())
    assert abs(record["rate"] - 10.0) < 0.01
    assert record["accuracy"] > 0.8
    assert record["export"]["verification"]["argmax_agreement"] >= 0.95
    for name in [
        "report.md",
        "sparsity.png",
        "accuracy.png",
        "model.keras",
        "model_int8.tflite",
    ]:
        assert (out / name).exists(), name


def test_bad_target_is_a_clean_error(tmp_path, data_dir, capsys):
    code = cli.main(
        [
            "compress",
            "--data-dir",
            data_dir,
            "--out",
            str(tmp_path),
            "--target",
            "0.5x",
            "--train-limit",
            "100",
            "--pretrain-epochs",
            "0",
            "--verbose",
            "0",
        ]
    )
    assert code == 2
    assert "rate" in capsys.readouterr().err


def test_sparsity_target_as_a_number_is_accepted(tmp_path, capsys):
    code = cli.main(
        [
            "compress",
            "--target",
            "0.98",
            "--data-dir",
            str(tmp_path / "none"),
            "--verbose",
            "0",
        ]
    )
    assert code == 2  # fails on the missing data, not on the target
    assert "rate" not in capsys.readouterr().err


def _cli_imports(path: Path) -> set[str]:
    """The `tf_reweight.cli` modules that ``path`` imports, lazily or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "tf_reweight.cli":
            found |= {f"tf_reweight.cli.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("tf_reweight.cli.")}


def test_the_cli_modules_import_each_other_without_a_cycle():
    package = Path(cli.__file__).parent
    graph = {
        f"tf_reweight.cli.{path.stem}": _cli_imports(path)
        for path in package.glob("*.py")
    }
    assert "tf_reweight.cli.main" not in graph["tf_reweight.cli.robust"]
    assert "tf_reweight.cli.common" in graph["tf_reweight.cli.robust"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module not in done:
            for imported in graph.get(module, ()):
                visit(imported, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_python_m_tf_reweight_cli_runs_the_command(tmp_path):
    out = tmp_path / "out"
    argv = ["compress", "--out", str(out), "--batch-size", "0"]
    run = subprocess.run(
        [sys.executable, "-m", "tf_reweight.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--batch-size" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()
