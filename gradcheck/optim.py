"""Validating optimizers: trajectories compared step by step, and properties.

An optimizer is run by a *runner*: the NumPy reference (``reference_impl.
optimizers``), ``torch.optim`` (any device and dtype), or a candidate's NumPy
``step(params, grads, state, **hyper) -> (params, state)`` or
``torch.optim.Optimizer`` subclass.  ``compare_trajectories`` feeds two runners
the same gradients (a drawn sequence, or the real gradients of a random graph's
loss at each runner's own parameters, so the optimizer trains a network) and
compares every parameter and every state buffer after every step, as
``CheckRecord``s that reports and pytest assertions use like any other.

    >>> import numpy as np
    >>> t = Trajectory("adam", {"lr": 0.01}, {"w": (2, 3)}, steps=4, seed=0)
    >>> records = compare_trajectories(t, ReferenceRunner("adam"), TorchRunner("adam"))
    >>> {r.status for r in records}
    {'pass'}
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from reference_impl import optimizers as ref_optim

from .compare import CheckRecord, Tolerance, TOLERANCES, _judge, failure_message, coarser_dtype
from .sources import ANALYTIC

__all__ = ["OPTIMIZERS", "Trajectory", "ReferenceRunner", "TorchRunner", "NumpyStepRunner", "TorchClassRunner",
           "compare_trajectories", "check_descent", "check_zero_gradient", "check_state_round_trip",
           "optimizer_runners", "parse_runner", "OptimizerError", "hyper_strategy", "trajectories"]

# name -> the torch.optim class name; every hyperparameter keeps torch's name.
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}


class OptimizerError(Exception):
    """A candidate optimizer misbehaved (raised, returned the wrong thing, NaN)."""


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
            from .graph import Graph, materialize
            from .sources import ReferenceSource

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


# ---------------------------------------------------------------- runners


class ReferenceRunner:
    """The NumPy reference optimizer ``name`` (state kept explicitly)."""

    candidate = None

    def __init__(self, name, step=None, label=None):
        if step is None and name not in ref_optim.OPTIMIZERS:
            raise KeyError(f"unknown optimizer {name!r}; known: {sorted(ref_optim.OPTIMIZERS)}")
        self.optimizer = name
        self.fn = step or ref_optim.OPTIMIZERS[name]
        self.name = label or f"reference-{name}"
        self.dtype = "float64"

    @property
    def spec(self) -> str:
        """How ``parse_runner`` rebuilds this runner (a replay file names it)."""
        if self.candidate is not None:
            return f"candidate:{self.optimizer}"
        return f"reference:{self.optimizer}" if self.fn is ref_optim.OPTIMIZERS.get(self.optimizer) else ""

    def start(self, params, hyper):
        self.p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.s, self.hyper = {}, dict(hyper)

    def step(self, grads):
        self.p, self.s = self.fn(self.p, {k: np.asarray(v, dtype=np.float64) for k, v in grads.items()}, self.s,
                                 **self.hyper)

    def params(self):
        return self.p

    def state(self):
        return self.s

    def save(self):
        return copy.deepcopy((self.p, self.s))

    def load(self, blob):
        self.p, self.s = copy.deepcopy(blob)


class NumpyStepRunner(ReferenceRunner):
    """A candidate's NumPy ``step(params, grads, state, **hyper) -> (params, state)``,
    guarded: what it raises or returns wrongly becomes an ``OptimizerError``."""

    def __init__(self, name, step, label):
        super().__init__(name, step, label)

    def step(self, grads):
        before = {k: v.copy() for k, v in self.p.items()}
        try:
            result = self.fn({k: v.copy() for k, v in self.p.items()}, dict(grads), copy.deepcopy(self.s),
                             **self.hyper)
        except Exception as e:
            raise OptimizerError(f"{self.name}.step raised {type(e).__name__}: {e}") from e
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
            raise OptimizerError(f"{self.name}.step must return (params, state)")
        params, state = result
        for k, v in before.items():
            if k not in params:
                raise OptimizerError(f"{self.name}.step returned no value for parameter {k!r}")
            if np.shape(params[k]) != v.shape:
                raise OptimizerError(f"{self.name}.step returned {k!r} with shape {np.shape(params[k])}, "
                                     f"expected {v.shape}")
            if not np.all(np.isfinite(params[k])):
                raise OptimizerError(f"{self.name}.step made {k!r} non-finite")
        self.p, self.s = {k: np.asarray(params[k], dtype=np.float64) for k in before}, state


class TorchClassRunner:
    """A ``torch.optim.Optimizer`` class (torch's own or a candidate's) on a device
    and dtype; the parameters' ``.grad`` is set and ``step()`` called."""

    candidate = None

    def __init__(self, name, cls, device="cpu", dtype="float64", label=None):
        import torch

        self.torch, self.optimizer, self.cls = torch, name, cls
        self.device, self.dtype = device, dtype
        self.name = label or f"torch-{name}"

    @property
    def spec(self) -> str:
        kind = "candidate" if self.candidate is not None else "torch.optim"
        return f"{kind}:{self.optimizer}:{self.device}:{self.dtype}"

    def start(self, params, hyper):
        t = self.torch
        self.names = sorted(params)
        self.tensors = [t.tensor(np.asarray(params[n]), device=self.device, dtype=getattr(t, self.dtype))
                        .requires_grad_(True) for n in self.names]
        self.hyper = dict(hyper)
        self.opt = self.cls(self.tensors, **self.hyper)

    def step(self, grads):
        t = self.torch
        for n, p in zip(self.names, self.tensors):
            p.grad = t.tensor(np.asarray(grads[n]), device=self.device, dtype=getattr(t, self.dtype))
        try:
            self.opt.step()
        except Exception as e:
            raise OptimizerError(f"{self.name}.step raised {type(e).__name__}: {e}") from e

    def params(self):
        # .numpy() of a float64 CPU tensor shares its memory: copy, or the next step changes it
        return {n: p.detach().to(self.torch.float64).cpu().numpy().copy() for n, p in zip(self.names, self.tensors)}

    def state(self):
        out = {}
        for n, p in zip(self.names, self.tensors):
            out[n] = {k: (v.detach().to(self.torch.float64).cpu().numpy().copy() if hasattr(v, "detach") else v)
                      for k, v in self.opt.state.get(p, {}).items()}
        return out

    def save(self):
        return copy.deepcopy(([p.detach().clone() for p in self.tensors], self.opt.state_dict()))

    def load(self, blob):
        values, state = copy.deepcopy(blob)
        self.tensors = [v.requires_grad_(True) for v in values]
        self.opt = self.cls(self.tensors, **self.hyper)
        self.opt.load_state_dict(state)


