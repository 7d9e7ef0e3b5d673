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
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference_impl import Op

from .ops import BUILTIN_OPS, CATALOGUE, OpDef, get_op, register_op
from .sources import ANALYTIC, ReferenceSource, SourceResult, Unsupported

__all__ = ["Candidate", "CandidateError", "CandidateLoadError", "OpOptions", "Breaker", "load_candidate",
           "candidate_sources",
           "candidate_source", "NumpyCandidateSource", "EngineSource", "torch_candidate_source", "guarded_call",
           "time_limit", "CALL_LISTENERS", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "gradcheck.candidates"


class CandidateError(Exception):
    """Candidate code misbehaved: the message names the op and what was wrong;
    ``op`` and ``phase`` (forward, backward, loss_and_grads) say where."""

    def __init__(self, message: str, op: str = "", phase: str = ""):
        super().__init__(message)
        self.op, self.phase = op, phase


# ---------------------------------------------------------------- time limit


@contextmanager
def time_limit(seconds: float | None, what: str, op: str = "", phase: str = ""):
    """Raise ``CandidateError`` in this thread when the block runs past ``seconds``
    (SIGALRM; on the main thread of a POSIX process, else no limit).  A timer
    already running outside (pytest-timeout's, say) is kept: if its deadline
    comes first its own handler runs, and it is re-armed with what is left of it
    afterwards.  A hard hang in C code that never returns to Python needs
    isolation instead."""
    usable = (seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    start = time.monotonic()
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    outer_first = 0 < outer_delay <= seconds

    def on_alarm(signum, frame):
        if outer_first and callable(outer_handler):
            outer_handler(signum, frame)  # the outer deadline came first: it decides what happens
            left = seconds - (time.monotonic() - start)
            if left > 0:  # its handler returned: our own limit still runs
                signal.setitimer(signal.ITIMER_REAL, left)
                return
        raise CandidateError(f"{what} did not finish within the time limit of {seconds:g} s", op=op, phase=phase)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_delay) if outer_first else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_delay > 0:
            left = outer_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)


# ---------------------------------------------------------------- one guarded call
#
# Note [Guarded calls]
# Every call into candidate code goes through ``guarded_call``: under the time
# limit; with whatever it raises turned into a ``CandidateError`` naming the op
# and the phase, BaseExceptions included (a candidate's own KeyboardInterrupt or
# sys.exit is a fault of the candidate, while the user's Ctrl-C, seen by the
# SIGINT handler installed for the call, still stops the run, and pytest's own
# outcomes pass through); and behind a circuit breaker: an op that ran past the
# time limit is not called again in this run, so a hang costs one time limit,
# not one per Hypothesis example.

_SIGINT = {"seen": False}
CALL_LISTENERS: list = []  # called with (op, phase) before each guarded call (an isolated worker's heartbeat)


class Breaker:
    """The ops (and phases) of one candidate that timed out in this run."""

    def __init__(self):
        self.tripped = {}  # (op, phase) -> [message, calls not made since]

    def check(self, op, phase):
        entry = self.tripped.get((op, phase))
        if entry is not None:
            entry[1] += 1
            raise CandidateError(f"{entry[0]}; not called again in this run (circuit breaker: {entry[1]} call(s) "
                                 f"not made)", op=op, phase=phase)

    def trip(self, op, phase, message):
        self.tripped.setdefault((op, phase), [message, 0])

    def lines(self) -> list:
        return [f"{op}.{phase} timed out once and was not called again: {n} call(s) not made"
                for (op, phase), (_, n) in sorted(self.tripped.items())]


@contextmanager
def _watching_sigint():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        _SIGINT["seen"] = True
        if callable(outer):
            outer(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, outer)


