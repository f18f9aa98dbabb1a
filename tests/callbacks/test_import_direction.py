"""The callbacks and methods packages import only the packages below them,
import no private names across modules, and keep their registered names."""

import ast
import pathlib

import keras
import pytest

import tf_reweight as tfr

ROOT = pathlib.Path(tfr.__file__).parent
ALLOWED = {
    "methods": {"core", "methods"},
    "callbacks": {"core", "methods", "pruning", "callbacks"},
}


def _imports(package):
    """``(module file, imported module, names)`` for every tf_reweight import."""
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [a.name for a in node.names]
                yield path.name, node.module, names
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name, []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_packages_below_them(package):
    seen = 0
    for name, module, _ in _imports(package):
        parts = module.split(".")
        if parts[0] != "tf_reweight":
            continue
        seen += 1
        assert len(parts) > 1 and parts[1] in ALLOWED[package], (name, module)
    assert seen  # the walk found the package's imports


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_private_name_is_imported_from_another_module(package):
    for name, module, names in _imports(package):
        if module.startswith("tf_reweight"):
            private = [n for n in names if n.startswith("_")]
            assert not private, (name, module, private)
            assert not any(p.startswith("_") for p in module.split(".")), module


@pytest.mark.parametrize(
    "cls",
    [
        tfr.ADMMPenalty,
        tfr.ADMMUpdate,
        tfr.GroupLassoPenalty,
        tfr.HardPrune,
        tfr.PolynomialSparsity,
        tfr.ProgressiveSparsity,
        tfr.Reweight,
        tfr.ReweightedGroupPenalty,
        tfr.ScheduledPruning,
        tfr.SparsityMonitor,
    ],
)
def test_registered_names_are_unchanged(cls):
    assert keras.saving.get_registered_name(cls) == f"tf_reweight>{cls.__name__}"
    assert keras.saving.get_registered_object(f"tf_reweight>{cls.__name__}") is cls


@pytest.mark.parametrize(
    "module", ["tf_reweight.regularizers", "tf_reweight.methods.regularizers"]
)
def test_penalties_saved_under_an_old_module_path_still_load(module):
    config = {
        "module": module,
        "class_name": "ReweightedGroupPenalty",
        "config": {"penalty": 2e-4, "eps": 1e-2, "squared": True, "bounded": False},
        "registered_name": "tf_reweight>ReweightedGroupPenalty",
    }
    penalty = keras.saving.deserialize_keras_object(config)
    assert isinstance(penalty, tfr.ReweightedGroupPenalty)
    # Saved before `spare_scale_free` existed: it penalizes every kernel, as then.
    assert penalty.get_config() == {**config["config"], "spare_scale_free": False}


def test_old_public_paths_still_resolve():
    assert tfr.admm.ADMMUpdate is tfr.ADMMUpdate is tfr.callbacks.ADMMUpdate
    assert tfr.admm.ADMMPenalty is tfr.ADMMPenalty
    assert callable(tfr.admm.update) and callable(tfr.admm.residual)
    assert tfr.regularizers.GroupLassoPenalty is tfr.GroupLassoPenalty
    assert tfr.regularizers.KernelPenalty is tfr.KernelPenalty
    assert callable(tfr.regularizers.get) and callable(tfr.regularizers.group_norms)