def TorchRunner(name, device="cpu", dtype="float64"):
    """torch.optim's own implementation of ``name``."""
    import torch

    try:
        cls = getattr(torch.optim, OPTIMIZERS[name])
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}") from None
    return TorchClassRunner(name, cls, device, dtype, label=f"torch.optim.{cls.__name__}"
                            + (f"({device},{dtype})" if (device, dtype) != ("cpu", "float64") else ""))


def optimizer_runners(candidate, device="cpu", dtype="float64") -> list:
    """Runners for a candidate's optimizers (``candidate.optimizers``: name -> a NumPy
    step function or a torch.optim.Optimizer subclass)."""
    out = []
    for name, impl in candidate.optimizers.items():
        if _is_torch_optimizer(impl):
            runner = TorchClassRunner(name, impl, device, dtype, label=f"{candidate.name}-{name}")
        else:
            runner = NumpyStepRunner(name, impl, f"{candidate.name}-{name}")
        runner.candidate = candidate
        out.append(runner)
    return out


def parse_runner(spec: str, candidate=None):
    """The runner a spec names: ``reference:adam``, ``torch.optim:adam:cpu:float64``,
    or ``candidate:adam[:device:dtype]`` (the given candidate's optimizer)."""
    kind, _, rest = spec.partition(":")
    name, _, where = rest.partition(":")
    device, _, dtype = where.partition(":")
    if kind == "reference":
        return ReferenceRunner(name)
    if kind == "torch.optim":
        return TorchRunner(name, device or "cpu", dtype or "float64")
    if kind == "candidate":
        if candidate is None:
            raise ValueError(f"runner {spec!r} runs a candidate's optimizer: give the candidate (--candidate TARGET)")
        for runner in optimizer_runners(candidate, device or "cpu", dtype or "float64"):
            if runner.optimizer == name:
                return runner
        raise ValueError(f"candidate {candidate.name!r} has no optimizer {name!r} (it has {sorted(candidate.optimizers)})")
    raise ValueError(f"cannot read runner spec {spec!r}: expected reference:NAME, torch.optim:NAME:DEVICE:DTYPE "
                     f"or candidate:NAME")


