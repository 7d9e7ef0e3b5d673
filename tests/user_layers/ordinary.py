"""Correct layers for every catalogue op, written the way people write them outside
this project: NumPy forward/backward pairs with no thought of complex input.

They cast with ``astype``, use ``np.abs``, ``np.logaddexp``, ``math.erf``,
``x.var()`` and real scratch buffers, im2col instead of taps, and loops where
loops are easy.  Every one is right for real input; none claims complex
support.  The harness must pass all of them (tests/test_user_layers.py).
"""

import math

import numpy as np

from gradcheck import Candidate

candidate = Candidate("ordinary-layers")
op = candidate.op


def _unbroadcast(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---------------------------------------------------------------- dense layers


@op("linear")
class Linear:
    @staticmethod
    def forward(x, weight, bias=None):
        y = np.einsum("...i,oi->...o", x, weight)
        if bias is not None:
            y = y + bias
        return y.astype(x.dtype), (x, weight, bias is not None)

    @staticmethod
    def backward(saved, g):
        x, weight, has_bias = saved
        gx = np.einsum("...o,oi->...i", g, weight)
        gw = g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if has_bias:
            return gx, gw, g.reshape(-1, g.shape[-1]).sum(axis=0)
        return gx, gw


@op("matmul")
class MatMul:
    @staticmethod
    def forward(a, b):
        return np.matmul(a, b), (a, b)

    @staticmethod
    def backward(saved, g):
        a, b = saved
        if a.ndim == 1 and b.ndim == 1:  # a dot product
            return g * b, g * a
        if b.ndim == 1:  # (..., n, k) @ (k,): g is (..., n)
            return g[..., None] * b, (g[..., None] * a).reshape(-1, b.size).sum(axis=0)
        if a.ndim == 1:  # (k,) @ (..., k, m): g is (..., m)
            ga = (g[..., None, :] * b).sum(axis=-1).reshape(-1, a.size).sum(axis=0)
            return ga, _unbroadcast(a[:, None] * g[..., None, :], b.shape)
        ga = np.matmul(g, np.swapaxes(b, -1, -2))
        gb = np.matmul(np.swapaxes(a, -1, -2), g)
        return _unbroadcast(ga, a.shape), _unbroadcast(gb, b.shape)


def _im2col(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """(N, C, Hp, Wp) -> (N, C, kh, kw, oh, ow) windows, copied."""
    n, c = xp.shape[:2]
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
    return cols


@op("conv2d")
class Conv2d:
    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
        n, c, h, w = x.shape
        o, cg, kh, kw = weight.shape
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
        xp[:, :, ph:ph + h, pw:pw + w] = x
        cols = _im2col(xp, kh, kw, sh, sw, dh, dw, oh, ow).reshape(n, groups, cg, kh, kw, oh, ow)
        wg = weight.reshape(groups, o // groups, cg, kh, kw)
        y = np.einsum("ngcijhw,gocij->ngohw", cols, wg).reshape(n, o, oh, ow)
        if bias is not None:
            y = y + bias[None, :, None, None]
        geometry = (x.shape, (sh, sw), (ph, pw), (dh, dw), groups)
        return y, (cols, weight, bias is not None, geometry)

    @staticmethod
    def backward(saved, g):
        cols, weight, has_bias, (x_shape, (sh, sw), (ph, pw), (dh, dw), groups) = saved
        n, c, h, w = x_shape
        o, cg, kh, kw = weight.shape
        oh, ow = g.shape[2:]
        gg = g.reshape(n, groups, o // groups, oh, ow)
        wg = weight.reshape(groups, o // groups, cg, kh, kw)
        gw = np.einsum("ngohw,ngcijhw->gocij", gg, cols).reshape(weight.shape)
        gcols = np.einsum("ngohw,gocij->ngcijhw", gg, wg).reshape(n, c, kh, kw, oh, ow)
        gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=g.dtype)
        for i in range(kh):
            for j in range(kw):
                gxp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += gcols[:, :, i, j]
        gx = gxp[:, :, ph:ph + h, pw:pw + w]
        if has_bias:
            return gx, gw, g.sum(axis=(0, 2, 3))
        return gx, gw


@op("conv1d")
class Conv1d:
    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        y, saved = Conv2d.forward(x[:, :, None, :], weight[:, :, None, :], bias, (1, stride), (0, padding),
                                  (1, dilation), groups)
        return y[:, :, 0, :], saved

    @staticmethod
    def backward(saved, g):
        grads = Conv2d.backward(saved, g[:, :, None, :])
        return (grads[0][:, :, 0, :], grads[1][:, :, 0, :]) + tuple(grads[2:])


def _windows(x, kernel_size, stride, padding, fill, dilation=1, ceil_mode=False):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    sizes = []
    for size, k, s, p, d in ((h, kh, sh, ph, dh), (w, kw, sw, pw, dw)):
        span = size + 2 * p - d * (k - 1) - 1
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:  # a last window starting in the right padding is dropped
            o -= 1
        sizes.append(o)
    oh, ow = sizes
    # room for the last window, which with ceil_mode may hang past the padding
    hp, wp = max(h + 2 * ph, (oh - 1) * sh + dh * (kh - 1) + 1), max(w + 2 * pw, (ow - 1) * sw + dw * (kw - 1) + 1)
    xp = np.full((n, c, hp, wp), fill, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    cols = _im2col(xp, kh, kw, sh, sw, dh, dw, oh, ow)  # (N, C, kh, kw, oh, ow)
    return cols, (x.shape, xp.shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow), (dh, dw))


def _scatter(gcols, geometry):
    x_shape, xp_shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow), (dh, dw) = geometry
    gxp = np.zeros(xp_shape, dtype=gcols.dtype)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += gcols[:, :, i, j]
    return gxp[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


@op("max_pool2d")
class MaxPool2d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        cols, geometry = _windows(x, kernel_size, stride, padding, -np.inf, dilation, ceil_mode)
        n, c, kh, kw, oh, ow = cols.shape
        flat = cols.reshape(n, c, kh * kw, oh, ow)
        winner = flat.argmax(axis=2)  # the first maximum of each window
        return np.take_along_axis(flat, winner[:, :, None], axis=2)[:, :, 0], (winner, geometry)

    @staticmethod
    def backward(saved, g):
        winner, geometry = saved
        kh, kw = geometry[2]
        onehot = (np.arange(kh * kw)[None, None, :, None, None] == winner[:, :, None]).astype(g.dtype)
        gcols = (onehot * g[:, :, None]).reshape(g.shape[:2] + (kh, kw) + g.shape[2:])
        return (_scatter(gcols, geometry),)


@op("avg_pool2d")
class AvgPool2d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True, divisor_override=None):
        cols, geometry = _windows(x, kernel_size, stride, padding, 0.0)
        if divisor_override:
            count = divisor_override
        elif count_include_pad:
            count = int(np.prod(geometry[2]))
        else:  # the windows of a ones image padded with zeros count the real elements
            count = _windows(np.ones((1, 1) + x.shape[2:], x.dtype), kernel_size, stride, padding, 0.0)[0].sum(axis=(2, 3))
        return (cols.sum(axis=(2, 3)) / count).astype(x.dtype), (geometry, count)

    @staticmethod
    def backward(saved, g):
        geometry, count = saved
        kh, kw = geometry[2]
        gcols = np.broadcast_to((g / count)[:, :, None, None], g.shape[:2] + (kh, kw) + g.shape[2:])
        return (_scatter(gcols, geometry),)


@op("global_avg_pool")
class GlobalAvgPool:
    @staticmethod
    def forward(x):
        return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=-1), x.shape

    @staticmethod
    def backward(shape, g):
        count = int(np.prod(shape[2:]))
        return (np.repeat(g[:, :, None] / count, count, axis=2).reshape(shape),)


# ---------------------------------------------------------------- activations


@op("relu")
class ReLU:
    @staticmethod
    def forward(x):
        return np.maximum(x, 0).astype(x.dtype), x

    @staticmethod
    def backward(x, g):
        return (g * (x > 0),)


@op("leaky_relu")
class LeakyReLU:
    @staticmethod
    def forward(x, negative_slope=0.01):
        slope = np.where(x > 0, 1.0, negative_slope).astype(x.dtype)
        return x * slope, slope

    @staticmethod
    def backward(slope, g):
        return (g * slope,)


@op("elu")
class ELU:
    @staticmethod
    def forward(x, alpha=1.0):
        neg = alpha * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, x, neg).astype(x.dtype), (x, neg, alpha)

    @staticmethod
    def backward(saved, g):
        x, neg, alpha = saved
        return (g * np.where(x > 0, 1.0, neg + alpha).astype(g.dtype),)


_erf = np.vectorize(math.erf)


@op("gelu")
class GELU:
    @staticmethod
    def forward(x, approximate="none"):
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            t = np.tanh(k * (x + 0.044715 * x ** 3))
            return (0.5 * x * (1 + t)).astype(x.dtype), (x, t, approximate)
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
        return (x * cdf).astype(x.dtype), (x, cdf, approximate)

    @staticmethod
    def backward(saved, g):
        x, aux, approximate = saved
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            d = 0.5 * (1 + aux) + 0.5 * x * (1 - aux ** 2) * k * (1 + 3 * 0.044715 * x ** 2)
        else:
            d = aux + x * np.exp(-0.5 * x ** 2) / math.sqrt(2 * math.pi)
        return ((g * d).astype(g.dtype),)


@op("sigmoid")
class Sigmoid:
    @staticmethod
    def forward(x):
        y = np.exp(-np.logaddexp(0, -x))
        return y, y

    @staticmethod
    def backward(y, g):
        return (g * y * (1 - y),)


@op("tanh")
class Tanh:
    @staticmethod
    def forward(x):
        y = np.tanh(x).astype(x.dtype)
        return y, y

    @staticmethod
    def backward(y, g):
        return (g * (1 - y * y),)


@op("softplus")
class Softplus:
    @staticmethod
    def forward(x, beta=1.0, threshold=20.0):
        linear = beta * x > threshold
        y = np.where(linear, x, np.logaddexp(0, beta * x) / beta)
        return y.astype(x.dtype), (x, beta, linear)

    @staticmethod
    def backward(saved, g):
        x, beta, linear = saved
        s = np.exp(-np.logaddexp(0, -beta * x))
        return (np.where(linear, g, g * s).astype(g.dtype),)


@op("silu")
class SiLU:
    @staticmethod
    def forward(x):
        s = np.exp(-np.logaddexp(0, -x))
        return x * s, (x, s)

    @staticmethod
    def backward(saved, g):
        x, s = saved
        return (g * (s + x * s * (1 - s)),)


# ---------------------------------------------------------------- normalisation


@op("softmax")
class Softmax:
    @staticmethod
    def forward(x, dim=-1):
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        y = e / e.sum(axis=dim, keepdims=True)
        return y, (y, dim)

    @staticmethod
    def backward(saved, g):
        y, dim = saved
        dot = np.sum(g * y, axis=dim, keepdims=True)
        return (y * (g - dot),)


@op("log_softmax")
class LogSoftmax:
    @staticmethod
    def forward(x, dim=-1):
        m = x.max(axis=dim, keepdims=True)
        lse = m + np.log(np.sum(np.exp(x - m), axis=dim, keepdims=True))
        return x - lse, (x - lse, dim)

    @staticmethod
    def backward(saved, g):
        y, dim = saved
        return (g - np.exp(y) * g.sum(axis=dim, keepdims=True),)


@op("layer_norm")
class LayerNorm:
    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        axes = tuple(range(x.ndim - weight.ndim, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + eps)
        xhat = (x - mu) * inv
        return xhat * weight + bias, (xhat, inv, weight, axes)

    @staticmethod
    def backward(saved, g):
        xhat, inv, weight, axes = saved
        n = math.prod(xhat.shape[a] for a in axes)
        lead = tuple(range(xhat.ndim - weight.ndim))
        gxhat = g * weight
        gx = inv / n * (n * gxhat - gxhat.sum(axis=axes, keepdims=True)
                        - xhat * (gxhat * xhat).sum(axis=axes, keepdims=True))
        return gx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


@op("batch_norm")
class BatchNorm:
    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mu = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + eps)
        xhat = (x - mu) * inv
        return xhat * weight.reshape(shape) + bias.reshape(shape), (xhat, inv, weight.reshape(shape), axes)

    @staticmethod
    def backward(saved, g):
        xhat, inv, w, axes = saved
        n = g.size // g.shape[1]
        gxhat = g * w
        gx = inv / n * (n * gxhat - gxhat.sum(axis=axes, keepdims=True)
                        - xhat * (gxhat * xhat).sum(axis=axes, keepdims=True))
        return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


@op("batch_norm_eval")
class BatchNormEval:
    """Folded into a scale and a shift per channel, as inference code does."""

    @staticmethod
    def forward(x, running_mean, running_var, weight, bias, eps=1e-5):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = 1 / np.sqrt(running_var + eps)
        scale = weight * inv
        shift = bias - running_mean * scale
        return x * scale.reshape(shape) + shift.reshape(shape), (x, running_mean, scale, inv)

    @staticmethod
    def backward(saved, g):
        x, mean, scale, inv = saved
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        gx = g * scale.reshape(shape)
        gscale = (g * x).sum(axis=axes) - g.sum(axis=axes) * mean  # through x * scale and -mean * scale
        return gx, None, None, gscale * inv, g.sum(axis=axes)


# ---------------------------------------------------------------- structure


@op("add")
class Add:
    @staticmethod
    def forward(a, b):
        return a + b, (a.shape, b.shape)

    @staticmethod
    def backward(shapes, g):
        # fresh arrays: a gradient passed through for both inputs would share memory
        return _unbroadcast(g, shapes[0]).copy(), _unbroadcast(g, shapes[1]).copy()


@op("mul")
class Mul:
    @staticmethod
    def forward(a, b):
        return a * b, (a, b)

    @staticmethod
    def backward(saved, g):
        a, b = saved
        return _unbroadcast(g * b, a.shape), _unbroadcast(g * a, b.shape)


@op("concat")
class Concat:
    @staticmethod
    def forward(*xs, dim=1):
        return np.concatenate(xs, axis=dim), (dim, [x.shape[dim] for x in xs])

    @staticmethod
    def backward(saved, g):
        dim, sizes = saved
        bounds = np.cumsum([0] + sizes)
        index = [slice(None)] * g.ndim
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index[dim] = slice(lo, hi)
            out.append(g[tuple(index)].copy())
        return tuple(out)


@op("reshape")
class Reshape:
    @staticmethod
    def forward(x, shape):
        return np.reshape(x, shape), x.shape

    @staticmethod
    def backward(shape, g):
        return (np.reshape(g, shape),)


@op("flatten")
class Flatten:
    @staticmethod
    def forward(x, start_dim=1, end_dim=-1):
        s, e = start_dim % x.ndim, end_dim % x.ndim
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:]), x.shape

    @staticmethod
    def backward(shape, g):
        return (g.reshape(shape),)


