#!/usr/bin/env python3
"""The GPU check in one command: ``make gpu-check`` (or ``PYTHONPATH=. python3 scripts/gpu_check.py``).

For a machine with a CUDA device where torch is already installed (no virtualenv,
no network).  Runs the CUDA-marked tests, then the catalogue sweep on CUDA in
float64 and float32 (torch on CUDA against the float64 reference, and against
finite differences of its own forward), and prints one summary.  Exit status 0
only when every part passed.
"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    try:
        import torch
    except ImportError:
        print("gpu-check: torch is not installed for this Python; this check is for a GPU machine that has it",
              file=sys.stderr)
        return 2

    if not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device; nothing to check", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"gpu-check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    parts = [
        ("cuda tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                        "tests/test_torch_source.py"]),
        ("cuda suites", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--gradcheck-profile", "dev",
                         "--device", "cuda", "suites/test_architectures.py", "suites/test_optimizers.py"]),
        ("run float64", [sys.executable, "-m", "gradcheck.cli", "run", "--device", "cuda", "--dtype", "float64",
                         "--examples", "200", "--out", "/tmp/gradcheck-gpu"]),
        ("run float32", [sys.executable, "-m", "gradcheck.cli", "run", "--device", "cuda", "--dtype", "float32",
                         "--examples", "200", "--out", "/tmp/gradcheck-gpu"]),
    ]
    summary = []
    for name, cmd in parts:
        t0 = time.perf_counter()
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=150).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary.append((name, rc, time.perf_counter() - t0))
    print("\n=== gpu-check summary")
    for name, rc, secs in summary:
        print(f"  {name:15s} {'ok' if rc == 0 else f'FAILED ({rc})':18s} {secs:6.1f}s")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