def _is_torch_optimizer(obj):
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


# ---------------------------------------------------------------- comparing trajectories


def _record(t: Trajectory, a, b, tensor, av, bv, tol, step, seconds, dtype, noise=None):
    common = dict(case_id=t.case_id, graph=t.to_json(), seed=t.seed, op=t.optimizer, tensor=tensor,
                  source_a=a.name, source_b=b.name, dtype=dtype, device=getattr(a, "device", "cpu"),
                  rtol=tol.rtol, atol=tol.atol, seconds=seconds)
    av = np.asarray(av, dtype=np.float64)
    bv = np.asarray(bv, dtype=np.float64)
    if av.shape == bv.shape and not np.all(np.isfinite(av)) and _diverged(bv, dtype):
        # Both went out of range: no optimizer, right or wrong, can be compared there.
        biggest = float(np.max(np.abs(np.nan_to_num(bv, nan=np.inf)), initial=0.0))
        return CheckRecord(**common, max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan, ratio=math.nan,
                           status="skipped", message=f"step {step} of {t.steps}, {tensor}: the trajectory diverged "
                           f"({b.name} reached |x| = {biggest:.3g}, beyond the range of {dtype}); "
                           "not compared from this step on")
    if av.shape != bv.shape or not np.all(np.isfinite(av)):
        why = (f"shape {av.shape} against {bv.shape}" if av.shape != bv.shape else
               f"{a.name} has non-finite values")
        return CheckRecord(**common, max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan, ratio=math.inf,
                           status="error", message=f"step {step} of {t.steps}, {tensor}: {why}")
    noise = noise if noise is not None and np.shape(noise) == av.shape else None
    r = _judge(av, bv, None, tol, noise)
    r.pop("flat")
    status = "pass" if r["ratio"] <= 1 else "fail"
    message = "" if status == "pass" else (
        f"step {step} of {t.steps}: {tensor.split(': ', 1)[-1]} of {t.optimizer}({_hyper_text(t.hyper)}) differs\n"
        + failure_message(r, tol, a.name, b.name))
    if status == "pass" and r["nondifferentiable"]:
        status = "nondifferentiable"
        message = (f"step {step} of {t.steps}, {tensor.split(': ', 1)[-1]}: {r['nondifferentiable']} of "
                   f"{r['numel']} elements differ "
                   f"beyond tolerance where the gradient was within its own rounding noise at some step (zero in "
                   f"exact arithmetic, such as a bias before a batch norm), which an adaptive step amplifies; every "
                   f"other element agrees (Note [Gradient noise in trajectories])")
    r.pop("allowed")
    return CheckRecord(**common, **r, status=status, message=message)


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
    dtype = coarser_dtype(getattr(a, "dtype", "float64"), getattr(b, "dtype", "float64"))
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
            return records + [CheckRecord(
                case_id=t.case_id, graph=t.to_json(), seed=t.seed, op=t.optimizer, tensor=f"step {k + 1}",
                source_a=a.name, source_b=b.name, dtype=dtype, device="cpu", max_abs_err=math.nan,
                max_rel_err=math.nan, cosine=math.nan, rtol=tol.rtol, atol=tol.atol, ratio=math.inf,
                status="error", seconds=time.perf_counter() - t0, message=str(e))]
        seconds = time.perf_counter() - t0
        pa, pb = a.params(), b.params()
        step_records = [_record(t, a, b, f"step {k + 1}: {n}", pa[n], pb[n], tol, k + 1, seconds, dtype,
                                noise.get(n)) for n in sorted(pb)]
        if states:
            sa, sb = a.state(), b.state()
            for n in sorted(sb):
                for buf in sorted(set(sa.get(n, {})) & set(sb[n])):
                    step_records.append(_record(t, a, b, f"step {k + 1}: {n}.{buf}", sa[n][buf], sb[n][buf],
                                                tol, k + 1, seconds, dtype, noise.get(n)))
        records += step_records
        if any(r.status in ("fail", "error", "skipped") for r in step_records):
            break
    return records


