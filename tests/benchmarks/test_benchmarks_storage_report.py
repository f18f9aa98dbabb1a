"""Tests of `benchmarks/storage_report.py`: the goal line."""

from benchmarks import storage_report


def test_goal_line_tells_each_index_scheme_apart():
    def record(accuracy, fixed, per_kernel):
        return {
            "method": "ste",
            "bits": 3,
            "target_rate": 1000.0,
            "accuracy": accuracy,
            "storage": {"4": {"rate_kernels": fixed / 2}, "5": {"rate_kernels": fixed}},
            "per_kernel": {"rate_kernels": per_kernel},
        }

    float_record = {**record(0.999, 9000.0, 9000.0), "method": "float", "bits": 32}
    assert storage_report.goal_line([float_record]) == "No quantized records yet."
    line = storage_report.goal_line(
        [float_record, record(0.995, 150.0, 3100.0), record(0.98, 200.0, 4000.0)]
    )
    assert line == (
        "Goal 3000x at >= 99.0%: fixed index width: not reached, highest 200x at "
        "98.00% (1000x, 3-bit ste); per-kernel index widths: reached, highest "
        "4000x at 98.00% (1000x, 3-bit ste)"
    )
