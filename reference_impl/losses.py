"""Losses: a scalar from predictions and targets.  ``reduction`` is 'mean' or 'sum';
'none' gives the per-element losses (graphs end in a scalar, but a stack of
perturbed copies is reduced copy by copy from them)."""

import numpy as np

from ._util import is_positive


def _reduce(per_element, reduction):
    if reduction == "mean":
        return per_element.mean(), per_element.size
    if reduction == "sum":
        return per_element.sum(), 1
    if reduction == "none":
        return per_element, 1
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_forward(pred, target, reduction="mean"):
    d = pred - target
    loss, count = _reduce(d**2, reduction)
    return loss, (d, count)


def mse_backward(cache, g):
    d, count = cache
    gp = g * 2 * d / count
    return gp, -gp


def smooth_l1_forward(pred, target, beta=1.0, reduction="mean"):
    d = pred - target
    pos = is_positive(d)
    absd = np.where(pos, d, -d)
    quad = np.real(absd) < beta
    loss, count = _reduce(np.where(quad, 0.5 * d**2 / beta, absd - 0.5 * beta), reduction)
    return loss, (d, pos, quad, beta, count)


def smooth_l1_backward(cache, g):
    d, pos, quad, beta, count = cache
    sign = np.where(pos, 1, -1).astype(d.dtype)  # keep d's dtype: float32 stays float32
    slope = np.where(quad, d / beta, sign)
    gp = g * slope / count
    return gp, -gp


def bce_with_logits_forward(logits, target, reduction="mean"):
    # log(1 + exp(x)) - x t, written per sign of x so exp never overflows.
    x = logits
    pos = is_positive(x)
    softplus = np.where(pos, x, 0) + np.log1p(np.exp(np.where(pos, -x, x)))
    loss, count = _reduce(softplus - x * target, reduction)
    return loss, (x, target, count)


def bce_with_logits_backward(cache, g):
    x, target, count = cache
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x))
    return g * (sig - target) / count, -g * x / count


def cross_entropy_forward(logits, target, reduction="mean"):
    # logits (N, C), integer target (N,): -log softmax(logits)[n, target[n]].
    z = logits - np.max(np.real(logits), axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(logits.shape[0])
    loss, count = _reduce(-logp[rows, target], reduction)
    return loss, (logp, target, count)


def cross_entropy_backward(cache, g):
    logp, target, count = cache
    grad = np.exp(logp)
    grad[np.arange(grad.shape[0]), target] -= 1
    return np.reshape(g, (-1, 1)) * grad / count, None  # g: a scalar, or one a row (reduction "none")


def weighted_sum_forward(x, weight):
    # sum(x * weight) with a fixed weight: reduces any output to a scalar whose
    # gradient with respect to x is exactly `weight` (a random cotangent).
    return (x * weight).sum(), (x.shape, weight)


def weighted_sum_backward(cache, g):
    _, weight = cache
    return g * weight, None
