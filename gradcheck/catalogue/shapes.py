"""Shape rules: ``rule(*input_shapes, **hyper) -> output shape``, or ShapeError
naming what does not fit."""

from __future__ import annotations

import math

import numpy as np

from .opdef import ShapeError

__all__ = ["same", "pair", "linear", "matmul", "conv", "pool", "global_pool", "dim", "layer_norm", "batch_norm", "batch_norm_eval", "broadcast", "rms_norm", "group_norm", "instance_norm", "pair_reduce", "pixel_shuffle", "pixel_unshuffle", "pad", "pool1d", "adaptive_pool", "reduce", "glu", "transpose", "permute", "prelu", "concat", "reshape", "flatten", "index_select", "gather", "dropout", "embedding", "attention", "pairwise_loss", "nll", "multilabel", "cross_entropy", "weighted_sum", "slice_", "einsum", "cross_entropy_probs"]

def _need(cond, msg):
    if not cond:
        raise ShapeError(msg)


def _reduced(name, reduction, per, reductions=("mean", "sum")):
    """A loss's output shape: () when reduced, ``per`` (one loss per element or
    row) for reduction "none"."""
    _need(reduction in reductions + ("none",),
          f"{name}: reduction must be one of {', '.join(map(repr, reductions + ('none',)))}, got {reduction!r}")
    return tuple(per) if reduction == "none" else ()


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def same(x, **_):
    return tuple(x)


def linear(x, weight, bias=None):
    _need(len(x) >= 1 and len(weight) == 2, f"linear: x must have >= 1 dims and weight 2, got {x} and {weight}")
    _need(x[-1] == weight[1], f"linear: x has {x[-1]} features but weight {weight} expects {weight[1]}")
    _need(bias is None or tuple(bias) == (weight[0],), f"linear: bias {bias} must be ({weight[0]},)")
    return tuple(x[:-1]) + (weight[0],)


def matmul(a, b):
    _need(len(a) >= 1 and len(b) >= 1, f"matmul: both operands need >= 1 dim, got {a} and {b}")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)  # a 1-d operand as a row, or a column
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    _need(a2[-1] == b2[-2], f"matmul: inner sizes differ: {a} @ {b}")
    try:
        batch = np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))
    except ValueError:
        raise ShapeError(f"matmul: batch dims {a2[:-2]} and {b2[:-2]} do not broadcast") from None
    return tuple(batch) + ((a2[-2],) if len(a) > 1 else ()) + ((b2[-1],) if len(b) > 1 else ())


