"""The wheel carries what an installed harness needs: the suites with their
conftest, the reference, the pytest plugin and the command.  (``make
wheel-check`` goes further: a fresh virtualenv, the suites against the
example candidate from an empty folder.)"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.xdist_group("packaging")
def test_the_wheel_carries_the_suites_and_the_reference(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("gradcheck-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("gradcheck/suites/__init__.py", "gradcheck/suites/conftest.py", "gradcheck/suites/test_ops.py",
                   "gradcheck/suites/test_architectures.py", "gradcheck/suites/test_optimizers.py",
                   "gradcheck/suites/test_higher_order.py",
                   "gradcheck/pytest_plugin.py", "gradcheck/front.py", "gradcheck/compat.py",
                   "reference_impl/__init__.py", "reference_impl/optimizers.py"):
        assert needed in names, f"{needed} is missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "suites/", "benchmarks/")) for n in names), sorted(names)[:20]
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "gradcheck = gradcheck.cli:main" in entry_points and "gradcheck.pytest_plugin" in entry_points


def test_gradcheck_test_runs_the_installed_suites_from_another_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gradcheck.cli", "test", "--candidate", "my_layers:candidate",
                          "--gradcheck-profile", "dev", "-q", "-p", "no:cacheprovider", "-k", "test_ops"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout and "gradcheck: " in out.stdout
    bad = subprocess.run([sys.executable, "-m", "gradcheck.cli", "test", "--candidate", "no_such_module:candidate",
                          "-q", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "--candidate no_such_module:candidate" in bad.stdout + bad.stderr


def test_the_thin_copies_in_suites_run_every_installed_test():
    import ast
    import importlib

    for module in ("test_ops", "test_architectures", "test_optimizers", "test_higher_order", "conftest"):
        path = ROOT / "gradcheck" / "suites" / f"{module}.py"
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)
                   and (n.name.startswith("test_") or n.name.startswith("pytest_")
                        or any("fixture" in ast.unparse(d) for d in n.decorator_list))}
        exported = set(importlib.import_module(f"gradcheck.suites.{module}").__all__)
        assert exported == defined, f"gradcheck/suites/{module}.py: __all__ {sorted(exported)} != {sorted(defined)}"
        assert f"from gradcheck.suites.{module} import *" in (ROOT / "suites" / f"{module}.py").read_text()
    installed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "gradcheck" / "suites")], cwd=ROOT, capture_output=True, text=True)
    thin = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "suites")], cwd=ROOT, capture_output=True, text=True)

    def ids(out):
        return sorted(line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line)

    assert ids(installed) and ids(installed) == ids(thin)
