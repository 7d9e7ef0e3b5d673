"""Every Python snippet of the README runs, top to bottom in one namespace as a
reader would paste them, and prints what the README shows it printing."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNNER = textwrap.dedent('''
    import re, sys, time
    text = open(sys.argv[1]).read()
    ns = {"__name__": "readme"}
    for m in re.finditer(r"^```python\\n(.*?)^```", text, re.M | re.S):
        line = text.count("\\n", 0, m.start()) + 2
        before = set(ns)
        t0 = time.perf_counter()
        exec(compile(m.group(1), f"README.md:{line}", "exec"), ns)
        for name in [n for n in ns if n not in before and n.startswith("test_") and callable(ns[n])]:
            ns[name]()  # a test the snippet defines: run it as pytest would
        print(f"README.md:{line}: ran in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
''')


def _blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def test_every_python_snippet_runs_and_prints_what_the_readme_shows(tmp_path):
    readme = ROOT / "README.md"
    assert len(_blocks(readme.read_text())) >= 8
    out = subprocess.run([sys.executable, "-c", RUNNER, str(readme)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    printed = out.stdout
    for shown in ("[fail] op SwishGateBug, tensor 'x':", "Mismatched elements: 40 / 40 (100.0%)",
                  "fuzz draw: x: zeros-and-ties[1, 1]", "CumProd gave non-finite values for 'x': 1 of 1",
                  "(all tensors)   pass  float32", "second order: the double backward of SwishGate",
                  "['(all tensors)', '<u, J v> along input0', 'jvp along input0']"):
        assert shown in printed, f"the README shows {shown!r}; the snippets printed:\n{printed[-3000:]}"
    # every line of an output block the README shows after a snippet is what the snippet prints
    text = readme.read_text()
    for block in re.findall(r"^```\n(.*?)^```", text, re.M | re.S):
        lines = [line for line in block.splitlines() if line.strip() and line.strip() != "..."]
        if lines and any(line in printed for line in lines):
            missing = [line for line in lines if line not in printed]
            assert not missing, f"the README shows {missing[0]!r}, which no snippet prints"
