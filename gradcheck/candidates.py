"""Candidates: the user's implementations under test.

    >>> import numpy as np
    >>> candidate = Candidate("my-layers")
    >>> @candidate.op("linear")
    ... class Linear:
    ...     @staticmethod
    ...     def forward(x, weight, bias=None):
    ...         y = x @ weight.T
    ...         return (y if bias is None else y + bias), (x, weight, bias is not None)
    ...     @staticmethod
    ...     def backward(saved, grad_out):
    ...         x, weight, has_bias = saved
    ...         g2 = grad_out.reshape(-1, grad_out.shape[-1])
    ...         gw = g2.T @ x.reshape(-1, x.shape[-1])
    ...         return (grad_out @ weight, gw) + ((g2.sum(0),) if has_bias else ())
    >>> candidate.ops
    ('linear',)

Four kinds of plug, any mix in one ``Candidate``:

* ``@candidate.op(name)`` on a class with NumPy ``forward(*tensors, **hyper) ->
  (output, saved)`` and ``backward(saved, grad_out) -> gradients`` (one per
  tensor input, ``None`` for non-differentiable ones);
* ``@candidate.op(name)`` on a ``torch.autograd.Function`` subclass (called as
  ``apply(*tensors, *hyper)`` in the catalogue's hyperparameter order), an
  ``nn.Module`` subclass (built as ``cls(**hyper)`` and called through
  ``torch.func.functional_call`` with the op's parameters by name), or a plain
  function of torch tensors: run through autograd on the chosen device;
* ``candidate.new_op(OpDef(...), numpy=..., torch=...)``: an op the catalogue
  does not have, which the strategies then place into random graphs;
* ``@candidate.engine``: a whole-model ``loss_and_grads(graph, tensors) ->
  (loss, grads)``.

Ops a candidate does not provide come from the reference (NumPy) or from
torch's own ops, so one new layer is checked inside whole random graphs.  Every
call into candidate code is guarded: an exception, NaN or Inf, a wrong shape or
dtype, the wrong number of gradients, writing into its inputs, or running past
the time limit becomes a ``CandidateError`` naming the op and what was wrong,
recorded with status ``error`` while the other checks go on.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from reference_impl import Op

from .ops import BUILTIN_OPS, CATALOGUE, OpDef, get_op, register_op
from .sources import ANALYTIC, ReferenceSource, SourceResult

__all__ = ["Candidate", "TorchCandidate", "CandidateError", "load_candidate", "candidate_sources",
           "EngineSource", "time_limit", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "gradcheck.candidates"


class CandidateError(Exception):
    """Candidate code misbehaved: the message names the op and what was wrong."""


# ---------------------------------------------------------------- time limit


@contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise ``CandidateError`` in this thread when the block runs past ``seconds``
    (SIGALRM; on the main thread of a POSIX process, else no limit).  A hard hang
    in C code that never returns to Python needs ``isolate=True`` instead."""
    usable = (seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CandidateError(f"{what} did not finish within the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- guarding NumPy ops


def _readonly(a):
    if isinstance(a, np.ndarray):
        v = a.view()
        v.setflags(write=False)
        return v
    return a


def _describe_exc(op, phase, e):
    if isinstance(e, CandidateError):
        return e
    text = str(e)
    if isinstance(e, ValueError) and "read-only" in text:
        return CandidateError(f"{op}.{phase} wrote into one of its inputs in place ({text}); "
                              f"inputs are shared with the rest of the graph and must not be modified")
    return CandidateError(f"{op}.{phase} raised {type(e).__name__}: {text}")


def _check_array(op, what, value, shape, dtype):
    if not isinstance(value, np.ndarray) and not np.isscalar(value):
        raise CandidateError(f"{op}: {what} is a {type(value).__name__}, not an array")
    value = np.asarray(value)
    if tuple(value.shape) != tuple(shape):
        raise CandidateError(f"{op}: {what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype and not np.iscomplexobj(value):
        raise CandidateError(f"{op}: {what} has dtype {value.dtype}, expected {dtype}")
    if not np.all(np.isfinite(value)):
        bad = int(np.sum(~np.isfinite(value)))
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0]) if value.ndim else ()
        raise CandidateError(f"{op}: {what} has {bad} non-finite value(s) (NaN or Inf), first at {first}")
    return value


def _float_dtype(tensors):
    for t in tensors:
        if isinstance(t, np.ndarray) and t.dtype.kind in "fc":
            return t.dtype
    return None


def guard_numpy_op(name: str, forward, backward, opdef: OpDef, limit: float | None = None) -> Op:
    """Wrap a candidate's NumPy forward/backward so every way it can misbehave
    becomes a ``CandidateError`` that names the op."""

    def guarded_forward(*tensors, **hyper):
        shapes = [np.shape(t) for t in tensors]
        try:
            with time_limit(limit, f"{name}.forward"):
                result = forward(*(_readonly(t) for t in tensors), **hyper)
        except Exception as e:
            raise _describe_exc(name, "forward", e) from e
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CandidateError(f"{name}.forward must return (output, saved), got {type(result).__name__}"
                                 + (f" of length {len(result)}" if isinstance(result, tuple) else ""))
        out, saved = result
        expected = opdef.shape(*shapes, **opdef.full_hyper(hyper))
        dtype = _float_dtype(tensors)
        out = _check_array(name, "forward output", out, expected, dtype)
        return out, (saved, tensors, dtype)

    def guarded_backward(cache, grad_out):
        saved, tensors, dtype = cache
        try:
            with time_limit(limit, f"{name}.backward"):
                grads = backward(saved, _readonly(grad_out))
        except Exception as e:
            raise _describe_exc(name, "backward", e) from e
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        grads = tuple(grads)
        if len(grads) != len(tensors):
            raise CandidateError(f"{name}.backward returned {len(grads)} gradient(s) for {len(tensors)} tensor "
                                 f"input(s) ({', '.join(a.name for a in opdef.bind(len(tensors)))}); "
                                 f"give None for a non-differentiable one")
        checked = []
        for arg, t, g in zip(opdef.bind(len(tensors)), tensors, grads):
            if not arg.differentiable:
                checked.append(None)
                continue
            if g is None:
                raise CandidateError(f"{name}.backward gave None for {arg.name!r}, which is differentiable")
            checked.append(_check_array(name, f"gradient of {arg.name!r}", g, np.shape(t), dtype))
        return tuple(checked)

    return Op(guarded_forward, guarded_backward)


# ---------------------------------------------------------------- guarding torch ops


def _is_subclass(obj, module, attr):
    mod = sys.modules.get(module)
    if mod is None:
        return False
    base = mod
    for part in attr.split("."):
        base = getattr(base, part)
    return isinstance(obj, type) and issubclass(obj, base)


def _torch_callable(name: str, impl, opdef: OpDef):
    """A function ``f(*tensors, **hyper)`` running the candidate's torch op."""
    if _is_subclass(impl, "torch", "autograd.Function"):
        def call(*tensors, **hyper):
            return impl.apply(*tensors, *(hyper[k] for k in opdef.hyper_names))
        return call
    if _is_subclass(impl, "torch", "nn.Module"):
        from torch.func import functional_call

        def call(*tensors, **hyper):
            args = opdef.bind(len(tensors))
            module = impl(**hyper)
            params = {a.name: t for a, t in zip(args, tensors) if a.role == "param"}
            rest = [t for a, t in zip(args, tensors) if a.role != "param"]
            return functional_call(module, params, tuple(rest))
        return call
    if callable(impl):
        return impl
    raise TypeError(f"candidate op {name!r}: expected a torch.autograd.Function or nn.Module subclass, "
                    f"a function, or a class with NumPy forward/backward; got {impl!r}")


def guard_torch_op(name: str, fn, opdef: OpDef, limit: float | None = None):
    def guarded(*tensors, **hyper):
        import torch

        before = [t.detach().clone() if t.dtype.is_floating_point else t.clone() for t in tensors]
        try:
            with time_limit(limit, f"{name}.forward"):
                out = fn(*tensors, **hyper)
        except Exception as e:
            raise _describe_exc(name, "forward", e) from e
        if not isinstance(out, torch.Tensor):
            raise CandidateError(f"{name}: forward returned {type(out).__name__}, not a tensor")
        for arg, t, b in zip(opdef.bind(len(tensors)), tensors, before):
            if not torch.equal(t.detach(), b):
                raise CandidateError(f"{name}.forward wrote into its input {arg.name!r} in place")
        expected = tuple(opdef.shape(*(tuple(t.shape) for t in tensors), **opdef.full_hyper(hyper)))
        if tuple(out.shape) != expected:
            raise CandidateError(f"{name}: forward output has shape {tuple(out.shape)}, expected {expected}")
        floats = [t for t in tensors if t.dtype.is_floating_point]
        if floats and out.dtype != floats[0].dtype:
            raise CandidateError(f"{name}: forward output has dtype {out.dtype}, expected {floats[0].dtype}")
        if not bool(torch.isfinite(out).all()):
            raise CandidateError(f"{name}: forward output has non-finite values (NaN or Inf)")
        return out

    return guarded


# ---------------------------------------------------------------- the Candidate


class Candidate:
    """A named set of implementations to check (see the module docstring)."""

    def __init__(self, name: str, *, time_limit: float | None = 30.0):
        self.name = name
        self.time_limit = time_limit
        self.numpy_ops: dict = {}  # op name -> (forward, backward)
        self.torch_ops: dict = {}  # op name -> torch callable
        self.new_ops: list = []  # OpDefs this candidate declared
        self.loss_and_grads = None
        self.optimizers: dict = {}  # optimizer name -> NumPy step function or torch.optim.Optimizer subclass
        self.target = ""  # how it was loaded ("module:attr", "path.py:attr", entry point name)

    @property
    def ops(self) -> tuple:
        return tuple(sorted(set(self.numpy_ops) | set(self.torch_ops)))

    def op(self, name: str):
        """Decorator: the implementation of catalogue op ``name``."""
        get_op(name)  # an unknown name fails here, naming the catalogue

        def register(impl):
            if hasattr(impl, "forward") and hasattr(impl, "backward") and not (
                    _is_subclass(impl, "torch", "autograd.Function") or _is_subclass(impl, "torch", "nn.Module")):
                self.numpy_ops[name] = (impl.forward, impl.backward)
            else:
                self.torch_ops[name] = _torch_callable(name, impl, get_op(name))
            return impl

        return register

    def new_op(self, opdef: OpDef, *, numpy=None, torch=None, formula=None):
        """Declare an op the catalogue lacks.

        numpy: a class with NumPy forward/backward (checked as this candidate's);
        torch: an autograd.Function, nn.Module or function (checked as this
        candidate's); formula: a plain torch function of the math, differentiated
        by autograd, that the harness uses as the independent side of comparisons
        (the reference has no VJP for an op it does not know)."""
        if opdef.name in BUILTIN_OPS:
            raise ValueError(f"op {opdef.name!r} is a built-in op of the catalogue; choose another name")
        # A declared op may be declared again (the module loaded a second time): the
        # newest declaration wins.
        CATALOGUE.pop(opdef.name, None)
        register_op(opdef)
        self.new_ops.append(opdef)
        if numpy is not None:
            self.numpy_ops[opdef.name] = (numpy.forward, numpy.backward)
        if torch is not None:
            self.torch_ops[opdef.name] = _torch_callable(opdef.name, torch, opdef)
        if formula is not None:
            from .backends.torch_autograd import TORCH_OPS

            TORCH_OPS[opdef.name] = formula
        return opdef

    def optimizer(self, name: str):
        """Decorator: an implementation of optimizer ``name`` (sgd, adam, adamw,
        rmsprop, adagrad): a NumPy ``step(params, grads, state, **hyper) -> (params,
        state)`` or a ``torch.optim.Optimizer`` subclass taking torch's arguments."""
        from reference_impl.optimizers import OPTIMIZERS

        if name not in OPTIMIZERS:
            raise KeyError(f"unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}")

        def register(impl):
            self.optimizers[name] = impl
            return impl

        return register

    def engine(self, fn):
        """Decorator: a whole-model ``loss_and_grads(graph, tensors) -> (loss, grads)``."""
        self.loss_and_grads = fn
        return fn

    def sources(self, device: str = "cpu", dtype: str = "float64") -> list:
        """The sources that run this candidate's code."""
        return candidate_sources(self, device, dtype)

    def __repr__(self):
        kinds = [f"numpy ops {sorted(self.numpy_ops)}" if self.numpy_ops else "",
                 f"torch ops {sorted(self.torch_ops)}" if self.torch_ops else "",
                 "an engine" if self.loss_and_grads else ""]
        return f"Candidate({self.name!r}: {', '.join(k for k in kinds if k) or 'empty'})"


TorchCandidate = Candidate  # one class takes both; the name reads well for torch-only candidates


class NumpyCandidateSource(ReferenceSource):
    """The reference executor with the candidate's NumPy ops swapped in, guarded."""

    def __init__(self, candidate: Candidate, compute_dtype=None):
        ops = {name: guard_numpy_op(name, f, b, get_op(name), candidate.time_limit)
               for name, (f, b) in candidate.numpy_ops.items()}
        super().__init__(ops, name=candidate.name, compute_dtype=compute_dtype)
        self.candidate = candidate

    @property
    def spec(self) -> str:
        if not self.candidate.target:
            return ""
        return f"candidate:{self.candidate.target}:numpy" + (f":{self.compute_dtype}" if self.compute_dtype else "")


class EngineSource:
    """A whole-model engine: ``loss_and_grads(graph, tensors) -> (loss, grads)``."""

    def __init__(self, candidate: Candidate):
        self.candidate = candidate
        self.name = f"{candidate.name}-engine"
        self.fn = candidate.loss_and_grads

    @property
    def spec(self) -> str:
        return f"candidate:{self.candidate.target}:engine" if self.candidate.target else ""

    def _call(self, graph, tensors):
        try:
            with time_limit(self.candidate.time_limit, "loss_and_grads"):
                return self.fn(graph, {k: _readonly(np.asarray(v)) for k, v in tensors.items()})
        except Exception as e:
            raise _describe_exc("engine", "loss_and_grads", e) from e

    def forward(self, graph, tensors):
        return self._call(graph, tensors)[0]

    def run(self, graph, tensors) -> SourceResult:
        t0 = time.perf_counter()
        result = self._call(graph, tensors)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CandidateError("engine: loss_and_grads must return (loss, grads)")
        loss, grads = result
        if not np.isfinite(loss):
            raise CandidateError(f"engine: loss is {loss}")
        dtype = next((str(np.asarray(tensors[l.name]).dtype) for l in graph.differentiable_leaves), "float64")
        checked = {}
        for leaf in graph.differentiable_leaves:
            if leaf.name not in grads:
                raise CandidateError(f"engine: no gradient for {leaf.name!r}")
            checked[leaf.name] = _check_array("engine", f"gradient of {leaf.name!r}", grads[leaf.name],
                                              leaf.shape, None)
        return SourceResult(self.name, ANALYTIC, float(loss), checked, dtype=dtype,
                            seconds=time.perf_counter() - t0)


def candidate_sources(candidate: Candidate, device: str = "cpu", dtype: str = "float64") -> list:
    """Sources for every kind of plug the candidate has: NumPy ops (on the CPU, in
    ``dtype`` when it is float64 or float32), torch ops (on ``device`` in ``dtype``)
    and an engine."""
    out = []
    if candidate.numpy_ops:
        out.append(NumpyCandidateSource(candidate, compute_dtype=None))
    if candidate.torch_ops:
        out.append(torch_candidate_source(candidate, device, dtype))
    if candidate.loss_and_grads:
        out.append(EngineSource(candidate))
    if not out and not candidate.optimizers:
        raise ValueError(f"{candidate!r} provides nothing to check")
    return out


def torch_candidate_source(candidate: Candidate, device="cpu", dtype="float64"):
    from .backends.torch_autograd import TorchSource

    ops = {name: guard_torch_op(name, fn, get_op(name), candidate.time_limit)
           for name, fn in candidate.torch_ops.items()}
    src = TorchSource(device, dtype, ops=ops, name=f"{candidate.name}-torch")
    src.candidate_spec = f"candidate:{candidate.target}:torch:{device}:{dtype}" if candidate.target else ""
    return src


# ---------------------------------------------------------------- loading


def load_candidate(target: str) -> Candidate:
    """A Candidate from ``module:attr``, ``path/to/file.py:attr`` or the name of an
    entry point in the ``gradcheck.candidates`` group."""
    obj = None
    module_part, _, attr = target.rpartition(":") if ":" in target else ("", "", "")
    try:
        if module_part and (module_part.endswith(".py") or "/" in module_part):
            path = Path(module_part)
            if not path.exists():
                raise FileNotFoundError(f"candidate file {module_part!r} does not exist")
            spec = importlib.util.spec_from_file_location(f"gradcheck_candidate_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            obj = getattr(module, attr)
        elif module_part:
            obj = getattr(importlib.import_module(module_part), attr)
        else:
            from importlib.metadata import entry_points

            found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
            if not found:
                names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
                raise LookupError(f"no candidate {target!r}: not module:attr, not file.py:attr, and not an entry "
                                  f"point in {ENTRY_POINT_GROUP!r} (installed: {names or 'none'})")
            obj = found[0].load()
    except AttributeError as e:
        raise LookupError(f"candidate {target!r}: {e}") from None
    except ImportError as e:
        raise LookupError(f"candidate {target!r}: cannot import: {e}") from None
    if callable(obj) and not isinstance(obj, Candidate):
        obj = obj()  # a factory
    if not isinstance(obj, Candidate):
        raise TypeError(f"candidate {target!r} is a {type(obj).__name__}, not a gradcheck.Candidate")
    obj.target = target
    return obj


def source_from_spec(spec: str):
    """``candidate:<target>[:numpy[:dtype]|:torch:<device>:<dtype>|:engine]`` -> source."""
    body = spec[len("candidate:"):]
    for marker in (":numpy", ":torch:", ":engine"):
        if marker in body:
            target, _, rest = body.partition(marker)
            candidate = load_candidate(target)
            if marker == ":numpy":
                return NumpyCandidateSource(candidate, compute_dtype=rest.lstrip(":") or None)
            if marker == ":engine":
                return EngineSource(candidate)
            device, _, dtype = rest.rpartition(":")
            return torch_candidate_source(candidate, device or "cpu", dtype or "float64")
    return candidate_sources(load_candidate(body))[0]

