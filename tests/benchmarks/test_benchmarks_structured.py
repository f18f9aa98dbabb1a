"""Smoke test of the structured benchmark on a slice of MNIST (tiny budgets)."""

import json

import pytest


def test_records_are_measured_resumed_and_tabled(data_dir, tmp_path, capsys):
    from benchmarks import structured

    results = tmp_path / "structured.json"
    argv = [
        "--datasets=mnist",
        "--structures=unstructured,filter",
        "--max-prune=0.8",
        "--unstructured-max-prune=default,0.9",
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        "--train-limit=128",
        "--test-limit=64",
        "--batch-size=64",
        "--dense-epochs=1",
        "--epochs",
        "1",
        "1",
    ]
    assert structured.main(argv) == 0
    records = json.loads(results.read_text())
    assert [(r["structure"], r["max_prune"]) for r in records] == [
        ("dense", None),
        ("unstructured", "default"),
        ("unstructured", 0.9),
        ("filter", 0.8),
    ]
    for r in records:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
        assert (r["train_images"], r["test_images"], r["epochs"]) == (128, 64, [1, 1])
        assert r["command"].startswith("python benchmarks/structured.py ")
    for r in records[1:]:
        assert r["sparsity"] == pytest.approx(0.75, abs=0.01)
        assert r["sparsity"] == pytest.approx(1 - r["nonzeros"] / r["weights"])
        assert {"fit_train_accuracy", "test_accuracy_recalibrated"} <= set(r)
        # The logits layer stays dense and uncounted; the stem is pruned.
        names = [row["layer"] for row in r["layers"]]
        assert "logits" not in names and names[0] == "stem"
        assert sum(row["weights"] for row in r["layers"]) == r["weights"]
    for r in records[2:]:  # the floors: no kernel loses more than its share
        for row in r["layers"]:
            lost = row["units"] - row["kept_units"]
            assert lost <= r["max_prune"] * row["units"], (r["structure"], row)
    assert "| mnist | filter | 1e-05 | 0.8 |" in capsys.readouterr().out

    assert structured.main(argv) == 0  # everything is already there
    assert json.loads(results.read_text()) == records

    # A superseded record is measured again; the old one stays, marked.
    records[-1]["superseded"] = True
    results.write_text(json.dumps(records))
    assert structured.main(argv) == 0
    again = json.loads(results.read_text())
    assert again[:-1] == records
    assert again[-1]["structure"] == "filter" and "superseded" not in again[-1]

    # The ablation that penalizes scale-free filters is a cell of its own.
    argv[1] = "--structures=filter"
    assert structured.main([*argv, "--penalize-scale-free"]) == 0
    ablation = json.loads(results.read_text())
    assert ablation[:-1] == again
    assert ablation[-1]["structure"] == "filter"
    assert ablation[-1]["spare_scale_free"] is False
    # Structured records carry the budget's stream floor (a key field: records
    # of another floor are measured again).
    assert ablation[-1]["stream_min_keep"] == 0.25
    assert all("stream_min_keep" not in r for r in records[:3])


def test_table_leaves_out_superseded_records():
    from benchmarks import structured

    record = {
        "dataset": "mnist",
        "structure": "filter",
        "max_prune": "default",
        "penalty": "auto",
        "test_accuracy": 0.5,
        "train_accuracy": 0.5,
    }
    old = {**record, "dataset": "cifar10", "superseded": True}
    lines = structured.table([old, record]).splitlines()
    assert len(lines) == 3 and lines[-1].startswith(
        "| mnist | filter | auto | default |"
    )
