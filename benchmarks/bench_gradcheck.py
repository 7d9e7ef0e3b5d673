#!/usr/bin/env python3
"""Side-by-side timings: gradcheck's directional and full-Jacobian checks against
torch.autograd.gradcheck (slow and fast mode) and one forward+backward, on the
same models (MLP, CNN, attention block) from 1e3 to 1e6 parameters, float64,
all in one run.  Prints a table of ratios and writes it to benchmarks/results.md.

    .venv/bin/python benchmarks/bench_gradcheck.py            # the whole table
    .venv/bin/python benchmarks/bench_gradcheck.py --quick    # sizes up to 1e4

Benchmarks, not tests: nothing here asserts a time.  The machine is shared and
noisy, so compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from gradcheck.case import Case  # noqa: E402
from gradcheck.judge import check_pair
from gradcheck.graph import GraphBuilder  # noqa: E402
from gradcheck.sources import FiniteDifferences, ReferenceSource  # noqa: E402
from gradcheck.sources.torch_autograd import TorchSource  # noqa: E402


# ---------------------------------------------------------------- models


def mlp(width, batch=8, features=16, classes=10):
    b = GraphBuilder()
    h = b.input("x", (batch, features))
    h = b.op("tanh", b.op("linear", h, b.param("w1", (width, features)), b.param("b1", (width,))))
    h = b.op("tanh", b.op("linear", h, b.param("w2", (width, width)), b.param("b2", (width,))))
    h = b.op("linear", h, b.param("w3", (classes, width)), b.param("b3", (classes,)))
    y = b.const("y", (batch,), dtype="int", init={"kind": "randint", "high": classes})
    return b.build(b.op("cross_entropy", h, y, name="loss"))


def cnn(channels, batch=2, size=12, classes=10):
    b = GraphBuilder()
    h = b.input("x", (batch, 3, size, size))
    h = b.op("relu", b.op("conv2d", h, b.param("k1", (channels, 3, 3, 3)), b.param("c1", (channels,)), padding=1))
    h = b.op("max_pool2d", h, kernel_size=2)
    h = b.op("relu", b.op("conv2d", h, b.param("k2", (channels, channels, 3, 3)), b.param("c2", (channels,)),
                          padding=1))
    h = b.op("flatten", b.op("avg_pool2d", h, kernel_size=2))
    feat = channels * (size // 4) ** 2
    h = b.op("linear", h, b.param("w", (classes, feat)), b.param("bw", (classes,)))
    y = b.const("y", (batch,), dtype="int", init={"kind": "randint", "high": classes})
    return b.build(b.op("cross_entropy", h, y, name="loss"))


def attention_block(dim, batch=2, length=8):
    b = GraphBuilder()
    x = b.input("x", (batch, length, dim))
    q, k, v = (b.op("linear", x, b.param(f"w{n}", (dim, dim))) for n in "qkv")
    a = b.op("attention", q, k, v, causal=True)
    h = b.op("add", x, b.op("linear", a, b.param("wo", (dim, dim)), b.param("bo", (dim,))))
    h = b.op("layer_norm", h, b.param("g", (dim,), init={"kind": "normal", "mean": 1.0, "std": 0.1}),
             b.param("beta", (dim,)))
    h = b.op("linear", b.op("gelu", h), b.param("w2", (dim, dim)))
    return b.build(b.op("weighted_sum", h, b.const("probe", (batch, length, dim)), name="loss"))


def models(quick):
    sizes = {"mlp": [(24,), (88,), (305,), (990,)], "cnn": [(4,), (16,), (56,), (170,)],
             "attention": [(14,), (48,), (158,), (500,)]}
    out = []
    for name, make in (("mlp", mlp), ("cnn", cnn), ("attention", attention_block)):
        for args in sizes[name][: 2 if quick else 4]:
            out.append((name, make(*args)))
    return out


# ---------------------------------------------------------------- timing


def timed(fn, repeat=1, budget=None):
    """Median seconds of ``repeat`` calls after one untimed call: first-call costs
    (kernels chosen for a new shape, buffers first touched) are not the check's."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if budget and sum(times) > budget:
            break
    return statistics.median(times), result