@op("dropout")
class Dropout:
    @staticmethod
    def forward(x, mask, p=0.5):
        keep = mask.astype(bool)
        return np.where(keep, x / (1 - p), 0).astype(x.dtype), (keep, p)

    @staticmethod
    def backward(saved, g):
        keep, p = saved
        return np.where(keep, g / (1 - p), 0).astype(g.dtype), None


@op("embedding")
class Embedding:
    @staticmethod
    def forward(ids, table, padding_idx=None):
        return table[ids], (ids, table.shape, padding_idx)

    @staticmethod
    def backward(saved, g):
        ids, shape, pad = saved
        gt = np.zeros(shape, dtype=g.dtype)
        flat = g.reshape(-1, shape[1])
        for row, i in zip(flat, ids.reshape(-1)):
            if pad is None or i != pad % shape[0]:
                gt[i] += row
        return None, gt


@op("attention")
class Attention:
    @staticmethod
    def forward(q, k, v, attn_mask=None, causal=False, scale=None):
        scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        s = np.einsum("...le,...se->...ls", q, k) * scale + (0 if attn_mask is None else attn_mask)
        if causal:
            s = np.where(np.tri(s.shape[-2], s.shape[-1], dtype=bool), s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("...ls,...sd->...ld", p, v), (q, k, v, p, scale, attn_mask is not None)

    @staticmethod
    def backward(saved, g):
        q, k, v, p, scale, masked = saved
        gv = np.einsum("...ls,...ld->...sd", p, g)
        gp = np.einsum("...ld,...sd->...ls", g, v)
        gs = p * (gp - np.sum(gp * p, axis=-1, keepdims=True))
        grads = np.einsum("...ls,...se->...le", gs, k) * scale, np.einsum("...ls,...le->...se", gs, q) * scale, gv
        return grads + (None,) if masked else grads


# ---------------------------------------------------------------- losses


@op("mse")
class MSE:
    @staticmethod
    def forward(pred, target, reduction="mean"):
        d = pred - target
        n = d.size if reduction == "mean" else 1
        return np.asarray(np.sum(d * d) / n, dtype=pred.dtype), (d, n)

    @staticmethod
    def backward(saved, g):
        d, n = saved
        gp = (2 * g / n) * d
        return gp, -gp


@op("smooth_l1")
class SmoothL1:
    @staticmethod
    def forward(pred, target, beta=1.0, reduction="mean"):
        d = pred - target
        a = np.abs(d)
        per = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)
        n = d.size if reduction == "mean" else 1
        return np.asarray(per.sum() / n, dtype=pred.dtype), (d, beta, n)

    @staticmethod
    def backward(saved, g):
        d, beta, n = saved
        slope = np.where(np.abs(d) < beta, d / beta, np.sign(d)).astype(d.dtype)
        gp = g * slope / n
        return gp, -gp


@op("bce_with_logits")
class BCEWithLogits:
    @staticmethod
    def forward(logits, target, reduction="mean"):
        per = np.logaddexp(0, logits) - logits * target
        n = per.size if reduction == "mean" else 1
        return np.asarray(per.sum() / n, dtype=logits.dtype), (logits, target, n)

    @staticmethod
    def backward(saved, g):
        x, t, n = saved
        s = np.exp(-np.logaddexp(0, -x))
        return g * (s - t) / n, -g * x / n


@op("cross_entropy")
class CrossEntropy:
    @staticmethod
    def forward(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        """As a dense soft target q per row, each class weighed by w: the loss is
        -sum(w * q * logp) over kept rows, by the kept rows' w[target] for a mean."""
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        keep = (target != ignore_index)[:, None]
        c = logp.shape[1]
        w = np.ones(c, dtype=logp.dtype) if weight is None else weight.astype(logp.dtype)
        t = np.where(keep[:, 0], target, 0)
        onehot = np.eye(c, dtype=logp.dtype)[t]
        q = ((1 - label_smoothing) * onehot * w[t][:, None] + label_smoothing / c * w) * keep
        n = float((w[t] * keep[:, 0]).sum()) if reduction == "mean" else 1.0
        return np.asarray(-(q * logp).sum() / n, dtype=logits.dtype), (logp, q, n, weight is not None)

    @staticmethod
    def backward(saved, g):
        logp, q, n, weighted = saved
        # d/dlogits of -sum(q logp) = q.sum(1) softmax - q
        gx = g * (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) / n
        return (gx, None, None) if weighted else (gx, None)


@op("weighted_sum")
class WeightedSum:
    @staticmethod
    def forward(x, weight):
        return np.asarray(np.sum(x * weight), dtype=x.dtype), weight

    @staticmethod
    def backward(weight, g):
        return g * weight, None


@op("hardtanh")
class Hardtanh:
    @staticmethod
    def forward(x, min_val=-1.0, max_val=1.0):
        return np.clip(x, min_val, max_val), (x, min_val, max_val)

    @staticmethod
    def backward(saved, g):
        x, lo, hi = saved
        return (g * ((x > lo) & (x < hi)),)


# ---------------------------------------------------------------- piecewise and smooth activations


@op("relu6")
class ReLU6:
    @staticmethod
    def forward(x):
        return np.minimum(np.maximum(x, 0), 6), x

    @staticmethod
    def backward(x, g):
        return (g * ((x > 0) & (x < 6)).astype(g.dtype),)


@op("hardsigmoid")
class Hardsigmoid:
    @staticmethod
    def forward(x):
        return np.clip(x / 6 + 0.5, 0, 1), x

    @staticmethod
    def backward(x, g):
        return (np.where(np.abs(x) < 3, g / 6, 0.0).astype(g.dtype),)


@op("hardswish")
class Hardswish:
    @staticmethod
    def forward(x):
        return x * np.clip(x + 3, 0, 6) / 6, x

    @staticmethod
    def backward(x, g):
        slope = np.select([x <= -3, x >= 3], [0.0, 1.0], default=x / 3 + 0.5)
        return ((g * slope).astype(g.dtype),)


@op("hardshrink")
class Hardshrink:
    @staticmethod
    def forward(x, lambd=0.5):
        mask = np.abs(x) > lambd
        return x * mask, mask

    @staticmethod
    def backward(mask, g):
        return (g * mask,)


@op("softshrink")
class Softshrink:
    @staticmethod
    def forward(x, lambd=0.5):
        return np.sign(x) * np.maximum(np.abs(x) - lambd, 0), (x, lambd)

    @staticmethod
    def backward(saved, g):
        x, lambd = saved
        return (g * (np.abs(x) > lambd),)


@op("threshold")
class Threshold:
    @staticmethod
    def forward(x, threshold=0.0, value=0.0):
        out = x.copy()
        out[x <= threshold] = value
        return out, x > threshold

    @staticmethod
    def backward(above, g):
        return (g * above,)


@op("selu")
class SELU:
    ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

    @staticmethod
    def forward(x):
        neg = SELU.SCALE * SELU.ALPHA * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, SELU.SCALE * x, neg).astype(x.dtype), x

    @staticmethod
    def backward(x, g):
        slope = np.where(x > 0, SELU.SCALE, SELU.SCALE * SELU.ALPHA * np.exp(np.minimum(x, 0)))
        return ((g * slope).astype(g.dtype),)


