"""Elementwise activations: y = f(x), and the VJP dx = g * f'(x).

Branches are decided on the real part of x (see Note [Complex step] in _util.py).
"""

import math

import numpy as np

from ._util import is_positive

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def relu_forward(x):
    pos = is_positive(x)
    return np.where(pos, x, 0), pos


def relu_backward(pos, g):
    return (np.where(pos, g, 0),)


def leaky_relu_forward(x, negative_slope=0.01):
    pos = is_positive(x)
    return np.where(pos, x, negative_slope * x), (pos, negative_slope)


def leaky_relu_backward(cache, g):
    pos, slope = cache
    return (np.where(pos, g, slope * g),)


def elu_forward(x, alpha=1.0):
    pos = is_positive(x)
    # exp only where it is used, so large positive x does not overflow.
    e = np.exp(np.where(pos, 0, x))
    return np.where(pos, x, alpha * (e - 1)), (pos, alpha, e)


def elu_backward(cache, g):
    pos, alpha, e = cache
    return (np.where(pos, g, g * alpha * e),)


def gelu_forward(x, approximate="none"):
    if approximate == "none":
        # 0.5 x (1 + erf(x / sqrt 2)); erf has no complex form in NumPy.
        cdf = (0.5 * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype)
        return x * cdf, (x, approximate, cdf, None)
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * x * (1 + t), (x, approximate, None, t)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_backward(cache, g):
    x, approximate, cdf, t = cache
    if approximate == "none":
        pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
        return (g * (cdf + x * pdf),)
    c = math.sqrt(2.0 / math.pi)
    du = c * (1 + 3 * 0.044715 * x**2)
    return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * du),)


def sigmoid_forward(x):
    y = _sigmoid(x)
    return y, y


def sigmoid_backward(y, g):
    return (g * y * (1 - y),)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(y, g):
    return (g * (1 - y**2),)


def softplus_forward(x, beta=1.0, threshold=20.0):
    # torch's softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold.
    linear = np.real(beta * x) > threshold
    z = np.where(linear, 0, beta * x)
    return np.where(linear, x, np.log1p(np.exp(z)) / beta), (linear, z)


def softplus_backward(cache, g):
    linear, z = cache
    return (np.where(linear, g, g * _sigmoid(z)),)


def silu_forward(x):
    s = _sigmoid(x)
    return x * s, (x, s)


def silu_backward(cache, g):
    x, s = cache
    return (g * s * (1 + x * (1 - s)),)


def hardtanh_forward(x, min_val=-1.0, max_val=1.0):
    # x clipped to [min_val, max_val]; the slope is 1 strictly inside, 0 outside.
    inside = (np.real(x) > min_val) & (np.real(x) < max_val)
    return np.where(inside, x, np.where(np.real(x) <= min_val, min_val, max_val)).astype(x.dtype), inside


def hardtanh_backward(inside, g):
    return (np.where(inside, g, 0),)
