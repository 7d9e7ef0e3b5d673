"""Layers with realistic bugs that show only in a regime: a relu whose gradient at
exactly 0 is outside the subdifferential, a mul whose bug shows only when its
second operand is a broadcast parameter, a float32-only layer norm that drops a
term, and an SGD whose momentum forgets dampening.  Each must be caught and
named by its op."""

import numpy as np

from gradcheck import Candidate
from reference_impl import normalization, structure
from reference_impl._util import unbroadcast

candidate = Candidate("buggy-layers")


@candidate.op("relu")
class ReLUDoubleAtZero:
    @staticmethod
    def forward(x):
        return np.maximum(x, 0), x

    @staticmethod
    def backward(x, g):
        return (g * np.where(x > 0, 1.0, np.where(x == 0, 2.0, 0.0)),)  # 2 at exactly 0: no subgradient


@candidate.op("mul")
class MulBroadcastBug:
    forward = staticmethod(structure.mul_forward)

    @staticmethod
    def backward(saved, g):
        a, b = saved
        gb = g * a
        if gb.shape != b.shape:
            gb = unbroadcast(gb, b.shape) * 0.5  # halves the reduced gradient of a broadcast operand
        return unbroadcast(g * b, a.shape), gb


float32_bug = Candidate("float32-bug")


@float32_bug.op("layer_norm", dtypes=("float32",))
class LayerNormMissingTerm:
    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        y, saved = normalization.layer_norm_forward(x.astype(np.float32), weight, bias, eps)
        return y.astype(np.float32), saved

    @staticmethod
    def backward(saved, g):
        xhat, rstd, weight, axes, _ = saved
        lead = tuple(range(g.ndim - weight.ndim))
        gxhat = g * weight
        gx = rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True))  # forgets - xhat * mean(gxhat * xhat)
        return gx.astype(np.float32), (g * xhat).sum(axis=lead).astype(np.float32), g.sum(axis=lead).astype(np.float32)


@candidate.optimizer("sgd")
def sgd_no_dampening(params, grads, state, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                     nesterov=False, maximize=False):
    new_params, new_state = {}, {}
    for name, p in params.items():
        g = -grads[name] if maximize else grads[name]
        if weight_decay:
            g = g + weight_decay * p
        s = dict(state.get(name, {}))
        if momentum:
            buf = g if "momentum_buffer" not in s else momentum * s["momentum_buffer"] + g  # dampening forgotten
            s["momentum_buffer"] = buf
            g = g + momentum * buf if nesterov else buf
        new_params[name], new_state[name] = p - lr * g, s
    return new_params, new_state
