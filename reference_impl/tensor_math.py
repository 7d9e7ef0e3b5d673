"""Tensor math used inside layers: sub, div, neg, abs, clamp, the reductions
sum, mean, logsumexp and var over a dim (with keepdim), cumsum, transpose and
permute; and the activations that take a dim or a weight: softmin, glu, prelu.

Branches are decided on the real part (Note [Complex step] in _util.py); at an
exact kink each takes the slope torch takes there.
"""

import numpy as np

from ._util import unbroadcast


def sub_forward(a, b):
    return a - b, (a.shape, b.shape)


def sub_backward(shapes, g):
    a_shape, b_shape = shapes
    return unbroadcast(g, a_shape), unbroadcast(-g, b_shape)


def div_forward(a, b):
    return a / b, (a, b)


def div_backward(cache, g):
    a, b = cache
    # d(a / b)/da = 1 / b, d(a / b)/db = -a / b^2
    return unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)


def neg_forward(x):
    return -x, None


def neg_backward(_, g):
    return (-g,)


def abs_forward(x):
    # |x|, real input only; the slope is sign(x), and 0 at 0 as torch takes it
    return np.abs(x), np.sign(x)


def abs_backward(sign, g):
    return (g * sign,)


def clamp_forward(x, min=-1.0, max=1.0):  # noqa: A002 - torch's names
    # x clipped to [min, max]; unlike hardtanh, torch's clamp passes the gradient
    # at the bounds themselves (slope 1 on the closed interval)
    r = np.real(x)
    inside = (r >= min) & (r <= max)
    return np.where(inside, x, np.where(r < min, min, max)).astype(x.dtype), inside


def clamp_backward(inside, g):
    return (np.where(inside, g, 0),)


def _expand(g, shape, dim, keepdim):
    """``g`` of a reduction over ``dim`` broadcast back to the input's ``shape``."""
    if not keepdim:
        g = np.expand_dims(g, dim)
    return np.broadcast_to(g, shape)


def sum_forward(x, dim=-1, keepdim=False):
    return x.sum(axis=dim, keepdims=keepdim), (x.shape, dim, keepdim)


def sum_backward(cache, g):
    shape, dim, keepdim = cache
    return (np.array(_expand(g, shape, dim, keepdim)),)


def mean_forward(x, dim=-1, keepdim=False):
    return x.mean(axis=dim, keepdims=keepdim), (x.shape, dim, keepdim)


def mean_backward(cache, g):
    shape, dim, keepdim = cache
    return (_expand(g, shape, dim, keepdim) / shape[dim],)


def logsumexp_forward(x, dim=-1, keepdim=False):
    m = np.max(np.real(x), axis=dim, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=dim, keepdims=True)
    y = m + np.log(s)
    p = e / s  # softmax: the gradient of logsumexp
    return (y if keepdim else np.squeeze(y, axis=dim)), (p, dim, keepdim)


def logsumexp_backward(cache, g):
    p, dim, keepdim = cache
    return (_expand(g, p.shape, dim, keepdim) * p,)


def var_forward(x, dim=-1, correction=1, keepdim=False):
    n = x.shape[dim]
    d = x - x.mean(axis=dim, keepdims=True)
    return (d * d).sum(axis=dim, keepdims=keepdim) / (n - correction), (d, dim, correction, keepdim)


def var_backward(cache, g):
    d, dim, correction, keepdim = cache
    n = d.shape[dim]
    # d/dx_i sum_j (x_j - mean)^2 = 2 (x_i - mean): the mean's own terms sum to 0
    return (_expand(g, d.shape, dim, keepdim) * 2 * d / (n - correction),)


def cumsum_forward(x, dim=-1):
    return np.cumsum(x, axis=dim), dim


def cumsum_backward(dim, g):
    # y_i = sum_{j <= i} x_j, so dx_j = sum_{i >= j} g_i: a cumsum from the end
    return (np.flip(np.cumsum(np.flip(g, axis=dim), axis=dim), axis=dim),)


def transpose_forward(x, dim0=0, dim1=1):
    return np.swapaxes(x, dim0, dim1), (dim0, dim1)


def transpose_backward(dims, g):
    return (np.swapaxes(g, *dims),)


def permute_forward(x, dims):
    return np.transpose(x, dims), tuple(dims)


def permute_backward(dims, g):
    # the inverse permutation: axis dims[i] of x went to axis i
    return (np.transpose(g, np.argsort(dims)),)


def _softmax(x, dim):
    e = np.exp(x - np.max(np.real(x), axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmin_forward(x, dim=-1):
    y = _softmax(-x, dim)
    return y, (y, dim)


def softmin_backward(cache, g):
    y, dim = cache
    # softmax's VJP at -x, times the chain rule's -1
    return (-y * (g - (g * y).sum(axis=dim, keepdims=True)),)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def glu_forward(x, dim=-1):
    # the first half gated by the sigmoid of the second, along dim
    a, b = np.split(x, 2, axis=dim)
    s = _sigmoid(b)
    return a * s, (a, s, dim)


def glu_backward(cache, g):
    a, s, dim = cache
    return (np.concatenate([g * s, g * a * s * (1 - s)], axis=dim),)


def prelu_forward(x, weight):
    # x above 0, weight * x below; weight has one value, or one a channel (axis 1)
    w = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight.reshape(())
    pos = np.real(x) > 0
    return np.where(pos, x, w * x), (x, w, pos, weight.shape)


def prelu_backward(cache, g):
    x, w, pos, w_shape = cache
    gx = np.where(pos, g, w * g)
    gw = np.where(pos, 0, g * x)
    if len(w_shape) and w_shape[0] > 1:  # one slope a channel: sum over everything else
        gw = gw.sum(axis=tuple(i for i in range(x.ndim) if i != 1))
    return gx, np.asarray(gw.sum() if not (len(w_shape) and w_shape[0] > 1) else gw).reshape(w_shape)
