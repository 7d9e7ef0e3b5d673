"""Ops that combine or rearrange tensors: add, mul, concat, reshape, flatten, dropout."""

import numpy as np

from ._util import unbroadcast


def add_forward(a, b):
    return a + b, (a.shape, b.shape)


def add_backward(shapes, g):
    a_shape, b_shape = shapes
    return unbroadcast(g, a_shape), unbroadcast(g, b_shape)


def mul_forward(a, b):
    return a * b, (a, b)


def mul_backward(cache, g):
    a, b = cache
    return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def concat_forward(*xs, dim=1):
    sizes = [x.shape[dim] for x in xs]
    return np.concatenate(xs, axis=dim), (dim, sizes)


def concat_backward(cache, g):
    dim, sizes = cache
    return tuple(np.split(g, np.cumsum(sizes)[:-1], axis=dim))


def reshape_forward(x, shape):
    return x.reshape(tuple(shape)), x.shape


def reshape_backward(in_shape, g):
    return (g.reshape(in_shape),)


def flatten_forward(x, start_dim=1, end_dim=-1):
    nd = x.ndim
    s, e = start_dim % nd, end_dim % nd
    shape = x.shape[:s] + (int(np.prod(x.shape[s : e + 1])),) + x.shape[e + 1 :]
    return x.reshape(shape), x.shape


flatten_backward = reshape_backward


def dropout_forward(x, mask, p=0.5):
    # mask is 0/1, drawn outside; kept units are scaled by 1 / (1 - p) as in training.
    scale = 1.0 / (1.0 - p)
    return x * mask * scale, (mask, scale)


def dropout_backward(cache, g):
    mask, scale = cache
    return g * mask * scale, None
