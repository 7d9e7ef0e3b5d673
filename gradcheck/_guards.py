"""Guards around candidate code: every call under a time limit and a circuit
breaker, with what it does wrong (raises, returns the wrong thing, writes into
what it was handed, aliases, is not repeatable) turned into a
``CandidateError`` naming the op, the phase and the argument."""

from __future__ import annotations

import signal
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import numpy as np

from reference_impl import Op

from .catalogue import OpDef

__all__ = ["CandidateError", "Breaker", "CALL_LISTENERS", "guarded_call", "time_limit", "guard_numpy_op",
           "guard_torch_op", "torch_callable", "is_subclass", "check_array", "readonly"]


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
TORCH_COPY_BUDGET = 1 << 20  # bytes of a torch op's inputs compared with a copy (Note [Writes into a torch op's inputs])
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


def check_array(op, what, value, shape, dtype, phase=""):
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
            self.given = [readonly(a) for a in arrays]
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


def readonly(a):
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
        out = check_array(name, "forward output", out, expected, dtype, "forward")
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
            checked.append(check_array(name, f"gradient of {arg_name!r}", g, np.shape(t), dtype, "backward"))
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


def is_subclass(obj, module, attr):
    mod = sys.modules.get(module)
    if mod is None:
        return False
    base = mod
    for part in attr.split("."):
        base = getattr(base, part)
    return isinstance(obj, type) and issubclass(obj, base)


def torch_callable(name: str, impl, opdef: OpDef, taken=None):
    """A function ``f(*tensors, **hyper)`` running the candidate's torch op;
    ``taken``: the hyperparameters its signature takes (None: all; Note [Settings
    a signature lacks] in candidates.py), the others never passed."""
    if is_subclass(impl, "torch", "autograd.Function"):
        names = [k for k in opdef.hyper_names if taken is None or k in taken]

        def call(*tensors, **hyper):
            full = opdef.full_hyper(hyper)
            return impl.apply(*tensors, *(full[k] for k in names))
        return call
    if is_subclass(impl, "torch", "nn.Module"):
        from torch.func import functional_call

        def call(*tensors, **hyper):
            args = opdef.bind(len(tensors))
            module = impl(**{k: v for k, v in hyper.items() if taken is None or k in taken})
            params = {a.name: t for a, t in zip(args, tensors) if a.role == "param"}
            rest = [t for a, t in zip(args, tensors) if a.role != "param"]
            return functional_call(module, params, tuple(rest))
        return call
    if callable(impl):
        if taken is None:
            return impl

        def call(*tensors, **hyper):
            return impl(*tensors, **{k: v for k, v in hyper.items() if k in taken})
        return call
    raise TypeError(f"candidate op {name!r}: expected a torch.autograd.Function or nn.Module subclass, "
                    f"a function, or a class with NumPy forward/backward; got {impl!r}")


def guard_torch_op(name: str, fn, opdef: OpDef, limit: float | None = None, breaker: Breaker | None = None):
    def fail(text):
        raise CandidateError(f"{name}: {text}" if not text.startswith(".") else f"{name}{text}", op=name,
                             phase="forward")

    def guarded(*tensors, **hyper):
        import torch

        # Note [Writes into a torch op's inputs]: every in-place torch op on a
        # tensor, or on a view or detach() of it, bumps its version counter, at no
        # cost; below the copy budget a copy compared afterwards catches the rest
        # (a write through .data or through .numpy()), which above it is not worth
        # a pass over the model's memory at every call
        versions = [t._version for t in tensors]
        copies = sum(t.numel() * t.element_size() for t in tensors) <= TORCH_COPY_BUDGET
        before = [t.detach().clone() for t in tensors] if copies else None
        out = guarded_call(fn, name, "forward", limit, breaker, *tensors, **hyper)
        if not isinstance(out, torch.Tensor):
            fail(f"forward returned {type(out).__name__}, not a tensor")
        for i, (arg_name, t) in enumerate(zip(_arg_names(opdef, len(tensors))[1], tensors)):
            if t._version != versions[i] or (copies and not torch.equal(t.detach(), before[i])):
                fail(f".forward wrote into its input {arg_name!r} in place")
        expected = tuple(opdef.shape(*(tuple(t.shape) for t in tensors), **opdef.full_hyper(hyper)))
        if tuple(out.shape) != expected:
            fail(f"forward output has shape {tuple(out.shape)}, expected {expected}")
        floats = [t for t in tensors if t.dtype.is_floating_point]
        if floats and out.dtype != floats[0].dtype:
            fail(f"forward output has dtype {out.dtype}, expected {floats[0].dtype}")
        # the sum is non-finite when an element is (or when finite ones overflow it:
        # then the exact test decides), at a twentieth of the exact test's cost
        if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            fail("forward output has non-finite values (NaN or Inf)")
        return out

    return guarded
