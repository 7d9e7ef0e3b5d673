"""Properties every optimizer keeps, each a check returning "" when it holds
and what went wrong otherwise."""

from __future__ import annotations

import numpy as np

__all__ = ["check_descent", "check_zero_gradient", "check_state_round_trip"]


def _quadratic(shapes, seed):
    rng = np.random.default_rng(seed)
    curv = {n: rng.uniform(0.5, 2.0, s) for n, s in shapes.items()}
    params = {n: rng.standard_normal(s) for n, s in shapes.items()}

    def f(p):
        return sum(float(0.5 * np.sum(curv[n] * p[n] ** 2)) for n in p)

    def grad(p):
        return {n: curv[n] * p[n] for n in p}

    return params, f, grad


def check_descent(runner, hyper, shapes, seed=0, lr=1e-4) -> str:
    """With a small learning rate, one step lowers a convex quadratic (raised
    when ``maximize``).  Returns "" when it holds, else what went wrong."""
    params, f, grad = _quadratic(shapes, seed)
    from .runners import DECLARED

    if "lr" in hyper or runner.optimizer not in DECLARED:  # a declared optimizer may call it otherwise
        hyper = {**hyper, "lr": lr}
    runner.start(params, hyper)
    runner.step(grad(params))
    before, after = f(params), f(runner.params())
    if hyper.get("maximize"):
        return "" if after > before else f"maximize=True but the loss went from {before:.6g} to {after:.6g}"
    return "" if after < before else (f"one step with lr={lr:g} did not lower a convex quadratic: "
                                      f"{before:.10g} -> {after:.10g}")


def check_zero_gradient(runner, hyper, shapes, seed=0) -> str:
    """From a fresh state and without weight decay, a zero gradient leaves the
    parameters exactly as they were."""
    params, _, _ = _quadratic(shapes, seed)
    hyper = {**hyper, "weight_decay": 0.0}
    runner.start(params, hyper)
    before = runner.params()  # as the runner holds them (rounded to its dtype)
    runner.step({n: np.zeros_like(v) for n, v in params.items()})
    for n, v in runner.params().items():
        if not np.array_equal(v, before[n]):
            i = int(np.argmax(np.abs(v - before[n])))
            index = tuple(int(j) for j in np.unravel_index(i, v.shape))
            return (f"a zero gradient moved {n!r}: element {index} went from "
                    f"{before[n].flat[i]:.10g} to {v.flat[i]:.10g}")
    return ""


def check_state_round_trip(runner, hyper, shapes, seed=0, before=3, after=3) -> str:
    """Saving the state after ``before`` steps and restoring it into a fresh
    optimizer continues the trajectory exactly as the original continues."""
    params, _, grad = _quadratic(shapes, seed)
    rng = np.random.default_rng(seed + 1)
    noise = [{n: rng.standard_normal(v.shape) for n, v in params.items()} for _ in range(before + after)]
    runner.start(params, hyper)
    for k in range(before):
        runner.step({n: grad(runner.params())[n] + noise[k][n] for n in params})
    blob = runner.save()
    continued = []
    for k in range(before, before + after):
        runner.step({n: grad(runner.params())[n] + noise[k][n] for n in params})
        continued.append(runner.params())
    runner.load(blob)
    for j, k in enumerate(range(before, before + after)):
        runner.step({n: grad(runner.params())[n] + noise[k][n] for n in params})
        for n, v in runner.params().items():
            if not np.array_equal(v, continued[j][n]):
                return (f"after restoring the state saved at step {before}, step {k + 1} gives {n!r} "
                        f"different from the uninterrupted run (max diff {np.max(np.abs(v - continued[j][n])):.3g})")
    return ""
