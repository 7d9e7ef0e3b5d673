"""Correct layers written for float32 only, as GPU-minded code often is: they
compute and return float32 whatever they are given, and say so with
``dtypes=("float32",)``.  Their finite differences must run in float32 and be
judged by float32's error model; nothing may run them in float64."""

import numpy as np

from gradcheck import Candidate

candidate = Candidate("float32-layers")
F32 = np.float32


@candidate.op("linear", dtypes=("float32",))
class Linear:
    @staticmethod
    def forward(x, weight, bias=None):
        x, weight = x.astype(F32), weight.astype(F32)
        y = x @ weight.T
        if bias is not None:
            y = y + bias.astype(F32)
        return y, (x, weight, bias is not None)

    @staticmethod
    def backward(saved, g):
        x, weight, has_bias = saved
        g = g.astype(F32)
        g2 = g.reshape(-1, g.shape[-1])
        grads = (g @ weight, g2.T @ x.reshape(-1, x.shape[-1]))
        return grads + ((g2.sum(axis=0),) if has_bias else ())


@candidate.op("tanh", dtypes=("float32",))
class Tanh:
    @staticmethod
    def forward(x):
        y = np.tanh(x.astype(F32))
        return y, y

    @staticmethod
    def backward(y, g):
        return ((g * (1 - y * y)).astype(F32),)


@candidate.op("softmax", dtypes=("float32",))
class Softmax:
    @staticmethod
    def forward(x, dim=-1):
        x = x.astype(F32)
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        y = e / e.sum(axis=dim, keepdims=True)
        return y, (y, dim)

    @staticmethod
    def backward(saved, g):
        y, dim = saved
        return ((y * (g - (g * y).sum(axis=dim, keepdims=True))).astype(F32),)


@candidate.op("layer_norm", dtypes=("float32",))
class LayerNorm:
    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        x = x.astype(F32)
        axes = tuple(range(x.ndim - weight.ndim, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        xc = x - mu
        rstd = (1 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + F32(eps))).astype(F32)
        xhat = xc * rstd
        return xhat * weight + bias, (xhat, rstd, weight, axes)

    @staticmethod
    def backward(saved, g):
        xhat, rstd, weight, axes = saved
        lead = tuple(range(g.ndim - weight.ndim))
        gx = g * weight
        gx = rstd * (gx - gx.mean(axis=axes, keepdims=True) - xhat * (gx * xhat).mean(axis=axes, keepdims=True))
        return gx.astype(F32), (g * xhat).sum(axis=lead).astype(F32), g.sum(axis=lead).astype(F32)
