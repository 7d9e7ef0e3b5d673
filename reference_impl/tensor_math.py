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


def std_forward(x, dim=-1, correction=1, keepdim=False):
    n = x.shape[dim]
    d = x - x.mean(axis=dim, keepdims=True)
    # a constant row is exactly at std's cone point, whatever its mean rounded to
    # (three equal values' mean can be an ulp off them): d = 0 there, so the
    # backward's subgradient 0 applies, not d / std of two roundings
    d = np.where(np.all(x == np.take(x, [0], axis=dim), axis=dim, keepdims=True), 0, d)
    y = np.sqrt((d * d).sum(axis=dim, keepdims=True) / (n - correction))
    return (y if keepdim else np.squeeze(y, axis=dim)), (d, y, dim, correction, keepdim)


def std_backward(cache, g):
    d, y, dim, correction, keepdim = cache
    n = d.shape[dim]
    # std = sqrt(var): d std = d var / (2 std), and d var/dx_i = 2 (x_i - mean) / (n - correction);
    # a constant row (std 0, a cone) gets the subgradient 0 central differences see
    # there (torch's formula gives 0/0 = nan: Note [Out of range])
    scale = np.divide(1.0, (n - correction) * y, out=np.zeros_like(y), where=y > 0)
    return (_expand(g, d.shape, dim, keepdim) * d * scale,)


def norm_forward(x, dim=-1, p=2.0, keepdim=False):
    """The vector p-norm over ``dim``, (sum |x_i|^p)^(1/p), for p >= 2 (smooth but
    at the zero vector)."""
    a = np.abs(x)
    y = (a ** p).sum(axis=dim, keepdims=True) ** (1.0 / p)
    return (y if keepdim else np.squeeze(y, axis=dim)), (x, y, dim, p, keepdim)


def norm_backward(cache, g):
    x, y, dim, p, keepdim = cache
    # d ||x||_p / dx_i = sign(x_i) |x_i|^(p-1) / ||x||_p^(p-1); at the zero vector
    # (a relu's zero row) the subgradient 0, torch's choice and central
    # differences' value there
    scale = np.divide(1.0, y ** (p - 1), out=np.zeros_like(y), where=y > 0)
    return (_expand(g, x.shape, dim, keepdim) * np.sign(x) * np.abs(x) ** (p - 1) * scale,)


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


def cosine_similarity_forward(x1, x2, dim=1, eps=1e-8):
    # <x1 / c1, x2 / c2> along dim, each norm c kept at eps at least (torch's
    # formula); a zero vector, where the cosine has no limit, takes eps
    n1, n2 = np.sqrt((x1 * x1).sum(axis=dim, keepdims=True)), np.sqrt((x2 * x2).sum(axis=dim, keepdims=True))
    big1, big2 = np.real(n1) > eps, np.real(n2) > eps
    c1, c2 = np.where(big1, n1, eps), np.where(big2, n2, eps)
    u1, u2 = x1 / c1, x2 / c2
    return (u1 * u2).sum(axis=dim), (u1, u2, c1, c2, big1, big2, dim)


def cosine_similarity_backward(cache, g):
    u1, u2, c1, c2, big1, big2, dim = cache
    g = np.expand_dims(g, dim)
    cos = (u1 * u2).sum(axis=dim, keepdims=True)
    # d (x / ||x||) applied to v is (v - u <u, v>) / ||x||; a norm held at eps is a constant
    g1 = g * (u2 - np.where(big1, u1 * cos, 0)) / c1
    g2 = g * (u1 - np.where(big2, u2 * cos, 0)) / c2
    return g1, g2


def pairwise_distance_forward(x1, x2, eps=1e-6, keepdim=False):
    # ||x1 - x2 + eps||_2 over the last axis
    d = x1 - x2 + eps
    n = np.sqrt((d * d).sum(axis=-1, keepdims=True))
    return (n if keepdim else n[..., 0]), (d, n, keepdim)


def pairwise_distance_backward(cache, g):
    d, n, keepdim = cache
    g = g if keepdim else g[..., None]
    gx = g * d / n
    return gx, -gx


def pixel_shuffle_forward(x, upscale_factor=2):
    # (N, C r^2, H, W) -> (N, C, H r, W r): channel c r^2 + i r + j goes to row h r + i, column w r + j
    r = upscale_factor
    n, c, h, w = x.shape
    y = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)
    return y, (x.shape, r)


