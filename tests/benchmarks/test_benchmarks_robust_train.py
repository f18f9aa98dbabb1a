"""Tests of `benchmarks/robust_train.py`: one run's settings (not timed)."""

from benchmarks import robust, robust_train


def test_speed_sets_the_policy_for_the_run_only():
    import keras

    args = robust._configure(["--suite", "cifar10-paper"])
    with robust_train.speed(args):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        assert model.layers[0].dtype_policy.name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
