"""The layout follows the pipeline: no import circle among the project's modules
(counting imports inside functions too, so none of them dodges one), no private
name imported across modules, and every module's ``__all__`` tells the truth."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gradcheck", "reference_impl")


def _modules():
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module, node):
    """The project modules an import statement in ``module`` reaches, with the names it takes."""
    is_package = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] not in PACKAGES:
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append((sub, None) if sub in MODULES else (target, alias.name))
    return out


def _imports():
    edges = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, name in _resolve(module, node):
                    edges.setdefault(module, set()).add((target, name, node.lineno))
    return edges


EDGES = _imports()


def test_the_modules_import_each_other_without_a_circle():
    graph = {m: {t for t, _, _ in EDGES.get(m, ()) if t in MODULES and t != m} for m in MODULES}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_reference_impl_imports_nothing_of_the_harness():
    for module in MODULES:
        if module.startswith("reference_impl"):
            assert not [t for t, _, _ in EDGES.get(module, ()) if t.startswith("gradcheck")], module


def test_no_private_name_is_imported_across_modules_and_every_imported_name_is_public():
    wrong = []
    for module, edges in EDGES.items():
        for target, name, line in edges:
            if name is None or target == module or name == "*":
                continue
            same_package = target.rsplit(".", 1)[0] == module.rsplit(".", 1)[0] or module.startswith(target + ".")
            exported = getattr(importlib.import_module(target), "__all__", None)
            if name.startswith("_") and not same_package:
                wrong.append(f"{module}:{line} imports private {target}.{name}")
            elif exported is not None and name not in exported and not name.startswith("_") and not same_package:
                wrong.append(f"{module}:{line} imports {target}.{name}, which {target}.__all__ does not list")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("gradcheck")])
def test_every_name_in_all_exists(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} declares no __all__"
    missing = [n for n in exported if not hasattr(mod, n) and not (module == "gradcheck" and n == "TorchSource")]
    assert not missing, f"{module}.__all__ lists {missing}, which it does not define"
