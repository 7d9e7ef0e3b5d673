"""Softmax, log-softmax, layer norm and batch norm (training mode)."""

import numpy as np


def _shifted(x, dim):
    # Subtracting the (real) max changes nothing mathematically and keeps exp finite.
    return x - np.max(np.real(x), axis=dim, keepdims=True)


def softmax_forward(x, dim=-1):
    e = np.exp(_shifted(x, dim))
    y = e / e.sum(axis=dim, keepdims=True)
    return y, (y, dim)


def softmax_backward(cache, g):
    y, dim = cache
    # J = diag(y) - y y^T, so J^T g = y * (g - <g, y>).
    return (y * (g - (g * y).sum(axis=dim, keepdims=True)),)


def log_softmax_forward(x, dim=-1):
    z = _shifted(x, dim)
    y = z - np.log(np.exp(z).sum(axis=dim, keepdims=True))
    return y, (y, dim)


def log_softmax_backward(cache, g):
    y, dim = cache
    return (g - np.exp(y) * g.sum(axis=dim, keepdims=True),)


def _normalize(x, axes, eps):
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(axis=axes, keepdims=True)  # biased, as torch normalises
    rstd = 1.0 / np.sqrt(var + eps)
    return xc * rstd, rstd


def _normalize_backward(gxhat, xhat, rstd, axes):
    # d xhat / d x for xhat = (x - mean) / sqrt(var + eps) over `axes`:
    # dx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)).
    return rstd * (
        gxhat
        - gxhat.mean(axis=axes, keepdims=True)
        - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)
    )


def layer_norm_forward(x, weight, bias, eps=1e-5):
    # Normalises over the trailing weight.ndim axes (torch's normalized_shape = weight.shape).
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    xhat, rstd = _normalize(x, axes, eps)
    return xhat * weight + bias, (xhat, rstd, weight, axes)


def layer_norm_backward(cache, g):
    xhat, rstd, weight, axes = cache
    lead = tuple(range(g.ndim - weight.ndim))
    gx = _normalize_backward(g * weight, xhat, rstd, axes)
    return gx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


def batch_norm_forward(x, weight, bias, eps=1e-5):
    # Training mode: statistics over every axis but the channel axis 1.
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    xhat, rstd = _normalize(x, axes, eps)
    w = weight.reshape(bshape)
    return xhat * w + bias.reshape(bshape), (xhat, rstd, w, axes)


def batch_norm_backward(cache, g):
    xhat, rstd, w, axes = cache
    gx = _normalize_backward(g * w, xhat, rstd, axes)
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)
