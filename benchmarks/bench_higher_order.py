#!/usr/bin/env python3
"""Higher-order checks against their torch counterparts, on the models of
bench_gradcheck.py (MLP, CNN, attention block; float64), in one run:

* second order: ``gradcheck.check(order=2)`` and ``torch.autograd.gradgradcheck``
  (fast_mode), as multiples of one double backward (a first backward with
  create_graph, then the backward of <grad, v>: one Hessian-vector product);
* forward mode: ``gradcheck.check(modes="fwd")`` and ``torch.autograd.gradcheck``
  with ``check_forward_ad=True, check_backward_ad=False`` (fast_mode), as
  multiples of one JVP plus one VJP.

    .venv/bin/python benchmarks/bench_higher_order.py            # writes benchmarks/results_higher_order.md
    .venv/bin/python benchmarks/bench_higher_order.py --quick

Benchmarks, not tests: nothing here asserts a time.  Compare ratios measured in
one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.autograd.forward_ad as fwad  # noqa: E402

from bench_gradcheck import attention_block, cnn, interleaved, mlp  # noqa: E402
from gradcheck import check  # noqa: E402
from gradcheck.case import Case  # noqa: E402
from gradcheck.sources.torch_autograd import TorchSource  # noqa: E402


def _models(quick):
    sizes = {"mlp": [(24,), (88,), (305,), (1000,)], "cnn": [(4,), (16,)], "attention": [(14,), (48,)]}
    for name, make in (("mlp", mlp), ("cnn", cnn), ("attention", attention_block)):
        for args in sizes[name][: 1 if quick else None]:
            yield name, make(*args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smallest model of each kind")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_higher_order.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    lines = [f"torch {torch.__version__}, {os.cpu_count()} cores, one thread, float64; medians of {args.rounds} "
             f"interleaved rounds", "",
             "| model | params | double backward | check(order=2) / dbl bwd | gradgradcheck fast / dbl bwd | "
             "JVP+VJP | check(modes=fwd) / JVP+VJP | gradcheck forward_ad fast / JVP+VJP |",
             "|---|---|---|---|---|---|---|---|"]
    for name, graph in _models(args.quick):
        case = Case(graph, seed=0)
        fn, leaves, names = TorchSource().loss_function(graph, case.tensors())
        params = [t.detach().clone().requires_grad_() for t in leaves]
        v = [torch.randn_like(p) for p in params]

        def double_backward():
            grads = torch.autograd.grad(fn(*params), params, create_graph=True)
            return torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, v)), params)

        def jvp_and_vjp():
            with fwad.dual_level():
                out = fn(*(fwad.make_dual(p.detach(), d) for p, d in zip(params, v)))
                fwad.unpack_dual(out).tangent
            return torch.autograd.grad(fn(*params), params)

        fns = {
            "dd": double_backward,
            "ours2": lambda: check(fn, *params, order=2, names=names),
            "gg": lambda: torch.autograd.gradgradcheck(fn, tuple(params), fast_mode=True),
            "jv": jvp_and_vjp,
            "oursf": lambda: check(fn, *params, modes="fwd", names=names),
            "fa": lambda: torch.autograd.gradcheck(fn, tuple(params), fast_mode=True, check_forward_ad=True,
                                                   check_backward_ad=False),
        }
        t, _ = interleaved(fns, args.rounds)
        n = sum(p.numel() for p in params)
        lines.append(f"| {name} | {n:,} | {1e3 * t['dd']:.2f} ms | {t['ours2'] / t['dd']:.1f} | "
                     f"{t['gg'] / t['dd']:.1f} | {1e3 * t['jv']:.2f} ms | {t['oursf'] / t['jv']:.1f} | "
                     f"{t['fa'] / t['jv']:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