@op("celu")
class CELU:
    @staticmethod
    def forward(x, alpha=1.0):
        return np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(np.minimum(x, 0) / alpha)), (x, alpha)

    @staticmethod
    def backward(saved, g):
        x, alpha = saved
        return (g * np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / alpha)).astype(g.dtype),)


@op("mish")
class Mish:
    @staticmethod
    def forward(x):
        sp = np.logaddexp(0, x)
        return x * np.tanh(sp), (x, sp)

    @staticmethod
    def backward(saved, g):
        x, sp = saved
        t = np.tanh(sp)
        sig = 1 - np.exp(-sp)  # sigmoid(x) = 1 - 1 / (1 + e^x)
        return (g * (t + x * sig / np.cosh(sp) ** 2),)


@op("softsign")
class Softsign:
    @staticmethod
    def forward(x):
        return x / (1 + np.abs(x)), x

    @staticmethod
    def backward(x, g):
        return (g / np.square(1 + np.abs(x)),)


@op("tanhshrink")
class Tanhshrink:
    @staticmethod
    def forward(x):
        return x - np.tanh(x), x

    @staticmethod
    def backward(x, g):
        return (g * np.tanh(x) ** 2,)


@op("logsigmoid")
class LogSigmoid:
    @staticmethod
    def forward(x):
        return -np.logaddexp(0, -x), x

    @staticmethod
    def backward(x, g):
        return (g * np.exp(-np.logaddexp(0, x)),)  # sigmoid(-x) = 1 / (1 + e^x)


# ---------------------------------------------------------------- tensor math


@op("sub")
class Sub:
    @staticmethod
    def forward(a, b):
        return np.subtract(a, b), (a.shape, b.shape)

    @staticmethod
    def backward(shapes, g):
        return _unbroadcast(g, shapes[0]), _unbroadcast(np.negative(g), shapes[1])


@op("div")
class Div:
    @staticmethod
    def forward(a, b):
        return np.true_divide(a, b), (a, b)

    @staticmethod
    def backward(saved, g):
        a, b = saved
        q = a / b
        return _unbroadcast(g / b, a.shape), _unbroadcast(-g * q / b, b.shape)


@op("neg")
class Neg:
    @staticmethod
    def forward(x):
        return np.negative(x), None

    @staticmethod
    def backward(_, g):
        return (np.negative(g),)


@op("abs")
class Abs:
    @staticmethod
    def forward(x):
        return np.abs(x), x

    @staticmethod
    def backward(x, g):
        return (np.where(x > 0, g, np.where(x < 0, -g, 0.0)).astype(g.dtype),)


@op("clamp")
class Clamp:
    @staticmethod
    def forward(x, min=-1.0, max=1.0):  # noqa: A002
        return np.clip(x, min, max), (x, min, max)

    @staticmethod
    def backward(saved, g):
        x, lo, hi = saved
        return (g * ((x >= lo) & (x <= hi)),)


def _axis(dim, nd):
    return dim % nd


@op("sum")
class Sum:
    @staticmethod
    def forward(x, dim=-1, keepdim=False):
        return np.add.reduce(x, axis=dim, keepdims=keepdim), (x.shape, _axis(dim, x.ndim), keepdim)

    @staticmethod
    def backward(saved, g):
        shape, axis, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        return (np.repeat(g, shape[axis], axis=axis),)


@op("mean")
class Mean:
    @staticmethod
    def forward(x, dim=-1, keepdim=False):
        return np.mean(x, axis=dim, keepdims=keepdim), (x.shape, _axis(dim, x.ndim), keepdim)

    @staticmethod
    def backward(saved, g):
        shape, axis, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        return (np.repeat(g / shape[axis], shape[axis], axis=axis),)


@op("logsumexp")
class LogSumExp:
    @staticmethod
    def forward(x, dim=-1, keepdim=False):
        axis = _axis(dim, x.ndim)
        y = np.logaddexp.reduce(x, axis=axis, keepdims=True)
        return (y if keepdim else np.squeeze(y, axis)), (x, y, axis, keepdim)

    @staticmethod
    def backward(saved, g):
        x, y, axis, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        return (g * np.exp(x - y),)


@op("var")
class Var:
    @staticmethod
    def forward(x, dim=-1, correction=1, keepdim=False):
        return np.var(x, axis=dim, ddof=correction, keepdims=keepdim), (x, _axis(dim, x.ndim), correction, keepdim)

    @staticmethod
    def backward(saved, g):
        x, axis, ddof, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        n = x.shape[axis]
        return (g * 2 * (x - x.mean(axis=axis, keepdims=True)) / (n - ddof),)


@op("std")
class Std:
    @staticmethod
    def forward(x, dim=-1, correction=1, keepdim=False):
        y = np.std(x, axis=dim, ddof=correction, keepdims=True)
        return (y if keepdim else np.squeeze(y, axis=dim)), (x, y, _axis(dim, x.ndim), correction, keepdim)

    @staticmethod
    def backward(saved, g):
        x, y, axis, ddof, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        inv = np.divide(1.0, (x.shape[axis] - ddof) * y, out=np.zeros_like(y), where=y > 0)  # 0 on a constant row
        return (g * (x - x.mean(axis=axis, keepdims=True)) * inv,)


@op("norm")
class Norm:
    """Through the square: ||x||_p = exp(log(sum |x|^p) / p), differentiated by hand."""

    @staticmethod
    def forward(x, dim=-1, p=2.0, keepdim=False):
        axis = _axis(dim, x.ndim)
        s = np.sum(np.abs(x) ** p, axis=axis, keepdims=True)
        y = s ** (1 / p)
        return (y if keepdim else np.squeeze(y, axis=axis)), (x, s, y, axis, p, keepdim)

    @staticmethod
    def backward(saved, g):
        x, s, y, axis, p, keepdim = saved
        g = g if keepdim else np.expand_dims(g, axis)
        # dy/ds = y / (p s), ds/dx = p |x|^(p-1) sign(x); 0 at the zero vector
        ratio = np.divide(y, s, out=np.zeros_like(s), where=s > 0)
        return (g * ratio * np.abs(x) ** (p - 1) * np.sign(x),)


@op("index_select")
class IndexSelect:
    """As a product with a one-hot selection matrix along dim."""

    @staticmethod
    def forward(x, index, dim=0):
        axis = _axis(dim, x.ndim)
        pick = np.eye(x.shape[axis], dtype=x.dtype)[index]  # (len(index), size)
        y = np.moveaxis(np.tensordot(pick, np.moveaxis(x, axis, 0), axes=(1, 0)), 0, axis)
        return y, (pick, axis)

    @staticmethod
    def backward(saved, g):
        pick, axis = saved
        return np.moveaxis(np.tensordot(pick.T, np.moveaxis(g, axis, 0), axes=(1, 0)), 0, axis), None


@op("gather")
class Gather:
    """Element by element."""

    @staticmethod
    def forward(x, index, dim=-1):
        axis = _axis(dim, x.ndim)
        y = np.empty(index.shape, x.dtype)
        for pos in np.ndindex(*index.shape):
            src = list(pos)
            src[axis] = index[pos]
            y[pos] = x[tuple(src)]
        return y, (x.shape, index, axis)

    @staticmethod
    def backward(saved, g):
        shape, index, axis = saved
        gx = np.zeros(shape, g.dtype)
        for pos in np.ndindex(*index.shape):
            src = list(pos)
            src[axis] = index[pos]
            gx[tuple(src)] += g[pos]
        return gx, None


@op("cumsum")
class CumSum:
    @staticmethod
    def forward(x, dim=-1):
        return np.cumsum(x, axis=dim), dim

    @staticmethod
    def backward(dim, g):
        total = np.sum(g, axis=dim, keepdims=True)
        return (total - np.cumsum(g, axis=dim) + g,)  # sum over i >= j of g_i


