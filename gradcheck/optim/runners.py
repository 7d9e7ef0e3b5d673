"""Optimizer runners: one interface (start, step, params, state, save, load) over
the NumPy reference (``reference_impl.optimizers``), ``torch.optim`` (any device
and dtype), and a candidate's NumPy ``step`` or ``torch.optim.Optimizer``
subclass."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass

import numpy as np

from reference_impl import optimizers as ref_optim

__all__ = ["OPTIMIZERS", "DECLARED", "DeclaredOptimizer", "NoReference", "declare_optimizer", "known_optimizers",
           "reference_runner", "OptimizerError", "ReferenceRunner", "NumpyStepRunner", "TorchClassRunner", "TorchRunner",
           "optimizer_runners", "parse_runner"]

# name -> the torch.optim class name; every hyperparameter keeps torch's name.
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}


class OptimizerError(Exception):
    """A candidate optimizer misbehaved (raised, returned the wrong thing, NaN)."""


class NoReference(LookupError):
    """An optimizer declared without a reference step: its trajectories have
    nothing to be compared with (its properties are still checked)."""


@dataclass(frozen=True)
class DeclaredOptimizer:
    """An optimizer outside the reference's five, declared by a candidate:
    ``reference``, the step to compare with (a NumPy ``step(params, grads, state,
    **hyper) -> (params, state)`` or a ``torch.optim.Optimizer`` subclass), or
    None; ``hyper``, a Hypothesis strategy of its hyperparameter dicts."""

    name: str
    reference: object
    hyper: object


DECLARED: dict = {}  # optimizer name -> DeclaredOptimizer


def declare_optimizer(name: str, reference=None, hyper=None) -> DeclaredOptimizer:
    """Register optimizer ``name`` (see DeclaredOptimizer); ``hyper``: a strategy,
    or ``{name: value, list of choices or strategy}`` (default ``{}``).
    Declaring it again replaces it; a reference name is refused."""
    from hypothesis import strategies as st

    from ..catalogue.spec import hyper_parts

    if name in ref_optim.OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is one of the reference's ({sorted(ref_optim.OPTIMIZERS)}): "
                         f"implement it with candidate.optimizer({name!r}) and no reference=")
    if reference is not None and not (callable(reference) or _is_torch_optimizer(reference)):
        raise TypeError(f"optimizer {name!r}: reference must be a NumPy step function or a torch.optim.Optimizer "
                        f"subclass, got {type(reference).__name__}")
    if hyper is None:
        strategy = st.just({})
    elif isinstance(hyper, st.SearchStrategy):
        strategy = hyper
    elif isinstance(hyper, dict):
        strategy = st.fixed_dictionaries(hyper_parts(hyper, where=f"optimizer {name!r} hyper")[1])
    else:
        raise TypeError(f"optimizer {name!r}: hyper must be a dict or a Hypothesis strategy, "
                        f"got {type(hyper).__name__}")
    DECLARED[name] = DeclaredOptimizer(name, reference, strategy)
    return DECLARED[name]


def known_optimizers() -> list:
    return sorted(set(ref_optim.OPTIMIZERS) | set(DECLARED))


def reference_runner(name):
    """What optimizer ``name``'s trajectories are compared with: the NumPy
    reference, or the reference step a candidate declared with it."""
    if name in ref_optim.OPTIMIZERS:
        return ReferenceRunner(name)
    if name not in DECLARED:
        raise KeyError(f"unknown optimizer {name!r}; known: {known_optimizers()}")
    ref = DECLARED[name].reference
    if ref is None:
        raise NoReference(f"optimizer {name!r} was declared without a reference step (reference=), so its "
                          f"trajectories have nothing to be compared with; its properties are still checked")
    if _is_torch_optimizer(ref):
        runner = TorchClassRunner(name, ref, label=f"reference-{name}")
        runner.fixed_spec = f"reference:{name}"
        return runner
    return ReferenceRunner(name, step=ref, label=f"reference-{name}")


class ReferenceRunner:
    """The NumPy reference optimizer ``name`` (state kept explicitly)."""

    candidate = None
    device = "cpu"

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
        declared = DECLARED.get(self.optimizer)
        if self.fn is ref_optim.OPTIMIZERS.get(self.optimizer) or (declared and self.fn is declared.reference):
            return f"reference:{self.optimizer}"
        return ""

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
    fixed_spec = ""  # a declared optimizer's torch reference: "reference:NAME"

    def __init__(self, name, cls, device="cpu", dtype="float64", label=None):
        import torch

        self.torch, self.optimizer, self.cls = torch, name, cls
        self.device, self.dtype = device, dtype
        self.name = label or f"torch-{name}"

    @property
    def spec(self) -> str:
        if self.fixed_spec:
            return self.fixed_spec
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
        return reference_runner(name)
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
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)