def guarded_call(fn, op: str, phase: str, limit: float | None, breaker: Breaker | None, *args, **kwargs):
    """``fn(*args, **kwargs)`` as candidate code is called (Note [Guarded calls])."""
    if breaker is not None:
        breaker.check(op, phase)
    for listener in CALL_LISTENERS:
        listener(op, phase)
    what = f"{op}.{phase}" if op else phase
    _SIGINT["seen"] = False
    try:
        with _watching_sigint(), time_limit(limit, what, op, phase):
            return fn(*args, **kwargs)
    except CandidateError as e:
        if breaker is not None and "did not finish within the time limit" in str(e) and e.op == op:
            breaker.trip(op, phase, str(e))
        raise
    except KeyboardInterrupt:
        if _SIGINT["seen"]:
            raise  # the user's Ctrl-C
        raise CandidateError(f"{what} raised KeyboardInterrupt (not a Ctrl-C: the candidate's own code raised it)",
                             op=op, phase=phase) from None
    except SystemExit as e:
        raise CandidateError(f"{what} called sys.exit({e.code!r}); candidate code must return or raise, not end "
                             f"the process", op=op, phase=phase) from None
    except Exception as e:
        raise _describe_exc(op, phase, e) from e


# ---------------------------------------------------------------- guarding NumPy ops
#
# Note [Guarding a NumPy op]
# A candidate's forward and backward get private copies of the arrays they are
# handed (inputs, grad_out), so a write into any of them, also through ``.base``
# or after ``setflags(write=True)``, changes only the copy; comparing the copy
# with the original afterwards names the argument that was written.  Above
# COPY_BUDGET bytes the arrays go as read-only views instead, with a checksum
# of each compared after the call.  The arrays in ``saved`` are compared before
# and after the backward, and the backward is called a second time on the same
# saved values: a backward that changes what it saved, or keeps state between
# calls, gives a different answer the second time.  Gradients may pass
# ``grad_out`` through (a reshape's backward is a view of it), but must not share
# memory with each other, with the inputs or with the saved values: a caller
# that accumulates gradients in place would then change two of them at once.

COPY_BUDGET = 64 << 20
_TooHard = getattr(np, "exceptions", np).TooHardError


def _describe_exc(op, phase, e):
    if isinstance(e, CandidateError):
        return e
    text = str(e)
    what = f"{op}.{phase}" if op else phase
    if isinstance(e, ValueError) and "read-only" in text:
        return CandidateError(f"{what} wrote into an array it was given ({text}); inputs, grad_out and "
                              f"saved values are shared with the rest of the graph and must not be modified",
                              op=op, phase=phase)
    return CandidateError(f"{what} raised {type(e).__name__}: {text}", op=op, phase=phase)


def _check_array(op, what, value, shape, dtype, phase=""):
    where = f"{op}.{phase}" if phase and op != "engine" else op

    def fail(text):
        raise CandidateError(f"{where}: {what} {text}", op="" if op == "engine" else op, phase=phase)

    if not isinstance(value, (np.ndarray, np.number, int, float, complex)) or isinstance(value, bool):
        fail(f"is a {type(value).__name__}, not an array")
    value = np.asarray(value)
    if tuple(value.shape) != tuple(shape):
        fail(f"has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype and not np.iscomplexobj(value):
        fail(f"has dtype {value.dtype}, expected {dtype}")
    if value.dtype.kind not in "fciub":
        fail(f"has dtype {value.dtype}, not a number")
    if not np.all(np.isfinite(value)):
        bad = int(np.sum(~np.isfinite(value)))
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0]) if value.ndim else ()
        fail(f"has {bad} non-finite value(s) (NaN or Inf), first at {first}")
    return value


def _float_dtype(tensors):
    for t in tensors:
        if isinstance(t, np.ndarray) and t.dtype.kind in "fc":
            return t.dtype
    return None


def _checksum(a) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) if a.size else 0


