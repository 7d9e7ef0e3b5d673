"""Layers over spatial axes: transposed convolution, unfold/fold, interpolation,
channel shuffle, bilinear, embedding bags, pairwise distances within a set, and
the adaptive-max, power-average (lp) and 3-d average pools.

Each forward is written the direct way (a loop over kernel taps or windows, an
interpolation matrix per axis) and its VJP beside it, the same loop run
backwards."""

import itertools

import numpy as np

from ._util import out_size, pair, window_slices
from .layers import with_padding


def _tuple(v, n):
    if isinstance(v, (int, np.integer, float)):
        return (int(v),) * n
    return tuple(int(a) for a in v)


# ---------------------------------------------------------------- transposed convolution
#
# conv_transpose is the VJP of a convolution with respect to its input: input
# element (h, w) adds weight[c, :, i, j] * x to output position (h s + i d, w s + j d)
# of the uncropped output, and the padding is then cropped from both sides
# (output_padding widens the far side).


def _conv_transpose_forward(x, weight, bias, stride, padding, output_padding, groups, dilation, nd):
    n, c, *size = x.shape
    _, og, *ks = weight.shape
    ss, ps, ops, ds = (_tuple(v, nd) for v in (stride, padding, output_padding, dilation))
    outs = [(h - 1) * st - 2 * p + d * (k - 1) + o + 1 for h, k, st, p, o, d in zip(size, ks, ss, ps, ops, ds)]
    full = np.zeros((n, groups, og, *(o + 2 * p for o, p in zip(outs, ps))), dtype=np.result_type(x, weight))
    xg = x.reshape(n, groups, c // groups, *size)
    wg = weight.reshape(groups, c // groups, og, *ks)
    taps = [(idx, tuple(window_slices(i, d, st, h) for i, d, st, h in zip(idx, ds, ss, size)))
            for idx in itertools.product(*(range(k) for k in ks))]
    ax = "dhw"[-nd:]  # the spatial axes' letters
    for idx, sl in taps:
        full[(Ellipsis,) + sl] += np.einsum(f"ngc{ax},gco->ngo{ax}", xg, wg[(Ellipsis,) + idx])
    out = full[(Ellipsis,) + tuple(slice(p, p + o) for p, o in zip(ps, outs))].reshape(n, groups * og, *outs)
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * nd)
    return out, (xg, wg, taps, full.shape, ps, bias is not None)


def _conv_transpose_backward(cache, g):
    xg, wg, taps, full_shape, ps, has_bias = cache
    n, groups, og = full_shape[:3]
    gfull = np.zeros(full_shape, dtype=np.result_type(g, xg))
    gfull[(Ellipsis,) + tuple(slice(p, p + o) for p, o in zip(ps, g.shape[2:]))] = g.reshape(n, groups, og,
                                                                                           *g.shape[2:])
    gxg = np.zeros_like(xg, dtype=gfull.dtype)
    gwg = np.zeros_like(wg, dtype=np.result_type(wg, gfull))
    ax = "dhw"[-len(ps):]
    for idx, sl in taps:
        gxg += np.einsum(f"ngo{ax},gco->ngc{ax}", gfull[(Ellipsis,) + sl], wg[(Ellipsis,) + idx])
        gwg[(Ellipsis,) + idx] = np.einsum(f"ngc{ax},ngo{ax}->gco", xg, gfull[(Ellipsis,) + sl])
    grads = (gxg.reshape(n, -1, *xg.shape[3:]), gwg.reshape(-1, *wg.shape[2:]))
    return grads + ((g.sum(axis=(0,) + tuple(range(2, g.ndim))),) if has_bias else ())


def conv_transpose2d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose_forward(x, weight, bias, stride, padding, output_padding, groups, dilation, 2)


def conv_transpose3d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose_forward(x, weight, bias, stride, padding, output_padding, groups, dilation, 3)


conv_transpose2d_backward = conv_transpose3d_backward = _conv_transpose_backward


def conv_transpose1d_forward(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    y, cache = conv_transpose2d_forward(x[:, :, None, :], weight[:, :, None, :], bias, (1, stride), (0, padding),
                                        (0, output_padding), groups, (1, dilation))
    return y[:, :, 0, :], cache


def conv_transpose1d_backward(cache, g):
    grads = conv_transpose2d_backward(cache, g[:, :, None, :])
    return (grads[0][:, :, 0, :], grads[1][:, :, 0, :]) + grads[2:]


# ---------------------------------------------------------------- unfold / fold (im2col and its adjoint)


def _im2col_geometry(size, kernel_size, dilation, padding, stride):
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = pair(kernel_size), pair(dilation), pair(padding), pair(stride)
    oh, ow = out_size(size[0], kh, sh, ph, dh), out_size(size[1], kw, sw, pw, dw)
    taps = [(window_slices(i, dh, sh, oh), window_slices(j, dw, sw, ow)) for i in range(kh) for j in range(kw)]
    return (ph, pw), (oh, ow), taps


def unfold_forward(x, kernel_size, dilation=1, padding=0, stride=1):
    # (N, C, H, W) -> (N, C * kh * kw, L): row c * kh * kw + i * kw + j holds tap (i, j) of channel c
    n, c = x.shape[:2]
    (ph, pw), (oh, ow), taps = _im2col_geometry(x.shape[2:], kernel_size, dilation, padding, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.stack([xp[..., si, sj] for si, sj in taps], axis=2)  # (N, C, taps, oh, ow)
    return cols.reshape(n, c * len(taps), oh * ow), (x.shape, xp.shape, (ph, pw), (oh, ow), taps)


def unfold_backward(cache, g):
    return (_col2im(g, *cache),)


def _col2im(cols, x_shape, xp_shape, pads, out, taps):
    n, c = x_shape[:2]
    ph, pw = pads
    cols = cols.reshape(n, c, len(taps), *out)
    xp = np.zeros(xp_shape, dtype=cols.dtype)
    for k, (si, sj) in enumerate(taps):
        xp[..., si, sj] += cols[:, :, k]  # overlapping windows add
    return xp[..., ph:ph + x_shape[2], pw:pw + x_shape[3]]


def fold_forward(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    # (N, C * kh * kw, L) -> (N, C, H, W): the adjoint of unfold, overlaps summed
    (kh, kw), (h, w) = pair(kernel_size), pair(output_size)
    n = x.shape[0]
    c = x.shape[1] // (kh * kw)
    (ph, pw), out, taps = _im2col_geometry((h, w), kernel_size, dilation, padding, stride)
    geometry = ((n, c, h, w), (n, c, h + 2 * ph, w + 2 * pw), (ph, pw), out, taps)
    return _col2im(x, *geometry), geometry


def fold_backward(geometry, g):
    x_shape, xp_shape, (ph, pw), (oh, ow), taps = geometry
    gp = np.pad(g, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.stack([gp[..., si, sj] for si, sj in taps], axis=2)
    return (cols.reshape(x_shape[0], -1, oh * ow),)


# ---------------------------------------------------------------- interpolate
#
# Every mode here is linear in x: output index o along an axis reads input
# indices with weights, one (out, in) matrix per spatial axis, and the VJP applies
# the transposed matrices.  The source coordinate follows torch: with a
# scale_factor given, the scale is 1 / scale_factor, else in / out; align_corners
# maps the corner pixels onto each other (scale (in - 1) / (out - 1)).

_CUBIC_A = -0.75  # torch's bicubic convolution constant


def _cubic(t):
    t = abs(t)
    if t <= 1:
        return ((_CUBIC_A + 2) * t - (_CUBIC_A + 3)) * t * t + 1
    if t < 2:
        return ((_CUBIC_A * t - 5 * _CUBIC_A) * t + 8 * _CUBIC_A) * t - 4 * _CUBIC_A
    return 0.0


def interpolation_matrix(n_in, n_out, mode, align_corners, scale_factor):
    scale = (1.0 / scale_factor) if scale_factor is not None else n_in / n_out
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        if mode == "nearest":
            m[o, min(int(np.floor(o * scale)), n_in - 1)] = 1.0
            continue
        if mode == "nearest-exact":
            m[o, min(int(np.floor((o + 0.5) * scale)), n_in - 1)] = 1.0
            continue
        if align_corners:
            src = o * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            src = (o + 0.5) * scale - 0.5
        if mode == "bicubic":
            i0 = int(np.floor(src))
            t = src - i0
            for k in range(-1, 3):
                m[o, min(max(i0 + k, 0), n_in - 1)] += _cubic(k - t)
            continue
        src = max(src, 0.0)  # linear modes clamp below at the first pixel
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[o, i0] += 1.0 - lam
        m[o, i1] += lam
    return m


def interpolate_sizes(in_sizes, size, scale_factor):
    if size is not None:
        return _tuple(size, len(in_sizes))
    factors = (scale_factor,) * len(in_sizes) if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
    return tuple(int(np.floor(s * f)) for s, f in zip(in_sizes, factors))


def interpolate_forward(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    spatial = x.shape[2:]
    outs = interpolate_sizes(spatial, size, scale_factor)
    factors = (scale_factor,) * len(spatial) if isinstance(scale_factor, (int, float)) or scale_factor is None \
        else tuple(scale_factor)
    mats = [interpolation_matrix(i, o, mode, bool(align_corners), f).astype(x.real.dtype)
            for i, o, f in zip(spatial, outs, factors)]
    y = x
    for axis, m in enumerate(mats):
        y = np.moveaxis(np.tensordot(y, m, axes=([2 + axis], [1])), -1, 2 + axis)
    return y, mats


def interpolate_backward(mats, g):
    for axis, m in enumerate(mats):
        g = np.moveaxis(np.tensordot(g, m, axes=([2 + axis], [0])), -1, 2 + axis)
    return (g,)


# ---------------------------------------------------------------- channel shuffle


def channel_shuffle_forward(x, groups):
    # channels (g, c/g) -> (c/g, g)
    n, c = x.shape[:2]
    y = x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)
    return y, (x.shape, groups)


def channel_shuffle_backward(cache, g):
    shape, groups = cache
    n, c = shape[:2]
    return (g.reshape(n, c // groups, groups, *shape[2:]).swapaxes(1, 2).reshape(shape),)


# ---------------------------------------------------------------- bilinear


def bilinear_forward(x1, x2, weight, bias=None):
    # y[..., o] = x1[..., i] weight[o, i, j] x2[..., j] + bias[o]
    y = np.einsum("...i,oij,...j->...o", x1, weight, x2)
    if bias is not None:
        y = y + bias
    return y, (x1, x2, weight, bias is not None)


def bilinear_backward(cache, g):
    x1, x2, weight, has_bias = cache
    g1 = np.einsum("...o,oij,...j->...i", g, weight, x2)
    g2 = np.einsum("...o,oij,...i->...j", g, weight, x1)
    gw = np.einsum("no,ni,nj->oij", g.reshape(-1, g.shape[-1]), x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1]))
    grads = (g1, g2, gw)
    return grads + ((g.reshape(-1, g.shape[-1]).sum(axis=0),) if has_bias else ())


# ---------------------------------------------------------------- embedding bags


def bags(ids, offsets):
    """The ids of each bag: the rows of a 2-d ids, or 1-d ids cut at the offsets."""
    if ids.ndim == 2:
        return [np.arange(i * ids.shape[1], (i + 1) * ids.shape[1]) for i in range(ids.shape[0])]
    ends = list(offsets[1:]) + [ids.shape[0]]
    return [np.arange(a, b) for a, b in zip(offsets, ends)]


def embedding_bag_forward(ids, table, per_sample_weights=None, offsets=None, mode="mean"):
    flat = ids.reshape(-1)
    rows = table[flat]  # (ids, D)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.reshape(-1)[:, None]
    out, winners = [], []
    for positions in bags(ids, offsets):
        if len(positions) == 0:  # an empty bag is zeros
            out.append(np.zeros(table.shape[1], dtype=rows.dtype))
            winners.append(None)
        elif mode == "max":
            k = np.argmax(np.real(rows[positions]), axis=0)  # per dim; the first of a tie
            out.append(rows[positions][k, np.arange(table.shape[1])])
            winners.append(positions[k])
        else:
            out.append(rows[positions].sum(axis=0) / (len(positions) if mode == "mean" else 1))
            winners.append(None)
    return np.stack(out), (flat, table.shape, table, per_sample_weights, bags(ids, offsets), winners, mode)


def embedding_bag_backward(cache, g):
    flat, table_shape, table, weights, bags, winners, mode = cache
    grow = np.zeros((flat.shape[0], table_shape[1]), dtype=g.dtype)  # the gradient of each looked-up row
    for b, positions in enumerate(bags):
        if len(positions) == 0:
            continue
        if mode == "max":
            grow[winners[b], np.arange(table_shape[1])] += g[b]
        else:
            grow[positions] += g[b] / (len(positions) if mode == "mean" else 1)
    gw = None
    if weights is not None:
        gw = (grow * table[flat]).sum(axis=1).reshape(weights.shape)
        grow = grow * weights.reshape(-1)[:, None]
    gt = np.zeros(table_shape, dtype=g.dtype)
    np.add.at(gt, flat, grow)  # a repeated id accumulates
    return (None, gt) + ((gw,) if weights is not None else ())


# ---------------------------------------------------------------- pdist


def pdist_forward(x, p=2.0):
    # the distances ||x_i - x_j||_2 of the rows, i < j, in row-major order
    i, j = np.triu_indices(x.shape[0], k=1)
    d = x[i] - x[j]
    dist = np.sqrt((d * d).sum(axis=1))
    return dist, (x.shape, i, j, d, dist)


def pdist_backward(cache, g):
    shape, i, j, d, dist = cache
    safe = np.where(dist == 0, 1.0, dist)
    contrib = np.where((dist == 0)[:, None], 0.0, d * (g / safe)[:, None])  # torch: 0 at coincident rows
    gx = np.zeros(shape, dtype=contrib.dtype)
    np.add.at(gx, i, contrib)
    np.add.at(gx, j, -contrib)
    return (gx,)


# ---------------------------------------------------------------- pools over n spatial axes


def _adaptive(size, out):
    return [(k * size // out, -(-(k + 1) * size // out)) for k in range(out)]


def windows_nd(spatial, output_size):
    outs = _tuple(output_size, len(spatial))
    return list(itertools.product(*(list(enumerate(_adaptive(s, o))) for s, o in zip(spatial, outs)))), outs


def _adaptive_max_pool(x, output_size, nd):
    batch = x.shape[:-nd]
    cells, outs = windows_nd(x.shape[-nd:], output_size)
    y = np.zeros(batch + outs, dtype=x.dtype)
    picks = []
    for cell in cells:
        index = tuple(k for k, _ in cell)
        region = tuple(slice(a, b) for _, (a, b) in cell)
        block = x[(Ellipsis,) + region].reshape(batch + (-1,))
        k = np.argmax(np.real(block), axis=-1)  # the first maximum of a tie
        y[(Ellipsis,) + index] = np.take_along_axis(block, k[..., None], axis=-1)[..., 0]
        picks.append((index, region, k))
    return y, (x.shape, nd, picks)


def _adaptive_max_backward(cache, g):
    shape, nd, picks = cache
    batch = shape[:-nd]
    gx = np.zeros(shape, dtype=g.dtype)
    for index, region, k in picks:
        sizes = tuple(s.stop - s.start for s in region)
        block = np.zeros(batch + (int(np.prod(sizes)),), dtype=g.dtype)
        np.put_along_axis(block, k[..., None], g[(Ellipsis,) + index][..., None], axis=-1)
        gx[(Ellipsis,) + region] += block.reshape(batch + sizes)  # overlapping windows both send theirs
    return (gx,)


def adaptive_max_pool1d_forward(x, output_size=1):
    return _adaptive_max_pool(x, output_size, 1)


def adaptive_max_pool2d_forward(x, output_size=1):
    return _adaptive_max_pool(x, output_size, 2)


def adaptive_max_pool3d_forward(x, output_size=1):
    return _adaptive_max_pool(x, output_size, 3)


adaptive_max_pool1d_backward = adaptive_max_pool2d_backward = adaptive_max_pool3d_backward = _adaptive_max_backward


def adaptive_avg_pool3d_forward(x, output_size=1):
    cells, outs = windows_nd(x.shape[2:], output_size)
    y = np.zeros(x.shape[:2] + outs, dtype=x.dtype)
    for cell in cells:
        y[(Ellipsis,) + tuple(k for k, _ in cell)] = x[(Ellipsis,) + tuple(slice(a, b) for _, (a, b) in cell)].mean(axis=(-3, -2, -1))
    return y, (x.shape, cells)


def adaptive_avg_pool3d_backward(cache, g):
    shape, cells = cache
    gx = np.zeros(shape, dtype=g.dtype)
    for cell in cells:
        region = tuple(slice(a, b) for _, (a, b) in cell)
        count = np.prod([b - a for _, (a, b) in cell])
        gx[(Ellipsis,) + region] += g[(Ellipsis,) + tuple(slice(k, k + 1) for k, _ in cell)] / count
    return (gx,)


def pool_taps(spatial, kernel_size, stride, padding=0):
    """Per spatial axis its padding, and the taps: tuples of slices, one per
    kernel position, each reading that position of every window of the padded
    input (the pools' geometry, and their kink rules')."""
    nd = len(spatial)
    ks = _tuple(kernel_size, nd)
    ss = _tuple(kernel_size if stride is None else stride, nd)
    ps = _tuple(padding, nd)
    outs = tuple(out_size(s, k, st, p) for s, k, st, p in zip(spatial, ks, ss, ps))
    taps = [tuple(window_slices(i, 1, st, o) for i, st, o in zip(idx, ss, outs))
            for idx in itertools.product(*(range(k) for k in ks))]
    return ps, taps


def _lp_pool(x, norm_type, kernel_size, stride, nd):
    # (sum over the window of x^p)^(1/p); p = 1 is the window's sum
    _, taps = pool_taps(x.shape[-nd:], kernel_size, stride)
    s = sum(x[(Ellipsis,) + t] ** norm_type for t in taps)
    y = s if norm_type == 1 else s ** (1.0 / norm_type)
    return y, (x, norm_type, taps, s, y)


def _lp_backward(cache, g):
    x, p, taps, s, y = cache
    if p == 1:  # torch's sign(out) * relu(|out|) has slope 0 where the sum is 0
        factor = np.where(s == 0, 0.0, g)
    else:  # d y / d x = x^(p-1) s^(1/p - 1)
        safe = np.where(s == 0, 1.0, s)
        factor = np.where(s == 0, 0.0, g * y / safe)
    gx = np.zeros(x.shape, dtype=np.result_type(x, g))
    for t in taps:
        xt = x[(Ellipsis,) + t]
        gx[(Ellipsis,) + t] += factor * (xt ** (p - 1) if p != 1 else 1.0)
    return (gx,)


def lp_pool1d_forward(x, norm_type=2.0, kernel_size=2, stride=None):
    return _lp_pool(x, norm_type, kernel_size, stride, 1)


def lp_pool2d_forward(x, norm_type=2.0, kernel_size=2, stride=None):
    return _lp_pool(x, norm_type, kernel_size, stride, 2)


def lp_pool3d_forward(x, norm_type=2.0, kernel_size=2, stride=None):
    return _lp_pool(x, norm_type, kernel_size, stride, 3)


lp_pool1d_backward = lp_pool2d_backward = lp_pool3d_backward = _lp_backward


def max_pool3d_forward(x, kernel_size=2, stride=None, padding=0):
    # max_pool2d's rule over (D, H, W) windows: the first maximum of a tie wins
    pads, taps = pool_taps(x.shape[2:], kernel_size, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in pads), constant_values=-np.inf)
    windows = np.stack([xp[(Ellipsis,) + t] for t in taps], axis=-1)
    winner = np.argmax(np.real(windows), axis=-1)
    return np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0], (x.shape, xp.shape, pads, taps, winner)


def max_pool3d_backward(cache, g):
    shape, xp_shape, pads, taps, winner = cache
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for k, t in enumerate(taps):
        gxp[(Ellipsis,) + t] += np.where(winner == k, g, 0)
    return (gxp[(Ellipsis,) + tuple(slice(p, p + s) for p, s in zip(pads, shape[2:]))],)


def avg_pool3d_forward(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
    pads, taps = pool_taps(x.shape[2:], kernel_size, stride, padding)
    width = ((0, 0), (0, 0)) + tuple((p, p) for p in pads)
    xp = np.pad(x, width)
    total = sum(xp[(Ellipsis,) + t] for t in taps)
    if count_include_pad or not any(pads):
        divisor = len(taps)
    else:  # the windows of a ones volume padded with zeros count the real elements
        inside = np.pad(np.ones(x.shape[2:]), width[2:])
        divisor = sum(inside[t] for t in taps).astype(x.real.dtype)
    return total / divisor, (x.shape, xp.shape, pads, taps, divisor)


def avg_pool3d_backward(cache, g):
    shape, xp_shape, pads, taps, divisor = cache
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for t in taps:
        gxp[(Ellipsis,) + t] += g / divisor
    return (gxp[(Ellipsis,) + tuple(slice(p, p + s) for p, s in zip(pads, shape[2:]))],)


# ---------------------------------------------------------------- conv3d
#
# conv2d's sum over kernel taps, over three spatial axes: tap (i, j, l) multiplies
# the strided (dilated) slice of the padded volume it reads by weight[..., i, j, l];
# the VJP runs the same loop, correlating the output gradient with that slice for
# the weight and scattering it back through the weight for the input.


def _conv3d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n, c = x.shape[:2]
    o, cg = weight.shape[:2]
    ks, ss, ps, ds = weight.shape[2:], _tuple(stride, 3), _tuple(padding, 3), _tuple(dilation, 3)
    outs = tuple(out_size(s, k, st, p, d) for s, k, st, p, d in zip(x.shape[2:], ks, ss, ps, ds))
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in ps))
    xg = xp.reshape(n, groups, cg, *xp.shape[2:])  # (N, G, C/G, Dp, Hp, Wp)
    wg = weight.reshape(groups, o // groups, cg, *ks)  # (G, O/G, C/G, KD, KH, KW)
    taps = [(idx, tuple(window_slices(i, d, st, ou) for i, d, st, ou in zip(idx, ds, ss, outs)))
            for idx in itertools.product(*(range(k) for k in ks))]
    out = np.zeros((n, groups, o // groups) + outs, dtype=np.result_type(x, weight))
    for idx, sl in taps:
        out += np.einsum("ngcdhw,goc->ngodhw", xg[(Ellipsis,) + sl], wg[(Ellipsis,) + idx])
    out = out.reshape((n, o) + outs)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1, 1)
    return out, (x.shape, ps, xg, wg, taps, bias is not None)


def _conv3d_backward(cache, g):
    x_shape, ps, xg, wg, taps, has_bias = cache
    n, c = x_shape[:2]
    groups, og = wg.shape[:2]
    gg = g.reshape(n, groups, og, *g.shape[2:])
    gxg = np.zeros_like(xg, dtype=np.result_type(xg, g))
    gwg = np.zeros_like(wg, dtype=np.result_type(wg, g))
    for idx, sl in taps:
        gwg[(Ellipsis,) + idx] = np.einsum("ngodhw,ngcdhw->goc", gg, xg[(Ellipsis,) + sl])
        gxg[(Ellipsis,) + sl] += np.einsum("ngodhw,goc->ngcdhw", gg, wg[(Ellipsis,) + idx])
    gx = gxg.reshape(n, c, *gxg.shape[3:])[(Ellipsis,) + tuple(slice(p, p + s) for p, s in zip(ps, x_shape[2:]))]
    gw = gwg.reshape(-1, *wg.shape[2:])
    return (gx, gw) if not has_bias else (gx, gw, g.sum(axis=(0, 2, 3, 4)))


conv3d_forward, conv3d_backward = with_padding(_conv3d_forward, _conv3d_backward)


# ---------------------------------------------------------------- affine_grid
#
# The sampling grid of a spatial transformer: each output position's base
# coordinates (x, y[, z], 1), x running along the last axis, from -1 to 1 (the
# centres of the corner pixels with align_corners, their outer edges without),
# mapped by theta (N, 2, 3) or (N, 3, 4).  Linear in theta: its VJP is the
# cotangent against the same base coordinates.


def _base_coordinates(size, align_corners):
    def axis(n):
        if n <= 1:
            return np.zeros(max(n, 0))
        steps = np.linspace(-1.0, 1.0, n)
        return steps if align_corners else steps * (n - 1) / n

    spatial = size[2:]
    grids = np.meshgrid(*(axis(n) for n in spatial), indexing="ij")  # one array an axis, in (D,) H, W order
    return np.stack(list(grids[::-1]) + [np.ones(tuple(spatial))], axis=-1)  # (..., x, y[, z], 1)


def affine_grid_forward(theta, size=(1, 1, 2, 2), align_corners=False):
    base = _base_coordinates(tuple(size), align_corners).astype(np.result_type(theta, np.float32), copy=False)
    flat = base.reshape(-1, base.shape[-1])
    return np.einsum("pk,nik->npi", flat, theta).reshape((theta.shape[0],) + base.shape[:-1] + (theta.shape[1],)), base


def affine_grid_backward(base, g):
    return (np.einsum("npi,pk->nik", g.reshape(g.shape[0], -1, g.shape[-1]), base.reshape(-1, base.shape[-1])),)


# ---------------------------------------------------------------- grid_sample
#
# Each output position reads the input at its grid point (x, y) in [-1, 1],
# unnormalised to pixel coordinates: bilinear mixes the four pixels around it
# (their weights piecewise linear in the grid, so the grid's gradient jumps where
# a coordinate crosses a pixel centre), nearest takes the closest (half to even,
# as torch rounds; the grid's gradient is 0).  padding_mode "zeros" reads 0
# outside, "border" clamps the coordinate to the edge pixels (its gradient 0
# where clamped, at the edge itself too, as torch has it).


def grid_pixel(coord, size, align_corners, padding_mode):
    """Pixel coordinates of normalised ones, and d pixel / d coord."""
    scale = (size - 1) / 2 if align_corners else size / 2
    p = (coord + 1) * scale if align_corners else ((coord + 1) * size - 1) / 2
    slope = np.full(p.shape, scale, dtype=p.dtype)
    if padding_mode == "border":
        inside = (p > 0) & (p < size - 1)
        p, slope = np.clip(p, 0, size - 1), np.where(inside, slope, 0).astype(p.dtype)
    return p, slope


def _taps(px, py, w, h, mode):
    """(x index, y index, weight, d weight / d px, d weight / d py, in bounds) per tap."""
    if mode == "nearest":
        xs, ys = np.rint(px), np.rint(py)
        zero = np.zeros(px.shape, dtype=px.dtype)
        return [(xs, ys, np.ones(px.shape, dtype=px.dtype), zero, zero)]
    x0, y0 = np.floor(px), np.floor(py)
    tx, ty = px - x0, py - y0
    return [(x0, y0, (1 - tx) * (1 - ty), -(1 - ty), -(1 - tx)), (x0 + 1, y0, tx * (1 - ty), 1 - ty, -tx),
            (x0, y0 + 1, (1 - tx) * ty, -ty, 1 - tx), (x0 + 1, y0 + 1, tx * ty, ty, tx)]


def grid_sample_forward(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    n, c, h, w = x.shape
    px, sx = grid_pixel(grid[..., 0], w, align_corners, padding_mode)
    py, sy = grid_pixel(grid[..., 1], h, align_corners, padding_mode)
    batch = np.arange(n).reshape((n,) + (1,) * (px.ndim - 1))
    xt = np.moveaxis(x, 1, -1)  # (N, H, W, C)
    out = np.zeros(px.shape + (c,), dtype=np.result_type(x, grid))
    taps = []
    for xi, yi, wt, dwx, dwy in _taps(px, py, w, h, mode):
        valid = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        xc, yc = np.clip(xi, 0, w - 1).astype(int), np.clip(yi, 0, h - 1).astype(int)
        v = xt[batch, yc, xc] * valid[..., None]
        out += wt[..., None] * v
        taps.append((xc, yc, wt * valid, dwx, dwy, v))
    return np.moveaxis(out, -1, 1), (x.shape, batch, taps, sx, sy)


def grid_sample_backward(cache, g):
    shape, batch, taps, sx, sy = cache
    gt = np.moveaxis(g, 1, -1)  # (N, Ho, Wo, C)
    gxt = np.zeros((shape[0], shape[2], shape[3], shape[1]), dtype=g.dtype)
    gpx = gpy = np.zeros(sx.shape, dtype=np.result_type(g, sx))
    for xc, yc, wt, dwx, dwy, v in taps:
        np.add.at(gxt, (np.broadcast_to(batch, xc.shape), yc, xc), gt * wt[..., None])
        dot = np.sum(gt * v, axis=-1)
        gpx, gpy = gpx + dot * dwx, gpy + dot * dwy
    return np.moveaxis(gxt, -1, 1), np.stack([gpx * sx, gpy * sy], axis=-1)


# ---------------------------------------------------------------- max_unpool
#
# max_unpool{1,2,3}d undoes a max pool's gather: each input value is written at
# its index into a zero plane of its (sample, channel), the index addressing the
# flattened output plane.  The plane is (in - 1) * stride - 2 * padding + kernel
# along each axis unless output_size says otherwise.  The indices must be
# distinct within a plane (a max pool's are): a repeated one writes one value
# over another, and the one overwritten has no gradient.  The VJP gathers the
# cotangent at the same indices.


def unpool_size(spatial, kernel_size, stride=None, padding=0, output_size=None):
    """The output plane of max_unpool over input ``spatial`` sizes."""
    nd = len(spatial)
    if output_size is not None:
        return _tuple(output_size, nd)[-nd:]
    ks, ss, ps = _tuple(kernel_size, nd), _tuple(kernel_size if stride is None else stride, nd), _tuple(padding, nd)
    return tuple((s - 1) * st - 2 * p + k for s, k, st, p in zip(spatial, ks, ss, ps))


def _max_unpool(x, indices, kernel_size, stride, padding, output_size):
    n, c = x.shape[:2]
    plane = unpool_size(x.shape[2:], kernel_size, stride, padding, output_size)
    idx = np.asarray(indices).reshape(n, c, -1)
    out = np.zeros((n, c, int(np.prod(plane))), dtype=x.dtype)
    np.put_along_axis(out, idx, x.reshape(n, c, -1), axis=2)
    return out.reshape((n, c) + plane), (idx, x.shape)


def _max_unpool_backward(cache, g):
    idx, shape = cache
    return np.take_along_axis(g.reshape(idx.shape[:2] + (-1,)), idx, axis=2).reshape(shape), None


def max_unpool1d_forward(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size)


def max_unpool2d_forward(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size)


def max_unpool3d_forward(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size)


max_unpool1d_backward = max_unpool2d_backward = max_unpool3d_backward = _max_unpool_backward