@op("transpose")
class Transpose:
    @staticmethod
    def forward(x, dim0=0, dim1=1):
        axes = list(range(x.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return x.transpose(axes), axes

    @staticmethod
    def backward(axes, g):
        return (g.transpose(axes),)  # a swap is its own inverse


@op("permute")
class Permute:
    @staticmethod
    def forward(x, dims):
        return np.transpose(x, dims), list(dims)

    @staticmethod
    def backward(dims, g):
        inverse = [0] * len(dims)
        for i, d in enumerate(dims):
            inverse[d] = i
        return (np.transpose(g, inverse),)


@op("softmin")
class Softmin:
    @staticmethod
    def forward(x, dim=-1):
        z = -x - np.max(-x, axis=dim, keepdims=True)
        y = np.exp(z) / np.exp(z).sum(axis=dim, keepdims=True)
        return y, (y, dim)

    @staticmethod
    def backward(saved, g):
        y, dim = saved
        return (y * ((g * y).sum(axis=dim, keepdims=True) - g),)


@op("glu")
class GLU:
    @staticmethod
    def forward(x, dim=-1):
        half = x.shape[dim] // 2
        a, b = np.take(x, range(half), axis=dim), np.take(x, range(half, 2 * half), axis=dim)
        s = 1 / (1 + np.exp(-b))
        return a * s, (a, s, dim)

    @staticmethod
    def backward(saved, g):
        a, s, dim = saved
        return (np.concatenate([g * s, g * a * s * (1 - s)], axis=dim),)


@op("prelu")
class PReLU:
    @staticmethod
    def forward(x, weight):
        shape = [1] * x.ndim
        shape[1] = weight.size
        w = weight.reshape(shape) if weight.size > 1 else weight[0]
        return np.maximum(x, 0) + w * np.minimum(x, 0), (x, w, weight.shape)

    @staticmethod
    def backward(saved, g):
        x, w, wshape = saved
        gx = np.where(x > 0, g, w * g)
        gw = g * np.minimum(x, 0)
        axes = tuple(i for i in range(x.ndim) if i != 1 or wshape[0] == 1)
        return gx, gw.sum(axis=axes).reshape(wshape)


# ---------------------------------------------------------------- losses


def _scale(reduction, n):
    return 1.0 / n if reduction == "mean" else 1.0


def _reduced(per, reduction):
    return np.asarray(per.mean() if reduction == "mean" else per.sum(), dtype=per.dtype)


@op("l1")
class L1Loss:
    @staticmethod
    def forward(pred, target, reduction="mean"):
        return _reduced(np.abs(pred - target), reduction), (pred - target, _scale(reduction, pred.size))

    @staticmethod
    def backward(saved, g):
        d, k = saved
        gp = g * k * np.sign(d)
        return gp, -gp


@op("huber")
class HuberLoss:
    @staticmethod
    def forward(pred, target, delta=1.0, reduction="mean"):
        d = pred - target
        per = np.where(np.abs(d) <= delta, 0.5 * d * d, delta * np.abs(d) - 0.5 * delta**2)
        return _reduced(per, reduction), (d, delta, _scale(reduction, d.size))

    @staticmethod
    def backward(saved, g):
        d, delta, k = saved
        gp = g * k * np.clip(d, -delta, delta)
        return gp, -gp


@op("soft_margin")
class SoftMarginLoss:
    @staticmethod
    def forward(x, target, reduction="mean"):
        return _reduced(np.logaddexp(0, -target * x), reduction), (x, target, _scale(reduction, x.size))

    @staticmethod
    def backward(saved, g):
        x, y, k = saved
        return -g * k * y / (1 + np.exp(y * x)), None


@op("kl_div")
class KLDiv:
    @staticmethod
    def forward(input, target, reduction="mean", log_target=False):  # noqa: A002
        p = np.exp(target) if log_target else target
        logp = target if log_target else np.log(target)
        per = p * (logp - input)
        k = {"mean": 1.0 / input.size, "sum": 1.0, "batchmean": 1.0 / input.shape[0]}[reduction]
        return np.asarray(per.sum() * k, dtype=input.dtype), (p, k)

    @staticmethod
    def backward(saved, g):
        p, k = saved
        return -g * k * p, None


@op("poisson_nll")
class PoissonNLL:
    @staticmethod
    def forward(input, target, log_input=True, eps=1e-8, reduction="mean"):  # noqa: A002
        rate = np.exp(input)
        return _reduced(rate - target * input, reduction), (rate, target, _scale(reduction, input.size))

    @staticmethod
    def backward(saved, g):
        rate, t, k = saved
        return g * k * (rate - t), None


@op("gaussian_nll")
class GaussianNLL:
    @staticmethod
    def forward(input, target, var, eps=1e-6, reduction="mean"):  # noqa: A002
        v = np.clip(var, eps, None)
        r = (input - target) / v
        per = 0.5 * (np.log(v) + r * (input - target))
        return _reduced(per, reduction), (r, v, var >= eps, _scale(reduction, input.size))

    @staticmethod
    def backward(saved, g):
        r, v, free, k = saved
        gi = g * k * r
        return gi, -gi, g * k * 0.5 * (1 / v - r * r) * free


@op("margin_ranking")
class MarginRanking:
    @staticmethod
    def forward(x1, x2, target, margin=0.0, reduction="mean"):
        z = margin - target * (x1 - x2)
        return _reduced(np.maximum(z, 0), reduction), (z >= 0, target, _scale(reduction, x1.size))

    @staticmethod
    def backward(saved, g):
        on, y, k = saved
        g1 = -g * k * y * on
        return g1, -g1, None


@op("hinge_embedding")
class HingeEmbedding:
    @staticmethod
    def forward(x, target, margin=1.0, reduction="mean"):
        per = np.where(target > 0, x, np.maximum(margin - x, 0))
        return _reduced(per, reduction), (x, target, margin, _scale(reduction, x.size))

    @staticmethod
    def backward(saved, g):
        x, y, margin, k = saved
        return (g * k * np.where(y > 0, 1.0, -1.0 * (margin - x >= 0))).astype(x.dtype), None


@op("nll")
class NLLLoss:
    @staticmethod
    def forward(logp, target, weight=None, reduction="mean", ignore_index=-100):
        keep = target != ignore_index
        w = np.ones(logp.shape[1], logp.dtype)[target[keep]] if weight is None else weight[target[keep]]
        picked = -w * logp[np.arange(len(target))[keep], target[keep]]
        k = 1.0 / w.sum() if reduction == "mean" else 1.0
        saved = (logp.shape, logp.dtype, target, keep, w * k, weight is not None)
        return np.asarray(picked.sum() * k, dtype=logp.dtype), saved

    @staticmethod
    def backward(saved, g):
        shape, dtype, target, keep, wk, weighted = saved
        grad = np.zeros(shape, dtype)
        np.add.at(grad, (np.nonzero(keep)[0], target[keep]), -g * wk)
        return (grad, None, None) if weighted else (grad, None)


@op("multilabel_soft_margin")
class MultilabelSoftMargin:
    @staticmethod
    def forward(x, target, reduction="mean"):
        per = (target * np.logaddexp(0, -x) + (1 - target) * np.logaddexp(0, x)).mean(axis=1)
        return _reduced(per, reduction), (x, target, _scale(reduction, x.shape[0]) / x.shape[1])

    @staticmethod
    def backward(saved, g):
        x, y, k = saved
        return g * k * (1 / (1 + np.exp(-x)) - y), None


# ---------------------------------------------------------------- normalization, distances, pooling, layout


@op("rms_norm")
class RMSNorm:
    @staticmethod
    def forward(x, weight, eps=1e-6):
        axes = tuple(range(x.ndim - weight.ndim, x.ndim))
        rms = np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True) + eps)
        return x / rms * weight, (x, rms, weight, axes)

    @staticmethod
    def backward(saved, g):
        x, rms, weight, axes = saved
        n = int(np.prod([x.shape[a] for a in axes]))
        gy = g * weight
        dot = np.sum(gy * x, axis=axes, keepdims=True)
        gx = gy / rms - x * dot / (n * rms**3)
        lead = tuple(range(x.ndim - weight.ndim))
        return gx, np.sum(g * x / rms, axis=lead)


def _group_stats(x, groups, eps):
    n = x.shape[0]
    flat = x.reshape(n, groups, -1)
    mu = flat.mean(axis=2, keepdims=True)
    var = flat.var(axis=2, keepdims=True)
    return flat, mu, var + eps


@op("group_norm")
class GroupNorm:
    @staticmethod
    def forward(x, weight, bias, num_groups=1, eps=1e-5):
        flat, mu, v = _group_stats(x, num_groups, eps)
        xhat = ((flat - mu) / np.sqrt(v)).reshape(x.shape)
        shape = [1, -1] + [1] * (x.ndim - 2)
        return xhat * weight.reshape(shape) + bias.reshape(shape), (x, xhat, v, weight, num_groups)

    @staticmethod
    def backward(saved, g):
        x, xhat, v, weight, groups = saved
        shape = [1, -1] + [1] * (x.ndim - 2)
        n = x.shape[0]
        gxh = (g * weight.reshape(shape)).reshape(n, groups, -1)
        xh = xhat.reshape(n, groups, -1)
        m = xh.shape[2]
        gx = (m * gxh - gxh.sum(axis=2, keepdims=True) - xh * (gxh * xh).sum(axis=2, keepdims=True)) / (m * np.sqrt(v))
        axes = tuple(i for i in range(x.ndim) if i != 1)
        return gx.reshape(x.shape), (g * xhat).sum(axis=axes), g.sum(axis=axes)


@op("instance_norm")
class InstanceNorm:
    @staticmethod
    def forward(x, weight, bias, eps=1e-5):
        return GroupNorm.forward(x, weight, bias, x.shape[1], eps)

    backward = GroupNorm.backward


@op("normalize")
class Normalize:
    @staticmethod
    def forward(x, dim=1, eps=1e-12):
        norm = np.linalg.norm(x, axis=dim, keepdims=True)
        d = np.maximum(norm, eps)
        return x / d, (x, norm, d, eps, dim)

    @staticmethod
    def backward(saved, g):
        x, norm, d, eps, dim = saved
        proj = x * np.sum(g * x, axis=dim, keepdims=True) / np.maximum(norm, eps) ** 2
        return (np.where(norm > eps, (g - proj) / d, g / d),)


@op("cosine_similarity")
class CosineSimilarity:
    @staticmethod
    def forward(x1, x2, dim=1, eps=1e-8):
        n1 = np.maximum(np.linalg.norm(x1, axis=dim, keepdims=True), eps)
        n2 = np.maximum(np.linalg.norm(x2, axis=dim, keepdims=True), eps)
        return np.sum((x1 / n1) * (x2 / n2), axis=dim), (x1, x2, n1, n2, eps, dim)

    @staticmethod
    def backward(saved, g):
        x1, x2, n1, n2, eps, dim = saved
        g = np.expand_dims(g, dim)
        cos = np.sum(x1 * x2, axis=dim, keepdims=True) / (n1 * n2)
        g1 = g * (x2 / (n1 * n2) - np.where(n1 > eps, cos * x1 / n1**2, 0))
        g2 = g * (x1 / (n1 * n2) - np.where(n2 > eps, cos * x2 / n2**2, 0))
        return g1, g2


@op("pairwise_distance")
class PairwiseDistance:
    @staticmethod
    def forward(x1, x2, eps=1e-6, keepdim=False):
        d = x1 - x2 + eps
        dist = np.linalg.norm(d, axis=-1, keepdims=keepdim)
        return dist, (d, dist, keepdim)

    @staticmethod
    def backward(saved, g):
        d, dist, keepdim = saved
        if not keepdim:
            g, dist = g[..., None], dist[..., None]
        return g * d / dist, -g * d / dist


