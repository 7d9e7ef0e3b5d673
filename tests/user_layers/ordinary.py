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


def _windows(x, kernel_size, stride, padding, fill):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = _im2col(xp, kh, kw, sh, sw, 1, 1, oh, ow)  # (N, C, kh, kw, oh, ow)
    return cols, (x.shape, xp.shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow))


def _scatter(gcols, geometry):
    x_shape, xp_shape, (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geometry
    gxp = np.zeros(xp_shape, dtype=gcols.dtype)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += gcols[:, :, i, j]
    return gxp[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


@op("max_pool2d")
class MaxPool2d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        cols, geometry = _windows(x, kernel_size, stride, padding, -np.inf)
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
    def forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
        cols, geometry = _windows(x, kernel_size, stride, padding, 0.0)
        if count_include_pad:
            count = np.prod(geometry[2])
        else:  # the windows of a ones image padded with zeros count the real elements
            count = _windows(np.ones((1, 1) + x.shape[2:]), kernel_size, stride, padding, 0.0)[0].sum(axis=(2, 3))
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
    def forward(ids, table):
        return table[ids], (ids, table.shape)

    @staticmethod
    def backward(saved, g):
        ids, shape = saved
        gt = np.zeros(shape, dtype=g.dtype)
        flat = g.reshape(-1, shape[1])
        for row, i in zip(flat, ids.reshape(-1)):
            gt[i] += row
        return None, gt


@op("attention")
class Attention:
    @staticmethod
    def forward(q, k, v, causal=False):
        scale = 1 / math.sqrt(q.shape[-1])
        s = np.einsum("...le,...se->...ls", q, k) * scale
        if causal:
            s = np.where(np.tri(s.shape[-2], s.shape[-1], dtype=bool), s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("...ls,...sd->...ld", p, v), (q, k, v, p, scale)

    @staticmethod
    def backward(saved, g):
        q, k, v, p, scale = saved
        gv = np.einsum("...ls,...ld->...sd", p, g)
        gp = np.einsum("...ld,...sd->...ls", g, v)
        gs = p * (gp - np.sum(gp * p, axis=-1, keepdims=True))
        return np.einsum("...ls,...se->...le", gs, k) * scale, np.einsum("...ls,...le->...se", gs, q) * scale, gv


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
    def forward(logits, target, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        keep = (target != ignore_index)[:, None]
        c = logp.shape[1]
        q = (1 - label_smoothing) * np.eye(c, dtype=logp.dtype)[np.where(keep[:, 0], target, 0)] + label_smoothing / c
        n = int(keep.sum()) if reduction == "mean" else 1
        return np.asarray(-(q * logp * keep).sum() / n, dtype=logits.dtype), (logp, q * keep, keep, n)

    @staticmethod
    def backward(saved, g):
        logp, q, keep, n = saved
        return g * (np.exp(logp) * keep - q) / n, None


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
    def forward(logp, target, reduction="mean", ignore_index=-100):
        keep = target != ignore_index
        picked = -logp[np.arange(len(target))[keep], target[keep]]
        k = 1.0 / keep.sum() if reduction == "mean" else 1.0
        return np.asarray(picked.sum() * k, dtype=logp.dtype), (logp.shape, logp.dtype, target, keep, k)

    @staticmethod
    def backward(saved, g):
        shape, dtype, target, keep, k = saved
        grad = np.zeros(shape, dtype)
        np.add.at(grad, (np.nonzero(keep)[0], target[keep]), -g * k)
        return grad, None


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
