import keras
import numpy as np
import pytest

from tf_reweight.core import structures
from tf_reweight.core.layouts import kernel_layouts

RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 3, 8, 6)).astype("float32")


def _block_norms(w4, m, n):
    kh, kw, cin, cout = w4.shape
    w2 = w4.reshape(kh * kw * cin, cout)
    return np.array(
        [
            np.linalg.norm(w2[i : i + m, j : j + n])
            for i in range(0, w2.shape[0], m)
            for j in range(0, w2.shape[1], n)
        ]
    )


REFERENCE_NORMS = {
    "unstructured": lambda w: np.abs(w).ravel(),
    "filter": lambda w: np.sqrt((w**2).sum(axis=(0, 1, 2))),
    "channel": lambda w: np.sqrt((w**2).sum(axis=(0, 1, 3))),
    "column": lambda w: np.sqrt((w.reshape(-1, w.shape[3]) ** 2).sum(axis=1)),
    "kernel": lambda w: np.sqrt((w**2).sum(axis=(0, 1))).ravel(),
    "block:4x4": lambda w: _block_norms(w, 4, 4),
    "block:5x4": lambda w: _block_norms(w, 5, 4),
    "2:4": lambda w: np.abs(w).ravel(),
    "pattern": lambda w: np.abs(w).ravel(),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_NORMS))
def test_group_norms_match_numpy(name):
    s = structures.get(name)
    np.testing.assert_allclose(
        np.sort(s.group_norms(W)), np.sort(REFERENCE_NORMS[name](W)), rtol=1e-5
    )


@pytest.mark.parametrize(
    "name", ["unstructured", "filter", "channel", "column", "kernel", "block:4x4"]
)
def test_projection_keeps_exactly_the_top_groups(name):
    s = structures.get(name)
    units = s.num_units(W.shape)
    keep = units // 3
    mask = s.project(W, keep)
    kept = s.group_mask(mask)
    assert kept.sum() == keep
    # Units rank by the RMS of the weights they hold (a partial edge block
    # holds fewer than a full tile).
    scores = s.group_norms(W) / np.sqrt(s.unit_sizes(W.shape))
    assert scores[kept].min() >= scores[~kept].max()
    # A kept group is kept whole (padding of partial blocks aside); others are 0.
    whole = keras.ops.convert_to_numpy(s.groups(np.ones_like(W))) * kept[:, None]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(s.groups(mask)), whole)


def test_ungroup_inverts_groups():
    for name in ["filter", "channel", "column", "kernel", "block:5x4"]:
        s = structures.get(name)
        back = keras.ops.convert_to_numpy(s.ungroup(s.groups(W), W.shape))
        np.testing.assert_array_equal(back, W)


def test_n_m_keeps_n_of_every_m_along_inputs():
    mask = structures.get("2:4").project(W, keep=0)
    blocks = mask.transpose(0, 1, 3, 2).reshape(-1, 4)
    assert (blocks.sum(axis=1) == 2).all()
    values = np.abs(W).transpose(0, 1, 3, 2).reshape(-1, 4)
    kept_min = np.where(blocks > 0, values, np.inf).min(axis=1)
    pruned_max = np.where(blocks == 0, values, -np.inf).max(axis=1)
    assert (kept_min >= pruned_max).all()


def test_pattern_keeps_library_patterns_on_kept_kernels():
    s = structures.get("pattern")
    keep = 10
    mask = s.project(W, keep)
    per_kernel = mask.transpose(2, 3, 0, 1).reshape(-1, 9)
    nonempty = per_kernel[per_kernel.sum(axis=1) > 0]
    assert len(nonempty) == keep
    library = {tuple(np.flatnonzero(row)) for row in s._table}
    assert all(tuple(np.flatnonzero(row)) in library for row in nonempty)


def _layout(layer, shape):
    layer.build(shape)
    return kernel_layouts(layer)[0]


def test_structures_that_do_not_fit_raise():
    conv = _layout(keras.layers.Conv2D(4, 3), (None, 8, 8, 6))
    with pytest.raises(ValueError, match="multiple of 4"):
        structures.get("2:4").check(conv)
    with pytest.raises(ValueError, match="larger than"):
        structures.get("block:64x2").check(conv)
    with pytest.raises(ValueError, match="at least"):
        structures.get("pattern").check_sparsity(conv, 0.2)


def test_inapplicable_structures_are_reported():
    dense = _layout(keras.layers.Dense(4), (None, 8))
    depthwise = _layout(keras.layers.DepthwiseConv2D(3), (None, 8, 8, 4))
    assert not structures.get("kernel").applies_to(dense)
    assert not structures.get("pattern").applies_to(dense)
    assert not structures.get("channel").applies_to(depthwise)
    assert not structures.get("2:4").applies_to(depthwise)
    assert structures.get("filter").applies_to(depthwise)


def test_get_parses_and_round_trips():
    for name in ["filter", "2:4", "block:2x8", "pattern"]:
        s = structures.get(name)
        again = structures.get(structures.serialize(s))
        assert repr(again) == repr(s) and again.get_config() == s.get_config()
    with pytest.raises(ValueError, match="Unknown structure"):
        structures.get("rows")
    with pytest.raises(ValueError, match="0 < N < M"):
        structures.get("4:4")


@pytest.mark.parametrize(
    "name",
    ["Unstructured", "Filter", "Channel", "Column", "Kernel", "Block", "NM", "Pattern"],
)
def test_every_structure_keeps_its_import_path_and_registered_name(name):
    # Old .keras files name the classes "tf_reweight>Name".
    cls = getattr(structures, name)
    assert keras.saving.get_registered_name(cls) == f"tf_reweight>{name}"
    assert keras.saving.get_registered_object(f"tf_reweight>{name}") is cls
    assert issubclass(cls, structures.Structure)


def test_identifier_names_every_structure():
    names = {
        "unstructured": "unstructured",
        "filter": "filter",
        "channel": "channel",
        "column": "column",
        "kernel": "kernel",
        "pattern": "pattern",
        "3:8": "3:8",
        "block:2x8": "block:2x8",
    }
    for given, expected in names.items():
        assert structures.identifier(structures.get(given)) == expected
