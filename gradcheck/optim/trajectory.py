"""Trajectories: two optimizer runners fed the same gradients (a drawn sequence,
or the real gradients of a random graph's loss at each runner's own parameters,
so the optimizer trains a network), every parameter and state buffer compared
after every step as ``CheckRecord``s.

    >>> from gradcheck.optim import ReferenceRunner, TorchRunner
    >>> t = Trajectory("adam", {"lr": 0.01}, {"w": (2, 3)}, steps=4, seed=0)
    >>> records = compare_trajectories(t, ReferenceRunner("adam"), TorchRunner("adam"))
    >>> {r.status for r in records}
    {'pass'}
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..case import materialize
from ..graph import Graph
from ..judge.record import CheckRecord, failure_message, unjudged
from ..judge.tolerance import TOLERANCES, Tolerance, coarser_dtype, judge
from ..sources.base import ANALYTIC
from ..sources.reference import ReferenceSource
from .runners import OptimizerError

__all__ = ["Trajectory", "compare_trajectories", "NOISE_FLOOR"]


@dataclass(frozen=True)
class Trajectory:
    """What to run: an optimizer with hyperparameters on parameters of given shapes
    for ``steps`` steps.  Gradients come from ``seed`` (a Gaussian sequence, scaled
    by ``grad_scale``), or from ``graph`` (a JSON graph whose loss is trained)."""

    optimizer: str
    hyper: dict
    shapes: dict = field(default_factory=dict)
    steps: int = 5
    seed: int = 0
    grad_scale: float = 1.0
    graph: str = ""  # JSON of a Graph: train its parameters on its loss
    dtype: str = "float64"

    def to_json(self):
        return json.dumps({"optimizer": self.optimizer, "hyper": _plain(self.hyper), "shapes": self.shapes,
                           "steps": self.steps, "seed": self.seed, "grad_scale": self.grad_scale,
                           "graph": json.loads(self.graph) if self.graph else None, "dtype": self.dtype},
                          sort_keys=True)

    @property
    def case_id(self):
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d) -> "Trajectory":
        """The inverse of ``to_json`` (a replay file's ``trajectory``)."""
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d["hyper"]).items()}
        return cls(str(d["optimizer"]), hyper, {k: tuple(v) for k, v in dict(d.get("shapes") or {}).items()},
                   int(d["steps"]), int(d["seed"]), float(d.get("grad_scale", 1.0)),
                   json.dumps(d["graph"], sort_keys=True) if d.get("graph") else "", str(d.get("dtype", "float64")))

    def initial(self):
        """Initial parameters and the gradient function ``grads(step, params)``."""
        if self.graph:
            g = Graph.from_json(self.graph)
            tensors = materialize(g, self.seed, self.dtype)
            names = [l.name for l in g.leaves if l.role == "param"]
            ref = ReferenceSource(compute_dtype="float64")

            def grads(step, params):
                return {k: v for k, v in ref.run(g, {**tensors, **params}).grads.items() if k in names}

            return {n: tensors[n] for n in names}, grads
        rng = np.random.default_rng(self.seed)
        params = {n: rng.standard_normal(s).astype(self.dtype) for n, s in sorted(self.shapes.items())}
        seq = [{n: (self.grad_scale * rng.standard_normal(s)).astype(self.dtype)
                for n, s in sorted(self.shapes.items())} for _ in range(self.steps)]
        return params, (lambda step, params: seq[step])


def _plain(hyper):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}


def _unjudged(t: Trajectory, a, b, tensor, dtype, message, status="error", seconds=0.0, tol=None, step=0):
    return unjudged(t.case_id, t.to_json(), t.seed, a.name, b.name, dtype, message, status=status, device=a.device,
                    op=t.optimizer, tensor=tensor, seconds=seconds, tolerance=tol, spec_a=a.spec, spec_b=b.spec,
                    step=step)