def pixel_shuffle_backward(cache, g):
    (n, c, h, w), r = cache
    return (g.reshape(n, c // (r * r), h, r, w, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c, h, w),)


def pixel_unshuffle_forward(x, downscale_factor=2):
    # the inverse of pixel_shuffle
    r = downscale_factor
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)
    return y, (x.shape, r)


def pixel_unshuffle_backward(cache, g):
    (n, c, h, w), r = cache
    return (g.reshape(n, c, r, r, h // r, w // r).transpose(0, 1, 4, 2, 5, 3).reshape(n, c, h, w),)


def _pad_sources(size, before, after, mode):
    """For each position of a padded axis, the input position it reads (-1: the
    constant)."""
    i = np.arange(-before, size + after)
    if mode == "constant":
        return np.where((i >= 0) & (i < size), i, -1)
    if mode == "replicate":
        return np.clip(i, 0, size - 1)
    if mode == "circular":
        return i % size
    if mode == "reflect":  # mirrored about the edge elements, which are not repeated
        period = 2 * (size - 1)
        j = np.abs(i) % period if period else np.zeros_like(i)
        return np.where(j < size, j, period - j)
    raise ValueError(f"pad: mode must be constant, reflect, replicate or circular, got {mode!r}")


def pad_forward(x, pad=(1, 1), mode="constant", value=0.0):
    # torch's pad: (left, right) for the last axis, then (top, bottom) for the one before, ...
    sources = []
    y = x
    for k in range(len(pad) // 2):
        axis = x.ndim - 1 - k
        src = _pad_sources(x.shape[axis], pad[2 * k], pad[2 * k + 1], mode)
        taken = np.take(y, np.maximum(src, 0), axis=axis)
        if mode == "constant":
            shape = [1] * x.ndim
            shape[axis] = -1
            taken = np.where(src.reshape(shape) >= 0, taken, value)
        y = taken.astype(x.dtype)
        sources.append((axis, src))
    return y, (x.shape, sources)


def pad_backward(cache, g):
    shape, sources = cache
    for axis, src in reversed(sources):
        size = shape[axis]
        moved = np.moveaxis(g, axis, 0)
        out = np.zeros((size,) + moved.shape[1:], dtype=g.dtype)
        keep = src >= 0
        np.add.at(out, src[keep], moved[keep])  # a position read twice (reflect, circular) gets both
        g = np.moveaxis(out, 0, axis)
    return (g,)


# ---------------------------------------------------------------- elementwise math


def exp_forward(x):
    with np.errstate(over="ignore"):  # past the dtype's range exp is inf: Note [Out of range]
        y = np.exp(x)
    return y, y


def exp_backward(y, g):
    return (g * y,)


def log_forward(x):
    return np.log(x), x


def log_backward(x, g):
    return (g / x,)


def sqrt_forward(x):
    y = np.sqrt(x)
    return y, y


def sqrt_backward(y, g):
    return (g / (2 * y),)


def rsqrt_forward(x):
    y = 1 / np.sqrt(x)
    return y, y


def rsqrt_backward(y, g):
    # d x^(-1/2) = -1/2 x^(-3/2)
    return (-0.5 * g * y * y * y,)


def pow_forward(x, exponent=2.0):
    return x ** exponent, (x, exponent)


def pow_backward(cache, g):
    x, p = cache
    return (g * p * x ** (p - 1),)


def _pick(a, b, first):
    """The weight of a in an elementwise max or min (``first``: where a wins); on a
    tie torch splits the gradient, a half to each."""
    return np.where(first, 1.0, np.where(np.real(a) == np.real(b), 0.5, 0.0))


def maximum_forward(a, b):
    w = _pick(a, b, np.real(a) > np.real(b))
    return np.where(w > 0, a, b), (a.shape, b.shape, w)


def maximum_backward(cache, g):
    a_shape, b_shape, w = cache
    wa = w.astype(np.real(g).dtype)
    return unbroadcast(g * wa, a_shape), unbroadcast(g * (1 - wa), b_shape)


def minimum_forward(a, b):
    w = _pick(a, b, np.real(a) < np.real(b))
    return np.where(w > 0, a, b), (a.shape, b.shape, w)


minimum_backward = maximum_backward


def where_forward(x, mask, other):
    # torch.where(mask, x, other) with a constant 0/1 mask
    keep = mask > 0.5
    return np.where(keep, x, other), (x.shape, other.shape, keep)


def where_backward(cache, g):
    x_shape, other_shape, keep = cache
    return unbroadcast(np.where(keep, g, 0), x_shape), None, unbroadcast(np.where(keep, 0, g), other_shape)


# ---------------------------------------------------------------- reductions with ties, products, stacking


def _extreme(x, dim, keepdim, largest):
    r = np.real(x)
    top = r.max(axis=dim, keepdims=True) if largest else r.min(axis=dim, keepdims=True)
    ties = (r == top)
    share = (ties / ties.sum(axis=dim, keepdims=True)).astype(r.dtype)  # torch spreads the gradient evenly over a tie
    y = np.sum(np.where(ties, x, 0) * share, axis=dim, keepdims=keepdim)
    return y, (share, dim, keepdim)


def _extreme_backward(cache, g):
    share, dim, keepdim = cache
    if not keepdim:
        g = np.expand_dims(g, dim)
    return (g * share,)


def amax_forward(x, dim=-1, keepdim=False):
    return _extreme(x, dim, keepdim, True)


def amin_forward(x, dim=-1, keepdim=False):
    return _extreme(x, dim, keepdim, False)


amax_backward = amin_backward = _extreme_backward


def cumprod_forward(x, dim=-1):
    return np.cumprod(x, axis=dim), (x, dim)


def cumprod_backward(cache, g):
    # d y_i / d x_j = prod_{k <= i, k != j} x_k for i >= j: the running product with
    # x_j replaced by 1, so zeros in x need no division
    x, dim = cache
    xm, gm = np.moveaxis(x, dim, -1), np.moveaxis(g, dim, -1)
    gx = np.zeros(np.broadcast_shapes(xm.shape, gm.shape), dtype=np.result_type(x, g))
    for j in range(xm.shape[-1]):
        without = xm.copy()
        without[..., j] = 1
        gx[..., j] = (gm[..., j:] * np.cumprod(without, axis=-1)[..., j:]).sum(axis=-1)
    return (np.moveaxis(gx, -1, dim),)


def stack_forward(*xs, dim=0):
    return np.stack(xs, axis=dim), (len(xs), dim)


def stack_backward(cache, g):
    n, dim = cache
    return tuple(np.take(g, i, axis=dim) for i in range(n))


def index_select_forward(x, index, dim=0):
    # the slices of x along dim that index names, in its order, repeats allowed
    return np.take(x, index, axis=dim), (x.shape, index, dim % x.ndim)


def index_select_backward(cache, g):
    shape, index, dim = cache
    gx = np.zeros(shape, dtype=g.dtype)
    np.add.at(gx, (slice(None),) * dim + (index,), g)  # a slice selected twice gets both gradients
    return gx, None


def gather_forward(x, index, dim=-1):
    # y[..., j, ...] = x[..., index[..., j, ...], ...] along dim (torch.gather): the
    # other axes of index may be shorter than x's, which reads their leading part
    dim = dim % x.ndim
    lead = tuple(slice(0, s) if d != dim else slice(None) for d, s in enumerate(index.shape))
    return np.take_along_axis(x[lead], index, axis=dim), (x.shape, index, dim)


def gather_backward(cache, g):
    shape, index, dim = cache
    at = list(np.indices(index.shape, sparse=True))
    at[dim] = index
    gx = np.zeros(shape, dtype=g.dtype)
    np.add.at(gx, tuple(at), g)  # an element gathered twice gets both gradients
    return gx, None


# ---------------------------------------------------------------- slicing, einsum


def slice_forward(x, dim=0, start=0, end=None, step=1):
    # x[..., start:end:step, ...] along dim (Python's slice rules: negative start
    # and end count from the end, either may run past it)
    at = (slice(None),) * (dim % x.ndim) + (slice(start, end, step),)
    return x[at], (x.shape, at)


def slice_backward(cache, g):
    shape, at = cache
    gx = np.zeros(shape, dtype=g.dtype)
    gx[at] = g  # a basic slice reads each element at most once: no accumulation
    return (gx,)


def einsum_subscripts(equation):
    """The input subscripts and the output's of an explicit einsum equation
    ("ij,jk->ik"), with neither an ellipsis nor a letter twice in one operand."""
    if "->" not in equation or "." in equation:
        raise ValueError(f"einsum: the equation needs an explicit '->' and no ellipsis, got {equation!r}")
    inputs, out = equation.replace(" ", "").split("->")
    subs = inputs.split(",")
    for s in subs + ([out] if out else []):  # the output may be empty: a full contraction
        if not s.isalpha() or len(set(s)) != len(s):
            raise ValueError(f"einsum: {s!r} in {equation!r}: subscripts are letters, each at most once")
    if not set(out) <= set("".join(subs)):
        raise ValueError(f"einsum: output letters {out!r} of {equation!r} must appear in an input")
    return subs, out


def einsum_forward(*operands, equation="ij,jk->ik"):
    # a sum over the letters the output drops of the product of the operands
    subs, out = einsum_subscripts(equation)
    return np.einsum(equation, *operands), (operands, subs, out)


def einsum_backward(cache, g):
    # d/d operand i: the same contraction with operand i's place taken by g (the
    # output's letters), over the letters operand i keeps that the others or the
    # output name; a letter only operand i has was summed over, so its gradient
    # is that contraction repeated along it.
    operands, subs, out = cache
    grads = []
    for i, (x, s) in enumerate(zip(operands, subs)):
        others = [(o, t) for j, (o, t) in enumerate(zip(operands, subs)) if j != i]
        named = set(out).union(*(set(t) for _, t in others))
        kept = "".join(c for c in s if c in named)
        terms = ",".join([out] + [t for _, t in others])
        r = np.einsum(f"{terms}->{kept}", g, *(o for o, _ in others))
        r = r.reshape(tuple(x.shape[k] if c in named else 1 for k, c in enumerate(s)))
        grads.append(np.broadcast_to(r, x.shape).copy())
    return tuple(grads)
