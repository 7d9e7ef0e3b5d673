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


def relu6_forward(x):
    # min(max(x, 0), 6): slope 1 strictly inside (0, 6), 0 outside.
    inside = (np.real(x) > 0) & (np.real(x) < 6)
    return np.where(inside, x, np.where(np.real(x) <= 0, 0, 6)).astype(x.dtype), inside


def relu6_backward(inside, g):
    return (np.where(inside, g, 0),)


def hardsigmoid_forward(x):
    # relu6(x + 3) / 6: slope 1/6 strictly inside (-3, 3).
    inside = (np.real(x) > -3) & (np.real(x) < 3)
    y = np.where(inside, x / 6 + 0.5, np.where(np.real(x) <= -3, 0, 1)).astype(x.dtype)
    return y, inside


def hardsigmoid_backward(inside, g):
    return (np.where(inside, g / 6, 0),)


def hardswish_forward(x):
    # x * relu6(x + 3) / 6: 0 up to -3, x (x + 3) / 6 between, x from 3 on.  At the
    # kinks torch takes the outer pieces' slopes (0 at -3, 1 at 3), and so does this.
    lo, hi = np.real(x) > -3, np.real(x) >= 3
    y = np.where(hi, x, np.where(lo, x * (x + 3) / 6, 0)).astype(x.dtype)
    return y, (x, lo, hi)


def hardswish_backward(cache, g):
    x, lo, hi = cache
    # d/dx x (x + 3) / 6 = (2 x + 3) / 6 in the middle piece
    return (np.where(hi, g, np.where(lo, g * (2 * x + 3) / 6, 0)),)


def hardshrink_forward(x, lambd=0.5):
    # x where |x| > lambd, else 0: a jump at +-lambd, slope 1 outside, 0 inside.
    keep = (np.real(x) > lambd) | (np.real(x) < -lambd)
    return np.where(keep, x, 0).astype(x.dtype), keep


def hardshrink_backward(keep, g):
    return (np.where(keep, g, 0),)


def softshrink_forward(x, lambd=0.5):
    # x - lambd above lambd, x + lambd below -lambd, 0 between: slope 1 outside.
    above, below = np.real(x) > lambd, np.real(x) < -lambd
    y = np.where(above, x - lambd, np.where(below, x + lambd, 0)).astype(x.dtype)
    return y, above | below


def softshrink_backward(outside, g):
    return (np.where(outside, g, 0),)


def threshold_forward(x, threshold=0.0, value=0.0):
    # x where x > threshold, else the constant value: slope 1 above, 0 below.
    above = np.real(x) > threshold
    return np.where(above, x, value).astype(x.dtype), above


def threshold_backward(above, g):
    return (np.where(above, g, 0),)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu_forward(x):
    # scale * (x above 0, alpha (exp(x) - 1) below): slope scale above, scale alpha e^x below.
    pos = is_positive(x)
    e = np.exp(np.where(pos, 0, x))
    return SELU_SCALE * np.where(pos, x, SELU_ALPHA * (e - 1)), (pos, e)


def selu_backward(cache, g):
    pos, e = cache
    return (SELU_SCALE * np.where(pos, g, g * SELU_ALPHA * e),)


def celu_forward(x, alpha=1.0):
    # max(0, x) + min(0, alpha (exp(x / alpha) - 1)): slope 1 above 0, exp(x / alpha) below.
    pos = is_positive(x)
    e = np.exp(np.where(pos, 0, x / alpha))
    return np.where(pos, x, alpha * (e - 1)), (pos, e)


def celu_backward(cache, g):
    pos, e = cache
    return (np.where(pos, g, g * e),)


def _softplus(x):
    """log(1 + e^x) without overflow for large x (branch on the real part)."""
    pos = np.real(x) > 0
    return np.where(pos, x, 0) + np.log1p(np.exp(np.where(pos, -x, x)))


def mish_forward(x):
    # x tanh(softplus(x))
    t = np.tanh(_softplus(x))
    return x * t, (x, t)


def mish_backward(cache, g):
    x, t = cache
    # d/dx x tanh(sp(x)) = t + x (1 - t^2) sigmoid(x)
    return (g * (t + x * (1 - t**2) * _sigmoid(x)),)


def softsign_forward(x):
    # x / (1 + |x|), real input only (|x| is not analytic)
    d = 1 + np.abs(x)
    return x / d, d


def softsign_backward(d, g):
    return (g / d**2,)


def tanhshrink_forward(x):
    # x - tanh(x)
    t = np.tanh(x)
    return x - t, t


def tanhshrink_backward(t, g):
    return (g * t**2,)


def logsigmoid_forward(x):
    # log(sigmoid(x)) = -softplus(-x)
    return -_softplus(-x), x


def logsigmoid_backward(x, g):
    # d/dx log sigmoid(x) = 1 - sigmoid(x) = sigmoid(-x)
    return (g * _sigmoid(-x),)
