"""The layers.  Each is written as a user would: forward, saved values, backward."""

import math

import numpy as np
import torch
from hypothesis import strategies as st

from gradcheck import Candidate, OpDef, Sample, TensorArg

candidate = Candidate("my-layers")


# ---------------------------------------------------------------- a NumPy layer


@candidate.op("layer_norm")
class LayerNorm:
    """Layer norm over the trailing weight.ndim axes, affine."""

    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        axes = tuple(range(x.ndim - weight.ndim, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mu) * rstd
        return xhat * weight + bias, (xhat, rstd, weight, axes)

    @staticmethod
    def backward(saved, grad_out):
        xhat, rstd, weight, axes = saved
        lead = tuple(range(grad_out.ndim - weight.ndim))
        gxhat = grad_out * weight
        gx = rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                     - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
        return gx, (grad_out * xhat).sum(axis=lead), grad_out.sum(axis=lead)


# ---------------------------------------------------------------- a torch autograd.Function


@candidate.op("gelu")
class GELU(torch.autograd.Function):
    """GELU with a hand-written backward; ``approximate`` arrives positionally."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if approximate == "tanh":
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        if ctx.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = torch.tanh(c * (x + 0.044715 * x**3))
            d = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
        else:
            d = 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
        return grad_out * d, None  # one gradient per input of forward; None for approximate


# ---------------------------------------------------------------- a brand-new op


def _scale_norm_shape(x, weight, eps=1e-5):
    if tuple(weight) != (1,):
        from gradcheck.catalogue import ShapeError

        raise ShapeError(f"scale_norm: weight {weight} must be (1,): one gain for every feature")
    return tuple(x)


SCALE_NORM = OpDef(
    "scale_norm",
    (TensorArg("x"), TensorArg("weight", "param")),
    _scale_norm_shape,
    {"eps": 1e-5},
    family="normalization",
    samples=(Sample({"x": (4, 6), "weight": (1,)}), Sample({"x": (2, 3, 5), "weight": (1,)}, {"eps": 1e-3})),
    init={"weight": {"kind": "normal", "mean": 2.0, "std": 0.3}},
    hyper_strategy=lambda shape: st.sampled_from([{}, {"eps": 1e-3}]),
    arg_shapes=lambda shape, hyper: {"weight": (1,)},
    families=("mlp", "sequence"),
    doc="ScaleNorm: weight * x / sqrt(sum(x^2, -1) + eps), one learned gain",
)


class ScaleNorm:
    @staticmethod
    def forward(x, weight, eps=1e-5):
        rstd = 1.0 / np.sqrt((x**2).sum(axis=-1, keepdims=True) + eps)
        xhat = x * rstd
        return xhat * weight, (xhat, rstd, weight)

    @staticmethod
    def backward(saved, grad_out):
        xhat, rstd, weight = saved
        gxhat = grad_out * weight
        gx = rstd * (gxhat - xhat * (gxhat * xhat).sum(axis=-1, keepdims=True))
        return gx, np.atleast_1d((grad_out * xhat).sum())


def scale_norm_formula(x, weight, eps=1e-5):
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps) * weight


candidate.new_op(SCALE_NORM, numpy=ScaleNorm, formula=scale_norm_formula)


# ---------------------------------------------------------------- an optimizer


@candidate.optimizer("sgd")
def sgd(params, grads, state, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False):
    """SGD as torch.optim documents it; returns new parameters and state."""
    new_params, new_state = {}, {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay:
            g = g + weight_decay * p
        s = dict(state.get(name, {}))
        if momentum:
            buf = g if "momentum_buffer" not in s else momentum * s["momentum_buffer"] + (1 - dampening) * g
            s["momentum_buffer"] = buf
            g = g + momentum * buf if nesterov else buf
        new_params[name], new_state[name] = p - lr * g, s
    return new_params, new_state