def _record(t: Trajectory, a, b, tensor, av, bv, tol, step, seconds, dtype, noise=None):
    av = np.asarray(av, dtype=np.float64)
    bv = np.asarray(bv, dtype=np.float64)
    if av.shape == bv.shape and not np.all(np.isfinite(av)) and _diverged(bv, dtype):
        # Both went out of range: no optimizer, right or wrong, can be compared there.
        biggest = float(np.max(np.abs(np.nan_to_num(bv, nan=np.inf)), initial=0.0))
        return _unjudged(t, a, b, tensor, dtype, f"step {step} of {t.steps}, {tensor}: the trajectory diverged "
                         f"({b.name} reached |x| = {biggest:.3g}, beyond the range of {dtype}); not compared from "
                         f"this step on", "skipped", seconds, tol, step)
    if av.shape != bv.shape or not np.all(np.isfinite(av)):
        why = (f"shape {av.shape} against {bv.shape}" if av.shape != bv.shape else
               f"{a.name} has non-finite values")
        return _unjudged(t, a, b, tensor, dtype, f"step {step} of {t.steps}, {tensor}: {why}", "error", seconds, tol,
                         step)
    noise = noise if noise is not None and np.shape(noise) == av.shape else None
    j = judge(av, bv, None, tol, noise)
    status = "pass" if j.ratio <= 1 else "fail"
    message = "" if status == "pass" else (
        f"step {step} of {t.steps}: {tensor} of {t.optimizer}({_hyper_text(t.hyper)}) differs\n"
        + failure_message(j, tol, a.name, b.name))
    if status == "pass" and j.nondifferentiable:
        status = "nondifferentiable"
        message = (f"step {step} of {t.steps}, {tensor}: {j.nondifferentiable} of {j.numel} "
                   f"elements differ beyond tolerance where the gradient was within its own rounding noise at some "
                   f"step (zero in exact arithmetic, such as a bias before a batch norm), which an adaptive step "
                   f"amplifies; every other element agrees (Note [Gradient noise in trajectories])")
    return CheckRecord(case_id=t.case_id, graph=t.to_json(), seed=t.seed, op=t.optimizer, consumer=t.optimizer,
                       tensor=tensor, source_a=a.name, source_b=b.name, dtype=dtype, device=a.device, rtol=tol.rtol,
                       atol=tol.atol, seconds=seconds, status=status, message=message, spec_a=a.spec,
                       spec_b=b.spec, step=step, **j.fields)


# Note [Gradient noise in trajectories]
# A gradient that is zero in exact arithmetic (the bias just before a batch
# norm, which removes any shift) comes out of float64 arithmetic as rounding
# noise around 1e-17, and different at the two runners' parameters, which differ
# by rounding themselves.  An adaptive step (Adam, RMSprop) divides by the
# running size of that noise and moves the parameter by about lr either way, so
# the two trajectories part without either optimizer being wrong.  The
# comparison of gradients holds such elements to the scale of the whole case
# (Note [Tolerance model]); trajectories do the same: an element whose gradient
# was below NOISE_FLOOR times the step's largest gradient, at any step so far, is
# counted apart (like a kink) in its parameter and in every buffer of it.
NOISE_FLOOR = 1e-10


def _noise(grads) -> dict:
    scale = max((float(np.max(np.abs(g), initial=0.0)) for g in grads.values()), default=0.0)
    return {n: np.abs(np.asarray(g, dtype=np.float64)) <= NOISE_FLOOR * scale for n, g in grads.items()}


def _diverged(values, dtype) -> bool:
    """Values non-finite, or within a factor 1e3 of the largest finite ``dtype``."""
    limit = float(np.finfo(dtype).max) if dtype in ("float64", "float32", "float16") else 3.0e38
    with np.errstate(invalid="ignore"):
        return bool(np.any(~np.isfinite(values)) or np.max(np.abs(values), initial=0.0) > limit / 1e3)


def _hyper_text(hyper):
    return ", ".join(f"{k}={v!r}" for k, v in sorted(hyper.items()))


def compare_trajectories(t: Trajectory, a, b, tolerance: Tolerance | None = None, states: bool = True) -> list:
    """Run ``a`` and ``b`` on trajectory ``t``; a record per step for every
    parameter and every state buffer both keep.  Stops after the first step with
    a failure (what follows would only repeat it)."""
    dtype = coarser_dtype(a.dtype, b.dtype)
    tol = tolerance or TOLERANCES[(ANALYTIC, dtype)]
    params, grads = t.initial()
    records = []
    noise = {}  # parameter -> elements whose gradient was rounding noise at some step
    for runner in (a, b):
        runner.start(params, t.hyper)
    for k in range(t.steps):
        t0 = time.perf_counter()
        try:
            ga, gb = grads(k, a.params()), grads(k, b.params())
            if t.graph:  # real gradients of a network: some may be zero in exact arithmetic
                for mask in (_noise(ga), _noise(gb)):
                    for n, m in mask.items():
                        noise[n] = m | noise[n] if n in noise else m
            a.step(ga)
            b.step(gb)
        except OptimizerError as e:
            return records + [_unjudged(t, a, b, "", dtype, f"step {k + 1} of {t.steps}: {e}", "error",
                                        time.perf_counter() - t0, tol, k + 1)]
        seconds = time.perf_counter() - t0
        pa, pb = a.params(), b.params()
        step_records = [_record(t, a, b, n, pa[n], pb[n], tol, k + 1, seconds, dtype,
                                noise.get(n)) for n in sorted(pb)]
        if states:
            sa, sb = a.state(), b.state()
            for n in sorted(sb):
                for buf in sorted(set(sa.get(n, {})) & set(sb[n])):
                    step_records.append(_record(t, a, b, f"{n}.{buf}", sa[n][buf], sb[n][buf],
                                                tol, k + 1, seconds, dtype, noise.get(n)))
        records += step_records
        if any(r.status in ("fail", "error", "skipped") for r in step_records):
            break
    return records