class _Handed:
    """The arrays handed to one call: private copies (or, above the budget,
    read-only views and checksums), and which of them the call changed."""

    def __init__(self, arrays):
        self.originals = arrays
        self.copies = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)) <= COPY_BUDGET
        if self.copies:
            self.given = [a.copy() if isinstance(a, np.ndarray) else a for a in arrays]
            self.sums = None
        else:
            self.given = [_readonly(a) for a in arrays]
            self.sums = [_checksum(a) if isinstance(a, np.ndarray) else None for a in arrays]

    def changed(self):
        """``(position, elements changed, first index)`` for each array written."""
        out = []
        for i, (orig, given) in enumerate(zip(self.originals, self.given)):
            if not isinstance(orig, np.ndarray):
                continue
            if self.copies:
                differs = ~((given == orig) | (np.isnan(given) & np.isnan(orig))) if orig.dtype.kind in "fc" else (
                    given != orig)
                if np.any(differs):
                    first = tuple(int(j) for j in np.argwhere(differs)[0]) if differs.ndim else ()
                    out.append((i, int(np.sum(differs)), first))
            elif _checksum(orig) != self.sums[i]:
                out.append((i, -1, None))
        return out


def _readonly(a):
    if isinstance(a, np.ndarray):
        v = a.view()
        v.setflags(write=False)
        return v
    return a


def _saved_arrays(saved, path="saved", depth=0, out=None):
    """``(path, array)`` for the arrays inside ``saved`` (tuples, lists, dicts)."""
    out = [] if out is None else out
    if isinstance(saved, np.ndarray):
        out.append((path, saved))
    elif depth < 4 and isinstance(saved, (tuple, list)):
        for i, v in enumerate(saved):
            _saved_arrays(v, f"{path}[{i}]", depth + 1, out)
    elif depth < 4 and isinstance(saved, dict):
        for k, v in saved.items():
            _saved_arrays(v, f"{path}[{k!r}]", depth + 1, out)
    return out


def _written(changes):
    k, n, first = changes
    return "its checksum changed" if n < 0 else f"{n} element(s) changed, first at {first}"


def _shares(a, b) -> bool:
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or not a.size or not b.size:
        return False
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=100_000))
    except _TooHard:
        return True  # too costly to decide exactly: overlapping bounds count as shared


def _arg_names(opdef, n):
    args = opdef.bind(n)
    counts = {}
    names = []
    for a in args:
        if a.variadic:
            counts[a.name] = counts.get(a.name, -1) + 1
            names.append(f"{a.name}[{counts[a.name]}]")
        else:
            names.append(a.name)
    return args, names


