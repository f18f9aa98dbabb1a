"""Reference networks for MNIST and CIFAR-10 as functional Keras models.

Every model ends in a `Dense` layer named ``"logits"`` without activation, so it
outputs logits: train it with
``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` and apply
`keras.ops.softmax` to get probabilities. Convolutions followed by
`BatchNormalization` have no bias. Layers have readable names such as ``"conv1"``
or ``"stage2_block1_conv2"`` so that pruning schedules can refer to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

# (expansion, output channels, blocks, stride of the first block) of each stage of
# the CIFAR MobileNetV2: the ImageNet stages with the stem and the 24-channel
# stage at stride 1, for 32x32 inputs.
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Convolution widths of the five VGG-16 blocks; each block ends in max-pooling.
_VGG16_BLOCKS = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def lenet_300_100(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """LeNet-300-100, the fully connected MNIST network (266,610 parameters).

    Flatten, then Dense 300 ReLU, Dense 100 ReLU and Dense `num_classes` logits.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.

    Returns:
        A `keras.Model` named ``"lenet_300_100"`` that outputs logits.

    Example:

    >>> model = lenet_300_100()
    >>> model.count_params()
    266610

    References:
        LeCun et al., "Gradient-based learning applied to document recognition",
        Proc. IEEE 1998.
    """
    _check_num_classes(num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(300, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def lenet5(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """LeNet-5 as in Caffe's MNIST example (431,080 parameters).

    Conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2 (both convolutions "valid"
    and, as in Caffe, without activation), Flatten, Dense 500 ReLU and Dense
    `num_classes` logits.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.

    Returns:
        A `keras.Model` named ``"lenet5"`` that outputs logits.

    Example:

    >>> model = lenet5()
    >>> model.count_params()
    431080

    References:
        LeCun et al., "Gradient-based learning applied to document recognition",
        Proc. IEEE 1998; the Caffe ``examples/mnist/lenet.prototxt``.
    """
    _check_num_classes(num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(20, 5, name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(50, 5, name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")


def resnet20(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10
) -> keras.Model:
    """ResNet-20 for CIFAR: a 16-filter stem and 3 stages of 3 basic blocks.

    The stages have 16, 32 and 64 filters; the second and third start with
    stride 2 and a 1x1 convolution projection shortcut. Global average pooling
    and a Dense layer give the logits: 274,042 parameters for 10 classes, of
    which 272,474 are trainable and 1,568 are BatchNorm moving statistics.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.

    Returns:
        A `keras.Model` named ``"resnet20"`` that outputs logits.

    Example:

    >>> model = resnet20()
    >>> model.output_shape
    (None, 10)

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
        Section 4.2.
    """
    return _cifar_resnet(input_shape, num_classes, 16, (16, 32, 64), 3, "resnet20")


def resnet18(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10
) -> keras.Model:
    """ResNet-18 for CIFAR: a 3x3, 64-filter stem and 4 stages of 2 basic blocks.

    The stages have 64, 128, 256 and 512 filters; each stage after the first
    starts with stride 2 and a 1x1 convolution projection shortcut. There is no
    max-pooling after the stem, unlike the ImageNet model.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.

    Returns:
        A `keras.Model` named ``"resnet18"`` that outputs logits.

    Example:

    >>> model = resnet18(num_classes=100)
    >>> model.output_shape
    (None, 100)

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    return _cifar_resnet(
        input_shape, num_classes, 64, (64, 128, 256, 512), 2, "resnet18"
    )


