"""Tests for `tf_reweight.training.models`: sizes, shapes, names and `get`."""

import keras
import numpy as np
import pytest

from tf_reweight.training import models


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_lenet_300_100_matches_dense_formula():
    model = models.lenet_300_100()
    sizes = [784, 300, 100, 10]
    expected = sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:], strict=True))
    assert model.count_params() == expected == 266_610


def test_lenet5_is_the_caffe_variant():
    model = models.lenet5()
    # conv1 5*5*1*20+20, conv2 5*5*20*50+50, fc1 (4*4*50)*500+500, logits 500*10+10
    assert model.count_params() == 520 + 25_050 + 400_500 + 5_010 == 431_080
    assert model.get_layer("conv2").output.shape == (None, 8, 8, 50)
    assert model.get_layer("conv1").activation is keras.activations.linear


def test_resnet20_size_and_shortcuts():
    model = models.resnet20()
    assert model.count_params() == 274_042
    assert _trainable_count(model) == 272_474
    assert 260_000 <= model.count_params() <= 280_000
    shortcuts = [layer.name for layer in model.layers if "shortcut_conv" in layer.name]
    assert shortcuts == ["stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"]
    assert model.get_layer("stage3_block3_relu2").output.shape == (None, 8, 8, 64)
    assert model.get_layer("stage2_block1_conv2").use_bias is False


def test_resnet18_cifar_trainable_count():
    # The widely used CIFAR ResNet-18 has 11,173,962 trainable parameters.
    assert _trainable_count(models.resnet18()) == 11_173_962


def test_mobilenet_v2_width_and_depthwise():
    full, half = models.mobilenet_v2(), models.mobilenet_v2(width=0.5)
    assert isinstance(full.get_layer("block5_depthwise"), keras.layers.DepthwiseConv2D)
    assert full.get_layer("block17_project_conv").filters == 320
    assert half.get_layer("block17_project_conv").filters == 160
    assert half.get_layer("head_conv").filters == 1280
    assert half.count_params() < full.count_params() / 2
    # Identity shortcuts only where stride 1 keeps the width: every block of a
    # stage but its first.
    adds = [layer.name for layer in full.layers if layer.name.endswith("_add")]
    assert adds == [f"block{i}_add" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]
    with pytest.raises(ValueError, match="width=0"):
        models.mobilenet_v2(width=0)


@pytest.mark.parametrize(
    "name, input_shape",
    [
        ("lenet_300_100", (28, 28, 1)),
        ("lenet5", (28, 28, 1)),
        ("resnet20", (32, 32, 3)),
        ("resnet18", (32, 32, 3)),
        ("vgg16", (32, 32, 3)),
        ("mobilenet_v2", (32, 32, 3)),
    ],
)
def test_outputs_are_logits(name, input_shape):
    model = models.get(name, input_shape=input_shape, num_classes=7)
    assert model.name == name
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is keras.activations.linear
    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 7)
    assert not np.allclose(y.sum(axis=1), 1.0)


def test_get_errors():
    with pytest.raises(ValueError, match="'lenet5'.*name='alexnet'"):
        models.get("alexnet")
    with pytest.raises(ValueError, match="num_classes=0"):
        models.get("lenet5", num_classes=0)
