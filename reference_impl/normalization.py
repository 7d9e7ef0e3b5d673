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


def layer_norm_forward(x, weight=None, bias=None, eps=1e-5, normalized_shape=None):
    # Normalises over the trailing axes normalized_shape names (the weight's shape
    # when there is one), then scales by weight and shifts by bias where given
    # (nn.LayerNorm's elementwise_affine=False has neither, bias=False no bias).
    k = len(normalized_shape) if weight is None else weight.ndim
    axes = tuple(range(x.ndim - k, x.ndim))
    xhat, rstd = _normalize(x, axes, eps)
    y = xhat if weight is None else xhat * weight
    return (y if bias is None else y + bias), (xhat, rstd, weight, axes, bias is not None)


def layer_norm_backward(cache, g):
    xhat, rstd, weight, axes, has_bias = cache
    gx = _normalize_backward(g if weight is None else g * weight, xhat, rstd, axes)
    if weight is None:
        return (gx,)
    lead = tuple(range(g.ndim - len(axes)))
    return (gx, (g * xhat).sum(axis=lead)) + ((g.sum(axis=lead),) if has_bias else ())


def batch_norm_forward(x, weight, bias, eps=1e-5):
    # Training mode: statistics over every axis but the channel axis 1.
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    xhat, rstd = _normalize(x, axes, eps)
    w = weight.reshape(bshape)
    return xhat * w + bias.reshape(bshape), (xhat, rstd, w, axes)


def batch_norm_eval_forward(x, running_mean, running_var, weight, bias, eps=1e-5):
    # Eval mode: the running statistics, constants, instead of the batch's: an
    # affine map of x per channel, no sample reaching another.
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    rstd = 1.0 / np.sqrt(running_var.reshape(bshape) + eps)
    xhat = (x - running_mean.reshape(bshape)) * rstd
    w = weight.reshape(bshape)
    return xhat * w + bias.reshape(bshape), (xhat, rstd, w)


def batch_norm_eval_backward(cache, g):
    xhat, rstd, w = cache
    axes = (0,) + tuple(range(2, g.ndim))
    return g * w * rstd, None, None, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def batch_norm_backward(cache, g):
    xhat, rstd, w, axes = cache
    gx = _normalize_backward(g * w, xhat, rstd, axes)
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def rms_norm_forward(x, weight, eps=1e-6):
    # x / sqrt(mean(x^2) + eps) * weight over the trailing weight.ndim axes
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    rstd = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    xhat = x * rstd
    return xhat * weight, (xhat, rstd, weight, axes)


def rms_norm_backward(cache, g):
    xhat, rstd, weight, axes = cache
    lead = tuple(range(g.ndim - weight.ndim))
    gxhat = g * weight
    # d xhat / d x for xhat = x / rms(x): no mean to subtract, unlike layer norm
    gx = rstd * (gxhat - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
    return gx, (g * xhat).sum(axis=lead)


def group_norm_forward(x, weight, bias, num_groups=1, eps=1e-5):
    # (N, C, *) in num_groups groups of C / num_groups channels, each normalised over
    # its channels and every spatial position; then one scale and shift a channel
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, -1)
    xhat, rstd = _normalize(grouped, (2,), eps)
    xhat = xhat.reshape(x.shape)
    bshape = (1, c) + (1,) * (x.ndim - 2)
    return xhat * weight.reshape(bshape) + bias.reshape(bshape), (xhat, rstd, weight, num_groups)


def group_norm_backward(cache, g):
    xhat, rstd, weight, groups = cache
    n, c = xhat.shape[:2]
    bshape = (1, c) + (1,) * (xhat.ndim - 2)
    gxhat = (g * weight.reshape(bshape)).reshape(n, groups, -1)
    gx = _normalize_backward(gxhat, xhat.reshape(n, groups, -1), rstd, (2,)).reshape(xhat.shape)
    axes = (0,) + tuple(range(2, xhat.ndim))
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def instance_norm_forward(x, weight, bias, eps=1e-5):
    # each (sample, channel) plane normalised on its own: a group norm of C groups
    return group_norm_forward(x, weight, bias, x.shape[1], eps)


instance_norm_backward = group_norm_backward


def normalize_forward(x, dim=1, eps=1e-12):
    # x / max(||x||_2, eps) along dim (p = 2)
    norm = np.sqrt((x * x).sum(axis=dim, keepdims=True))
    big = np.real(norm) > eps
    denom = np.where(big, norm, eps)
    y = x / denom
    return y, (y, denom, big, dim)


def normalize_backward(cache, g):
    y, denom, big, dim = cache
    # d (x / ||x||) = (g - y <g, y>) / ||x||; below eps the divisor is the constant eps
    return (np.where(big, g - y * (g * y).sum(axis=dim, keepdims=True), g) / denom,)


def local_response_norm_forward(x, size, alpha=1e-4, beta=0.75, k=1.0):
    # y_c = x_c / (k + alpha / size * sum over the channel window W(c) of x^2)^beta,
    # W(c) = [c - size // 2, c + (size - 1) // 2] clipped to the channels (torch's zero padding)
    c = x.shape[1]
    lo, hi = size // 2, (size - 1) // 2
    sq = x * x
    s = np.zeros_like(sq)
    for off in range(-lo, hi + 1):  # s[c] += sq[c + off]
        a, b = max(0, -off), min(c, c - off)
        s[:, a:b] += sq[:, a + off:b + off]
    base = k + alpha / size * s
    y = x * base ** (-beta)
    return y, (x, base, size, alpha, beta, lo, hi)


def local_response_norm_backward(cache, g):
    x, base, size, alpha, beta, lo, hi = cache
    c = x.shape[1]
    t = g * x * base ** (-beta - 1)  # sum over the windows holding channel i of g_c x_c base_c^(-beta-1)
    back = np.zeros_like(t)
    for off in range(-lo, hi + 1):  # channel c reads c + off, so channel i is read by c = i - off
        a, b = max(0, -off), min(c, c - off)
        back[:, a + off:b + off] += t[:, a:b]
    return (g * base ** (-beta) - 2 * alpha * beta / size * x * back,)
