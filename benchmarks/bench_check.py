#!/usr/bin/env python3
"""The one-call door against torch's: on the user-style Functions and Modules of
tests/user_functions.py (fused activations, a normalization, causal attention,
a conv via unfold, a scan, a whole small model), each correct and with one
realistic bug, run in one process

* ``gradcheck.check`` in float64 and float32, and with ``reference=``;
* ``torch.autograd.gradcheck`` with its defaults (float64), in ``fast_mode``, and
  on float32 inputs with its defaults;
* ``gradcheck.check(order=2)``, ``torch.autograd.gradgradcheck`` and
  ``gradcheck.compat.gradgradcheck`` (a
  verdict on the second derivative: a backward built from saved values outside
  the graph is first-order correct and fails it, as it should);
* ``gradcheck.fuzz`` (regimes drawn by Hypothesis), bugs only,

and print, per method: bugs caught, false alarms on the correct ones, and the
median time of one call on the correct ones (interleaved rounds, so a slow
spell of a shared machine falls on every method).  Writes
benchmarks/results_check.md.

    .venv/bin/python benchmarks/bench_check.py            # 7 rounds
    .venv/bin/python benchmarks/bench_check.py --rounds 3

Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from torch.autograd.gradcheck import GradcheckError  # noqa: E402

from gradcheck import CheckFailed, check, fuzz  # noqa: E402
from gradcheck import compat  # noqa: E402
from user_functions import CASES, callable_of  # noqa: E402


def _as_function(case, which, dtype):
    """(f, inputs) for torch's checkers: a function of differentiable tensors only
    (a model's parameters, for a whole model with its loss), the rest bound."""
    fn = callable_of(case, which, dtype)
    inputs = case.inputs(dtype)
    if case.kind == "model":
        names = [n for n, _ in fn.named_parameters()]
        params = tuple(p.detach().clone().requires_grad_() for _, p in fn.named_parameters())

        def f(*ps):
            return case.loss(torch.func.functional_call(fn, dict(zip(names, ps)), inputs))

        return f, params
    tensors = [i for i in inputs if torch.is_tensor(i)]
    rest = inputs[len(tensors):]
    return (lambda *ts: fn(*ts, *rest)), tuple(tensors)


def _ours(**options):
    def run(case, which, dtype):
        fn = callable_of(case, which, dtype)
        reference = case.reference if options.get("reference") else None
        try:
            check(fn, *case.inputs(dtype), loss=case.loss, reference=reference, order=options.get("order", 1))
            return True
        except CheckFailed:
            return False
    return run


def _torch(checker, **options):
    def run(case, which, dtype):
        f, inputs = _as_function(case, which, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return bool(checker(f, inputs, **options))
            except (GradcheckError, RuntimeError):
                return False
    return run


def _compat_gg(case, which, dtype):
    f, inputs = _as_function(case, which, dtype)
    return bool(compat.gradgradcheck(f, inputs, raise_exception=False))


F64, F32 = torch.float64, torch.float32
METHODS = [  # (label, run, dtype, what it checks)
    ("gradcheck.check", _ours(), F64, "first order"),
    ("gradcheck.check float32", _ours(), F32, "first order"),
    ("gradcheck.check reference=", _ours(reference=True), F64, "first order"),
    ("torch gradcheck", _torch(torch.autograd.gradcheck), F64, "first order"),
    ("torch gradcheck fast_mode", _torch(torch.autograd.gradcheck, fast_mode=True), F64, "first order"),
    ("torch gradcheck float32", _torch(torch.autograd.gradcheck), F32, "first order"),
    ("gradcheck.check order=2", _ours(order=2), F64, "second order"),
    ("torch gradgradcheck", _torch(torch.autograd.gradgradcheck), F64, "second order"),
    ("gradcheck.compat.gradgradcheck", _compat_gg, F64, "second order"),
]


def _applicable(label, case):
    return not (label.endswith("reference=") and case.reference is None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per method and case (default 7)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_check.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the same for every method, and steadier timings

    verdicts = {}  # (method, case, which) -> passed
    for label, run, dtype, _ in METHODS:
        for case in CASES:
            if _applicable(label, case):
                for which in ("correct", "buggy"):
                    verdicts[label, case.name, which] = run(case, which, dtype)
    fuzzed = {}
    for case in CASES:
        if case.kind == "function":
            try:
                fuzz(callable_of(case, "buggy"), inputs=case.fuzz_inputs, hyper=case.fuzz_hyper, examples=50)
                fuzzed[case.name] = True
            except CheckFailed:
                fuzzed[case.name] = False

    times = {(label, case.name): [] for label, *_ in METHODS for case in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            for label, run, dtype, _ in METHODS:
                if _applicable(label, case):
                    t0 = time.perf_counter()
                    run(case, "correct", dtype)
                    times[label, case.name].append(time.perf_counter() - t0)

    lines = [f"torch {torch.__version__}, {os.cpu_count()} cores, one thread; median of {args.rounds} interleaved "
             f"rounds; cases: {', '.join(c.name for c in CASES)}", "",
             "| method | checks | bugs caught (of those its input reaches) | bugs caught (all) | false alarms "
             "on correct code | median time, correct code |",
             "|---|---|---|---|---|---|"]
    reached = {c.name for c in CASES if c.reached}
    fast = {c.name: statistics.median(times["torch gradcheck fast_mode", c.name]) for c in CASES}
    rows = []
    for label, _, _, what in METHODS:
        names = [c.name for c in CASES if _applicable(label, c)]
        caught = [n for n in names if not verdicts[label, n, "buggy"]]
        alarms = [n for n in names if not verdicts[label, n, "correct"]]
        med = statistics.median(statistics.median(times[label, n]) for n in names)
        n_reached = [n for n in names if n in reached]
        rows.append((label, [statistics.median(times[label, n]) / fast[n] for n in names]))
        lines.append(f"| {label} | {what} | {len([n for n in caught if n in reached])} / {len(n_reached)} | "
                     f"{len(caught)} / {len(names)} | {len(alarms)} / {len(names)}"
                     + (f" ({', '.join(alarms)})" if alarms else "") + f" | {1e3 * med:.1f} ms |")
    fuzz_caught = [n for n, ok in fuzzed.items() if not ok]
    lines.append(f"| gradcheck.fuzz (50 draws) | first order, drawn regimes | - | {len(fuzz_caught)} / {len(fuzzed)} "
                 f"| - | - |")
    lines += ["", "Time of one call relative to torch's fast_mode on the same case (median over cases, range):", ""]
    for label, ratios in rows:
        lines.append(f"- {label}: {statistics.median(ratios):.2f} ({min(ratios):.2f} to {max(ratios):.2f})")
    lines += ["", "Per case (passed on correct / passed on buggy; a buggy case passing is a bug missed):", "",
              "| case | reached by its input | " + " | ".join(label for label, *_ in METHODS) + " |",
              "|---|---|" + "---|" * len(METHODS)]
    for case in CASES:
        cells = []
        for label, *_ in METHODS:
            if not _applicable(label, case):
                cells.append("-")
                continue
            ok, bug = verdicts[label, case.name, "correct"], verdicts[label, case.name, "buggy"]
            cells.append(f"{'pass' if ok else 'FAIL'} / {'missed' if bug else 'caught'}")
        lines.append(f"| {case.name} | {'yes' if case.reached else 'no'} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
