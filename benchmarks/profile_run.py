#!/usr/bin/env python3
"""Where one worker's time goes: a ``gradcheck run`` under cProfile, its own
time (tottime) summed by what the code is.

* gradient arithmetic: the sources (reference_impl, gradcheck/sources, the
  catalogue's batching rules and torch formulas) and the NumPy and torch code
  and C calls under them, finite differences included;
* the judge (comparisons, tolerances, second opinions), Hypothesis drawing
  graphs, the report (pandas, pyarrow, matplotlib, Jinja2), imports, the
  progress bar, JSON, and the rest.

    .venv/bin/python benchmarks/profile_run.py                 # a default run
    .venv/bin/python benchmarks/profile_run.py --examples 400

Benchmarks, not tests: nothing here asserts a share.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

BUCKETS = [  # (bucket, substrings of the file, or of the name of a C call)
    ("gradient arithmetic", ("reference_impl", "/gradcheck/sources/", "catalogue/batching", "catalogue/formulas",
                             "/torch/", "/numpy/")),
    ("judge", ("/gradcheck/judge/",)),
    ("hypothesis", ("hypothesis",)),
    ("report", ("/gradcheck/report/", "pandas", "pyarrow", "matplotlib", "jinja2", "markupsafe")),
    ("imports", ("importlib", "<frozen")),
    ("progress bar", ("/rich/",)),
    ("json", ("/json/",)),
]
C_ARITHMETIC = ("numpy", "torch", "ufunc", "ndarray")


def bucket(fn: str, name: str) -> str:
    if fn == "~":
        return "gradient arithmetic" if any(k in name for k in C_ARITHMETIC) else "other"
    return next((b for b, keys in BUCKETS if any(k in fn for k in keys)), "other")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=None)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="profile-run-"))
    prof = folder / "run.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "gradcheck.cli", "run", "--out", str(folder)]
    if args.examples is not None:
        cmd += ["--examples", str(args.examples)]
    subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    stats = pstats.Stats(str(prof))
    total = sum(v[2] for v in stats.stats.values())
    shares: dict = {}
    for (fn, _, name), (_, _, tt, _, _) in stats.stats.items():
        b = bucket(fn, name)
        shares[b] = shares.get(b, 0.0) + tt
    print(f"gradcheck {' '.join(cmd[7:])}, under cProfile: {total:.1f} s of own time")
    for b, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {b:20s} {t:6.1f} s  {100 * t / total:4.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