def conv(nd):
    def rule(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
        from reference_impl.layers import conv_pads

        name = f"conv{nd}d"
        _need(len(x) == nd + 2 and len(weight) == nd + 2, f"{name}: x and weight need {nd + 2} dims, got {x}, {weight}")
        _need(padding_mode in ("zeros", "reflect", "replicate", "circular"),
              f"{name}: padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}")
        _need(not isinstance(padding, str) or padding in ("same", "valid"),
              f"{name}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
        strides, dilations = _n(stride, nd), _n(dilation, nd)
        _need(padding != "same" or set(strides) == {1}, f"{name}: padding='same' needs stride 1, got {stride}")
        _need(groups >= 1 and x[1] % groups == 0 and weight[0] % groups == 0,
              f"{name}: groups={groups} must divide in_channels={x[1]} and out_channels={weight[0]}")
        _need(weight[1] * groups == x[1], f"{name}: weight {weight} with groups={groups} expects {weight[1] * groups} channels, x has {x[1]}")
        _need(bias is None or tuple(bias) == (weight[0],), f"{name}: bias {bias} must be ({weight[0]},)")
        _need(isinstance(padding, str) or min(_n(padding, nd)) >= 0, f"{name}: padding must be >= 0, got {padding}")
        spatial = []
        for size, k, s, (before, after), d in zip(x[2:], weight[2:], strides, conv_pads(padding, weight[2:], dilations),
                                                  dilations):
            _need(s >= 1 and d >= 1, f"{name}: need stride >= 1, dilation >= 1")
            _need(padding_mode != "reflect" or max(before, after) < size,
                  f"{name}: reflect padding {max(before, after)} must be smaller than the input size {size}")
            _need(padding_mode != "circular" or max(before, after) <= size,
                  f"{name}: circular padding {max(before, after)} must be at most the input size {size}")
            o = (size + before + after - d * (k - 1) - 1) // s + 1
            _need(o >= 1, f"{name}: kernel {k} (dilation {d}) does not fit input {size} with padding {padding}")
            spatial.append(o)
        return (x[0], weight[0], *spatial)

    return rule


def pool(name):
    def rule(x, kernel_size=2, stride=None, padding=0, count_include_pad=True, divisor_override=None, dilation=1,
             ceil_mode=False):
        from reference_impl.layers import pool_out

        _need(len(x) == 4, f"{name}: x must be (N, C, H, W), got {x}")
        _need(divisor_override is None or (isinstance(divisor_override, int) and divisor_override >= 1),
              f"{name}: divisor_override must be None or a positive int, got {divisor_override!r}")
        ks, ss, ps = pair(kernel_size), pair(kernel_size if stride is None else stride), pair(padding)
        out = []
        for size, k, s, p, d in zip(x[2:], ks, ss, ps, pair(dilation)):
            _need(k >= 1 and s >= 1 and d >= 1, f"{name}: kernel_size, stride and dilation must be >= 1")
            _need(0 <= p <= k // 2, f"{name}: padding {p} must be at most half the kernel {k}")
            o = pool_out(size, k, s, p, d, bool(ceil_mode))
            _need(o >= 1 and size + 2 * p >= d * (k - 1) + 1, f"{name}: kernel {k} (dilation {d}) does not fit "
                                                              f"input {size}")
            out.append(o)
        return (x[0], x[1], *out)

    return rule


def global_pool(x):
    _need(len(x) >= 3, f"global_avg_pool: x must be (N, C, *spatial), got {x}")
    return (x[0], x[1])


def dim(name):
    def rule(x, dim=-1, **_):  # normalize's eps beside its dim
        _need(-len(x) <= dim < len(x), f"{name}: dim {dim} out of range for {len(x)}-d input")
        return tuple(x)

    return rule


def reduce(name):
    """A reduction over one dim (sum, mean, logsumexp, var, std, norm): that axis dropped, or
    kept as 1 with keepdim."""
    def rule(x, dim=-1, keepdim=False, correction=None, p=None):
        _need(len(x) >= 1 and -len(x) <= dim < len(x), f"{name}: dim {dim} out of range for {len(x)}-d input")
        d = dim % len(x)
        if correction is not None:
            _need(x[d] > correction, f"{name}: {x[d]} values along dim {dim} with correction={correction}")
        return tuple(x[:d]) + ((1,) if keepdim else ()) + tuple(x[d + 1:])

    return rule


def glu(x, dim=-1):
    _need(len(x) >= 1 and -len(x) <= dim < len(x), f"glu: dim {dim} out of range for {len(x)}-d input")
    d = dim % len(x)
    _need(x[d] % 2 == 0, f"glu: dim {dim} has odd size {x[d]}; glu halves it")
    return tuple(x[:d]) + (x[d] // 2,) + tuple(x[d + 1:])


def transpose(x, dim0=0, dim1=1):
    nd = len(x)
    _need(-nd <= dim0 < nd and -nd <= dim1 < nd, f"transpose: dims {dim0}, {dim1} out of range for {nd}-d input")
    out = list(x)
    out[dim0 % nd], out[dim1 % nd] = x[dim1 % nd], x[dim0 % nd]
    return tuple(out)


def permute(x, dims):
    _need(sorted(int(d) % max(1, len(x)) for d in dims) == list(range(len(x))) and len(dims) == len(x),
          f"permute: dims {tuple(dims)} is not a permutation of the {len(x)} axes")
    return tuple(x[int(d)] for d in dims)


def prelu(x, weight):
    _need(len(x) >= 2, f"prelu: x must be (N, C, ...), got {x}")
    _need(tuple(weight) in ((1,), (x[1],)), f"prelu: weight {weight} must be (1,) or ({x[1]},)")
    return tuple(x)


def rms_norm(x, weight, eps=1e-6):
    k = len(weight)
    _need(k >= 1 and tuple(x[-k:]) == tuple(weight), f"rms_norm: weight {weight} must equal the trailing dims of x {x}")
    return tuple(x)


def group_norm(x, weight, bias, num_groups=1, eps=1e-5):
    _need(len(x) >= 2, f"group_norm: x must be (N, C, ...), got {x}")
    _need(num_groups >= 1 and x[1] % num_groups == 0, f"group_norm: {num_groups} groups must divide {x[1]} channels")
    _need(tuple(weight) == (x[1],) == tuple(bias), f"group_norm: weight and bias must be ({x[1]},)")
    return tuple(x)


def instance_norm(x, weight, bias, eps=1e-5):
    _need(len(x) >= 3, f"instance_norm: x must be (N, C, *spatial), got {x}")
    _need(tuple(weight) == (x[1],) == tuple(bias), f"instance_norm: weight and bias must be ({x[1]},)")
    return tuple(x)


def pair_reduce(name, default_dim=-1):
    """Two tensors of one shape reduced over one dim (cosine_similarity's dim,
    pairwise_distance's last axis)."""
    def rule(x1, x2, dim=default_dim, eps=0.0, keepdim=False):
        _need(tuple(x1) == tuple(x2), f"{name}: x1 {x1} and x2 {x2} must have the same shape")
        _need(-len(x1) <= dim < len(x1), f"{name}: dim {dim} out of range for {x1}")
        d = dim % len(x1)
        return tuple(x1[:d]) + ((1,) if keepdim else ()) + tuple(x1[d + 1:])

    return rule


def pixel_shuffle(x, upscale_factor=2):
    r = upscale_factor
    _need(len(x) == 4 and x[1] % (r * r) == 0, f"pixel_shuffle: x must be (N, C r^2, H, W) with r={r}, got {x}")
    return (x[0], x[1] // (r * r), x[2] * r, x[3] * r)


def pixel_unshuffle(x, downscale_factor=2):
    r = downscale_factor
    _need(len(x) == 4 and x[2] % r == 0 and x[3] % r == 0, f"pixel_unshuffle: H and W of {x} must divide by {r}")
    return (x[0], x[1] * r * r, x[2] // r, x[3] // r)


def pad(x, pad=(1, 1), mode="constant", value=0.0):
    _need(len(pad) % 2 == 0 and len(pad) // 2 <= len(x), f"pad: {pad} must pair up with at most {len(x)} axes")
    if mode != "constant":
        _need(len(pad) == 2 * (len(x) - 2), f"pad: {mode} pads every axis after (N, C) of {x}: {2 * (len(x) - 2)} "
                                           f"numbers, got {pad}")
    out = list(x)
    for k in range(len(pad) // 2):
        axis = len(x) - 1 - k
        if mode in ("reflect", "circular"):
            _need(max(pad[2 * k], pad[2 * k + 1]) < x[axis], f"pad: {mode} needs padding below the size {x[axis]}")
        out[axis] = x[axis] + pad[2 * k] + pad[2 * k + 1]
    return tuple(out)


def pool1d(name):
    def rule(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
        _need(len(x) == 3, f"{name}: x must be (N, C, L), got {x}")
        s = kernel_size if stride is None else stride
        _need(kernel_size >= 1 and s >= 1 and 0 <= padding <= kernel_size // 2,
              f"{name}: need kernel_size, stride >= 1 and padding at most half the kernel")
        o = _out(x[2], kernel_size, s, padding)
        _need(o >= 1, f"{name}: kernel {kernel_size} does not fit length {x[2]}")
        return (x[0], x[1], o)

    return rule


def adaptive_pool(name, nd):
    def rule(x, output_size=1):
        _need(len(x) == nd + 2, f"{name}: x must be (N, C, {('L', 'H, W', 'D, H, W')[nd - 1]}), got {x}")
        out = (output_size,) * nd if isinstance(output_size, int) else tuple(output_size)
        _need(all(o >= 1 for o in out), f"{name}: output_size must be >= 1")
        return (x[0], x[1], *out)

    return rule


def layer_norm(x, weight=None, bias=None, eps=1e-5, normalized_shape=None):
    _need(weight is not None or normalized_shape is not None,
          "layer_norm: without a weight, normalized_shape says which trailing dims to normalise")
    norm = tuple(weight if normalized_shape is None else normalized_shape)
    k = len(norm)
    _need(k >= 1 and tuple(x[-k:]) == norm, f"layer_norm: normalized_shape {norm} must equal the trailing dims of x {x}")
    _need(weight is None or tuple(weight) == norm, f"layer_norm: weight {weight} must be normalized_shape {norm}")
    _need(bias is None or tuple(bias) == norm, f"layer_norm: bias {bias} must be normalized_shape {norm}")
    return tuple(x)


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps=1e-5):
    _need(len(x) >= 2, f"batch_norm_eval: x must be (N, C, ...), got {x}")
    _need(tuple(running_mean) == tuple(running_var) == tuple(weight) == (x[1],) == tuple(bias),
          f"batch_norm_eval: running_mean, running_var, weight and bias must be ({x[1]},)")
    return tuple(x)


def batch_norm(x, weight, bias, eps=1e-5):
    _need(len(x) >= 2, f"batch_norm: x must be (N, C, ...), got {x}")
    _need(tuple(weight) == (x[1],) == tuple(bias), f"batch_norm: weight and bias must be ({x[1]},)")
    _need(np.prod(x) // x[1] > 1, f"batch_norm: needs more than one value per channel, got {x}")
    return tuple(x)


def broadcast(name):
    def rule(a, b):
        try:
            return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
        except ValueError:
            raise ShapeError(f"{name}: shapes {a} and {b} do not broadcast") from None

    return rule


def concat(*xs, dim=1):
    nd = len(xs[0])
    _need(-nd <= dim < nd, f"concat: dim {dim} out of range for {nd}-d inputs")
    d = dim % nd
    for s in xs:
        _need(len(s) == nd and all(a == b for i, (a, b) in enumerate(zip(s, xs[0])) if i != d),
              f"concat: shapes {[tuple(s) for s in xs]} differ outside dim {dim}")
    return tuple(xs[0][:d]) + (sum(s[d] for s in xs),) + tuple(xs[0][d + 1:])


def reshape(x, shape):
    shape = tuple(shape)
    _need(shape.count(-1) <= 1, f"reshape: at most one -1 in {shape}")
    known = math.prod(s for s in shape if s != -1)
    total = math.prod(x)
    if -1 in shape:
        _need(known > 0 and total % known == 0, f"reshape: cannot view {x} as {shape}")
        shape = tuple(total // known if s == -1 else s for s in shape)
    _need(math.prod(shape) == total, f"reshape: cannot view {x} ({total} elements) as {shape}")
    return shape


def flatten(x, start_dim=1, end_dim=-1):
    nd = len(x)
    _need(-nd <= start_dim < nd and -nd <= end_dim < nd, f"flatten: dims out of range for {x}")
    s, e = start_dim % nd, end_dim % nd
    _need(s <= e, f"flatten: start_dim {start_dim} after end_dim {end_dim}")
    return tuple(x[:s]) + (math.prod(x[s:e + 1]),) + tuple(x[e + 1:])


def dropout(x, mask, p=0.5):
    _need(tuple(mask) == tuple(x), f"dropout: mask {mask} must match x {x}")
    _need(0 <= p < 1, f"dropout: p must be in [0, 1), got {p}")
    return tuple(x)


def embedding(ids, table, padding_idx=None):
    _need(len(table) == 2, f"embedding: table must be (num_embeddings, dim), got {table}")
    _need(padding_idx is None or (isinstance(padding_idx, int) and -table[0] <= padding_idx < table[0]),
          f"embedding: padding_idx must be None or a row of the {table[0]}-row table, got {padding_idx!r}")
    return tuple(ids) + (table[1],)


def attention(q, k, v, attn_mask=None, causal=False, scale=None):
    _need(len(q) >= 2 and len(k) == len(q) == len(v), f"attention: q, k, v need the same rank >= 2, got {q}, {k}, {v}")
    if attn_mask is not None:
        _need(not causal, "attention: attn_mask and causal=True together (torch refuses both)")
        try:
            np.broadcast_shapes(tuple(attn_mask), tuple(q[:-1]) + (k[-2],))
        except ValueError:
            raise ShapeError(f"attention: attn_mask {attn_mask} does not broadcast to the scores "
                             f"{tuple(q[:-1]) + (k[-2],)}") from None
    _need(scale is None or scale > 0, f"attention: scale must be None or positive, got {scale}")
    _need(tuple(q[:-2]) == tuple(k[:-2]) == tuple(v[:-2]), f"attention: batch dims differ: {q}, {k}, {v}")
    _need(q[-1] == k[-1], f"attention: q and k need the same embedding size, got {q[-1]} and {k[-1]}")
    _need(k[-2] == v[-2], f"attention: k and v need the same length, got {k[-2]} and {v[-2]}")
    return tuple(q[:-1]) + (v[-1],)


def pairwise_loss(name, reductions=("mean", "sum")):
    def rule(pred, target, *more, **hyper):
        _need(tuple(pred) == tuple(target), f"{name}: pred {pred} and target {target} must have the same shape")
        _need(all(tuple(m) == tuple(pred) for m in more), f"{name}: every input must have the shape of {pred}")
        _need(hyper.get("beta", 1.0) > 0, f"{name}: beta must be > 0")
        return _reduced(name, hyper.get("reduction", "mean"), pred, reductions)

    return rule


def nll(logp, target, weight=None, reduction="mean", ignore_index=-100):
    _need(len(logp) == 2 and tuple(target) == (logp[0],), f"nll: logp (N, C) and target (N,), got {logp}, {target}")
    _need(weight is None or tuple(weight) == (logp[1],), f"nll: weight must be ({logp[1]},), got {weight}")
    return _reduced("nll", reduction, (logp[0],))


def ctc(log_probs, targets, input_lengths=None, target_lengths=None, blank=0, reduction="mean"):
    _need(len(log_probs) == 3 and len(targets) == 2 and targets[0] == log_probs[1],
          f"ctc: log_probs (T, N, C) and targets (N, S), got {log_probs}, {targets}")
    from reference_impl.losses import ctc_lengths

    steps, n, c = log_probs
    inputs, labels = ctc_lengths(steps, n, targets[1], input_lengths, target_lengths)
    _need(len(inputs) == n and all(1 <= i <= steps for i in inputs),
          f"ctc: input_lengths {input_lengths} must be {n} lengths in [1, {steps}]")
    _need(len(labels) == n and all(0 <= k <= targets[1] for k in labels),
          f"ctc: target_lengths {target_lengths} must be {n} lengths in [0, {targets[1]}]")
    # 2 k - 1 steps reach every k labels, repeats included: no impossible alignment (an infinite loss)
    _need(all(i >= 2 * k - 1 for i, k in zip(inputs, labels)),
          f"ctc: input_lengths {inputs} must be at least 2 * target_lengths - 1 ({labels})")
    _need(0 <= blank < c, f"ctc: blank {blank} must be a class of {c}")
    return _reduced("ctc", reduction, (n,))


def multilabel(name):
    def rule(x, target, reduction="mean"):
        _need(len(x) == 2 and tuple(target) == tuple(x), f"{name}: x (N, C) and target (N, C), got {x}, {target}")
        return _reduced(name, reduction, (x[0],))

    return rule


def cross_entropy(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    _need(len(logits) == 2 and tuple(target) == (logits[0],), f"cross_entropy: logits (N, C) and target (N,), got {logits}, {target}")
    _need(weight is None or tuple(weight) == (logits[1],), f"cross_entropy: weight must be ({logits[1]},), got {weight}")
    _need(0.0 <= label_smoothing <= 1.0, f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    return _reduced("cross_entropy", reduction, (logits[0],))


def weighted_sum(x, weight):
    _need(tuple(x) == tuple(weight), f"weighted_sum: weight {weight} must match x {x}")
    return ()


def _n(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def conv_transpose(nd):
    def rule(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        name = f"conv_transpose{nd}d"
        _need(len(x) == nd + 2 and len(weight) == nd + 2, f"{name}: x and weight need {nd + 2} dims, got {x}, {weight}")
        _need(groups >= 1 and x[1] % groups == 0, f"{name}: groups={groups} must divide in_channels={x[1]}")
        _need(weight[0] == x[1], f"{name}: weight {weight} must be (in_channels={x[1]}, out_channels / groups, *kernel)")
        _need(bias is None or tuple(bias) == (weight[1] * groups,), f"{name}: bias {bias} must be ({weight[1] * groups},)")
        out = []
        for size, k, s, p, op, d in zip(x[2:], weight[2:], *(_n(v, nd) for v in (stride, padding, output_padding, dilation))):
            _need(s >= 1 and p >= 0 and d >= 1 and op >= 0, f"{name}: need stride, dilation >= 1, padding, output_padding >= 0")
            _need(op < max(s, d), f"{name}: output_padding {op} must be smaller than stride {s} or dilation {d}")
            o = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
            _need(o >= 1, f"{name}: padding {p} leaves no output for input {size}")
            out.append(o)
        return (x[0], weight[1] * groups, *out)

    return rule


def _im2col_out(name, size, kernel_size, dilation, padding, stride):
    out = []
    for s, k, d, p, st in zip(size, *(_n(v, 2) for v in (kernel_size, dilation, padding, stride))):
        o = _out(s, k, st, p, d)
        _need(k >= 1 and d >= 1 and st >= 1 and p >= 0 and o >= 1, f"{name}: kernel {k} (dilation {d}) does not fit {s} with padding {p}")
        out.append(o)
    return out


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    _need(len(x) == 4, f"unfold: x must be (N, C, H, W), got {x}")
    oh, ow = _im2col_out("unfold", x[2:], kernel_size, dilation, padding, stride)
    return (x[0], x[1] * math.prod(_n(kernel_size, 2)), oh * ow)


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    taps = math.prod(_n(kernel_size, 2))
    _need(len(x) == 3 and x[1] % taps == 0, f"fold: x must be (N, C * {taps}, L), got {x}")
    oh, ow = _im2col_out("fold", _n(output_size, 2), kernel_size, dilation, padding, stride)
    _need(x[2] == oh * ow, f"fold: x has {x[2]} blocks, output_size {output_size} with this kernel gives {oh * ow}")
    return (x[0], x[1] // taps, *_n(output_size, 2))


_MODES = {3: ("nearest", "nearest-exact", "linear"), 4: ("nearest", "nearest-exact", "bilinear", "bicubic")}


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    _need(len(x) in _MODES, f"interpolate: x must be (N, C, L) or (N, C, H, W), got {x}")
    _need(mode in _MODES[len(x)], f"interpolate: mode {mode!r} on a {len(x)}-d input; choose among {_MODES[len(x)]}")
    _need((size is None) != (scale_factor is None), "interpolate: give exactly one of size and scale_factor")
    _need(align_corners is None or mode in ("linear", "bilinear", "bicubic"),
          f"interpolate: align_corners is for the linear and cubic modes, not {mode!r}")
    nd = len(x) - 2
    if size is not None:
        out = _n(size, nd)
    else:
        factors = (scale_factor,) * nd if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        out = tuple(int(math.floor(s * f)) for s, f in zip(x[2:], factors))
    _need(len(out) == nd and all(o >= 1 for o in out), f"interpolate: output size {out} for input {x}")
    return (x[0], x[1], *out)


def channel_shuffle(name):
    def rule(x, groups):
        _need(len(x) >= 3 and groups >= 1 and x[1] % groups == 0, f"{name}: groups={groups} must divide the channels of {x} (N, C, *spatial)")
        return tuple(x)

    return rule


def affine_grid(theta, size=(1, 1, 2, 2), align_corners=False):
    nd = len(size) - 2
    _need(nd in (2, 3) and all(isinstance(n, int) and n >= 1 for n in size),
          f"affine_grid: size must be (N, C, H, W) or (N, C, D, H, W), got {size}")
    _need(tuple(theta) == (size[0], nd, nd + 1), f"affine_grid: theta must be ({size[0]}, {nd}, {nd + 1}) for size {size}, "
                                                 f"got {theta}")
    return (size[0], *size[2:], nd)


def grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    _need(len(x) == 4 and len(grid) == 4 and grid[0] == x[0] and grid[3] == 2,
          f"grid_sample: x (N, C, H, W) and grid (N, Ho, Wo, 2), got {x}, {grid}")
    _need(mode in ("bilinear", "nearest"), f"grid_sample: mode {mode!r}; the catalogue checks 'bilinear' and 'nearest'")
    _need(padding_mode in ("zeros", "border"),
          f"grid_sample: padding_mode {padding_mode!r}; the catalogue checks 'zeros' and 'border'")
    return (x[0], x[1], grid[1], grid[2])


def bilinear(x1, x2, weight, bias=None):
    _need(len(x1) >= 1 and len(x2) == len(x1) and tuple(x1[:-1]) == tuple(x2[:-1]) and len(weight) == 3,
          f"bilinear: x1 (..., in1), x2 (..., in2) with the same batch dims and weight (out, in1, in2), got {x1}, {x2}, {weight}")
    _need((weight[1], weight[2]) == (x1[-1], x2[-1]), f"bilinear: weight {weight} does not match x1 {x1} and x2 {x2}")
    _need(bias is None or tuple(bias) == (weight[0],), f"bilinear: bias {bias} must be ({weight[0]},)")
    return tuple(x1[:-1]) + (weight[0],)


def embedding_bag(ids, table, per_sample_weights=None, offsets=None, mode="mean"):
    _need(len(table) == 2, f"embedding_bag: table must be (num_embeddings, dim), got {table}")
    _need(mode in ("sum", "mean", "max"), f"embedding_bag: mode must be 'sum', 'mean' or 'max', got {mode!r}")
    _need(per_sample_weights is None or (tuple(per_sample_weights) == tuple(ids) and mode == "sum"),
          f"embedding_bag: per_sample_weights {per_sample_weights} must match ids {ids}, with mode 'sum'")
    if len(ids) == 2:
        _need(offsets is None, "embedding_bag: 2-d ids are one bag a row; offsets are for 1-d ids")
        return (ids[0], table[1])
    _need(len(ids) == 1 and offsets is not None and len(offsets) >= 1 and offsets[0] == 0 and
          all(a <= b for a, b in zip(offsets, offsets[1:])) and offsets[-1] <= ids[0],
          f"embedding_bag: 1-d ids need offsets starting at 0, nondecreasing, within {ids[0]}; got {offsets}")
    return (len(offsets), table[1])


def pdist(x, p=2.0):
    _need(len(x) == 2 and x[0] >= 2, f"pdist: x must be (N, M) with N >= 2, got {x}")
    _need(p == 2.0, f"pdist: p={p}; the catalogue checks p=2")
    return (x[0] * (x[0] - 1) // 2,)


def lp_pool(name, nd):
    def rule(x, norm_type=2.0, kernel_size=2, stride=None):
        _need(len(x) == nd + 2, f"{name}: x must have {nd + 2} dims, got {x}")
        _need(norm_type in (1.0, 2.0), f"{name}: norm_type={norm_type}; the catalogue checks 1 and 2")
        out = []
        for size, k, s in zip(x[2:], _n(kernel_size, nd), _n(kernel_size if stride is None else stride, nd)):
            o = _out(size, k, s, 0)
            _need(k >= 1 and s >= 1 and o >= 1, f"{name}: kernel {k} does not fit {size}")
            out.append(o)
        return (x[0], x[1], *out)

    return rule


def pool3d(x, kernel_size=2, stride=None, padding=0, count_include_pad=True):
    _need(len(x) == 5, f"3-d pool: x must be (N, C, D, H, W), got {x}")
    out = []
    for size, k, s, p in zip(x[2:], _n(kernel_size, 3), _n(kernel_size if stride is None else stride, 3), _n(padding, 3)):
        _need(k >= 1 and s >= 1 and 0 <= p <= k // 2, "avg_pool3d: kernel, stride >= 1 and padding at most half the kernel")
        o = _out(size, k, s, p)
        _need(o >= 1, f"avg_pool3d: kernel {k} does not fit {size}")
        out.append(o)
    return (x[0], x[1], *out)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    _need(len(x) >= 3 and size >= 1, f"local_response_norm: x must be (N, C, *spatial) and size >= 1, got {x}, size={size}")
    return tuple(x)


def triplet(name):
    def rule(anchor, positive, negative, reduction="mean", **_):
        _need(len(anchor) == 2 and tuple(anchor) == tuple(positive) == tuple(negative),
              f"{name}: anchor, positive and negative must be the same (N, D), got {anchor}, {positive}, {negative}")
        return _reduced(name, reduction, (anchor[0],))

    return rule


def cosine_embedding(x1, x2, target, margin=0.0, reduction="mean"):
    _need(len(x1) == 2 and tuple(x1) == tuple(x2) and tuple(target) == (x1[0],),
          f"cosine_embedding: x1, x2 (N, D) and target (N,), got {x1}, {x2}, {target}")
    return _reduced("cosine_embedding", reduction, (x1[0],))


def multi_margin(x, target, p=1, margin=1.0, reduction="mean"):
    _need(len(x) == 2 and tuple(target) == (x[0],), f"multi_margin: x (N, C) and target (N,), got {x}, {target}")
    _need(p in (1, 2), f"multi_margin: p must be 1 or 2, got {p}")
    return _reduced("multi_margin", reduction, (x[0],))


def recurrent(name, gates, cells=1):
    """x (N, T, D), the initial state(s) (N, H), w_ih (G H, D), w_hh (G H, H),
    b_ih and b_hh (G H,) -> the hidden state at every step (N, T, H)."""

    def rule(x, *rest, nonlinearity="tanh"):
        states, (w_ih, w_hh, b_ih, b_hh) = rest[:cells], rest[cells:]
        _need(len(x) == 3, f"{name}: x must be (N, T, D), batch first, got {x}")
        hidden = states[0][1] if states and len(states[0]) == 2 else -1
        _need(all(tuple(s) == (x[0], hidden) for s in states), f"{name}: initial states {states} must be (N={x[0]}, H)")
        _need(tuple(w_ih) == (gates * hidden, x[2]) and tuple(w_hh) == (gates * hidden, hidden),
              f"{name}: w_ih {w_ih} must be ({gates} H, D) = {(gates * hidden, x[2])} and w_hh {w_hh} ({gates} H, H)")
        _need(tuple(b_ih) == tuple(b_hh) == (gates * hidden,), f"{name}: b_ih {b_ih} and b_hh {b_hh} must be ({gates * hidden},)")
        _need(nonlinearity in ("tanh", "relu"), f"{name}: nonlinearity must be 'tanh' or 'relu'")
        return (x[0], x[1], hidden)

    return rule


def where(x, mask, other):
    try:
        return tuple(np.broadcast_shapes(tuple(x), tuple(mask), tuple(other)))
    except ValueError:
        raise ShapeError(f"where: x {x}, mask {mask} and other {other} do not broadcast") from None


def stack(*xs, dim=0):
    _need(len(xs) >= 1 and all(tuple(s) == tuple(xs[0]) for s in xs), f"stack: every tensor must have one shape, got {xs}")
    r = len(xs[0])
    _need(-(r + 1) <= dim <= r, f"stack: dim {dim} out of range for {r}-d tensors")
    d = dim % (r + 1)
    return tuple(xs[0][:d]) + (len(xs),) + tuple(xs[0][d:])


def index_select(x, index, dim=0):
    _need(len(index) == 1, f"index_select: index must be 1-d, got {index}")
    _need(-len(x) <= dim < len(x), f"index_select: dim {dim} out of range for {len(x)}-d input")
    d = dim % len(x)
    return tuple(x[:d]) + (index[0],) + tuple(x[d + 1:])


def gather(x, index, dim=-1):
    _need(len(index) == len(x), f"gather: index {index} must have the rank of x {x}")
    _need(-len(x) <= dim < len(x), f"gather: dim {dim} out of range for {len(x)}-d input")
    d = dim % len(x)
    _need(all(i <= s for k, (i, s) in enumerate(zip(index, x)) if k != d),
          f"gather: index {index} is larger than x {x} off dim {dim}")
    return tuple(index)


def slice_(x, dim=0, start=0, end=None, step=1):
    nd = len(x)
    _need(-nd <= dim < nd, f"slice: dim {dim} out of range for {nd}-d input")
    _need(isinstance(step, int) and step >= 1, f"slice: step must be a positive int (torch takes no negative step), "
                                                f"got {step!r}")
    d = dim % nd
    n = len(range(*slice(start, end, step).indices(x[d])))
    _need(n >= 1, f"slice: [{start}:{end}:{step}] of an axis of {x[d]} is empty")
    return tuple(x[:d]) + (n,) + tuple(x[d + 1:])


def einsum(*operands, equation="ij,jk->ik"):
    from reference_impl.tensor_math import einsum_subscripts

    try:
        subs, out = einsum_subscripts(equation)
    except ValueError as e:
        raise ShapeError(str(e)) from None
    _need(len(subs) == len(operands), f"einsum: {equation!r} names {len(subs)} operands, got {len(operands)}")
    sizes = {}
    for s, shape in zip(subs, operands):
        _need(len(s) == len(shape), f"einsum: {s!r} of {equation!r} names {len(s)} dims, the operand has {shape}")
        for c, n in zip(s, shape):
            _need(sizes.setdefault(c, n) == n, f"einsum: {c!r} of {equation!r} is {sizes[c]} in one operand, {n} in another")
    return tuple(sizes[c] for c in out)


def cross_entropy_probs(logits, target, weight=None, reduction="mean", label_smoothing=0.0):
    _need(len(logits) == 2 and tuple(target) == tuple(logits),
          f"cross_entropy_probs: logits (N, C) and target probabilities (N, C), got {logits}, {target}")
    _need(weight is None or tuple(weight) == (logits[1],), f"cross_entropy_probs: weight must be ({logits[1]},), got {weight}")
    _need(0.0 <= label_smoothing <= 1.0, f"cross_entropy_probs: label_smoothing must be in [0, 1], got {label_smoothing}")
    return _reduced("cross_entropy_probs", reduction, (logits[0],))


def max_unpool(name, nd):
    def rule(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
        from reference_impl.spatial import unpool_size

        _need(len(x) == nd + 2, f"{name}: x must have {nd + 2} dims (N, C, *spatial), got {x}")
        _need(tuple(indices) == tuple(x), f"{name}: indices {indices} must have x's shape {x}")
        ks, ss, ps = _n(kernel_size, nd), _n(kernel_size if stride is None else stride, nd), _n(padding, nd)
        _need(len(ks) == len(ss) == len(ps) == nd and all(k >= 1 and s >= 1 and 0 <= p <= k // 2
                                                          for k, s, p in zip(ks, ss, ps)),
              f"{name}: kernel_size {kernel_size}, stride {stride}, padding {padding}: each >= 1, padding at most "
              f"half the kernel")
        default = unpool_size(x[2:], kernel_size, stride, padding)
        out = default if output_size is None else unpool_size(x[2:], kernel_size, stride, padding, output_size)
        _need(len(out) == nd and all(d - s < o < d + s for o, d, s in zip(out, default, ss)),
              f"{name}: output_size {output_size} must be within a stride of the default {default}")
        _need(min(out) >= 1 and math.prod(out) >= math.prod(x[2:]),
              f"{name}: a plane of {out} cannot hold {math.prod(x[2:])} distinct indices")
        return (x[0], x[1], *out)

    return rule
