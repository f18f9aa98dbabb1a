import keras
import pytest

from tf_reweight.core import dependency

L = keras.layers


def _names(model, layers=None):
    found = dependency.dependencies(
        model, model.layers if layers is None else layers
    ).couplings
    return [
        ("+".join(p.name for p in c.producers), c.consumer.name, c.repeat)
        for c in found
    ]


def test_channelwise_layers_and_flatten_carry_filters_to_their_readers():
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, name="a")(x)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.DepthwiseConv2D(3, padding="same")(h)
    h = L.ZeroPadding2D()(h)
    h = L.Conv2D(4, 3, name="b")(keras.ops.relu(h))
    h = L.MaxPooling2D()(h)  # 8x8 -> 4x4
    h = L.Dropout(0.1)(h)
    h = L.Dense(6, name="c")(L.Flatten()(h))
    model = keras.Model(x, L.Dense(2, name="d")(L.Activation("relu")(h)))
    assert _names(model) == [("a", "b", 1), ("b", "c", 16), ("c", "d", 1)]
    # Only the layers named couple.
    assert _names(model, [model.get_layer("a"), model.get_layer("c")]) == []


def test_merges_mixing_layers_and_shared_readers_break_the_coupling():
    x = keras.Input((8, 8, 4))
    a = L.Conv2D(4, 1, name="a")(x)
    added = L.Add()([a, x])
    b = L.Conv2D(4, 1, name="b")(added)  # reads a through a residual add
    n = L.LayerNormalization()(b)
    c = L.Conv2D(4, 1, name="c")(n)  # LayerNormalization mixes channels
    shared = L.Conv2D(4, 1, name="shared")
    s1, s2 = shared(c), shared(x)  # a reader called twice
    cat = L.Concatenate()([s1, s2])
    d = L.Conv2D(2, 1, name="d")(cat)
    model = keras.Model(x, [d, L.Conv2D(2, 1, name="e")(s1)])
    assert _names(model) == []


def test_wrappers_are_looked_through():
    inner = L.Dense(5, name="inner")
    x = keras.Input((3,))
    a = L.Dense(4, name="a")(x)
    wrapped = L.TimeDistributed(inner, name="wrapped")  # a keras Wrapper
    y = wrapped(L.Reshape((1, 4))(a))
    model = keras.Model(x, y)
    # TimeDistributed's inner Dense is a reader, but Reshape is not followed.
    assert _names(model) == []
    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2, name="b")(L.Dense(4, name="a")(x)))
    assert _names(model) == [("a", "b", 1)]


@pytest.mark.parametrize(
    "layer", [L.Conv2D(4, 1, groups=2), L.SeparableConv2D(4, 1, depth_multiplier=2)]
)
def test_grouped_and_multiplier_convolutions_do_not_couple(layer):
    x = keras.Input((6, 6, 4))
    model = keras.Model(x, layer(L.Conv2D(4, 1, name="a")(x)))
    assert _names(model) == []


def test_a_merge_of_one_producers_channels_keeps_its_source():
    x = keras.Input((8, 8, 3))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="a")(x)))
    block = L.ReLU()(L.DepthwiseConv2D(3, padding="same")(a))
    summed = L.Add()([a, block])  # every channel c still reads filter c of a
    b = L.Conv2D(4, 1, name="b")(summed * 2.0)  # a keras.ops node with a constant
    model = keras.Model(x, L.Conv2D(2, 1, name="c")(L.Add()([b, L.Conv2D(4, 1)(x)])))
    # The second Add reads a layer that is not a candidate: not followed.
    assert _names(
        model, [model.get_layer("a"), model.get_layer("b"), model.get_layer("c")]
    ) == [("a", "b", 1)]


def _groups(model, layers=None):
    found = dependency.dependencies(model, model.layers if layers is None else layers)
    return [[p.name for p in group] for group in found.groups]


def test_residual_sums_couple_their_readers_to_every_producer_and_group_them():
    x = keras.Input((8, 8, 3))
    stem = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = L.ReLU()(L.BatchNormalization()(stem))
    a = L.Conv2D(8, 3, padding="same", name="a")(h)
    s1 = L.Add()([h, L.BatchNormalization()(a)])
    b = L.Conv2D(8, 1, name="b")(s1)
    s2 = keras.ops.relu(s1 + b)  # a keras.ops merge
    gate = keras.ops.sigmoid(L.Dense(8, name="gate")(L.GlobalAveragePooling2D()(s2)))
    scaled = L.Multiply()([s2, L.Reshape((1, 1, 8))(gate)])
    head = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(scaled))
    model = keras.Model(x, head)
    assert _names(model) == [
        ("stem", "a", 1),
        ("stem+a", "b", 1),
        ("stem+a+b", "gate", 1),
    ]
    # The Reshape is not followed, so the gate's Multiply has no source and the
    # head reads nothing certain.
    assert _groups(model) == [["stem", "a", "b"]]


def test_a_squeeze_and_excite_gate_joins_the_group_of_its_input():
    x = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, name="a")(x)
    gate = L.Conv2D(8, 1, activation="sigmoid", name="gate")(
        L.GlobalAveragePooling2D(keepdims=True)(a)
    )
    head = L.Conv2D(4, 1, name="head")(L.Multiply()([a, gate]))
    model = keras.Model(x, head)
    assert _names(model) == [("a", "gate", 1), ("a+gate", "head", 1)]
    assert _groups(model) == [["a", "gate"]]


def test_an_input_skip_or_an_unchosen_branch_breaks_the_group():
    x = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 1, name="a")(x)
    b = L.Conv2D(4, 1, name="b")(L.Add()([a, x]))  # x reads no producer
    c = L.Conv2D(4, 1, name="c")(L.Add()([b, L.Conv2D(4, 1, name="other")(x)]))
    model = keras.Model(x, c)
    chosen = [model.get_layer(n) for n in ("a", "b", "c")]
    assert _names(model, chosen) == []
    assert _groups(model, chosen) == []
    # With "other" chosen too, b and other write one stream that c reads.
    assert _names(model) == [("b+other", "c", 1)]
    assert _groups(model) == [["b", "other"]]
