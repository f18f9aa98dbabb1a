import keras
import numpy as np
import pytest

from tf_reweight.layouts import kernel_layouts


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        (keras.layers.Dense(5), (None, 7), [("kernel", (7, 5), (1, 1, 7, 5))]),
        (
            keras.layers.Conv1D(5, 3),
            (None, 9, 4),
            [("kernel", (3, 4, 5), (1, 3, 4, 5))],
        ),
        (
            keras.layers.Conv2D(5, 3),
            (None, 9, 9, 4),
            [("kernel", (3, 3, 4, 5), (3, 3, 4, 5))],
        ),
        (
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
            (None, 9, 9, 4),
            [("kernel", (3, 3, 4, 2), (3, 3, 1, 8))],
        ),
        (
            keras.layers.SeparableConv2D(6, 3, depth_multiplier=2),
            (None, 9, 9, 4),
            [
                ("depthwise_kernel", (3, 3, 4, 2), (3, 3, 1, 8)),
                ("pointwise_kernel", (1, 1, 8, 6), (1, 1, 8, 6)),
            ],
        ),
        (keras.layers.BatchNormalization(), (None, 4), []),
    ],
)
def test_canonical_views(layer, input_shape, expected):
    layer.build(input_shape)
    got = [(lo.attr, lo.shape, lo.canonical) for lo in kernel_layouts(layer)]
    assert got == expected


def test_depthwise_filters_follow_output_channel_order():
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    layer.build((None, 9, 9, 4))
    (layout,) = kernel_layouts(layer)
    w = np.arange(3 * 3 * 4 * 2, dtype="float32").reshape(3, 3, 4, 2)
    w4 = keras.ops.convert_to_numpy(layout.to_canonical(w))
    # Output channel c * mult + m reads input channel c with multiplier m.
    np.testing.assert_array_equal(w4[:, :, 0, 2 * 3 + 1], w[:, :, 3, 1])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layout.from_canonical(w4)), w
    )
