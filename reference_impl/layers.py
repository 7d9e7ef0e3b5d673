"""Layers with parameters or spatial structure: linear, matmul, conv, pooling,
embedding, scaled dot-product attention."""

import math
from typing import NamedTuple

import numpy as np

from ._util import out_size, pair, unbroadcast, window_slices


# ---------------------------------------------------------------- linear, matmul


def linear_forward(x, weight, bias=None):
    # x (..., in), weight (out, in), bias (out): y = x W^T + b
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    return y, (x, weight, bias is not None)


def linear_backward(cache, g):
    x, weight, has_bias = cache
    gx = g @ weight
    g2 = g.reshape(-1, g.shape[-1])
    gw = g2.T @ x.reshape(-1, x.shape[-1])
    if not has_bias:
        return gx, gw
    return gx, gw, g2.sum(axis=0)


def matmul_forward(a, b):
    # a (..., n, k) @ b (..., k, m); batch dimensions broadcast.  A 1-d a is a
    # row (1, k) and a 1-d b a column (k, 1), their unit axis dropped from the
    # output (torch.matmul's rule).
    return a @ b, (a, b)


def matmul_backward(cache, g):
    a, b = cache
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None] if b.ndim == 1 else g  # the dropped axes back
    g2 = np.expand_dims(g2, -2) if a.ndim == 1 else g2
    ga = g2 @ np.swapaxes(b2, -1, -2)
    gb = np.swapaxes(a2, -1, -2) @ g2
    return unbroadcast(ga, a2.shape).reshape(a.shape), unbroadcast(gb, b2.shape).reshape(b.shape)


# ---------------------------------------------------------------- convolution
#
# The convolution is a sum over kernel taps (i, j): tap (i, j) multiplies the
# strided slice of the padded input that it reads by weight[:, :, i, j].  The VJP
# runs the same loop: the weight gradient of a tap correlates the output gradient
# with that slice, and the input gradient of a tap is scattered back into it.


