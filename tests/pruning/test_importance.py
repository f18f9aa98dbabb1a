import keras
import numpy as np
import pytest

import tf_reweight as tfr
from tf_reweight.pruning import importance, operations

L = keras.layers


def _net(separable: bool):
    keras.utils.set_random_seed(1)
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, use_bias=False, name="stem")(x)
    h = L.ReLU()(L.BatchNormalization(name="stem_bn")(h))
    if separable:
        h = L.SeparableConv2D(16, 3, use_bias=False, name="sep")(h)
    else:
        h = L.DepthwiseConv2D(3, use_bias=False, name="sep")(h)
    h = L.ReLU()(L.BatchNormalization(name="sep_bn")(h))
    h = L.Dense(12, name="fc")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, L.Dense(4, name="out")(h))
    rng = np.random.default_rng(0)
    for bn in ("stem_bn", "sep_bn"):
        layer = model.get_layer(bn)
        size = layer.moving_variance.shape[0]
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
        layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
    return model


def _rescaled(model, separable: bool, factor: float = 100.0):
    """The same function with the stem and the separable split rescaled."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    stem, bn = clone.get_layer("stem"), clone.get_layer("stem_bn")
    stem.kernel.assign(stem.kernel * factor)
    bn.moving_mean.assign(bn.moving_mean * factor)
    bn.moving_variance.assign(bn.moving_variance * factor**2)
    bn.epsilon *= factor**2
    if separable:
        sep = clone.get_layer("sep")
        sep.depthwise_kernel.assign(sep.depthwise_kernel * factor)
        sep.pointwise_kernel.assign(sep.pointwise_kernel / factor)
    return clone


def _masks(model):
    return {
        (w.name, pk.layout.attr): keras.ops.convert_to_numpy(pk.mask)
        for w in operations.wrappers(model)
        for pk in w.pruned_kernels
    }


@pytest.mark.parametrize("separable", [False, True], ids=["depthwise", "separable"])
@pytest.mark.parametrize("structure", ["unstructured", "filter"])
def test_the_global_ranking_ignores_scales_batchnorm_divides_out(separable, structure):
    model = _net(separable)
    same = _rescaled(model, separable)
    x = np.random.default_rng(2).normal(size=(2, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(same.predict(x, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(x, verbose=0)),
        rtol=1e-3,
        atol=1e-4,
    )
    pruned = [tfr.apply(m, structure, 0.6, skip_last=True) for m in (model, same)]
    for p in pruned:
        tfr.hard_prune(p)
    first, second = (_masks(p) for p in pruned)
    for key, mask in first.items():
        np.testing.assert_array_equal(mask, second[key], err_msg=str(key))
    # Raw magnitudes would have kept every stem weight of the rescaled copy.
    assert not first[("stem", "kernel")].all()


def test_views_fold_batchnorm_and_the_pointwise_rows():
    model = tfr.apply(_net(separable=True), "unstructured", 0.5, skip_last=True)
    scales = importance.output_scales(model)
    stem = model.get_layer("stem")
    bn = model.get_layer("stem_bn")
    gamma, variance = (
        keras.ops.convert_to_numpy(v) for v in (bn.gamma, bn.moving_variance)
    )
    expected = np.abs(gamma) / np.sqrt(variance + bn.epsilon)
    np.testing.assert_allclose(scales[id(stem)], expected, rtol=1e-6)
    view = importance.ranking_kernel(stem, stem.pruned_kernels[0], scales)
    np.testing.assert_allclose(
        view, stem.pruned_kernels[0].canonical() * expected, rtol=1e-6
    )
    fc = model.get_layer("fc")  # no BatchNorm after it: ranked as it is
    np.testing.assert_array_equal(
        importance.ranking_kernel(fc, fc.pruned_kernels[0], scales),
        fc.pruned_kernels[0].canonical(),
    )


def test_admm_keeps_the_units_the_folded_ranking_keeps():
    model = _net(separable=False)
    same = _rescaled(model, separable=False)
    masks = []
    for m in (model, same):
        pruned = tfr.apply(
            m, "filter", 0.6, method=tfr.ADMMPenalty(1e-3), skip_last=True
        )
        tfr.callbacks.admm_update.update(pruned, dual=False)  # Z = project(W)
        stem = pruned.get_layer("stem").pruned_kernels[0]
        z = stem.layout.to_canonical(keras.ops.convert_to_numpy(stem.penalty.z))
        masks.append(z.any(axis=(0, 1, 2)))
        tfr.hard_prune(pruned)
        kept = _canonical_mask(stem).any(axis=(0, 1, 2))
        np.testing.assert_array_equal(masks[-1], kept)  # Z's support is the prune's
    np.testing.assert_array_equal(*masks)  # and ignores the scale BN divides out


def _canonical_mask(pk):
    return pk.layout.to_canonical(keras.ops.convert_to_numpy(pk.mask))


def _kernel_ids(pruned, *names):
    return {id(pk) for name in names for pk in pruned.get_layer(name).pruned_kernels}


@pytest.mark.parametrize("separable", [False, True])
def test_scale_free_kernels_are_those_only_batchnorm_reads(separable):
    pruned = tfr.apply(_net(separable), "filter", 0.5)
    # stem and sep feed BN alone (both halves of a separable conv); fc does not.
    expected = _kernel_ids(pruned, "stem", "sep")
    assert importance.scale_free(pruned) == expected
    assert len(expected) == (3 if separable else 2)
    for structure in ("unstructured", "channel", "block:2x2"):
        assert not importance.scale_free(tfr.apply(_net(separable), structure, 0.5))


def test_a_kernel_read_past_its_batchnorm_keeps_its_scale():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(x)
    b = L.Conv2D(4, 3, padding="same", name="b")(x)
    h = L.Add()([L.BatchNormalization()(a), a])  # a is also read directly
    h = L.Concatenate()([h, L.BatchNormalization()(b)])
    out = L.Conv2D(2, 1, name="out")(h)
    model = keras.Model(x, [out, L.BatchNormalization()(out)])
    pruned = tfr.apply(model, "filter", 0.5, layers=["a", "b", "out"])
    # b: BN only. out: also a model output, read outside the graph.
    assert importance.scale_free(pruned) == _kernel_ids(pruned, "b")


@pytest.mark.parametrize("spare", [True, False])
def test_reweighting_spares_scale_free_kernels(spare):
    method = tfr.ReweightedGroupPenalty(1e-3, 1e-2, spare_scale_free=spare)
    pruned = tfr.apply(_net(True), "filter", 0.5, method=method, skip_last=True)
    operations.refresh_penalties(pruned)
    for name in ("stem", "sep", "fc"):
        for pk in pruned.get_layer(name).pruned_kernels:
            alpha = keras.ops.convert_to_numpy(pk.penalty.alpha)
            spared = spare and name != "fc"
            assert np.all(alpha == 0) if spared else np.all(alpha > 0), name
    config = pruned.get_layer("fc").pruned_kernels[0].penalty.get_config()
    assert config["spare_scale_free"] is spare
