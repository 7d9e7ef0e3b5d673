"""Torch ops that declare more than first-order reverse mode (OpOptions order=2,
modes=("rev", "fwd")): a GELU written as an autograd.Function with a backward
in differentiable torch ops and a jvp, and two bugs that only those checks see.

    candidate:      right to second order and in forward mode
    saved_outside:  its backward uses Phi(x) saved from the forward, outside
                    autograd's graph: first order right, second order wrong
    wrong_jvp:      its jvp drops the x phi(x) term; backward right
"""

import math

import torch

from gradcheck import Candidate


def _phi(x):
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


class GELU(torch.autograd.Function):
    @staticmethod
    def forward(x, approximate="none"):
        return x * _Phi(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (_Phi(x) + x * _phi(x)), None

    @staticmethod
    def jvp(ctx, t, _approximate=None):
        (x,) = ctx.saved_tensors
        return t * (_Phi(x) + x * _phi(x))


class GELUSavedOutside(GELU):
    @staticmethod
    def forward(x, approximate="none"):
        return x * _Phi(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x = inputs[0]
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.slope = (_Phi(x) + x * _phi(x)).detach()  # outside autograd's graph

    @staticmethod
    def backward(ctx, g):
        return g * ctx.slope, None


class GELUWrongJvp(GELU):
    @staticmethod
    def jvp(ctx, t, _approximate=None):
        (x,) = ctx.saved_tensors
        return t * _Phi(x)  # bug: the x phi(x) term is missing


def _candidate(name, impl):
    c = Candidate(name)
    c.op("gelu", order=2, modes=("rev", "fwd"))(impl)
    return c


candidate = _candidate("higher-gelu", GELU)
saved_outside = _candidate("higher-gelu-saved-outside", GELUSavedOutside)
wrong_jvp = _candidate("higher-gelu-wrong-jvp", GELUWrongJvp)