def interleaved(fns: dict, rounds: int):
    """Median seconds of each of ``fns``, timed in turn within each of ``rounds``
    rounds (after one untimed call of each): a slow spell of a shared machine
    then falls on every method alike, and their ratios stay fair."""
    results = {k: fn() for k, fn in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, results


def torch_fn(graph, tensors, names):
    """The graph as a function of its differentiable leaves, for torch.autograd.gradcheck."""
    src = TorchSource()
    fixed = src._leaves(graph, tensors, False)

    def fn(*xs):
        return src._forward(graph, {**fixed, **dict(zip(names, xs))})[graph.output]

    return fn


def measure(name, graph, slow_limit, full_limit):
    case = Case(graph, seed=0)
    tensors = case.tensors()
    src = TorchSource()
    names = [l.name for l in graph.differentiable_leaves]
    n = graph.size
    row = {"model": name, "params": n}
    inputs = [torch.tensor(tensors[k], dtype=torch.float64, requires_grad=True) for k in names]
    fn = torch_fn(graph, tensors, names)
    fd = FiniteDifferences(src, "central", "directional", n_directions=2)
    times, results = interleaved({
        "fwd+bwd s": lambda: src.run(graph, tensors),
        "directional s": lambda: check_pair(case, src, fd, tensors=tensors),
        "torch fast s": lambda: torch.autograd.gradcheck(fn, inputs, fast_mode=True),
    }, rounds=9)
    _passed(results["directional s"])
    row.update(times)
    if n <= full_limit:
        row["full s"] = timed_full(case, src, tensors)
    if n <= slow_limit:
        ts, ok = timed(lambda: torch.autograd.gradcheck(fn, inputs, fast_mode=False), repeat=3, budget=5.0)
        row["torch slow s"] = ts
    # The NumPy reference as the source under test: its own fwd+bwd is the unit.
    ref = ReferenceSource()
    ref_fd = FiniteDifferences(ref, "central", "directional", n_directions=2)
    times, results = interleaved({"ref fwd+bwd s": lambda: ref.run(graph, tensors),
                                  "ref directional s": lambda: check_pair(case, ref, ref_fd, tensors=tensors)},
                                 rounds=5)
    _passed(results["ref directional s"])
    row.update(times)
    if n <= full_limit:
        row["ref full s"] = timed_full(case, ref, tensors)
    return row


def _passed(records):
    assert {r.status for r in records} <= {"pass", "nondifferentiable"}, [r.message for r in records]


def timed_full(case, source, tensors):
    """Median seconds of a full-Jacobian check of ``source`` (which must pass)."""
    seconds, records = timed(lambda: check_pair(case, source, FiniteDifferences(source, "central", "full"),
                                                tensors=tensors), repeat=3, budget=5.0)
    _passed(records)
    return seconds


def localisation_at_scale(width=990, where=(500, 700)):
    """Seconds for a directional check to name one wrong element of the weight
    gradient of a 1e6-parameter MLP (a NumPy linear whose backward adds 0.5 to it)."""
    from reference_impl import Op, layers

    def backward(cache, g):
        gx, gw, *gb = layers.linear_backward(cache, g)
        if gw.shape == (width, width):
            gw = gw.copy()
            gw[where] += 0.5
        return (gx, gw, *gb)

    bad = ReferenceSource({"linear": Op(layers.linear_forward, backward)}, name="bad-linear")
    case = Case(mlp(width), seed=0)
    tensors = case.tensors()
    t, records = timed(lambda: check_pair(case, bad, FiniteDifferences(bad, "central", "directional", n_directions=2),
                                          tensors=tensors), repeat=3)
    (w2,) = [r for r in records if r.tensor == "w2"]
    assert w2.status == "fail" and w2.index == str(where), w2
    return t, w2


def memory_of_directional(model_name, width):
    """Peak resident memory added by a directional check, in a fresh process."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.bench_gradcheck import {model_name}
from gradcheck.case import Case
from gradcheck.judge import check_pair
from gradcheck.sources import FiniteDifferences
from gradcheck.sources.torch_autograd import TorchSource
g = {model_name}({width})
case = Case(g, seed=0)
src = TorchSource()
tensors = case.tensors()
src.run(g, tensors)  # warm: libraries loaded, one forward+backward done
def status(key):
    line = [l for l in open("/proc/self/status") if l.startswith(key)][0]
    return int(line.split()[1]) * 1024
def peak_added(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to what is resident now
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before
fwd_bwd = peak_added(lambda: src.run(g, tensors))
check = peak_added(lambda: check_pair(case, src, FiniteDifferences(src, "central", "directional", n_directions=2),
                                      tensors=tensors))
print(fwd_bwd, check, sum(v.nbytes for v in tensors.values()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return tuple(map(int, out.stdout.split()))  # bytes added at the peak: fwd+bwd, check; the model's bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes up to about 1e4 only")
    parser.add_argument("--slow-limit", type=int, default=12_000,
                        help="run torch's slow mode up to this many parameters (default 12000)")
    parser.add_argument("--full-limit", type=int, default=12_000,
                        help="run our full-Jacobian check up to this many parameters (default 12000)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    for name, graph in models(args.quick):
        row = measure(name, graph, args.slow_limit, args.full_limit)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def ratio(a, b):
        return f"{a / b:.1f}" if a and b else "-"

    lines = [f"torch {torch.__version__}, {os.cpu_count()} cores, float64; times are medians; "
             "ratios measured in one run", "",
             "| model | params | fwd+bwd | directional / fwd+bwd | torch fast / fwd+bwd | full / fwd+bwd | "
             "torch slow / fwd+bwd | torch slow / full |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fb = r["fwd+bwd s"]
        lines.append(f"| {r['model']} | {r['params']:,} | {fb * 1e3:.2f} ms | {ratio(r['directional s'], fb)} | "
                     f"{ratio(r['torch fast s'], fb)} | {ratio(r.get('full s'), fb)} | "
                     f"{ratio(r.get('torch slow s'), fb)} | {ratio(r.get('torch slow s'), r.get('full s'))} |")
    lines += ["", "The NumPy reference as the source under test (its own forward+backward as the unit):", "",
              "| model | params | fwd+bwd | directional / fwd+bwd | full | full / fwd+bwd | torch slow / full |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        fb = r["ref fwd+bwd s"]
        full = f"{r['ref full s']:.3f} s" if r.get("ref full s") else "-"
        lines.append(f"| {r['model']} | {r['params']:,} | {fb * 1e3:.2f} ms | {ratio(r['ref directional s'], fb)} | "
                     f"{full} | {ratio(r.get('ref full s'), fb)} | {ratio(r.get('torch slow s'), r.get('ref full s'))} |")
    if not args.quick:
        big = max(rows, key=lambda r: r["params"])
        fwd_bwd, check, model = memory_of_directional("mlp", 990)
        seconds, w2 = localisation_at_scale()
        lines += ["", f"Localisation, MLP of {mlp(990).size:,} parameters with one wrong element of w2's gradient "
                  f"(NumPy reference with a planted bug): the directional check names w2{w2.index} "
                  f"(|diff| {abs(w2.value_a - w2.value_b):.3g}) in {seconds:.2f} s, "
                  f"{w2.message.splitlines()[-2]}."]
        lines += ["", f"Largest model ({big['model']}, {big['params']:,} parameters): directional check "
                  f"{big['directional s']:.2f} s.",
                  f"Memory, MLP of {mlp(990).size:,} parameters ({model / 1e6:.1f} MB of tensors), peak resident "
                  f"memory added over what was resident before: one forward+backward {fwd_bwd / model:.2f} times "
                  f"the model's own bytes, the directional check (its forward+backward included) "
                  f"{check / model:.2f} times."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
