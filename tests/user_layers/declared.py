"""Ops a user declares that the catalogue lacks: a fused gate with its formula
(correct), a loss of their own (correct, used as a head), and a torch op with
no formula (nothing independent to compare it with: those checks compare
nothing and must say so)."""

import numpy as np
import torch
from hypothesis import strategies as st

from gradcheck import Candidate, OpDef, Sample, TensorArg
from gradcheck.catalogue import ShapeError

candidate = Candidate("declared-ops", version="1.0")


def _same_last(x, w):
    if tuple(w) != (x[-1],):
        raise ShapeError(f"swish_gate: w {w} must be ({x[-1]},)")
    return tuple(x)


SWISH_GATE = OpDef("swish_gate", (TensorArg("x"), TensorArg("w", "param")), _same_last,
                   samples=(Sample({"x": (3, 4), "w": (4,)}),), arg_shapes=lambda shape, hyper: {"w": (shape[-1],)},
                   families=("mlp", "sequence"))


class SwishGate:
    """x * sigmoid(x) * w"""

    @staticmethod
    def forward(x, w):
        s = 1 / (1 + np.exp(-x))
        return x * s * w, (x, s, w)

    @staticmethod
    def backward(saved, g):
        x, s, w = saved
        d = s * (1 + x * (1 - s))
        lead = tuple(range(g.ndim - 1))
        return g * d * w, (g * x * s).sum(axis=lead)


candidate.new_op(SWISH_GATE, numpy=SwishGate, formula=lambda x, w: x * torch.sigmoid(x) * w)


def _pairwise(p, t, delta=1.0):
    if tuple(p) != tuple(t):
        raise ShapeError(f"log_cosh: shapes {p} and {t} differ")
    return ()


LOG_COSH = OpDef("log_cosh", (TensorArg("pred"), TensorArg("target")), _pairwise, {"delta": 1.0}, family="loss",
                 samples=(Sample({"pred": (4, 3), "target": (4, 3)}),),
                 hyper_strategy=lambda shape: st.sampled_from([{}, {"delta": 2.0}]))


class LogCosh:
    @staticmethod
    def forward(pred, target, delta=1.0):
        d = (pred - target) / delta
        return np.asarray(np.mean(np.logaddexp(d, -d) - np.log(2.0)) * delta, dtype=pred.dtype), (d, pred.size)

    @staticmethod
    def backward(saved, g):
        d, n = saved
        gp = g * np.tanh(d) / n
        return gp, -gp


candidate.new_op(LOG_COSH, numpy=LogCosh,
                 formula=lambda p, t, delta: torch.mean(torch.log(torch.cosh((p - t) / delta))) * delta)


def _cube_shape(x):
    return tuple(x)


CUBE = OpDef("cube", (TensorArg("x"),), _cube_shape, family="activation", samples=(Sample({"x": (5,)}),),
             families=("mlp",))


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


no_formula = Candidate("no-formula")
no_formula.new_op(CUBE, torch=Cube)


buggy = Candidate("declared-bug")


class SwishGateBuggy(SwishGate):
    @staticmethod
    def backward(saved, g):
        x, s, w = saved
        lead = tuple(range(g.ndim - 1))
        return g * s * w, (g * x * s).sum(axis=lead)  # forgets the x (1 - s) term


buggy.new_op(SWISH_GATE, numpy=SwishGateBuggy, formula=lambda x, w: x * torch.sigmoid(x) * w)
