"""A catalogue of bad inputs to the public API: each is refused up front.

Every row is one call with one bad argument and a pattern its `ValueError`
must match (Keras style: what is wrong and ``Received: name=value``). After
each refused call the model it was given must be exactly as before: same
layer types and names, same variables, same values.

Rows marked ``xfail(strict=True)`` are inputs that are still accepted
silently (or refused with a non-Keras error); once they are refused they
XPASS, which fails the run as a reminder to drop the mark.
"""

import re

import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tflite_export import shrink


def _conv_bn() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, name="dense")(h)
    return keras.Model(inputs, outputs)


def _pruned() -> keras.Model:
    return tfr.apply(_conv_bn(), target=0.5)


def _dense_only() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])


def _lstm_only() -> keras.Model:
    return keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(2, name="lstm")])


def _lstm() -> keras.Model:
    """An LSTM reading a zero filter, which shrink cannot follow."""
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            keras.layers.Dense(4, name="d"),
            keras.layers.LSTM(2, name="lstm"),
        ]
    )
    kernel, bias = model.get_layer("d").get_weights()
    kernel[:, 0] = 0.0
    model.get_layer("d").set_weights([kernel, bias])
    return model


def _unbuilt() -> keras.Model:
    return keras.Sequential([keras.layers.Dense(3)])


X = np.zeros((4, 6, 6, 2), "float32")
SCHEDULE = tfr.PolynomialSparsity(0.5, 0, 10)


def silent(reason: str):
    """Marks a row whose bad input is not refused yet (see the module doc)."""
    return pytest.mark.xfail(strict=True, reason=reason)


def row(id, call, match, build=_conv_bn, marks=()):
    """One case: ``call(model)`` on ``build()`` must raise matching ``match``."""
    return pytest.param(build, call, match, id=id, marks=marks)


def received(text: str) -> str:
    """A pattern for the literal ``Received: ...`` part of a message."""
    return re.escape(f"Received: {text}")