# ---------------------------------------------------------------- properties


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


# ---------------------------------------------------------------- Hypothesis strategies


def hyper_strategy(name):
    """Hyperparameters of optimizer ``name`` as torch.optim takes them, valid
    combinations only (nesterov needs momentum and no dampening)."""
    from hypothesis import strategies as st

    common = dict(weight_decay=st.sampled_from([0.0, 0.1]), maximize=st.booleans())
    if name == "sgd":
        @st.composite
        def sgd(draw):
            h = {"lr": draw(st.sampled_from([0.1, 0.01])), **{k: draw(v) for k, v in common.items()}}
            if draw(st.booleans()):
                h["momentum"] = draw(st.sampled_from([0.9, 0.5]))
                h["dampening"] = draw(st.sampled_from([0.0, 0.3]))
                h["nesterov"] = h["dampening"] == 0 and draw(st.booleans())
            return h
        return sgd()
    if name in ("adam", "adamw"):
        return st.fixed_dictionaries({"lr": st.sampled_from([1e-2, 1e-3]),
                                      "betas": st.sampled_from([(0.9, 0.999), (0.8, 0.99)]),
                                      "eps": st.sampled_from([1e-8, 1e-3]), "amsgrad": st.booleans(), **common})
    if name == "rmsprop":
        return st.fixed_dictionaries({"lr": st.sampled_from([1e-2, 1e-3]), "alpha": st.sampled_from([0.99, 0.9]),
                                      "momentum": st.sampled_from([0.0, 0.5]), "centered": st.booleans(),
                                      **common})
    if name == "adagrad":
        return st.fixed_dictionaries({"lr": st.sampled_from([0.1, 0.01]), "lr_decay": st.sampled_from([0.0, 0.01]),
                                      "initial_accumulator_value": st.sampled_from([0.0, 0.1]), **common})
    raise KeyError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")


def trajectories(name, graphs=False):
    """``Trajectory`` draws for optimizer ``name``: parameter shapes and a Gaussian
    gradient sequence, or (``graphs=True``) a small random MLP trained on its loss."""
    from hypothesis import strategies as st

    steps = st.integers(1, 8)
    seeds = st.integers(0, 2**32 - 1)
    if graphs:
        from .strategies import graphs as graph_strategy

        from .ops import BUILTIN_OPS

        # include="linear": every trained network has weights; built-in ops only, as the
        # reference computes the gradients
        nets = graph_strategy(["mlp"], ops=tuple(sorted(BUILTIN_OPS)), include="linear", max_depth=2)
        return st.builds(lambda h, g, k, s: Trajectory(name, h, {}, k, s, graph=g.to_json()),
                         hyper_strategy(name), nets, steps, seeds)
    shapes = st.dictionaries(st.sampled_from(["w", "b", "g"]),
                             st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), min_size=1)
    return st.builds(lambda h, sh, k, s, scale: Trajectory(name, h, sh, k, s, scale),
                     hyper_strategy(name), shapes, steps, seeds, st.sampled_from([1.0, 1e-3, 10.0]))