@op("pixel_shuffle")
class PixelShuffle:
    @staticmethod
    def forward(x, upscale_factor=2):
        r = upscale_factor
        n, c, h, w = x.shape
        out = np.empty((n, c // (r * r), h * r, w * r), x.dtype)
        for i in range(r):
            for j in range(r):
                out[:, :, i::r, j::r] = x[:, i * r + j::r * r]
        return out, r

    @staticmethod
    def backward(r, g):
        n, c, hr, wr = g.shape
        gx = np.empty((n, c * r * r, hr // r, wr // r), g.dtype)
        for i in range(r):
            for j in range(r):
                gx[:, i * r + j::r * r] = g[:, :, i::r, j::r]
        return (gx,)


@op("pixel_unshuffle")
class PixelUnshuffle:
    @staticmethod
    def forward(x, downscale_factor=2):
        return PixelShuffle.backward(downscale_factor, x)[0], downscale_factor

    @staticmethod
    def backward(r, g):
        return (PixelShuffle.forward(g, r)[0],)


@op("pad")
class Pad:
    @staticmethod
    def forward(x, pad=(1, 1), mode="constant", value=0.0):
        widths = [(0, 0)] * x.ndim
        for k in range(len(pad) // 2):
            widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
        np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        kw = {"constant_values": value} if mode == "constant" else {}
        # the gradient by padding an index map the same way, then summing g over each source
        index = np.arange(x.size).reshape(x.shape)
        src = np.pad(index, widths, mode=np_mode, **({"constant_values": -1} if mode == "constant" else {}))
        return np.pad(x, widths, mode=np_mode, **kw), (x.shape, src)

    @staticmethod
    def backward(saved, g):
        shape, src = saved
        keep = src >= 0
        gx = np.bincount(src[keep], weights=g[keep], minlength=int(np.prod(shape)))
        return (gx.reshape(shape).astype(g.dtype),)


def _pool1d_windows(x, k, s, p, fill):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p)), constant_values=fill)
    o = (xp.shape[2] - k) // s + 1
    return np.stack([xp[:, :, i * s:i * s + k] for i in range(o)], axis=2), xp.shape


@op("max_pool1d")
class MaxPool1d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        s = stride or kernel_size
        win, xp_shape = _pool1d_windows(x, kernel_size, s, padding, -np.inf)
        arg = win.argmax(axis=3)
        return np.take_along_axis(win, arg[..., None], axis=3)[..., 0], (x.shape, xp_shape, arg, kernel_size, s, padding)

    @staticmethod
    def backward(saved, g):
        shape, xp_shape, arg, k, s, p = saved
        gxp = np.zeros(xp_shape, g.dtype)
        for i in range(arg.shape[2]):
            np.put_along_axis(gxp[:, :, i * s:i * s + k], arg[:, :, i:i + 1],
                              np.take_along_axis(gxp[:, :, i * s:i * s + k], arg[:, :, i:i + 1], axis=2)
                              + g[:, :, i:i + 1], axis=2)
        return (gxp[:, :, p:p + shape[2]],)


@op("avg_pool1d")
class AvgPool1d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        s = stride or kernel_size
        win, xp_shape = _pool1d_windows(x, kernel_size, s, padding, 0.0)
        return win.mean(axis=3), (x.shape, xp_shape, kernel_size, s, padding)

    @staticmethod
    def backward(saved, g):
        shape, xp_shape, k, s, p = saved
        gxp = np.zeros(xp_shape, g.dtype)
        for i in range(g.shape[2]):
            gxp[:, :, i * s:i * s + k] += g[:, :, i:i + 1] / k
        return (gxp[:, :, p:p + shape[2]],)


def _adaptive_matrix(size, out, dtype):
    """The (out, size) averaging matrix of adaptive pooling."""
    m = np.zeros((out, size), dtype)
    for i in range(out):
        a, b = int(np.floor(i * size / out)), int(np.ceil((i + 1) * size / out))
        m[i, a:b] = 1.0 / (b - a)
    return m


@op("adaptive_avg_pool1d")
class AdaptiveAvgPool1d:
    @staticmethod
    def forward(x, output_size=1):
        m = _adaptive_matrix(x.shape[-1], output_size, x.dtype)
        return x @ m.T, m

    @staticmethod
    def backward(m, g):
        return (g @ m,)


@op("adaptive_avg_pool2d")
class AdaptiveAvgPool2d:
    @staticmethod
    def forward(x, output_size=1):
        oh, ow = _pair(output_size)
        mh, mw = _adaptive_matrix(x.shape[-2], oh, x.dtype), _adaptive_matrix(x.shape[-1], ow, x.dtype)
        return np.einsum("ih,nchw,jw->ncij", mh, x, mw), (mh, mw)

    @staticmethod
    def backward(saved, g):
        mh, mw = saved
        return (np.einsum("ih,ncij,jw->nchw", mh, g, mw),)


# ---------------------------------------------------------------- the wider catalogue


@op("conv_transpose2d")
class ConvTranspose2d:
    """Pixel by pixel: input pixel (h, w) paints weight[c] * x into the output at
    (h s + i d, w s + j d), then the padding is cut off."""

    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (_pair(v) for v in (stride, padding, output_padding, dilation))
        n, c, h, w = x.shape
        _, og, kh, kw = weight.shape
        big = np.zeros((n, og * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (w - 1) * sw + dw * (kw - 1) + 1 + opw))
        cg = c // groups
        for gi in range(groups):
            xs, ws = x[:, gi * cg:(gi + 1) * cg], weight[gi * cg:(gi + 1) * cg]
            for a in range(h):
                for b in range(w):
                    patch = np.einsum("nc,cokl->nokl", xs[:, :, a, b], ws)
                    big[:, gi * og:(gi + 1) * og, a * sh:a * sh + dh * (kh - 1) + 1:dh,
                        b * sw:b * sw + dw * (kw - 1) + 1:dw] += patch
        out = big[:, :, ph:big.shape[2] - ph, pw:big.shape[3] - pw]
        if bias is not None:
            out = out + bias[None, :, None, None]
        return out.astype(x.dtype), (x, weight, bias is not None, big.shape, (sh, sw, ph, pw, dh, dw, groups))

    @staticmethod
    def backward(saved, g):
        x, weight, has_bias, big_shape, (sh, sw, ph, pw, dh, dw, groups) = saved
        n, c, h, w = x.shape
        _, og, kh, kw = weight.shape
        gbig = np.zeros(big_shape)
        gbig[:, :, ph:big_shape[2] - ph, pw:big_shape[3] - pw] = g
        gx, gw = np.zeros(x.shape), np.zeros(weight.shape)
        cg = c // groups
        for gi in range(groups):
            for a in range(h):
                for b in range(w):
                    window = gbig[:, gi * og:(gi + 1) * og, a * sh:a * sh + dh * (kh - 1) + 1:dh,
                                  b * sw:b * sw + dw * (kw - 1) + 1:dw]
                    gx[:, gi * cg:(gi + 1) * cg, a, b] = np.einsum("nokl,cokl->nc", window, weight[gi * cg:(gi + 1) * cg])
                    gw[gi * cg:(gi + 1) * cg] += np.einsum("nc,nokl->cokl", x[:, gi * cg:(gi + 1) * cg, a, b], window)
        grads = (gx.astype(x.dtype), gw.astype(weight.dtype))
        return grads + ((g.sum(axis=(0, 2, 3)).astype(g.dtype),) if has_bias else ())


@op("conv_transpose1d")
class ConvTranspose1d:
    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        y, saved = ConvTranspose2d.forward(x[:, :, None], weight[:, :, None], bias, (1, stride), (0, padding),
                                           (0, output_padding), groups, (1, dilation))
        return y[:, :, 0], saved

    @staticmethod
    def backward(saved, g):
        grads = ConvTranspose2d.backward(saved, g[:, :, None])
        return (grads[0][:, :, 0], grads[1][:, :, 0]) + tuple(grads[2:])


def _blocks(size, kernel_size, dilation, padding, stride):
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (_pair(v) for v in (kernel_size, dilation, padding, stride))
    oh = (size[0] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (size[1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return [(a * sh, b * sw) for a in range(oh) for b in range(ow)], (kh, kw, dh, dw, ph, pw)


@op("unfold")
class Unfold:
    @staticmethod
    def forward(x, kernel_size, dilation=1, padding=0, stride=1):
        starts, (kh, kw, dh, dw, ph, pw) = _blocks(x.shape[2:], kernel_size, dilation, padding, stride)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        cols = [xp[:, :, r:r + dh * (kh - 1) + 1:dh, q:q + dw * (kw - 1) + 1:dw].reshape(x.shape[0], -1) for r, q in starts]
        return np.stack(cols, axis=-1), (x.shape, xp.shape, starts, (kh, kw, dh, dw, ph, pw))

    @staticmethod
    def backward(saved, g):
        shape, xp_shape, starts, (kh, kw, dh, dw, ph, pw) = saved
        gxp = np.zeros(xp_shape, g.dtype)
        for l, (r, q) in enumerate(starts):
            gxp[:, :, r:r + dh * (kh - 1) + 1:dh, q:q + dw * (kw - 1) + 1:dw] += g[:, :, l].reshape(shape[0], shape[1], kh, kw)
        return (gxp[:, :, ph:ph + shape[2], pw:pw + shape[3]],)


@op("fold")
class Fold:
    @staticmethod
    def forward(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
        h, w = _pair(output_size)
        starts, (kh, kw, dh, dw, ph, pw) = _blocks((h, w), kernel_size, dilation, padding, stride)
        c = x.shape[1] // (kh * kw)
        out = np.zeros((x.shape[0], c, h + 2 * ph, w + 2 * pw), x.dtype)
        for l, (r, q) in enumerate(starts):
            out[:, :, r:r + dh * (kh - 1) + 1:dh, q:q + dw * (kw - 1) + 1:dw] += x[:, :, l].reshape(x.shape[0], c, kh, kw)
        return out[:, :, ph:ph + h, pw:pw + w], (x.shape, starts, (kh, kw, dh, dw, ph, pw))

    @staticmethod
    def backward(saved, g):
        shape, starts, (kh, kw, dh, dw, ph, pw) = saved
        gp = np.pad(g, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        cols = [gp[:, :, r:r + dh * (kh - 1) + 1:dh, q:q + dw * (kw - 1) + 1:dw].reshape(shape[0], -1) for r, q in starts]
        return (np.stack(cols, axis=-1),)


def _taps(n_in, n_out, mode, align_corners, scale_factor):
    """For each output index along an axis: the input indices it reads and their weights."""
    scale = 1.0 / scale_factor if scale_factor is not None else n_in / n_out
    idx, wts = [], []
    for o in range(n_out):
        if mode in ("nearest", "nearest-exact"):
            src = math.floor((o + (0.5 if mode == "nearest-exact" else 0.0)) * scale)
            idx.append([min(src, n_in - 1)])
            wts.append([1.0])
            continue
        src = o * (n_in - 1) / (n_out - 1) if align_corners and n_out > 1 else (0.0 if align_corners else (o + 0.5) * scale - 0.5)
        if mode == "bicubic":
            i0 = math.floor(src)
            t = src - i0
            a = -0.75
            ws = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                  ((a + 2) * t - (a + 3)) * t * t + 1,
                  ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                  ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
            idx.append([min(max(i0 + k, 0), n_in - 1) for k in (-1, 0, 1, 2)])
            wts.append(ws)
            continue
        src = max(src, 0.0)
        i0 = min(int(src), n_in - 1)
        lam = src - i0
        idx.append([i0, min(i0 + 1, n_in - 1)])
        wts.append([1.0 - lam, lam])
    return np.array(idx), np.array(wts)


@op("interpolate")
class Interpolate:
    @staticmethod
    def forward(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
        nd = x.ndim - 2
        if size is not None:
            outs = (size,) * nd if isinstance(size, int) else tuple(size)
        else:
            outs = tuple(int(math.floor(s * scale_factor)) for s in x.shape[2:])
        per_axis = [_taps(n, o, mode, bool(align_corners), scale_factor) for n, o in zip(x.shape[2:], outs)]
        y = x
        for axis, (idx, wts) in enumerate(per_axis):
            moved = np.moveaxis(y, 2 + axis, -1)
            y = np.moveaxis((moved[..., idx] * wts).sum(axis=-1), -1, 2 + axis)
        return y.astype(x.dtype), (x.shape, per_axis)

    @staticmethod
    def backward(saved, g):
        shape, per_axis = saved
        sizes = list(shape[2:])
        for axis in reversed(range(len(per_axis))):
            idx, wts = per_axis[axis]
            moved = np.moveaxis(g, 2 + axis, -1)  # (..., out)
            back = np.zeros(moved.shape[:-1] + (sizes[axis],), g.dtype)
            for t in range(idx.shape[1]):
                np.add.at(back, (Ellipsis, idx[:, t]), moved * wts[:, t])
            g = np.moveaxis(back, -1, 2 + axis)
        return (g,)


@op("channel_shuffle")
class ChannelShuffle:
    @staticmethod
    def forward(x, groups):
        perm = np.arange(x.shape[1]).reshape(groups, -1).T.ravel()
        return x[:, perm], perm

    @staticmethod
    def backward(perm, g):
        gx = np.empty_like(g)
        gx[:, perm] = g
        return (gx,)


@op("bilinear")
class Bilinear:
    @staticmethod
    def forward(x1, x2, weight, bias=None):
        y = np.stack([((x1 @ weight[o]) * x2).sum(axis=-1) for o in range(weight.shape[0])], axis=-1)
        return (y if bias is None else y + bias).astype(x1.dtype), (x1, x2, weight, bias is not None)

    @staticmethod
    def backward(saved, g):
        x1, x2, weight, has_bias = saved
        g1 = sum(g[..., o:o + 1] * (x2 @ weight[o].T) for o in range(weight.shape[0]))
        g2 = sum(g[..., o:o + 1] * (x1 @ weight[o]) for o in range(weight.shape[0]))
        f1, f2, fg = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1]), g.reshape(-1, g.shape[-1])
        gw = np.stack([(f1 * fg[:, o:o + 1]).T @ f2 for o in range(weight.shape[0])])
        grads = (g1.astype(x1.dtype), g2.astype(x2.dtype), gw.astype(weight.dtype))
        return grads + ((fg.sum(axis=0),) if has_bias else ())


@op("embedding_bag")
class EmbeddingBag:
    @staticmethod
    def forward(ids, table, per_sample_weights=None, offsets=None, mode="mean"):
        if ids.ndim == 2:
            bags = [list(range(r * ids.shape[1], (r + 1) * ids.shape[1])) for r in range(ids.shape[0])]
        else:
            bounds = list(offsets) + [ids.size]
            bags = [list(range(bounds[b], bounds[b + 1])) for b in range(len(offsets))]
        flat = ids.ravel()
        weights = np.ones(flat.size) if per_sample_weights is None else per_sample_weights.ravel()
        out = np.zeros((len(bags), table.shape[1]), table.dtype)
        chosen = []
        for b, pos in enumerate(bags):
            if not pos:
                chosen.append(None)
                continue
            rows = table[flat[pos]] * weights[pos][:, None]
            if mode == "max":
                k = rows.argmax(axis=0)
                out[b] = rows[k, np.arange(table.shape[1])]
                chosen.append([pos[i] for i in k])
            else:
                out[b] = rows.sum(axis=0) / (len(pos) if mode == "mean" else 1)
                chosen.append(None)
        return out, (flat, table, weights, None if per_sample_weights is None else per_sample_weights.shape, bags,
                     chosen, mode)

    @staticmethod
    def backward(saved, g):
        flat, table, weights, weights_shape, bags, chosen, mode = saved
        gt = np.zeros_like(table, dtype=g.dtype)
        gw = np.zeros(flat.size, g.dtype)
        for b, pos in enumerate(bags):
            if not pos:
                continue
            if mode == "max":
                for d, p in enumerate(chosen[b]):
                    gt[flat[p], d] += g[b, d] * weights[p]
                continue
            share = g[b] / (len(pos) if mode == "mean" else 1)
            for p in pos:
                gt[flat[p]] += share * weights[p]
                gw[p] += share @ table[flat[p]]
        return (None, gt) + ((gw.reshape(weights_shape).astype(g.dtype),) if weights_shape is not None else ())


@op("pdist")
class Pdist:
    @staticmethod
    def forward(x, p=2.0):
        diff = x[:, None, :] - x[None, :, :]
        full = np.sqrt((diff ** 2).sum(axis=-1))
        iu = np.triu_indices(x.shape[0], 1)
        return full[iu], (diff, full, iu)

    @staticmethod
    def backward(saved, g):
        diff, full, iu = saved
        gm = np.zeros(full.shape, g.dtype)
        gm[iu] = g
        with np.errstate(invalid="ignore", divide="ignore"):
            coef = np.where(full > 0, gm / full, 0.0)
        return (((coef + coef.T)[:, :, None] * diff).sum(axis=1).astype(g.dtype),)  # pair (i, j) moves both rows


def _cells(spatial, output_size):
    outs = (output_size,) * len(spatial) if isinstance(output_size, int) else tuple(output_size)
    ranges = [[(int(np.floor(i * s / o)), int(np.ceil((i + 1) * s / o))) for i in range(o)] for s, o in zip(spatial, outs)]
    return outs, ranges


def _adaptive_max(nd):
    class AdaptiveMax:
        @staticmethod
        def forward(x, output_size=1):
            outs, ranges = _cells(x.shape[2:], output_size)
            y = np.zeros(x.shape[:2] + outs, x.dtype)
            where = {}
            for cell in np.ndindex(*outs):
                box = tuple(slice(*ranges[a][i]) for a, i in enumerate(cell))
                block = x[(slice(None), slice(None)) + box].reshape(x.shape[0], x.shape[1], -1)
                k = block.argmax(axis=-1)
                y[(slice(None), slice(None)) + cell] = block.max(axis=-1)
                where[cell] = (box, k)
            return y, (x.shape, where)

        @staticmethod
        def backward(saved, g):
            shape, where = saved
            gx = np.zeros(shape, g.dtype)
            n, c = shape[:2]
            for cell, (box, k) in where.items():
                sizes = tuple(s.stop - s.start for s in box)
                local = np.zeros((n, c, int(np.prod(sizes))), g.dtype)
                np.put_along_axis(local, k[..., None], g[(slice(None), slice(None)) + cell][..., None], axis=-1)
                gx[(slice(None), slice(None)) + box] += local.reshape((n, c) + sizes)
            return (gx,)

    return AdaptiveMax


for _nd in (1, 2, 3):
    op(f"adaptive_max_pool{_nd}d")(_adaptive_max(_nd))


@op("adaptive_avg_pool3d")
class AdaptiveAvgPool3d:
    @staticmethod
    def forward(x, output_size=1):
        outs, ranges = _cells(x.shape[2:], output_size)
        y = np.zeros(x.shape[:2] + outs, x.dtype)
        for cell in np.ndindex(*outs):
            box = tuple(slice(*ranges[a][i]) for a, i in enumerate(cell))
            y[(slice(None), slice(None)) + cell] = x[(slice(None), slice(None)) + box].mean(axis=(2, 3, 4))
        return y, (x.shape, outs, ranges)

    @staticmethod
    def backward(saved, g):
        shape, outs, ranges = saved
        gx = np.zeros(shape, g.dtype)
        for cell in np.ndindex(*outs):
            box = tuple(slice(*ranges[a][i]) for a, i in enumerate(cell))
            count = np.prod([s.stop - s.start for s in box])
            gx[(slice(None), slice(None)) + box] += g[(slice(None), slice(None)) + cell][:, :, None, None, None] / count
        return (gx,)


def _triple(v):
    return (v,) * 3 if isinstance(v, int) else tuple(v)


@op("conv3d")
class Conv3d:
    """Output cell by output cell: each is a dot product of the weight with its window."""

    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        s, p, d = _triple(stride), _triple(padding), _triple(dilation)
        n, c = x.shape[:2]
        o, cg = weight.shape[:2]
        k = weight.shape[2:]
        xp = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in p))
        outs = tuple((xp.shape[2 + a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(3))
        og = o // groups
        y = np.zeros((n, o) + outs, x.dtype)
        for cell in np.ndindex(*outs):
            box = tuple(slice(cell[a] * s[a], cell[a] * s[a] + d[a] * (k[a] - 1) + 1, d[a]) for a in range(3))
            for gi in range(groups):
                win = xp[(slice(None), slice(gi * cg, (gi + 1) * cg)) + box]  # (N, C/G, kd, kh, kw)
                y[(slice(None), slice(gi * og, (gi + 1) * og)) + cell] = np.tensordot(
                    win, weight[gi * og:(gi + 1) * og], axes=([1, 2, 3, 4], [1, 2, 3, 4]))
        if bias is not None:
            y = y + bias[None, :, None, None, None]
        return y, (x, xp.shape, weight, bias is not None, s, p, d, groups)

    @staticmethod
    def backward(saved, g):
        x, xp_shape, weight, has_bias, s, p, d, groups = saved
        xp = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in p))
        o, cg = weight.shape[:2]
        k, og = weight.shape[2:], o // groups
        gxp, gw = np.zeros(xp_shape, g.dtype), np.zeros_like(weight)
        for cell in np.ndindex(*g.shape[2:]):
            box = tuple(slice(cell[a] * s[a], cell[a] * s[a] + d[a] * (k[a] - 1) + 1, d[a]) for a in range(3))
            for gi in range(groups):
                go = g[(slice(None), slice(gi * og, (gi + 1) * og)) + cell]  # (N, O/G)
                chans = (slice(None), slice(gi * cg, (gi + 1) * cg)) + box
                gw[gi * og:(gi + 1) * og] += np.tensordot(go, xp[chans], axes=([0], [0]))
                gxp[chans] += np.tensordot(go, weight[gi * og:(gi + 1) * og], axes=([1], [0]))
        gx = gxp[(slice(None), slice(None)) + tuple(slice(q, q + m) for q, m in zip(p, x.shape[2:]))]
        return (gx, gw, g.sum(axis=(0, 2, 3, 4))) if has_bias else (gx, gw)


@op("max_pool3d")
class MaxPool3d:
    """Window by window, the first maximum of a tie taking the gradient."""

    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        k, s, p = _triple(kernel_size), _triple(kernel_size if stride is None else stride), _triple(padding)
        xp = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in p), constant_values=-np.inf)
        outs = tuple((xp.shape[2 + a] - k[a]) // s[a] + 1 for a in range(3))
        y = np.zeros(x.shape[:2] + outs, x.dtype)
        picks = {}
        for cell in np.ndindex(*outs):
            box = tuple(slice(cell[a] * s[a], cell[a] * s[a] + k[a]) for a in range(3))
            block = xp[(slice(None), slice(None)) + box].reshape(x.shape[:2] + (-1,))
            j = block.argmax(axis=-1)
            y[(slice(None), slice(None)) + cell] = np.take_along_axis(block, j[..., None], axis=-1)[..., 0]
            picks[cell] = (box, j)
        return y, (x.shape, xp.shape, p, picks)

    @staticmethod
    def backward(saved, g):
        shape, xp_shape, p, picks = saved
        gxp = np.zeros(xp_shape, g.dtype)
        for cell, (box, j) in picks.items():
            local = np.zeros(shape[:2] + (int(np.prod([b.stop - b.start for b in box])),), g.dtype)
            np.put_along_axis(local, j[..., None], g[(slice(None), slice(None)) + cell][..., None], axis=-1)
            gxp[(slice(None), slice(None)) + box] += local.reshape(shape[:2] + tuple(b.stop - b.start for b in box))
        return (gxp[(slice(None), slice(None)) + tuple(slice(q, q + n) for q, n in zip(p, shape[2:]))],)


@op("avg_pool3d")
class AvgPool3d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
        k, s, p = _triple(kernel_size), _triple(kernel_size if stride is None else stride), _triple(padding)
        xp = np.pad(x, ((0, 0), (0, 0)) + tuple((q, q) for q in p))
        ones = np.pad(np.ones(x.shape[2:]), tuple((q, q) for q in p))
        outs = tuple((xp.shape[2 + a] - k[a]) // s[a] + 1 for a in range(3))
        y = np.zeros(x.shape[:2] + outs, x.dtype)
        counts = np.zeros(outs)
        for cell in np.ndindex(*outs):
            box = tuple(slice(cell[a] * s[a], cell[a] * s[a] + k[a]) for a in range(3))
            counts[cell] = np.prod(k) if count_include_pad else ones[box].sum()
            y[(slice(None), slice(None)) + cell] = xp[(slice(None), slice(None)) + box].sum(axis=(2, 3, 4)) / counts[cell]
        return y, (x.shape, xp.shape, k, s, p, counts)

    @staticmethod
    def backward(saved, g):
        shape, xp_shape, k, s, p, counts = saved
        gxp = np.zeros(xp_shape, g.dtype)
        for cell in np.ndindex(*counts.shape):
            box = tuple(slice(cell[a] * s[a], cell[a] * s[a] + k[a]) for a in range(3))
            gxp[(slice(None), slice(None)) + box] += (g[(slice(None), slice(None)) + cell] / counts[cell])[:, :, None, None, None]
        return (gxp[:, :, p[0]:p[0] + shape[2], p[1]:p[1] + shape[3], p[2]:p[2] + shape[4]],)


def _lp(nd):
    class LpPool:
        @staticmethod
        def forward(x, norm_type=2.0, kernel_size=2, stride=None):
            k = (kernel_size,) * nd if isinstance(kernel_size, int) else tuple(kernel_size)
            st = k if stride is None else ((stride,) * nd if isinstance(stride, int) else tuple(stride))
            outs = tuple((x.shape[2 + a] - k[a]) // st[a] + 1 for a in range(nd))
            sums = np.zeros(x.shape[:2] + outs, x.dtype)
            boxes = {}
            for cell in np.ndindex(*outs):
                box = tuple(slice(cell[a] * st[a], cell[a] * st[a] + k[a]) for a in range(nd))
                boxes[cell] = box
                sums[(slice(None), slice(None)) + cell] = (x[(slice(None), slice(None)) + box] ** norm_type).sum(
                    axis=tuple(range(2, 2 + nd)))
            y = sums if norm_type == 1 else np.sqrt(sums)
            return y.astype(x.dtype), (x, norm_type, boxes, sums, y)

        @staticmethod
        def backward(saved, g):
            x, p, boxes, sums, y = saved
            gx = np.zeros_like(x, dtype=g.dtype)
            for cell, box in boxes.items():
                idx = (slice(None), slice(None)) + cell
                if p == 1:
                    coef = np.where(sums[idx] != 0, g[idx], 0.0)
                    local = np.ones_like(x[(slice(None), slice(None)) + box])
                else:  # d sqrt(s) = x / sqrt(s)
                    coef = np.where(y[idx] > 0, g[idx] / np.where(y[idx] > 0, y[idx], 1.0), 0.0)
                    local = x[(slice(None), slice(None)) + box]
                gx[(slice(None), slice(None)) + box] += coef.reshape(coef.shape + (1,) * nd) * local
            return (gx,)

    return LpPool


for _nd in (1, 2):
    op(f"lp_pool{_nd}d")(_lp(_nd))


@op("local_response_norm")
class LocalResponseNorm:
    @staticmethod
    def forward(x, size, alpha=1e-4, beta=0.75, k=1.0):
        c = x.shape[1]
        pad = [(0, 0)] * x.ndim
        pad[1] = (size // 2, (size - 1) // 2)
        sq = np.pad(x * x, pad)
        window = np.stack([sq[:, i:i + size].sum(axis=1) for i in range(c)], axis=1)
        denom = k + alpha * window / size
        return (x / denom ** beta).astype(x.dtype), (x, denom, size, alpha, beta)

    @staticmethod
    def backward(saved, g):
        x, denom, size, alpha, beta = saved
        c = x.shape[1]
        u = g * x * beta * denom ** (-beta - 1) * alpha / size  # d y_c / d window_c, times g_c and x_c
        front = size // 2
        gx = g / denom ** beta
        for i in range(c):  # channel i is in the window of channel j when j - front <= i <= j - front + size - 1
            js = [j for j in range(c) if j - front <= i <= j - front + size - 1]
            gx[:, i] -= 2 * x[:, i] * u[:, js].sum(axis=1)
        return (gx.astype(x.dtype),)


@op("binary_cross_entropy")
class BinaryCrossEntropy:
    @staticmethod
    def forward(p, target, reduction="mean"):
        per = -(target * np.clip(np.log(p), -100, None) + (1 - target) * np.clip(np.log1p(-p), -100, None))
        return _reduced(per, reduction).astype(p.dtype), (p, target, _scale(reduction, per.size))

    @staticmethod
    def backward(saved, g):
        p, target, scale = saved
        return (g * scale * (p - target) / np.maximum(p * (1 - p), 1e-12)).astype(p.dtype), None


@op("cosine_embedding")
class CosineEmbedding:
    @staticmethod
    def forward(x1, x2, target, margin=0.0, reduction="mean"):
        eps = np.float32(1e-12).item()
        n1, n2 = (x1 ** 2).sum(-1) + eps, (x2 ** 2).sum(-1) + eps
        cos = (x1 * x2).sum(-1) / np.sqrt(n1 * n2)
        per = np.where(target == 1, 1 - cos, np.where(target == -1, np.maximum(cos - margin, 0), 0))
        slope = np.where(target == 1, -1.0, np.where((target == -1) & (cos >= margin), 1.0, 0.0))
        return _reduced(per, reduction).astype(x1.dtype), (x1, x2, n1, n2, cos, slope, _scale(reduction, per.size))

    @staticmethod
    def backward(saved, g):
        x1, x2, n1, n2, cos, slope, scale = saved
        c = (g * scale * slope)[:, None]
        r = np.sqrt(n1 * n2)[:, None]
        return ((c * (x2 / r - cos[:, None] * x1 / n1[:, None])).astype(x1.dtype),
                (c * (x1 / r - cos[:, None] * x2 / n2[:, None])).astype(x2.dtype), None)


def _triplet(with_p):
    class Triplet:
        @staticmethod
        def forward(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
            def dist(a, b):
                v = a - b + eps
                return np.linalg.norm(v, axis=-1), v

            (dp, vp), (dn, vn), (ds, vs) = dist(anchor, positive), dist(anchor, negative), dist(positive, negative)
            use_s = np.zeros(dn.shape) if not swap else np.where(ds < dn, 1.0, np.where(ds == dn, 0.5, 0.0))
            neg = np.where(use_s > 0, ds, dn)
            z = margin + dp - neg
            per = np.maximum(z, 0)
            return _reduced(per, reduction).astype(anchor.dtype), (
                vp / dp[:, None], vn / dn[:, None], vs / ds[:, None], use_s, z >= 0, _scale(reduction, per.size))

        @staticmethod
        def backward(saved, g):
            up, un, us, use_s, on, scale = saved
            c = (g * scale * on)[:, None]
            s = use_s[:, None]
            ga = c * (up - (1 - s) * un)
            gp = c * (-up - s * us)
            gn = c * ((1 - s) * un + s * us)
            return tuple(t.astype(up.dtype) for t in (ga, gp, gn))

    if not with_p:
        class WithDistance(Triplet):
            @staticmethod
            def forward(anchor, positive, negative, margin=1.0, swap=False, reduction="mean"):
                return Triplet.forward(anchor, positive, negative, margin, 2.0, 1e-6, swap, reduction)

        return WithDistance
    return Triplet


op("triplet_margin")(_triplet(True))
op("triplet_margin_with_distance")(_triplet(False))


@op("multi_margin")
class MultiMargin:
    @staticmethod
    def forward(x, target, p=1, margin=1.0, reduction="mean"):
        n, c = x.shape
        per = np.zeros(n, x.dtype)
        slopes = np.zeros(x.shape)
        for r in range(n):
            y = target[r]
            for i in range(c):
                z = margin - x[r, y] + x[r, i]
                if i != y and z > 0:
                    per[r] += (z if p == 1 else z * z) / c
                    d = (1.0 if p == 1 else 2 * z) / c
                    slopes[r, i] += d
                    slopes[r, y] -= d
        return _reduced(per, reduction).astype(x.dtype), (slopes, _scale(reduction, n))

    @staticmethod
    def backward(saved, g):
        slopes, scale = saved
        gg = np.asarray(g).reshape(-1, 1) if np.ndim(g) else g
        return (gg * scale * slopes).astype(np.asarray(g).dtype), None


@op("multilabel_margin")
class MultilabelMargin:
    @staticmethod
    def forward(x, target, reduction="mean"):
        n, c = x.shape
        per = np.zeros(n, x.dtype)
        slopes = np.zeros(x.shape)
        for r in range(n):
            labels = []
            for t in target[r]:
                if t < 0:
                    break
                labels.append(int(t))
            others = [i for i in range(c) if i not in labels]
            for j in labels:
                for i in others:
                    z = 1 - (x[r, j] - x[r, i])
                    if z > 0:
                        per[r] += z / c
                        slopes[r, i] += 1 / c
                        slopes[r, j] -= 1 / c
        return _reduced(per, reduction).astype(x.dtype), (slopes, _scale(reduction, n))

    backward = MultiMargin.backward


# ---------------------------------------------------------------- recurrent layers, unrolled by hand


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


@op("lstm")
class LSTM:
    """Four gate matrices sliced out of torch's stacked layout, one step at a time."""

    @staticmethod
    def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        hsz = h0.shape[1]
        parts = [(w_ih[k * hsz:(k + 1) * hsz], w_hh[k * hsz:(k + 1) * hsz], b_ih[k * hsz:(k + 1) * hsz] + b_hh[k * hsz:(k + 1) * hsz])
                 for k in range(4)]
        h, c, hs, tape = h0, c0, [], []
        for t in range(x.shape[1]):
            xt = x[:, t]
            i, f, g, o = (xt @ wi.T + h @ wh.T + b for wi, wh, b in parts)
            i, f, g, o = _sig(i), _sig(f), np.tanh(g), _sig(o)
            c_next = f * c + i * g
            tape.append((xt, h, c, i, f, g, o, c_next))
            h, c = o * np.tanh(c_next), c_next
            hs.append(h)
        return np.stack(hs, 1).astype(x.dtype), (parts, tape, x.dtype)

    @staticmethod
    def backward(saved, gy):
        parts, tape, dtype = saved
        gw_i = [np.zeros_like(p[0]) for p in parts]
        gw_h = [np.zeros_like(p[1]) for p in parts]
        gb = [np.zeros_like(p[2]) for p in parts]
        gx = np.zeros((gy.shape[0], gy.shape[1], parts[0][0].shape[1]))
        dh_next, dc_next = 0.0, 0.0
        for t in range(len(tape) - 1, -1, -1):
            xt, h, c, i, f, g, o, c_next = tape[t]
            dh = gy[:, t] + dh_next
            tanh_c = np.tanh(c_next)
            dc = dc_next + dh * o * (1 - tanh_c ** 2)
            pre = [dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g ** 2), dh * tanh_c * o * (1 - o)]
            dh_next = sum(d @ p[1] for d, p in zip(pre, parts))
            gx[:, t] = sum(d @ p[0] for d, p in zip(pre, parts))
            for k, d in enumerate(pre):
                gw_i[k] += d.T @ xt
                gw_h[k] += d.T @ h
                gb[k] += d.sum(0)
            dc_next = dc * f
        bias = np.concatenate(gb).astype(dtype)
        return (gx.astype(dtype), np.asarray(dh_next).astype(dtype), np.asarray(dc_next).astype(dtype),
                np.concatenate(gw_i).astype(dtype), np.concatenate(gw_h).astype(dtype), bias, bias.copy())


@op("gru")
class GRU:
    @staticmethod
    def forward(x, h0, w_ih, w_hh, b_ih, b_hh):
        hsz = h0.shape[1]
        sl = [slice(k * hsz, (k + 1) * hsz) for k in range(3)]
        h, hs, tape = h0, [], []
        for t in range(x.shape[1]):
            xt = x[:, t]
            r = _sig(xt @ w_ih[sl[0]].T + b_ih[sl[0]] + h @ w_hh[sl[0]].T + b_hh[sl[0]])
            z = _sig(xt @ w_ih[sl[1]].T + b_ih[sl[1]] + h @ w_hh[sl[1]].T + b_hh[sl[1]])
            hn = h @ w_hh[sl[2]].T + b_hh[sl[2]]
            n = np.tanh(xt @ w_ih[sl[2]].T + b_ih[sl[2]] + r * hn)
            tape.append((xt, h, r, z, n, hn))
            h = (1 - z) * n + z * h
            hs.append(h)
        return np.stack(hs, 1).astype(x.dtype), (w_ih, w_hh, sl, tape, x.dtype)

    @staticmethod
    def backward(saved, gy):
        w_ih, w_hh, sl, tape, dtype = saved
        gwi, gwh = np.zeros(w_ih.shape), np.zeros(w_hh.shape)
        gbi, gbh = np.zeros(w_ih.shape[0]), np.zeros(w_hh.shape[0])
        gx = np.zeros((gy.shape[0], gy.shape[1], w_ih.shape[1]))
        dh_next = np.zeros(tape[0][1].shape)
        for t in reversed(range(len(tape))):
            xt, h, r, z, n, hn = tape[t]
            dh = gy[:, t] + dh_next
            dn_pre = dh * (1 - z) * (1 - n ** 2)
            dz_pre = dh * (h - n) * z * (1 - z)
            dr_pre = dn_pre * hn * r * (1 - r)
            dh_next = dh * z
            for k, (di, dhh) in enumerate(((dr_pre, dr_pre), (dz_pre, dz_pre), (dn_pre, dn_pre * r))):
                gwi[sl[k]] += di.T @ xt
                gbi[sl[k]] += di.sum(0)
                gwh[sl[k]] += dhh.T @ h
                gbh[sl[k]] += dhh.sum(0)
                gx[:, t] += di @ w_ih[sl[k]]
                dh_next = dh_next + dhh @ w_hh[sl[k]]
        return tuple(a.astype(dtype) for a in (gx, dh_next, gwi, gwh, gbi, gbh))


@op("rnn")
class RNN:
    @staticmethod
    def forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
        h, hs, tape = h0, [], []
        for t in range(x.shape[1]):
            pre = x[:, t] @ w_ih.T + h @ w_hh.T + b_ih + b_hh
            tape.append((x[:, t], h, pre))
            h = np.tanh(pre) if nonlinearity == "tanh" else np.maximum(pre, 0)
            hs.append(h)
        return np.stack(hs, 1).astype(x.dtype), (w_ih, w_hh, tape, nonlinearity, x.dtype)

    @staticmethod
    def backward(saved, gy):
        w_ih, w_hh, tape, nonlinearity, dtype = saved
        grads = [np.zeros((gy.shape[0], gy.shape[1], w_ih.shape[1])), None, np.zeros(w_ih.shape), np.zeros(w_hh.shape),
                 np.zeros(w_ih.shape[0])]
        dh = np.zeros(tape[0][1].shape)
        for t in reversed(range(len(tape))):
            xt, h, pre = tape[t]
            d = gy[:, t] + dh
            d = d * (1 - np.tanh(pre) ** 2) if nonlinearity == "tanh" else d * (pre > 0)
            grads[0][:, t] = d @ w_ih
            grads[2] += d.T @ xt
            grads[3] += d.T @ h
            grads[4] += d.sum(0)
            dh = d @ w_hh
        grads[1] = dh
        return tuple(a.astype(dtype) for a in grads) + (grads[4].astype(dtype),)


# ---------------------------------------------------------------- more tensor math


@op("exp")
class Exp:
    @staticmethod
    def forward(x):
        y = np.exp(x)
        return y, y

    @staticmethod
    def backward(y, g):
        return (g * y,)


@op("pow")
class Pow:
    @staticmethod
    def forward(x, exponent=2.0):
        return np.power(x, exponent), (x, exponent)

    @staticmethod
    def backward(saved, g):
        x, p = saved
        return ((g * p * np.power(x, p - 1)).astype(x.dtype),)


@op("log")
class Log:
    @staticmethod
    def forward(x):
        return np.log(x), x

    @staticmethod
    def backward(x, g):
        return (g * (1 / x),)


@op("sqrt")
class Sqrt:
    @staticmethod
    def forward(x):
        return np.sqrt(x), x

    @staticmethod
    def backward(x, g):
        return ((0.5 * g / np.sqrt(x)).astype(x.dtype),)


@op("rsqrt")
class Rsqrt:
    @staticmethod
    def forward(x):
        return 1 / np.sqrt(x), x

    @staticmethod
    def backward(x, g):
        return ((-0.5 * g / (x * np.sqrt(x))).astype(x.dtype),)


def _extreme_pair(larger):
    class Extreme:
        @staticmethod
        def forward(a, b):
            win = (a > b) if larger else (a < b)
            tie = a == b
            return np.where(win | tie, a, b), (a.shape, b.shape, win, tie)

        @staticmethod
        def backward(saved, g):
            a_shape, b_shape, win, tie = saved
            to_a = np.where(win, g, np.where(tie, g / 2, 0)).astype(g.dtype)
            return _unbroadcast(to_a, a_shape), _unbroadcast(g - to_a, b_shape)

    return Extreme


op("maximum")(_extreme_pair(True))
op("minimum")(_extreme_pair(False))


@op("where")
class Where:
    @staticmethod
    def forward(x, mask, other):
        m = mask.astype(bool)
        return np.where(m, x, other), (m, x.shape, other.shape)

    @staticmethod
    def backward(saved, g):
        m, xs, os_ = saved
        return _unbroadcast(g * m, xs).astype(g.dtype), None, _unbroadcast(g * ~m, os_).astype(g.dtype)


def _extreme_reduce(larger):
    class Reduce:
        @staticmethod
        def forward(x, dim=-1, keepdim=False):
            top = (x.max if larger else x.min)(axis=dim, keepdims=True)
            hits = (x == top).astype(x.dtype)
            y = top if keepdim else np.squeeze(top, axis=dim)
            return y, (hits / hits.sum(axis=dim, keepdims=True), dim, keepdim)

        @staticmethod
        def backward(saved, g):
            weights, dim, keepdim = saved
            return ((g if keepdim else np.expand_dims(g, dim)) * weights,)

    return Reduce


op("amax")(_extreme_reduce(True))
op("amin")(_extreme_reduce(False))


@op("cumprod")
class Cumprod:
    """The VJP as a sum over the products that skip each element (no division)."""

    @staticmethod
    def forward(x, dim=-1):
        return np.cumprod(x, axis=dim), (x, dim)

    @staticmethod
    def backward(saved, g):
        x, dim = saved
        xs, gs = np.moveaxis(x, dim, 0), np.moveaxis(g, dim, 0)
        n = xs.shape[0]
        gx = np.zeros_like(gs)
        for j in range(n):
            for i in range(j, n):
                prod = np.ones_like(xs[0])
                for k in range(i + 1):
                    if k != j:
                        prod = prod * xs[k]
                gx[j] += gs[i] * prod
        return (np.moveaxis(gx, 0, dim),)


@op("stack")
class Stack:
    @staticmethod
    def forward(*xs, dim=0):
        return np.stack(xs, axis=dim), (len(xs), dim)

    @staticmethod
    def backward(saved, g):
        n, dim = saved
        parts = np.split(g, n, axis=dim)
        return tuple(np.squeeze(p, axis=dim) for p in parts)


@op("max_unpool2d")
class MaxUnpool2d:
    # a loop over (sample, channel) planes, the output size worked out by hand
    @staticmethod
    def forward(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(kernel_size if stride is None else stride)
        ph, pw = _pair(padding)
        n, c, h, w = x.shape
        if output_size is None:
            oh, ow = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
        else:
            oh, ow = _pair(output_size)[-2:]
        out = np.zeros((n, c, oh * ow), dtype=x.dtype)
        for i in range(n):
            for j in range(c):
                out[i, j, indices[i, j].ravel()] = x[i, j].ravel()
        return out.reshape(n, c, oh, ow), (indices, x.shape)

    @staticmethod
    def backward(saved, g):
        indices, shape = saved
        n, c = shape[:2]
        flat = g.reshape(n, c, -1)
        gx = np.empty(shape, dtype=g.dtype)
        for i in range(n):
            for j in range(c):
                gx[i, j] = flat[i, j, indices[i, j].ravel()].reshape(shape[2:])
        return gx, None
