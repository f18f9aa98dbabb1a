"""The house follows ARCHITECTURE.md: import direction, no cycle, no private imports.

Every import of the library is read from the source (module level and inside
functions alike), so a lazy import counts as an arrow too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tf_reweight", "tflite_export")
TOP_LEVEL = ("tf_reweight", "tf_reweight.admm")

# The order of ARCHITECTURE.md: a package imports only packages of a lower rank.
# The top level (`tf_reweight/__init__.py`, `tf_reweight/admm.py`) loads the
# robust modules lazily and is imported by the CLI and by tflite_export.
RANK = {
    "tf_reweight.core": 0,
    "tf_reweight.methods": 1,
    "tf_reweight.pruning": 2,
    "tf_reweight.callbacks": 3,
    "tf_reweight.training": 4,
    "tf_reweight.quantize": 5,
    "tf_reweight.robust": 6,
    "tf_reweight": 7,
    "tflite_export": 8,
    "tf_reweight.cli": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
    }


MODULES = _modules()


def _group(module: str) -> str:
    """The package of ARCHITECTURE.md's table that a module belongs to."""
    for prefix in sorted(RANK, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            if prefix == "tf_reweight" and module not in (
                "tf_reweight",
                "tf_reweight.admm",
            ):
                continue
            return prefix
    raise AssertionError(f"{module} is in no package of ARCHITECTURE.md")


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import of the library in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            # `from package import module` imports the module itself.
            subs = [n for n in names if f"{node.module}.{n}" in MODULES]
            found += [(f"{node.module}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                found.append((node.module, rest))
    return [(m, names) for m, names in found if m.split(".")[0] in PACKAGES]


def _edges() -> dict[str, set[str]]:
    return {m: {target for target, _ in _imports(m)} - {m} for m in MODULES}


def test_every_module_is_in_a_package_of_the_table():
    for module in MODULES:
        _group(module)


def test_imports_run_down_the_table():
    wrong = []
    edges = _edges()
    for module in MODULES:
        for target in edges[module]:
            if module.startswith("tflite_export") and _group(target) != "tflite_export":
                if _group(target) not in ("tf_reweight", "tf_reweight.core"):
                    wrong.append(f"{module} -> {target}")
                continue
            if RANK[_group(target)] > RANK[_group(module)]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against ARCHITECTURE.md:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = _edges()
    # A package's __init__ importing its own modules is not a cycle of concepts;
    # module -> package -> module is (Tarjan over modules, packages included).
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in MODULES:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_a_private_name_of_another():
    wrong = [
        f"{module}: from {target} import {name}"
        for module in MODULES
        for target, names in _imports(module)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_reads_a_private_attribute_of_another_library_module():
    wrong = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{module}: {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_hold_one_concept_of_at_most_about_400_lines(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= 440, f"{module} has {lines} lines"