def guard_numpy_op(name: str, forward, backward, opdef: OpDef, limit: float | None = None,
                   breaker: Breaker | None = None) -> Op:
    """Wrap a candidate's NumPy forward/backward so every way it can misbehave
    becomes a ``CandidateError`` that names the op, the phase and the argument
    (Note [Guarding a NumPy op])."""

    def call(fn, phase, *args, **kwargs):
        return guarded_call(fn, name, phase, limit, breaker, *args, **kwargs)

    def fail(phase, text):
        raise CandidateError(f"{name}.{phase} {text}", op=name, phase=phase)

    def guarded_forward(*tensors, **hyper):
        shapes = [np.shape(t) for t in tensors]
        args, names = _arg_names(opdef, len(tensors))
        handed = _Handed(list(tensors))
        result = call(forward, "forward", *handed.given, **hyper)
        for changes in handed.changed():
            fail("forward", f"wrote into its input {names[changes[0]]!r} in place ({_written(changes)}); "
                            f"inputs are shared with the rest of the graph and must not be modified")
        if not (isinstance(result, tuple) and len(result) == 2):
            fail("forward", f"must return (output, saved), got {type(result).__name__}"
                 + (f" of length {len(result)}" if isinstance(result, tuple) else ""))
        out, saved = result
        expected = opdef.shape(*shapes, **opdef.full_hyper(hyper))
        dtype = _float_dtype(tensors)
        out = _check_array(name, "forward output", out, expected, dtype, "forward")
        if any(_shares(out, t) for t in tensors):
            out = out.copy()  # a view of an input (reshape) is fine, but the graph's value must not alias it
        return out, (saved, tensors, handed.given, dtype)

    def run_backward(saved, grad_out):
        handed = _Handed([np.asarray(grad_out)])
        grads = call(backward, "backward", saved, handed.given[0])
        for changes in handed.changed():
            fail("backward", f"wrote into grad_out in place ({_written(changes)}); grad_out belongs to the "
                             f"caller and must not be modified")
        return grads, handed.given[0]

    def validate(grads, tensors, dtype):
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        grads = tuple(grads)
        args, names = _arg_names(opdef, len(tensors))
        if len(grads) != len(tensors):
            fail("backward", f"returned {len(grads)} gradient(s) for {len(tensors)} tensor input(s) "
                             f"({', '.join(a.name for a in args)}); give None for a non-differentiable one")
        checked = []
        for arg, arg_name, t, g in zip(args, names, tensors, grads):
            if not arg.differentiable:
                checked.append(None)
                continue
            if g is None:
                fail("backward", f"gave None for {arg_name!r}, which is differentiable")
            checked.append(_check_array(name, f"gradient of {arg_name!r}", g, np.shape(t), dtype, "backward"))
        return tuple(checked), names

    def guarded_backward(cache, grad_out):
        saved, tensors, given, dtype = cache
        snapshot = _saved_arrays(saved)
        if sum(a.nbytes for _, a in snapshot) <= COPY_BUDGET:
            before = [(path, a, a.copy()) for path, a in snapshot]
        else:
            before = [(path, a, _checksum(a)) for path, a in snapshot]
        grads, g_given = run_backward(saved, grad_out)
        for path, a, kept in before:
            same = _checksum(a) == kept if isinstance(kept, int) else np.array_equal(a, kept, equal_nan=True)
            if not same:
                fail("backward", f"wrote into its saved values ({path}) in place; a second backward on the same "
                                 f"forward (a retained graph, a double backward) would then be wrong")
        checked, names = validate(grads, tensors, dtype)
        # aliasing: among the gradients, and with the inputs or saved values
        pairs = [(i, j) for i in range(len(checked)) for j in range(i + 1, len(checked))]
        for i, j in pairs:
            if _shares(checked[i], checked[j]):
                fail("backward", f"returned gradients of {names[i]!r} and {names[j]!r} that share memory; a caller "
                                 f"that accumulates gradients in place would change both: return a copy for one")
        for i, g in enumerate(checked):
            for what, arrays in (("the input", list(tensors) + list(given)), ("a saved value", [a for _, a in
                                                                                                 snapshot])):
                if g is not None and any(_shares(g, a) for a in arrays):
                    fail("backward", f"returned a gradient of {names[i]!r} that shares memory with {what}; a caller "
                                     f"that accumulates gradients in place would change it: return a fresh array")
        # the same saved values, the same grad_out: the same gradients
        again, _ = validate(run_backward(saved, grad_out)[0], tensors, dtype)
        for arg_name, g1, g2 in zip(names, checked, again):
            if g1 is not None and not np.array_equal(g1, g2, equal_nan=True):
                diff = float(np.max(np.abs(np.asarray(g1, dtype=np.complex128) - g2)))
                fail("backward", f"is not repeatable: a second call on the same saved values and grad_out gave a "
                                 f"gradient of {arg_name!r} differing by up to {diff:.3g} (it keeps state between "
                                 f"calls, changes what it saved, or is nondeterministic)")
        return checked

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


def guard_torch_op(name: str, fn, opdef: OpDef, limit: float | None = None, breaker: Breaker | None = None):
    def fail(text):
        raise CandidateError(f"{name}: {text}" if not text.startswith(".") else f"{name}{text}", op=name,
                             phase="forward")

    def guarded(*tensors, **hyper):
        import torch

        before = [t.detach().clone() if t.dtype.is_floating_point else t.clone() for t in tensors]
        out = guarded_call(fn, name, "forward", limit, breaker, *tensors, **hyper)
        if not isinstance(out, torch.Tensor):
            fail(f"forward returned {type(out).__name__}, not a tensor")
        for arg_name, t, b in zip(_arg_names(opdef, len(tensors))[1], tensors, before):
            if not torch.equal(t.detach(), b):
                fail(f".forward wrote into its input {arg_name!r} in place")
        expected = tuple(opdef.shape(*(tuple(t.shape) for t in tensors), **opdef.full_hyper(hyper)))
        if tuple(out.shape) != expected:
            fail(f"forward output has shape {tuple(out.shape)}, expected {expected}")
        floats = [t for t in tensors if t.dtype.is_floating_point]
        if floats and out.dtype != floats[0].dtype:
            fail(f"forward output has dtype {out.dtype}, expected {floats[0].dtype}")
        if not bool(torch.isfinite(out).all()):
            fail("forward output has non-finite values (NaN or Inf)")
        return out

    return guarded


