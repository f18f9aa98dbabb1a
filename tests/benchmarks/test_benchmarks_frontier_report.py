"""Tests of `benchmarks/frontier_report.py`: the frontier's lines and table."""

from benchmarks import frontier, frontier_jobs, frontier_report


def test_lines_tell_configurations_from_sweep_points():
    mains = frontier_jobs.main_configs(
        frontier.parse_args(["--structured-penalty=1e-4"])
    )

    def record(structure, rate, penalty, eps=None, accuracy=0.99):
        return {
            "method": "reweighted",
            "structure": structure,
            "target_rate": rate,
            "rate": rate,
            "accuracy": accuracy,
            "penalty": penalty,
            **({} if eps is None else {"eps": eps}),
        }

    records = [
        {"method": "dense", "structure": "dense", "accuracy": 0.99},
        record("unstructured", 50, 1e-5),
        record("unstructured", 200, 1e-5),
        record("unstructured", 200, 1e-4),  # a sweep point
        record("unstructured", 200, 1e-4, eps=1e-2),  # a second line
        record("unstructured", 400, 1e-4, eps=1e-2, accuracy=0.98),
        record("filter", 2, 1e-4),  # the structured line's own lambda
    ]
    series, sweep, dense = frontier_report.lines(records, mains)
    second = "reweighted λ=0.0001 eps=0.01"
    assert set(series) == {"reweighted", "reweighted (filter)", second}
    assert [r["rate"] for r in series[second]] == [200, 400]
    assert sweep == [records[3]] and dense == records[:1]
    table = frontier_report.table(records, mains).splitlines()
    assert table[0] == f"| structure | target | reweighted | {second} |"
    assert "| unstructured | 400x |  | 98.00 (400x) |" in table
    assert "| filter | 2x | 99.00 (2x) |  |" in table


def test_a_schedule_gets_its_own_line():
    mains = frontier_jobs.main_configs(frontier.parse_args(["--penalty=auto"]))
    rows = [
        {
            "method": "reweighted",
            "structure": "unstructured",
            "rate": r,
            "accuracy": 0.99,
            "penalty": "auto",
            **extra,
        }
        for r in (200, 630)
        for extra in ({}, {"schedule": "paper"}, {"schedule": "paper", "seed": 1})
    ]
    series, sweep, _ = frontier_report.lines(rows, mains)
    assert set(series) == {"reweighted", "reweighted λ=auto paper schedule"}
    assert len(series["reweighted λ=auto paper schedule"]) == 4  # seeds share it
    assert sweep == []
