import json

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
