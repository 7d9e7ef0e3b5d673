"""A zoo of hostile candidates: each one's tanh (NumPy, or a torch
``autograd.Function``) does one of the things candidate code can do to a
harness.  ``tests/test_faults.py`` runs them through ``pytest suites/`` and
``gradcheck run``, with and without ``--isolate``: every fault must become
``error`` records naming the op, the phase and the fault, and the run must
finish with its summary and report.

Faults that Python cannot catch in the process that runs them (``os._exit``, a
segfault, a hang in C with SIGALRM blocked) need ``--isolate``: ``IN_PROCESS``
lists the ones that do not.
"""

import ctypes
import os
import signal
import sys
import time

import numpy as np

from gradcheck import Candidate
from reference_impl import activations

FAULTS = {}  # name -> (Candidate, words the error message must contain)


def numpy_fault(name, *expect, forward=None, backward=None):
    c = Candidate(f"fault-{name}")

    class Tanh:
        pass

    Tanh.forward = staticmethod(forward or activations.tanh_forward)
    Tanh.backward = staticmethod(backward or activations.tanh_backward)
    c.op("tanh")(Tanh)
    FAULTS[name] = (c, expect)
    return c


def _fwd(fn):
    def forward(x):
        y, cache = activations.tanh_forward(x)
        return fn(x, y), cache
    return forward


def _raise(*_):
    raise ZeroDivisionError("the candidate divided by zero")


def _python_hang(*_):
    while True:
        time.sleep(0.01)


def _c_hang(*_):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(3600)  # in C, with the time limit's signal blocked: only a parent can stop this


def _exit(*_):
    os._exit(3)


def _segfault(*_):
    ctypes.string_at(0)


def _huge(*_):
    return np.ones((10**6, 10**7))


def _interrupt(*_):
    raise KeyboardInterrupt


def _sys_exit(*_):
    sys.exit(4)


def _chatty_backward(y, g):
    sys.stdout.write("x" * 200_000 + "\n")
    sys.stdout.flush()
    return (g * (1 - y**2),)


_rng = np.random.default_rng()


numpy_fault("raise", "tanh.backward", "ZeroDivisionError", backward=_raise)
numpy_fault("nan", "tanh.backward", "non-finite", backward=lambda y, g: (np.full_like(g, np.nan),))
numpy_fault("inf", "tanh.forward", "non-finite", forward=_fwd(lambda x, y: y / 0.0))
numpy_fault("wrong-shape", "tanh.backward", "shape", backward=lambda y, g: (g.reshape(-1)[:1],))
numpy_fault("wrong-dtype", "tanh.backward", "dtype", backward=lambda y, g: ((g * (1 - y**2)).astype(np.float16),))
numpy_fault("wrong-count", "tanh.backward", "returned 2 gradient(s) for 1", backward=lambda y, g: (g, g))
numpy_fault("not-an-array", "tanh.backward", "not an array", backward=lambda y, g: ("gradient",))
numpy_fault("in-place-view", "tanh.forward", "wrote into its input 'x'",
            forward=lambda x: (np.tanh(x, out=x[...]), np.tanh(x)))
numpy_fault("in-place-base", "tanh.forward", "wrote into its input 'x'",
            forward=lambda x: ((x.base if x.base is not None else x).__setitem__(..., 0), activations.tanh_forward(x))[1])
numpy_fault("grad-out-written", "tanh.backward", "wrote into grad_out",
            backward=lambda y, g: (np.multiply(g, 1 - y**2, out=g),))
numpy_fault("saved-written", "tanh.backward", "wrote into its saved values",
            backward=lambda y, g: (np.subtract(1, np.square(y, out=y), out=y) * g,))
numpy_fault("aliasing", "tanh.backward", "shares memory", backward=lambda y, g: (y,))
numpy_fault("nondeterministic", "tanh.backward", "not repeatable",
            backward=lambda y, g: (g * (1 - y**2) + 1e-3 * _rng.standard_normal(g.shape),))
numpy_fault("nondeterministic-forward", "tanh", "nondeterministic",
            forward=_fwd(lambda x, y: y + 1e-3 * _rng.standard_normal(y.shape)))
numpy_fault("python-hang", "tanh.backward", "time limit", backward=_python_hang)
numpy_fault("huge-allocation", "tanh.backward", "MemoryError", backward=_huge)
numpy_fault("keyboard-interrupt", "tanh.backward", "KeyboardInterrupt", backward=_interrupt)
numpy_fault("system-exit", "tanh.backward", "sys.exit(4)", backward=_sys_exit)
numpy_fault("chatty", backward=_chatty_backward)  # correct, only loud: must pass quietly
numpy_fault("c-hang", "tanh.backward", "did not answer", backward=_c_hang)
numpy_fault("os-exit", "tanh.backward", "exit code 3", backward=_exit)
numpy_fault("segfault", "tanh.backward", "SIGSEGV", backward=_segfault)

NEED_ISOLATION = ("c-hang", "os-exit", "segfault")
IN_PROCESS = tuple(name for name in FAULTS if name not in NEED_ISOLATION)


def _torch_fault(name, backward, *expect):
    import torch

    class Tanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return backward(y, g)

    c = Candidate(f"fault-torch-{name}")
    c.op("tanh")(Tanh)
    FAULTS[f"torch-{name}"] = (c, expect)


_torch_fault("raise", _raise, "tanh.backward", "ZeroDivisionError")
_torch_fault("python-hang", _python_hang, "tanh.backward", "time limit")
_torch_fault("nan", lambda y, g: g * float("nan"), "non-finite")
_torch_fault("wrong-shape", lambda y, g: g.reshape(-1)[:1], "tanh.backward", "shape")
_torch_fault("keyboard-interrupt", _interrupt, "tanh.backward", "KeyboardInterrupt")
TORCH = tuple(name for name in FAULTS if name.startswith("torch-"))
IN_PROCESS = IN_PROCESS + TORCH


# each fault's candidate as a module attribute, so it loads as tests/faults.py:<name>
for _name, (_candidate, _) in FAULTS.items():
    globals()[_name.replace("-", "_")] = _candidate
