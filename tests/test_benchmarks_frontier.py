"""Smoke test of the frontier benchmark on a slice of MNIST (tiny budgets)."""

import json

import pytest


@pytest.fixture(scope="module")
def frontier():
    from benchmarks import frontier as module

    return module


def test_every_method_measures_resumes_and_plots(frontier, data_dir, tmp_path):
    results = tmp_path / "frontier.json"
    argv = [
        f"--data-dir={data_dir}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--results={results}",
        "--train-limit=256",
        "--test-limit=200",
        "--dense-epochs=1",
        "--epochs",
        "1",
        "1",
        "--rates=10",
        f"--methods={','.join(frontier.METHODS)},tfmot_global",
        "--structures=filter",
        "--structured-methods=admm",
        "--structured-rates=2",
        "--sweep=1e-5",
        "--sweep-rate=10",
    ]
    assert frontier.main(argv) == 0
    records = json.loads(results.read_text())
    methods = [r["method"] for r in records]
    assert methods == ["dense", *frontier.METHODS, "tfmot_global", "admm", "reweighted"]
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
    assert records[7]["structure"] == "filter" and records[7]["rate"] >= 1.9
    assert records[8]["penalty"] == 1e-5

    assert frontier.main([*argv, "--plot"]) == 0  # everything is already there
    assert json.loads(results.read_text()) == records
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_jobs_and_keys(frontier):
    args = frontier._parser().parse_args(["--rates=50,200", "--sweep=1e-4,1e-3"])
    found = frontier.jobs(args)
    # 2 rates x 5 methods + 2 structures x 3 rates x 2 methods + 1 new sweep job
    assert len(found) == 10 + 12 + 1
    assert found[-1].penalty == 1e-3 and found[-1].target_rate == 200
    record = {"method": "admm", "structure": "filter", "target_rate": 4.0}
    record.update(penalty=3e-3, epochs=8)
    assert frontier.record_key(record) == frontier.Job("admm", "filter", 4.0, 3e-3).key(
        8
    )