# ---------------------------------------------------------------- the Candidate


@dataclass(frozen=True)
class OpOptions:
    """What a candidate's op says about itself.

    supports: a predicate ``supports(hyper, shapes) -> bool`` on the full
    hyperparameters and the input shapes, or a dict ``{hyper name: allowed
    values}``; settings outside it are never drawn into random graphs, and a
    check that needs them is ``skipped`` (never ``error``).  dtypes: the float
    dtypes the op takes (``("float32",)`` for float32-only code: its finite
    differences then run in float32, judged by float32's error model).
    complex_step: True when the forward is complex-analytic (the complex-step
    check then runs), False when it is not; None (the default) has a probe
    decide (Note [Complex-step probe] in sources.py).
    """

    supports: object = None
    dtypes: tuple | None = None
    complex_step: bool | None = None

    def refuses(self, op: str, hyper: dict, shapes) -> str:
        """Why this op would not take these settings, or ""."""
        if self.supports is None:
            return ""
        if isinstance(self.supports, dict):
            bad = {k: hyper.get(k) for k, allowed in self.supports.items() if _frozen(hyper.get(k)) not in
                   {_frozen(v) for v in allowed}}
            if bad:
                return f"{op} is declared only for " + ", ".join(
                    f"{k} in {list(self.supports[k])}" for k in bad) + f"; this node has " + ", ".join(
                    f"{k}={v!r}" for k, v in bad.items())
            return ""
        try:
            ok = self.supports(dict(hyper), tuple(tuple(s) for s in shapes))
        except Exception as e:  # a predicate that raises refuses, and says why
            return f"{op}'s supports predicate raised {type(e).__name__}: {e}"
        return "" if ok else f"{op} is declared not to support {_hyper_text(hyper) or 'its defaults'} on inputs " \
                             f"{', '.join(str(tuple(s)) for s in shapes)}"


def _frozen(v):
    return tuple(_frozen(x) for x in v) if isinstance(v, (list, tuple)) else v


def _hyper_text(hyper):
    return ", ".join(f"{k}={v!r}" for k, v in sorted(dict(hyper).items()))