def _conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    xg = xp.reshape(n, groups, cg, *xp.shape[2:])  # (N, G, C/G, Hp, Wp)
    wg = weight.reshape(groups, o // groups, cg, kh, kw)  # (G, O/G, C/G, KH, KW)
    out = np.zeros((n, groups, o // groups, oh, ow), dtype=np.result_type(x, weight))
    taps = [
        (i, j, window_slices(i, dh, sh, oh), window_slices(j, dw, sw, ow))
        for i in range(kh)
        for j in range(kw)
    ]
    for i, j, si, sj in taps:
        out += np.einsum("ngchw,goc->ngohw", xg[..., si, sj], wg[..., i, j])
    out = out.reshape(n, o, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out, (x.shape, (ph, pw), xg, wg, taps, bias is not None)


def _conv2d_backward(cache, g):
    x_shape, (ph, pw), xg, wg, taps, has_bias = cache
    n, c, h, w = x_shape
    groups, og = wg.shape[:2]
    gg = g.reshape(n, groups, og, *g.shape[2:])
    gxg = np.zeros_like(xg, dtype=np.result_type(xg, g))
    gwg = np.zeros_like(wg, dtype=np.result_type(wg, g))
    for i, j, si, sj in taps:
        gwg[..., i, j] = np.einsum("ngohw,ngchw->goc", gg, xg[..., si, sj])
        gxg[..., si, sj] += np.einsum("ngohw,goc->ngchw", gg, wg[..., i, j])
    gx = gxg.reshape(n, c, *gxg.shape[3:])[:, :, ph : ph + h, pw : pw + w]
    gw = gwg.reshape(-1, *wg.shape[2:])
    if not has_bias:
        return gx, gw
    return gx, gw, g.sum(axis=(0, 2, 3))


def _conv1d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    # conv1d is conv2d on an image of height 1.
    y, cache = _conv2d_forward(
        x[:, :, None, :], weight[:, :, None, :], bias,
        stride=(1, stride), padding=(0, padding), dilation=(1, dilation), groups=groups,
    )
    return y[:, :, 0, :], cache


def _conv1d_backward(cache, g):
    grads = _conv2d_backward(cache, g[:, :, None, :])
    return (grads[0][:, :, 0, :], grads[1][:, :, 0, :]) + grads[2:]


class Prepadded(NamedTuple):
    """The cache of a convolution whose input was padded first (padding 'same'
    or 'valid', or a padding_mode other than zeros): the pad's, then the
    convolution's on the padded input with no padding of its own."""

    pad: tuple
    conv: tuple


def conv_pads(padding, kernel, dilation=1):
    """(before, after) per spatial axis of a convolution: an int or tuple as given
    on both sides, 'valid' none, 'same' the d (k - 1) a stride-1 output needs to
    keep its size, the odd one after (torch's rule)."""
    nd = len(kernel)
    dilation = (dilation,) * nd if isinstance(dilation, (int, np.integer)) else tuple(dilation)
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    padding = (padding,) * nd if isinstance(padding, (int, np.integer)) else tuple(padding)
    return tuple((int(p), int(p)) for p in padding)


_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def with_padding(forward, backward):
    """A convolution that also takes padding 'same' / 'valid' and torch's
    padding_mode (nn.ConvNd's: zeros, reflect, replicate, circular): the input
    padded by the pad op's forward first, its gradient through the pad op's VJP
    last (a reflected or wrapped position gets the gradient of every tap that
    reads it).  Numeric padding with zeros keeps the convolution's own path."""
    from .tensor_math import pad_backward, pad_forward

    def conv_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {sorted(_PAD_MODES)}, got {padding_mode!r}")
        if not isinstance(padding, str) and padding_mode == "zeros":
            return forward(x, weight, bias, stride, padding, dilation, groups)
        pads = conv_pads(padding, weight.shape[2:], dilation)
        flat = tuple(p for before_after in reversed(pads) for p in before_after)  # last axis first, as pad takes it
        xp, pad_cache = pad_forward(x, flat, mode=_PAD_MODES[padding_mode])
        y, cache = forward(xp, weight, bias, stride, 0, dilation, groups)
        return y, Prepadded(pad_cache, cache)

    def conv_backward(cache, g):
        if not isinstance(cache, Prepadded):
            return backward(cache, g)
        grads = backward(cache.conv, g)
        return pad_backward(cache.pad, grads[0]) + tuple(grads[1:])

    return conv_forward, conv_backward


conv1d_forward, conv1d_backward = with_padding(_conv1d_forward, _conv1d_backward)
conv2d_forward, conv2d_backward = with_padding(_conv2d_forward, _conv2d_backward)


# ---------------------------------------------------------------- pooling


def pool_out(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """A pooling window count along one axis (torch's rule: with ceil_mode the
    last window may hang over the end, but must start inside the input or its
    left padding)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out


def pool_geometry(shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """For (N, C, H, W): the padding of each axis as (before, after) (after
    includes a ceil_mode overhang) and the taps, (rows, cols) slices of the padded
    image, one per kernel position, each reading that position of every window."""
    (kh, kw), (sh, sw) = pair(kernel_size), pair(kernel_size if stride is None else stride)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    oh = pool_out(shape[2], kh, sh, ph, dh, ceil_mode)
    ow = pool_out(shape[3], kw, sw, pw, dw, ceil_mode)
    after_h = max(ph, (oh - 1) * sh + dh * (kh - 1) + 1 - shape[2] - ph)
    after_w = max(pw, (ow - 1) * sw + dw * (kw - 1) + 1 - shape[3] - pw)
    taps = [(window_slices(i, dh, sh, oh), window_slices(j, dw, sw, ow)) for i in range(kh) for j in range(kw)]
    return ((ph, after_h), (pw, after_w)), taps


def _pool_geometry(x, kernel_size, stride, padding):
    ((ph, _), (pw, _)), taps = pool_geometry(x.shape, kernel_size, stride, padding)
    return (ph, pw), taps


def max_pool2d_forward(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    pads, taps = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0)) + pads, constant_values=-np.inf)
    windows = np.stack([xp[..., si, sj] for si, sj in taps], axis=-1)
    # Winner per window; on a tie the first tap in row-major order wins.
    winner = np.argmax(np.real(windows), axis=-1)
    y = np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0]
    return y, (x.shape, xp.shape, (pads[0][0], pads[1][0]), taps, winner)


def max_pool2d_backward(cache, g):
    x_shape, xp_shape, (ph, pw), taps, winner = cache
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for k, (si, sj) in enumerate(taps):
        gxp[..., si, sj] += np.where(winner == k, g, 0)
    return (gxp[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]],)


def avg_pool2d_forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True, divisor_override=None,
                       ceil_mode=False):
    # The window's sum over its size; with count_include_pad=False over the input
    # elements it covers, the zero padding left out of the divisor; with
    # divisor_override, over that number whatever the window covers.  A
    # ceil_mode window hanging past the padding counts only what it covers of
    # the padded input (torch's rule), so its divisor is smaller even with
    # count_include_pad.
    ((ph, ah), (pw, aw)), taps = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ah), (pw, aw)))
    total = sum(xp[..., si, sj] for si, sj in taps)
    h, w = x.shape[2:]
    if divisor_override is not None:
        divisor = divisor_override
    elif (ah, aw) == (ph, pw) and (count_include_pad or (ph, pw) == (0, 0)):
        divisor = len(taps)
    else:
        counted = (np.pad(np.ones((h + 2 * ph, w + 2 * pw)), ((0, ah - ph), (0, aw - pw))) if count_include_pad
                   else np.pad(np.ones((h, w)), ((ph, ah), (pw, aw))))
        divisor = sum(counted[si, sj] for si, sj in taps).astype(x.dtype)
    return total / divisor, (x.shape, xp.shape, (ph, pw), taps, divisor)


def avg_pool2d_backward(cache, g):
    x_shape, xp_shape, (ph, pw), taps, divisor = cache
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for si, sj in taps:
        gxp[..., si, sj] += g / divisor
    return (gxp[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]],)


def global_avg_pool_forward(x):
    # (N, C, *spatial) -> (N, C)
    axes = tuple(range(2, x.ndim))
    return x.mean(axis=axes), x.shape


def global_avg_pool_backward(x_shape, g):
    count = int(np.prod(x_shape[2:]))
    g = g.reshape(g.shape + (1,) * (len(x_shape) - 2))
    return (np.broadcast_to(g / count, x_shape).copy(),)


# ---------------------------------------------------------------- embedding, attention


def embedding_forward(ids, table, padding_idx=None):
    return table[ids], (ids, table.shape, padding_idx)


def embedding_backward(cache, g):
    ids, table_shape, padding_idx = cache
    gt = np.zeros(table_shape, dtype=g.dtype)
    np.add.at(gt, ids, g)  # a repeated id accumulates, it does not overwrite
    if padding_idx is not None:
        gt[padding_idx] = 0  # the padding row is looked up but never trained
    return None, gt


def attention_forward(q, k, v, attn_mask=None, causal=False, scale=None):
    # q (..., L, E), k (..., S, E), v (..., S, Ev); softmax(q k^T * scale + mask) v,
    # scale 1/sqrt(E) unless given; attn_mask (broadcasting to (..., L, S)) is added
    # to the scores (a constant: no gradient).
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if attn_mask is not None:
        s = s + attn_mask
    if causal:
        # torch's is_causal: query i sees keys 0..i (top-left aligned).
        keep = np.tril(np.ones(s.shape[-2:], dtype=bool))
        s = np.where(keep, s, -np.inf)
    s = s - np.max(np.real(s), axis=-1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=-1, keepdims=True)
    return p @ v, (q, k, v, p, scale, attn_mask is not None)


def attention_backward(cache, g):
    q, k, v, p, scale, masked = cache
    gv = np.swapaxes(p, -1, -2) @ g
    gp = g @ np.swapaxes(v, -1, -2)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))  # softmax VJP
    gq = (gs @ k) * scale
    gk = (np.swapaxes(gs, -1, -2) @ q) * scale
    return (gq, gk, gv, None) if masked else (gq, gk, gv)


def _as_2d(x):
    return x[:, :, None, :]


def max_pool1d_forward(x, kernel_size=2, stride=None, padding=0):
    # (N, C, L): max_pool2d over windows one row high
    y, cache = max_pool2d_forward(_as_2d(x), (1, kernel_size), (1, kernel_size if stride is None else stride),
                                  (0, padding))
    return y[:, :, 0, :], cache


def max_pool1d_backward(cache, g):
    return (max_pool2d_backward(cache, _as_2d(g))[0][:, :, 0, :],)


def avg_pool1d_forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
    y, cache = avg_pool2d_forward(_as_2d(x), (1, kernel_size), (1, kernel_size if stride is None else stride),
                                  (0, padding), count_include_pad)
    return y[:, :, 0, :], cache


def avg_pool1d_backward(cache, g):
    return (avg_pool2d_backward(cache, _as_2d(g))[0][:, :, 0, :],)


def _adaptive_windows(size, out):
    # torch's adaptive windows: [floor(i size / out), ceil((i + 1) size / out))
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_avg_pool1d_forward(x, output_size=1):
    wins = _adaptive_windows(x.shape[-1], output_size)
    y = np.stack([x[..., a:b].mean(axis=-1) for a, b in wins], axis=-1)
    return y, (x.shape, wins)


def adaptive_avg_pool1d_backward(cache, g):
    shape, wins = cache
    gx = np.zeros(shape, dtype=g.dtype)
    for k, (a, b) in enumerate(wins):
        gx[..., a:b] += g[..., k:k + 1] / (b - a)  # overlapping windows both send theirs
    return (gx,)


def adaptive_avg_pool2d_forward(x, output_size=1):
    oh, ow = pair(output_size)
    rows, cols = _adaptive_windows(x.shape[-2], oh), _adaptive_windows(x.shape[-1], ow)
    y = np.stack([np.stack([x[..., a:b, c:d].mean(axis=(-2, -1)) for c, d in cols], axis=-1) for a, b in rows],
                 axis=-2)
    return y, (x.shape, rows, cols)


def adaptive_avg_pool2d_backward(cache, g):
    shape, rows, cols = cache
    gx = np.zeros(shape, dtype=g.dtype)
    for i, (a, b) in enumerate(rows):
        for j, (c, d) in enumerate(cols):
            gx[..., a:b, c:d] += g[..., i:i + 1, j:j + 1] / ((b - a) * (d - c))
    return (gx,)
