"""Tests of `benchmarks/frontier_jobs.py`: the frontier's suites, jobs and keys."""

from benchmarks import frontier, frontier_jobs
from benchmarks import records as record_store


def test_jobs_and_keys(tmp_path):
    args = frontier._parser().parse_args(["--rates=50,200", "--sweep=1e-5,1e-3"])
    found = frontier_jobs.jobs(args)
    # 2 rates x 5 methods + 2 structures x 3 rates x 2 methods + 1 new sweep job
    assert len(found) == 10 + 12 + 1
    assert found[-1].penalty == 1e-3 and found[-1].target_rate == 200
    record = {"method": "admm", "structure": "filter", "target_rate": 4.0}
    record.update(penalty=3e-3, epochs=8, accuracy=0.9)
    store = record_store.Store(tmp_path / "frontier.json", frontier_jobs.KEY_FIELDS)
    store.add(record)
    assert store.has(frontier_jobs.Job("admm", "filter", 4.0, 3e-3).key_fields(8))
    assert not store.has(frontier_jobs.Job("admm", "filter", 4.0, 3e-3).key_fields(6))
    assert not store.has(
        frontier_jobs.Job("admm", "filter", 4.0, 3e-3, 1e-2).key_fields(8)
    )


def test_cifar10_suite_defaults():
    def sizes(args):
        return args.train_limit, args.dense_epochs, tuple(args.epochs)

    args = frontier.parse_args(["--suite=cifar10"])
    assert sizes(args) == (10000, 10, (2, 2))
    mnist = frontier.parse_args([])
    assert (args.penalty, mnist.penalty, mnist.structured_penalty) == (1e-4, 1e-5, 1e-3)
    found = [(j.method, j.structure, j.target_rate) for j in frontier_jobs.jobs(args)]
    # tfmot unstructured and reweighted/admm filter, each at 2, 4, 8 and 16x.
    assert sorted(found) == sorted(
        (method, structure, rate)
        for method, structure in [
            ("tfmot", "unstructured"),
            ("reweighted", "filter"),
            ("admm", "filter"),
        ]
        for rate in (2, 4, 8, 16)
    )
    quick = frontier.parse_args(["--suite=cifar10", "--epochs", "4", "4", "--quick"])
    assert sizes(quick) == (5000, 5, (4, 4))  # explicit flags win
    assert sizes(frontier.parse_args([])) == (None, 5, (4, 4))  # MNIST unchanged


def test_eps_applies_to_reweighting_only():
    args = frontier.parse_args(["--rates=50", "--structures=", "--eps=1e-2"])
    found = {j.method: j.eps for j in frontier_jobs.jobs(args) if j.target_rate == 50}
    assert found == dict.fromkeys(frontier_jobs.METHODS, None) | {"reweighted": 1e-2}