class Candidate:
    """A named set of implementations to check (see the module docstring).

    ``exclude``: ops never placed into the random graphs this candidate is
    checked on (an engine that does not implement them, say).  ``version``: said
    in replay files, so a replay against another version of the code says so.
    """

    def __init__(self, name: str, *, time_limit: float | None = 30.0, exclude=(), version: str = ""):
        self.name = name
        self.version = version
        self.time_limit = time_limit
        self.numpy_ops: dict = {}  # op name -> (forward, backward)
        self.torch_ops: dict = {}  # op name -> torch callable
        self.options: dict = {}  # op name -> OpOptions
        self.new_ops: list = []  # OpDefs this candidate declared
        self.exclude = frozenset(exclude)
        self.loss_and_grads = None
        self.optimizers: dict = {}  # optimizer name -> NumPy step function or torch.optim.Optimizer subclass
        self.target = ""  # how it was loaded ("module:attr", "path.py:attr", entry point name)
        self.breaker = Breaker()  # its ops that timed out in this run

    @property
    def ops(self) -> tuple:
        return tuple(sorted(set(self.numpy_ops) | set(self.torch_ops)))

    def _register(self, name, impl, options):
        if hasattr(impl, "forward") and hasattr(impl, "backward") and not (
                _is_subclass(impl, "torch", "autograd.Function") or _is_subclass(impl, "torch", "nn.Module")):
            self.numpy_ops[name] = (impl.forward, impl.backward)
            declared = getattr(impl, "complex_step", None)  # a class may say it on itself
            if options.complex_step is None and isinstance(declared, bool):
                options = OpOptions(options.supports, options.dtypes, declared)
        else:
            self.torch_ops[name] = _torch_callable(name, impl, get_op(name))
        self.options[name] = options

    def op(self, name: str, *, supports=None, dtypes=None, complex_step=None):
        """Decorator: the implementation of catalogue op ``name`` (see ``OpOptions``
        for what the keywords declare)."""
        get_op(name)  # an unknown name fails here, naming the catalogue
        options = _options(name, supports, dtypes, complex_step)

        def register(impl):
            self._register(name, impl, options)
            return impl

        return register

    def new_op(self, opdef: OpDef, *, numpy=None, torch=None, formula=None, supports=None, dtypes=None,
               complex_step=None):
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
        options = _options(opdef.name, supports, dtypes, complex_step)
        if numpy is not None:
            self._register(opdef.name, numpy, options)
        if torch is not None:
            self.torch_ops[opdef.name] = _torch_callable(opdef.name, torch, opdef)
            self.options[opdef.name] = options
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

    def options_of(self, op: str) -> OpOptions:
        return self.options.get(op, _NO_OPTIONS)

    def refuses_node(self, op: str, hyper, shapes) -> str:
        """Why a node of ``op`` with these settings is not this candidate's to check, or ""."""
        if op in self.exclude:
            return f"{self.name} excludes {op} from its graphs"
        return self.options_of(op).refuses(op, hyper, shapes)

    def refuses(self, graph, dtype: str, ops=None) -> str:
        """Why this candidate does not claim ``graph`` in ``dtype`` (considering the
        nodes of ``ops``, default its own), or "": such a check is ``skipped``."""
        mine = set(self.ops) if ops is None else set(ops)
        for name, op, inputs, hyper in graph.plan():
            why = self.refuses_node(op, hyper, [graph.shapes[i] for i in inputs]) if (
                op in mine or op in self.exclude) else ""
            if why:
                return f"{why} ({name})"
            dtypes = self.options_of(op).dtypes if op in mine else None
            if dtypes and dtype not in dtypes:
                return f"{self.name}'s {op} is declared for {', '.join(dtypes)} only, not {dtype}"
        return ""

    def float_dtypes(self, default=("float64", "float32")) -> tuple:
        """The case dtypes to check this candidate's ops in."""
        declared = [self.options_of(o).dtypes for o in self.ops if self.options_of(o).dtypes]
        if not declared:
            return tuple(default)
        return tuple(d for d in ("float64", "float32", "float16", "bfloat16") if any(d in ds for ds in declared))

    def sources(self, device: str = "cpu", dtype: str = "float64") -> list:
        """The sources that run this candidate's code."""
        return candidate_sources(self, device, dtype)

    @property
    def identity(self) -> dict:
        """What a replay file says about the candidate it was written for."""
        return {"name": self.name, "version": self.version, "target": _portable_target(self.target),
                "ops": list(self.ops), "new_ops": [o.name for o in self.new_ops]}

    def __repr__(self):
        kinds = [f"numpy ops {sorted(self.numpy_ops)}" if self.numpy_ops else "",
                 f"torch ops {sorted(self.torch_ops)}" if self.torch_ops else "",
                 "an engine" if self.loss_and_grads else "",
                 f"optimizers {sorted(self.optimizers)}" if self.optimizers else ""]
        return f"Candidate({self.name!r}: {', '.join(k for k in kinds if k) or 'empty'})"


_NO_OPTIONS = OpOptions()