CASES = [
    # tfr.apply: the model
    row(
        "apply-model-None",
        lambda m: tfr.apply(None, target=0.5),
        received("model=None"),
    ),
    row(
        "apply-model-layer",
        lambda m: tfr.apply(keras.layers.Dense(3), target=0.5),
        "Expected a keras.Model",
    ),
    row(
        "apply-already-pruned",
        lambda m: tfr.apply(m, target=0.5),
        "already has pruned",
        _pruned,
    ),
    row(
        "apply-no-prunable-layer",
        lambda m: tfr.apply(m, target=0.5),
        "no prunable layer",
        _lstm_only,
    ),
    # tfr.apply: structure
    row(
        "apply-structure-unknown",
        lambda m: tfr.apply(m, "foo", 0.5),
        received("structure='foo'"),
    ),
    row("apply-structure-int", lambda m: tfr.apply(m, 3, 0.5), received("structure=3")),
    row(
        "apply-structure-dict-unknown-layer",
        lambda m: tfr.apply(m, {"nope": "filter"}, 0.5),
        r"`structure` names layers.*Received: \['nope'\]",
    ),
    row("apply-structure-block-0", lambda m: tfr.apply(m, "block:0x2", 0.5), "rows=0"),
    row("apply-structure-n-above-m", lambda m: tfr.apply(m, "5:4"), "n=5, m=4"),
    # tfr.apply: target
    row(
        "apply-target-above-1",
        lambda m: tfr.apply(m, target=1.5),
        received("target=1.5"),
    ),
    row("apply-target-0", lambda m: tfr.apply(m, target=0.0), received("target=0.0")),
    row("apply-target-1", lambda m: tfr.apply(m, target=1.0), received("target=1.0")),
    row(
        "apply-target-negative",
        lambda m: tfr.apply(m, target=-0.1),
        received("target=-0.1"),
    ),
    row(
        "apply-target-nan",
        lambda m: tfr.apply(m, target=float("nan")),
        received("target=nan"),
    ),
    row(
        "apply-target-rate-below-1",
        lambda m: tfr.apply(m, target="0.5x"),
        "target='0.5x'",
    ),
    row(
        "apply-target-text",
        lambda m: tfr.apply(m, target="abc"),
        received("target='abc'"),
    ),
    row(
        "apply-target-None",
        lambda m: tfr.apply(m, target=None),
        received("target=None"),
    ),
    row(
        "apply-target-bool",
        lambda m: tfr.apply(m, target=True),
        received("target=True"),
    ),
    row(
        "apply-target-list",
        lambda m: tfr.apply(m, target=[0.5]),
        received("target=[0.5]"),
    ),
    row(
        "apply-target-dict-unknown-layer",
        lambda m: tfr.apply(m, target={"nope": 0.5}),
        r"`target` names layers.*Received: \['nope'\]",
    ),
    # tfr.apply: penalty
    row(
        "apply-penalty-negative",
        lambda m: tfr.apply(m, target=0.5, penalty=-1.0),
        "penalty=-1.0",
    ),
    row(
        "apply-penalty-nan",
        lambda m: tfr.apply(m, target=0.5, penalty=float("nan")),
        received("penalty=nan"),
    ),
    row(
        "apply-penalty-str",
        lambda m: tfr.apply(m, target=0.5, penalty="1e-4"),
        received("penalty='1e-4'"),
    ),
    row(
        "apply-penalty-inf",
        lambda m: tfr.apply(m, target=0.5, penalty=float("inf")),
        received("penalty=inf"),
    ),
    row(
        "apply-penalty-None",
        lambda m: tfr.apply(m, target=0.5, penalty=None),
        received("penalty=None"),
    ),
    row(
        "apply-penalty-bool",
        lambda m: tfr.apply(m, target=0.5, penalty=True),
        received("penalty=True"),
    ),
    # tfr.apply: eps
    row(
        "apply-eps-0", lambda m: tfr.apply(m, target=0.5, eps=0.0), received("eps=0.0")
    ),
    row(
        "apply-eps-negative",
        lambda m: tfr.apply(m, target=0.5, eps=-1.0),
        received("eps=-1.0"),
    ),
    row(
        "apply-eps-nan",
        lambda m: tfr.apply(m, target=0.5, eps=float("nan")),
        received("eps=nan"),
    ),
    row(
        "apply-eps-inf",
        lambda m: tfr.apply(m, target=0.5, eps=float("inf")),
        received("eps=inf"),
    ),
    row(
        "apply-eps-str",
        lambda m: tfr.apply(m, target=0.5, eps="a"),
        received("eps='a'"),
    ),
    # tfr.apply: scope, layers, method, flags
    row(
        "apply-scope",
        lambda m: tfr.apply(m, target=0.5, scope="foo"),
        received("scope='foo'"),
    ),
    row(
        "apply-layers-unknown",
        lambda m: tfr.apply(m, target=0.5, layers=["nope"]),
        r"`layers` names layers.*Received: \['nope'\]",
    ),
    row(
        "apply-layers-not-prunable",
        lambda m: tfr.apply(m, target=0.5, layers=["bn"]),
        r"Received: \['bn'\]",
    ),
    row(
        "apply-layers-str",
        lambda m: tfr.apply(m, target=0.5, layers="conv"),
        "layers='conv'",
    ),
    row(
        "apply-layers-empty",
        lambda m: tfr.apply(m, target=0.5, layers=[]),
        "layers=\\[\\]",
    ),
    row(
        "apply-method-str",
        lambda m: tfr.apply(m, target=0.5, method="admm"),
        received("method='admm'"),
    ),
    row(
        "apply-method-class",
        lambda m: tfr.apply(m, target=0.5, method=tfr.ADMMPenalty),
        "`method` must be a tf_reweight KernelPenalty",
    ),
    row(
        "apply-skip-first-str",
        lambda m: tfr.apply(m, target=0.5, skip_first="yes"),
        received("skip_first='yes'"),
    ),
    # tfr.parse_target
    row("parse-target-2", lambda m: tfr.parse_target(2.0), received("target=2.0")),
    row("parse-target-0", lambda m: tfr.parse_target(0), received("target=0")),
    row("parse-target-1x", lambda m: tfr.parse_target("1x"), received("target='1x'")),
    row("parse-target-x", lambda m: tfr.parse_target("x"), received("target='x'")),
    row(
        "parse-target-infx",
        lambda m: tfr.parse_target("infx"),
        received("target='infx'"),
    ),
    row("parse-target-None", lambda m: tfr.parse_target(None), received("target=None")),
    row("parse-target-bool", lambda m: tfr.parse_target(True), received("target=True")),
    row(
        "parse-target-nan",
        lambda m: tfr.parse_target(float("nan")),
        received("target=nan"),
    ),
    # callbacks
    row("hardprune-negative", lambda m: tfr.HardPrune(-1), received("epoch=-1")),
    row("hardprune-bool", lambda m: tfr.HardPrune(epoch=True), received("epoch=True")),
    row("hardprune-float", lambda m: tfr.HardPrune(1.5), received("epoch=1.5")),
    row("hardprune-str", lambda m: tfr.HardPrune("2"), received("epoch='2'")),
    row("reweight-every-0", lambda m: tfr.Reweight(0), received("every=0")),
    row("reweight-every-bool", lambda m: tfr.Reweight(True), received("every=True")),
    row("reweight-every-float", lambda m: tfr.Reweight(1.0), received("every=1.0")),
    row("reweight-unit", lambda m: tfr.Reweight(1, "batch"), received("unit='batch'")),
    row(
        "scheduled-not-a-schedule",
        lambda m: tfr.ScheduledPruning(0.5),
        received("schedule=0.5"),
    ),
    row(
        "scheduled-frequency-0",
        lambda m: tfr.ScheduledPruning(SCHEDULE, 0),
        received("frequency=0"),
    ),
    row(
        "scheduled-frequency-bool",
        lambda m: tfr.ScheduledPruning(SCHEDULE, True),
        received("frequency=True"),
    ),
    row(
        "monitor-log-dir-int",
        lambda m: tfr.SparsityMonitor(3),
        received("log_dir=3"),
    ),
    # schedules
    row(
        "poly-final-above-1", lambda m: tfr.PolynomialSparsity(1.5, 0, 10), "target=1.5"
    ),
    row(
        "poly-end-before-begin",
        lambda m: tfr.PolynomialSparsity(0.5, 10, 5),
        "end_step=5",
    ),
    row(
        "poly-begin-negative",
        lambda m: tfr.PolynomialSparsity(0.5, -1, 5),
        "begin_step=-1",
    ),
    row(
        "poly-initial-above-final",
        lambda m: tfr.PolynomialSparsity(0.5, 0, 5, initial_sparsity=0.6),
        received("initial_sparsity=0.6"),
    ),
    row(
        "poly-power-0",
        lambda m: tfr.PolynomialSparsity(0.5, 0, 5, power=0),
        received("power=0"),
    ),
    row(
        "poly-begin-float",
        lambda m: tfr.PolynomialSparsity(0.5, 1.5, 5),
        received("begin_step=1.5"),
    ),
    row(
        "progressive-empty",
        lambda m: tfr.ProgressiveSparsity((), 5),
        received("rates=[]"),
    ),
    row(
        "progressive-decreasing",
        lambda m: tfr.ProgressiveSparsity((4, 2), 5),
        received("rates=[4.0, 2.0]"),
    ),
    row(
        "progressive-rate-1",
        lambda m: tfr.ProgressiveSparsity((1, 2), 5),
        received("rates=1"),
    ),
    row(
        "progressive-steps-0",
        lambda m: tfr.ProgressiveSparsity((2, 4), 0),
        received("steps_per_stage=0"),
    ),
    row(
        "progressive-steps-float",
        lambda m: tfr.ProgressiveSparsity((2, 4), 1.5),
        received("steps_per_stage=1.5"),
    ),
    row(
        "progressive-rates-str",
        lambda m: tfr.ProgressiveSparsity("24", 5),
        received("rates='24'"),
    ),
    # penalties
    row(
        "rgp-penalty-negative",
        lambda m: tfr.ReweightedGroupPenalty(-1.0),
        "penalty=-1.0",
    ),
    row(
        "rgp-eps-0", lambda m: tfr.ReweightedGroupPenalty(eps=0.0), received("eps=0.0")
    ),
    row(
        "rgp-eps-nan", lambda m: tfr.ReweightedGroupPenalty(eps=float("nan")), "eps=nan"
    ),
    row(
        "rgp-penalty-str",
        lambda m: tfr.ReweightedGroupPenalty("1e-4"),
        received("penalty='1e-4'"),
    ),
    row(
        "rgp-penalty-inf",
        lambda m: tfr.ReweightedGroupPenalty(float("inf")),
        received("penalty=inf"),
    ),
    row(
        "rgp-penalty-None",
        lambda m: tfr.ReweightedGroupPenalty(None),
        received("penalty=None"),
    ),
    row(
        "rgp-eps-inf",
        lambda m: tfr.ReweightedGroupPenalty(eps=float("inf")),
        received("eps=inf"),
    ),
    row(
        "lasso-penalty-negative", lambda m: tfr.GroupLassoPenalty(-1.0), "penalty=-1.0"
    ),
    row(
        "lasso-penalty-nan",
        lambda m: tfr.GroupLassoPenalty(float("nan")),
        "penalty=nan",
    ),
    row(
        "lasso-penalty-str",
        lambda m: tfr.GroupLassoPenalty("x"),
        received("penalty='x'"),
    ),
    row("admm-rho-0", lambda m: tfr.ADMMPenalty(0.0), received("rho=0.0")),
    row("admm-rho-negative", lambda m: tfr.ADMMPenalty(-1.0), received("rho=-1.0")),
    row("admm-rho-inf", lambda m: tfr.ADMMPenalty(float("inf")), received("rho=inf")),
    row("admm-rho-nan", lambda m: tfr.ADMMPenalty(float("nan")), received("rho=nan")),
    row("admm-rho-str", lambda m: tfr.ADMMPenalty("1"), received("rho='1'")),
    # tfr.recalibrate_batchnorm
    row(
        "recalibrate-x-None", lambda m: tfr.recalibrate_batchnorm(m, None), "x=NoneType"
    ),
    row("recalibrate-x-str", lambda m: tfr.recalibrate_batchnorm(m, "images"), "x=str"),
    row(
        "recalibrate-empty",
        lambda m: tfr.recalibrate_batchnorm(m, X[:0]),
        "at least one example",
    ),
    row(
        "recalibrate-batch-size-0",
        lambda m: tfr.recalibrate_batchnorm(m, X, batch_size=0),
        received("batch_size=0"),
    ),
    row(
        "recalibrate-batch-size-float",
        lambda m: tfr.recalibrate_batchnorm(m, X, batch_size=2.0),
        received("batch_size=2.0"),
    ),
    row(
        "recalibrate-steps-0",
        lambda m: tfr.recalibrate_batchnorm(m, X, steps=0),
        received("steps=0"),
    ),
    row(
        "recalibrate-wrong-shape",
        lambda m: tfr.recalibrate_batchnorm(m, np.zeros((4, 6, 6, 3), "float32")),
        "incompatible with the layer",
    ),
    row(
        "recalibrate-no-batchnorm",
        lambda m: tfr.recalibrate_batchnorm(m, np.zeros((2, 3), "float32")),
        "no BatchNormalization",
        _dense_only,
    ),
    # tfr.quantize_model
    row(
        "quantize-model-None",
        lambda m: tfr.quantize_model(None, 4),
        received("model=None"),
    ),
    row("quantize-bits-1", lambda m: tfr.quantize_model(m, 1), received("bits=1")),
    row("quantize-bits-33", lambda m: tfr.quantize_model(m, 33), received("bits=33")),
    row(
        "quantize-bits-float",
        lambda m: tfr.quantize_model(m, 4.0),
        received("bits=4.0"),
    ),
    row(
        "quantize-bits-bool",
        lambda m: tfr.quantize_model(m, True),
        received("bits=True"),
    ),
    row(
        "quantize-method",
        lambda m: tfr.quantize_model(m, 4, "foo"),
        received("method='foo'"),
    ),
    row(
        "quantize-axis", lambda m: tfr.quantize_model(m, 4, axis=5), received("axis=5")
    ),
    row(
        "quantize-pruned-model-axis",
        lambda m: tfr.quantize_model(m, 4, axis=5),
        received("axis=5"),
        _pruned,
    ),
    # tflite_export.shrink
    row("shrink-None", lambda m: shrink(None), received("model=None")),
    row("shrink-layer", lambda m: shrink(keras.layers.Dense(3)), "Expected a built"),
    row("shrink-unbuilt", lambda m: shrink(m), "Expected a built", _unbuilt),
    row(
        "shrink-unsupported-layer",
        lambda m: shrink(m),
        "cannot follow layer 'lstm'",
        _lstm,
    ),
    row("shrink-pruning-wrappers", lambda m: shrink(m), "type PruningWrapper", _pruned),
]


def _layers(model: keras.Model) -> list[tuple[str, str]]:
    """Type and name of every layer, nested models included."""
    out = []
    for layer in model.layers:
        out.append((type(layer).__name__, layer.name))
        if isinstance(layer, keras.Model):
            out.extend(_layers(layer))
    return out


def _snapshot(model: keras.Model):
    layers = _layers(model)
    variables = [
        (v.path, keras.ops.convert_to_numpy(v).copy()) for v in model.variables
    ]
    return layers, variables


@pytest.mark.parametrize("build, call, match", CASES)
def test_bad_input_is_refused_and_the_model_is_unchanged(build, call, match):
    model = build()
    layers, variables = _snapshot(model)
    with pytest.raises(ValueError, match=match):
        call(model)
    after_layers, after_variables = _snapshot(model)
    assert after_layers == layers
    assert [path for path, _ in after_variables] == [path for path, _ in variables]
    for (path, old), (_, new) in zip(variables, after_variables, strict=True):
        np.testing.assert_array_equal(old, new, err_msg=path)