def vgg16(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10
) -> keras.Model:
    """VGG-16 for CIFAR with BatchNorm and a single Dense classifier.

    Thirteen 3x3 convolutions, each followed by BatchNorm and ReLU, in five
    blocks that end with 2x2 max-pooling; then Flatten (512 features for 32x32
    inputs) and Dense `num_classes` logits.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.

    Returns:
        A `keras.Model` named ``"vgg16"`` that outputs logits.

    Example:

    >>> model = vgg16()
    >>> model.get_layer("block5_conv3").filters
    512

    References:
        Simonyan and Zisserman, "Very Deep Convolutional Networks for
        Large-Scale Image Recognition", ICLR 2015.
    """
    _check_num_classes(num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for b, widths in enumerate(_VGG16_BLOCKS, start=1):
        for c, filters in enumerate(widths, start=1):
            x = _conv_bn(x, filters, 3, 1, f"block{b}_conv{c}", f"block{b}_bn{c}")
            x = keras.layers.ReLU(name=f"block{b}_relu{c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="vgg16")


def mobilenet_v2(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    width: float = 1.0,
) -> keras.Model:
    """MobileNetV2 for CIFAR with a width multiplier.

    A 3x3 stem at stride 1, 17 inverted residual blocks (1x1 expansion with
    ReLU6, 3x3 `DepthwiseConv2D` with ReLU6, linear 1x1 projection, identity
    shortcut when stride is 1 and the width is unchanged), a 1x1 head
    convolution, global average pooling and a Dense layer. Compared with the
    ImageNet model the stem and the 24-channel stage use stride 1, so 32x32
    inputs end at 4x4. Channel counts are multiplied by `width` and rounded to
    multiples of 8; the head keeps at least 1280 channels.

    Args:
        input_shape: Shape of one input image.
        num_classes: Number of output logits.
        width: Width multiplier applied to every layer's channels.

    Returns:
        A `keras.Model` named ``"mobilenet_v2"`` that outputs logits.

    Raises:
        ValueError: If `width` is not positive.

    Example:

    >>> model = mobilenet_v2(width=0.5)
    >>> tuple(model.get_layer("block1_depthwise").kernel.shape)
    (3, 3, 16, 1)

    References:
        Sandler et al., "MobileNetV2: Inverted Residuals and Linear
        Bottlenecks", CVPR 2018.
    """
    _check_num_classes(num_classes)
    if not width > 0:
        raise ValueError(f"`width` must be a positive number. Received: width={width}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv_bn(inputs, _divisible(32 * width), 3, 1, "stem_conv", "stem_bn")
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    block = 0
    for expansion, channels, repeats, first_stride in _MOBILENET_V2_STAGES:
        for r in range(repeats):
            block += 1
            x = _inverted_residual(
                x,
                _divisible(channels * width),
                expansion,
                first_stride if r == 0 else 1,
                f"block{block}",
            )
    x = _conv_bn(x, _divisible(1280 * max(width, 1.0)), 1, 1, "head_conv", "head_bn")
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


_MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
}


def get(name: str, **kwargs) -> keras.Model:
    """Builds a model by name.

    Args:
        name: One of ``"lenet_300_100"``, ``"lenet5"``, ``"resnet20"``,
            ``"resnet18"``, ``"vgg16"`` and ``"mobilenet_v2"``.
        **kwargs: Arguments of the model function, such as `input_shape`,
            `num_classes` or (for MobileNetV2) `width`.

    Returns:
        The `keras.Model` built by the model function of that name.

    Raises:
        ValueError: If `name` is not a known model.

    Example:

    >>> model = get("lenet5", num_classes=10)
    >>> model.name
    'lenet5'
    """
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model name. Expected one of {sorted(_MODELS)}. "
            f"Received: name={name!r}"
        )
    return _MODELS[name](**kwargs)


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            "`num_classes` must be a positive integer. "
            f"Received: num_classes={num_classes!r}"
        )


def _divisible(channels: float, divisor: int = 8) -> int:
    """Rounds to the nearest multiple of `divisor`, losing at most 10%."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn(x, filters: int, kernel_size: int, strides: int, conv: str, bn: str):
    """A bias-free 'same' convolution followed by BatchNorm."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=conv,
    )(x)
    return keras.layers.BatchNormalization(name=bn)(x)


def _basic_block(x, filters: int, strides: int, name: str):
    """Two 3x3 conv-BN layers with a shortcut; a 1x1 projection if shapes change."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(
            x, filters, 1, strides, f"{name}_shortcut_conv", f"{name}_shortcut_bn"
        )
    x = _conv_bn(x, filters, 3, strides, f"{name}_conv1", f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = _conv_bn(x, filters, 3, 1, f"{name}_conv2", f"{name}_bn2")
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(x)


def _cifar_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    stem_filters: int,
    stage_filters: Sequence[int],
    blocks: int,
    name: str,
) -> keras.Model:
    _check_num_classes(num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv_bn(inputs, stem_filters, 3, 1, "conv1", "bn1")
    x = keras.layers.ReLU(name="relu1")(x)
    for s, filters in enumerate(stage_filters, start=1):
        for b in range(1, blocks + 1):
            strides = 2 if s > 1 and b == 1 else 1
            x = _basic_block(x, filters, strides, f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(x, channels: int, expansion: int, strides: int, name: str):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, linear project 1x1."""
    inputs = x
    if expansion != 1:
        hidden = x.shape[-1] * expansion
        x = _conv_bn(x, hidden, 1, 1, f"{name}_expand_conv", f"{name}_expand_bn")
        x = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
    x = _conv_bn(x, channels, 1, 1, f"{name}_project_conv", f"{name}_project_bn")
    if strides == 1 and inputs.shape[-1] == channels:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x