def _options(name, supports, dtypes, complex_step):
    if supports is not None and not (callable(supports) or isinstance(supports, dict)):
        raise TypeError(f"candidate op {name!r}: supports must be a predicate (hyper, shapes) -> bool or a dict "
                        f"of allowed values, got {type(supports).__name__}")
    if isinstance(supports, dict):
        opdef = get_op(name)
        unknown = sorted(set(supports) - set(opdef.hyper))
        if unknown:
            raise ValueError(f"candidate op {name!r}: supports names {unknown[0]!r}, which is not a hyperparameter "
                             f"of {name} (it takes {sorted(opdef.hyper) or 'none'})")
    if dtypes is not None:
        dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
        bad = [d for d in dtypes if d not in ("float64", "float32", "float16", "bfloat16")]
        if bad or not dtypes:
            raise ValueError(f"candidate op {name!r}: dtypes {list(dtypes)!r}: choose among float64, float32, "
                             f"float16, bfloat16")
    if complex_step not in (None, True, False):
        raise TypeError(f"candidate op {name!r}: complex_step must be True, False or None")
    return OpOptions(supports, dtypes, complex_step)


def _portable_target(target: str) -> str:
    """A target that loads from any folder: a file path made absolute."""
    module_part, sep, attr = target.rpartition(":")
    if sep and (module_part.endswith(".py") or "/" in module_part):
        return f"{Path(module_part).resolve()}:{attr}"
    return target


class NumpyCandidateSource(ReferenceSource):
    """The reference executor with the candidate's NumPy ops swapped in, guarded."""

    def __init__(self, candidate: Candidate, compute_dtype=None):
        ops = {name: guard_numpy_op(name, f, b, get_op(name), candidate.time_limit, candidate.breaker)
               for name, (f, b) in candidate.numpy_ops.items()}
        super().__init__(ops, name=candidate.name, compute_dtype=compute_dtype)
        self.candidate = candidate
        self.provides = frozenset(candidate.numpy_ops)

    @property
    def spec(self) -> str:
        return "candidate:numpy" + (f":{self.compute_dtype}" if self.compute_dtype else "")

    def accepts(self, op, hyper, shapes) -> bool:
        return op in self.ops and not self.candidate.refuses_node(op, hyper, shapes)

    def _require(self, graph, tensors=None):
        super()._require(graph)
        dtype = _dtype_of_tensors(graph, tensors) if tensors is not None else "float64"
        why = self.candidate.refuses(graph, self.compute_dtype or dtype, self.provides)
        if why:
            raise Unsupported(why)

    def complex_claim(self, graph) -> bool | None:
        """True when every op of ``graph`` says its forward is complex-analytic, False
        when one says it is not, None when a candidate op says nothing (a probe decides)."""
        claims = []
        for node in graph.nodes:
            if node.op in self.provides:
                claims.append(self.candidate.options_of(node.op).complex_step)
            else:
                claims.append(get_op(node.op).supports_complex_step(node.hyper))
        if False in claims:
            return False
        return None if None in claims else True


def _dtype_of_tensors(graph, tensors):
    for leaf in graph.differentiable_leaves:
        return str(np.asarray(tensors[leaf.name]).dtype)
    return "float64"


class EngineSource:
    """A whole-model engine: ``loss_and_grads(graph, tensors) -> (loss, grads)``."""

    accepts = None

    def __init__(self, candidate: Candidate):
        self.candidate = candidate
        self.name = f"{candidate.name}-engine"
        self.fn = candidate.loss_and_grads
        # an engine runs every op itself: the built-in ones and its own declared ones
        own = BUILTIN_OPS | {o.name for o in candidate.new_ops}
        self.provides = frozenset(own) - candidate.exclude
        self.accepts = (lambda op, hyper, shapes: op in self.provides)

    spec = "candidate:engine"

    def complex_claim(self, graph):
        return None

    def _call(self, graph, tensors):
        why = self.candidate.refuses(graph, _dtype_of_tensors(graph, tensors), ())
        others = sorted(set(graph.ops) - self.provides - self.candidate.exclude)
        if why or others:
            raise Unsupported(why or f"{self.name} does not run {', '.join(others)}, declared by another candidate")
        return guarded_call(self.fn, "", "engine.loss_and_grads", self.candidate.time_limit, self.candidate.breaker,
                            graph, {k: _readonly(np.asarray(v)) for k, v in tensors.items()})

    def forward(self, graph, tensors):
        return self._call(graph, tensors)[0]

    def run(self, graph, tensors) -> SourceResult:
        t0 = time.perf_counter()
        result = self._call(graph, tensors)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CandidateError("engine: loss_and_grads must return (loss, grads)", phase="loss_and_grads")
        loss, grads = result
        if not np.isfinite(loss):
            raise CandidateError(f"engine: loss is {loss}", phase="loss_and_grads")
        dtype = _dtype_of_tensors(graph, tensors)
        checked = {}
        for leaf in graph.differentiable_leaves:
            if leaf.name not in grads:
                raise CandidateError(f"engine: no gradient for {leaf.name!r}", phase="loss_and_grads")
            checked[leaf.name] = _check_array("engine", f"gradient of {leaf.name!r}", grads[leaf.name],
                                              leaf.shape, None, "loss_and_grads")
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

    ops = {name: guard_torch_op(name, fn, get_op(name), candidate.time_limit, candidate.breaker)
           for name, fn in candidate.torch_ops.items()}
    return TorchSource(device, dtype, ops=ops, name=f"{candidate.name}-torch", candidate=candidate)


# ---------------------------------------------------------------- loading


class CandidateLoadError(LookupError):
    """A candidate target that does not load: what was wrong, in one line."""


def load_candidate(target: str) -> Candidate:
    """A Candidate from ``module:attr``, ``path/to/file.py:attr`` or the name of an
    entry point in the ``gradcheck.candidates`` group.  What is found there must
    be a ``Candidate``: nothing found by name is ever called.  Any way the target
    fails to load (no such file, a syntax error, an exception while importing,
    another kind of object) is a ``CandidateLoadError`` saying which."""
    if not isinstance(target, str) or not target.strip():
        raise CandidateLoadError("give a candidate as module:attr, path/to/file.py:attr or an entry point name")
    module_part, _, attr = target.rpartition(":") if ":" in target else ("", "", "")
    try:
        if module_part and (module_part.endswith(".py") or "/" in module_part):
            path = Path(module_part)
            if not path.is_file():
                raise CandidateLoadError(f"candidate file {module_part!r} does not exist")
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
                raise CandidateLoadError(f"no candidate {target!r}: not module:attr, not file.py:attr, and not an "
                                         f"entry point in {ENTRY_POINT_GROUP!r} (installed: {names or 'none'})")
            obj = found[0].load()
    except CandidateLoadError:
        raise
    except AttributeError as e:
        raise CandidateLoadError(f"candidate {target!r}: {e}") from None
    except SyntaxError as e:
        raise CandidateLoadError(f"candidate {target!r}: syntax error in {e.filename}, line {e.lineno}: "
                                 f"{e.msg}") from None
    except ImportError as e:
        raise CandidateLoadError(f"candidate {target!r}: cannot import: {e}") from None
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # noqa: BLE001 - the module raised while importing
        raise CandidateLoadError(f"candidate {target!r}: importing it raised {type(e).__name__}: {e}") from None
    if not isinstance(obj, Candidate):
        raise CandidateLoadError(f"candidate {target!r} is a {type(obj).__name__}, not a gradcheck.Candidate")
    obj.target = target
    return obj


def candidate_source(spec: str, candidate: Candidate):
    """The source of ``candidate`` that a spec names: ``candidate:numpy[:dtype]``,
    ``candidate:torch:<device>:<dtype>`` or ``candidate:engine``."""
    kind, _, rest = spec[len("candidate:"):].partition(":")
    if kind == "numpy":
        return NumpyCandidateSource(candidate, compute_dtype=rest or None)
    if kind == "engine":
        return EngineSource(candidate)
    if kind == "torch":
        device, _, dtype = rest.rpartition(":")
        return torch_candidate_source(candidate, device or "cpu", dtype or "float64")
    raise ValueError(f"cannot read candidate source spec {spec!r}: expected candidate:numpy[:DTYPE], "
                     f"candidate:torch:DEVICE:DTYPE or candidate:engine")
