"""A zoo of seeded bugs: candidates with the mistakes people make in backward passes.

Each ``Bug`` builds a ``Candidate`` whose one op is wrong in a known way.  The
zoo test hunts each with the same checks the suites run (the candidate against
finite differences of its own forward, and against the float64 reference), on
random graphs containing the op, under the ``ci`` profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import reference_impl
from reference_impl import activations, layers, losses, normalization, recurrent, spatial, structure, tensor_math
from reference_impl._util import unbroadcast
from gradcheck import Candidate


@dataclass(frozen=True)
class Bug:
    id: str
    op: str
    kind: str
    make: Callable  # () -> Candidate


def _numpy(op, forward, backward):
    def make():
        c = Candidate(f"zoo-{op}")
        c.numpy_ops[op] = (forward, backward)
        return c

    return make


def _ref(op):
    return reference_impl.OPS[op]


# ---------------------------------------------------------------- linear, matmul, elementwise structure


def linear_sign_weight(cache, g):
    gx, gw, *rest = layers.linear_backward(cache, g)
    return (gx, -gw, *rest)


def linear_missing_transpose(cache, g):
    x, weight, has_bias = cache
    gx, _, *rest = layers.linear_backward(cache, g)
    g2 = g.reshape(-1, g.shape[-1])
    return (gx, x.reshape(-1, x.shape[-1]).T @ g2, *rest)  # (in, out) where (out, in) is due


def linear_bias_not_summed(cache, g):
    gx, gw, *rest = layers.linear_backward(cache, g)
    if rest:
        rest = [g.reshape(-1, g.shape[-1])[0].copy()]  # the first row, not the sum over the batch
    return (gx, gw, *rest)


def linear_float16_in_float32(cache, g):
    # "Faster" weight gradient in half precision when the model runs in float32.
    gx, gw, *rest = layers.linear_backward(cache, g)
    if g.dtype == np.float32:
        x = cache[0]
        g2 = g.reshape(-1, g.shape[-1]).astype(np.float16)
        gw = (g2.T @ x.reshape(-1, x.shape[-1]).astype(np.float16)).astype(np.float32)
    return (gx, gw, *rest)


def add_no_broadcast_reduction(shapes, g):
    a_shape, b_shape = shapes
    # sums the leading axes away but forgets the size-1 axes that were broadcast
    gb = g
    while gb.ndim > len(b_shape):
        gb = gb.sum(axis=0)
    return unbroadcast(g, a_shape), gb


def mul_wrong_operand(cache, g):
    a, b = cache
    return unbroadcast(g * a, a.shape), unbroadcast(g * a, b.shape)


def matmul_no_broadcast_reduction(cache, g):
    a, b = cache
    return g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g


def matmul_vector_from_the_last_row(cache, g):
    a, b = cache
    ga, gb = layers.matmul_backward(cache, g)
    if b.ndim == 1 and a.ndim >= 2:  # the column's gradient from the last row of a only
        gb = (a[..., -1, :] * g[..., -1:]).reshape(-1, b.size).sum(axis=0)
    return ga, gb


def concat_pieces_reversed(cache, g):
    dim, sizes = cache
    return tuple(reversed(np.split(g, np.cumsum(sizes[::-1])[:-1], axis=dim)))


def dropout_no_rescale(cache, g):
    mask, _ = cache
    return g * mask, None


def embedding_overwrites(cache, g):
    ids, table_shape, padding_idx = cache
    gt = np.zeros(table_shape, dtype=g.dtype)
    gt[ids] = g  # a repeated id keeps only its last gradient
    if padding_idx is not None:
        gt[padding_idx] = 0
    return None, gt


def batch_norm_eval_with_batch_statistics(cache, g):
    xhat, rstd, w = cache  # the training-mode backward, as if the batch's mean and variance were used
    axes = (0,) + tuple(range(2, g.ndim))
    n = g.size // g.shape[1]
    gxhat = g * w
    gx = rstd / n * (n * gxhat - gxhat.sum(axis=axes, keepdims=True) - xhat * (gxhat * xhat).sum(axis=axes, keepdims=True))
    return gx, None, None, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def embedding_trains_the_padding_row(cache, g):
    ids, table_shape, padding_idx = cache
    gt = np.zeros(table_shape, dtype=g.dtype)
    np.add.at(gt, ids, g)  # padding_idx forgotten
    return None, gt


# ---------------------------------------------------------------- convolution and pooling

def _conv_backward(cache, g, bug):
    """The reference conv2d VJP with one planted mistake."""
    x_shape, (ph, pw), xg, wg, taps, has_bias = cache
    n, c, h, w = x_shape
    groups, og = wg.shape[:2]
    gg = g.reshape(n, groups, og, *g.shape[2:])
    gxg = np.zeros_like(xg)
    gwg = np.zeros_like(wg)
    for i, j, si, sj in taps:
        if bug == "dilation":  # the tap's offset without the dilation
            si = slice(i, i + si.stop - si.start, si.step)
            sj = slice(j, j + sj.stop - sj.start, sj.step)
        if bug == "stride":  # the window positions taken as consecutive: the stride forgotten
            si = slice(si.start, si.start + gg.shape[-2])
            sj = slice(sj.start, sj.start + gg.shape[-1])
        xs = xg[..., si, sj]
        if bug == "groups":  # every group correlates with the first group's input
            xs = np.broadcast_to(xs[:, :1], xs.shape)
        gwg[..., i, j] = np.einsum("ngohw,ngchw->goc", gg, xs)
        gxg[..., si, sj] += np.einsum("ngohw,goc->ngchw", gg, wg[..., i, j])
    full = gxg.reshape(n, c, *gxg.shape[3:])
    gx = full[:, :, :h, :w] if bug == "padding" else full[:, :, ph:ph + h, pw:pw + w]
    gw = gwg.reshape(-1, *wg.shape[2:])
    return (gx, gw) + ((g.sum(axis=(0, 2, 3)),) if has_bias else ())


def _padded_conv(op, forward, backward):
    """A conv bug in the convolution's own backward, with padding "same" and the
    padding modes put around it as the reference does (the pad's VJP right)."""
    return _numpy(op, *layers.with_padding(forward, backward))


def conv2d_padding_mode_backward_as_zeros(cache, g):
    # reflect / replicate / circular padding differentiated as zero padding: the
    # padded border's gradient cropped off instead of sent back to the inputs it copies
    if not isinstance(cache, layers.Prepadded):
        return layers.conv2d_backward(cache, g)
    grads = layers.conv2d_backward(cache.conv, g)
    shape, sources = cache.pad
    inner = [slice(None)] * len(shape)
    for axis, src in sources:  # where the input's first element sits in the padded axis
        before = int(np.argmax(src != 0)) - 1 if src[0] == 0 else int(np.argmax(src == 0))
        inner[axis] = slice(before, before + shape[axis])
    return (grads[0][tuple(inner)],) + tuple(grads[1:])


def einsum_summed_letter_as_mean(cache, g):
    # a letter only one operand has was summed over; its gradient divided by the
    # letter's size along it, as if the contraction took the mean there
    operands, subs, out = cache
    grads = list(tensor_math.einsum_backward(cache, g))
    for i, (x, s) in enumerate(zip(operands, subs)):
        named = set(out).union(*(set(t) for j, t in enumerate(subs) if j != i))
        grads[i] = grads[i] / np.prod([x.shape[k] for k, c in enumerate(s) if c not in named])
    return tuple(grads)


def slice_backward_without_step(cache, g):
    # the gradient written back to consecutive positions from start: right for step 1
    shape, at = cache
    dim, s = len(at) - 1, at[-1]
    start = s.indices(shape[dim])[0]
    return tensor_math.slice_backward((shape, at[:-1] + (slice(start, start + g.shape[dim]),)), g)


def cross_entropy_probs_mean_over_weights(logits, target, weight=None, reduction="mean", label_smoothing=0.0):
    # the weighted mean of class-id targets (over the weight each row carries)
    # carried over to probability targets, whose mean is over the rows
    loss, cache = losses.cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing)
    if weight is None or reduction != "mean":
        return loss, cache
    logp, t, w, count, eps, weighted = cache
    carried = float(np.real(np.sum(w * t)))
    return loss * count / carried, (logp, t, w, carried, eps, weighted)


def _conv2d_bug(bug):
    return lambda cache, g: _conv_backward(cache, g, bug)


def _conv1d_bug(bug):
    def backward(cache, g):
        grads = _conv_backward(cache, g[:, :, None, :], bug)
        return (grads[0][:, :, 0, :], grads[1][:, :, 0, :]) + grads[2:]

    return backward


def max_pool_drops_the_overhang(cache, g):
    x_shape, xp_shape, (ph, pw), taps, winner = cache
    g = np.array(g, copy=True)
    if xp_shape[2] > x_shape[2] + 2 * ph:  # ceil_mode's last row of windows hangs past the padding: dropped
        g[:, :, -1, :] = 0
    if xp_shape[3] > x_shape[3] + 2 * pw:
        g[:, :, :, -1] = 0
    return layers.max_pool2d_backward(cache, g)


def max_pool_backward_undilated(cache, g):
    x_shape, xp_shape, (ph, pw), taps, winner = cache
    kw = len({sj.start for _, sj in taps})  # taps run row by row: kw of them a row
    undilated = [(slice(k // kw, k // kw + si.stop - si.start, si.step), slice(k % kw, k % kw + sj.stop - sj.start,
                  sj.step)) for k, (si, sj) in enumerate(taps)]  # tap (i, j) scattered at (i, j), not (i d, j d)
    return layers.max_pool2d_backward((x_shape, xp_shape, (ph, pw), undilated, winner), g)


def conv3d_depth_taps_undilated(cache, g):
    x_shape, ps, xg, wg, taps, has_bias = cache
    # the depth slice of every tap read as if the dilation were 1 there (the step kept): right for dilation 1
    moved = [(idx, (slice(idx[0], idx[0] + sl[0].stop - sl[0].start, sl[0].step),) + sl[1:]) for idx, sl in taps]
    return spatial.conv3d_backward((x_shape, ps, xg, wg, moved, has_bias), g)


def max_pool3d_crops_depth_as_height(cache, g):
    shape, xp_shape, pads, taps, winner = cache
    # the padding cut off the depth axis is the height's, as a 2-d pool's crop copied over would do
    return spatial.max_pool3d_backward((shape, xp_shape, (pads[1],) + tuple(pads[1:]), taps, winner), g)


def max_pool_keep_input(x, kernel_size=2, stride=None, padding=0):
    y, cache = layers.max_pool2d_forward(x, kernel_size, stride, padding)
    ph, pw = cache[2]
    return y, (cache, np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf))


def max_pool_all_maxima(saved, g):
    # every maximum of a window gets the gradient: a tie doubles it
    (x_shape, xp_shape, (ph, pw), taps, winner), xp = saved
    windows = np.stack([xp[..., si, sj] for si, sj in taps], axis=-1)
    top = windows.max(axis=-1)
    gxp = np.zeros(xp_shape, dtype=g.dtype)
    for k, (si, sj) in enumerate(taps):
        gxp[..., si, sj] += np.where(windows[..., k] == top, g, 0)
    return (gxp[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]],)


def avg_pool_exclude_pad_forward(x, kernel_size=2, stride=None, padding=0):
    # count_include_pad=False, consistently in forward and backward: self-consistent,
    # and not what the op is defined to do
    y, cache = layers.avg_pool2d_forward(x, kernel_size, stride, padding)
    ones = np.ones_like(x)
    counts, _ = layers.avg_pool2d_forward(ones, kernel_size, stride, padding)
    return y / counts, (cache, counts)


def avg_pool_exclude_pad_backward(cache, g):
    inner, counts = cache
    return layers.avg_pool2d_backward(inner, g / counts)


# ---------------------------------------------------------------- normalisation, activations, attention, losses


def softmax_missing_term(cache, g):
    y, dim = cache
    return (y * g,)


def log_softmax_missing_sum(cache, g):
    y, dim = cache
    return (g - np.exp(y) * g,)


def layer_norm_missing_term(cache, g):
    xhat, rstd, weight, axes, _ = cache
    lead = tuple(range(g.ndim - weight.ndim))
    gxhat = g * weight
    gx = rstd * (gxhat - gxhat.mean(axis=axes, keepdims=True))
    return gx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


def batch_norm_missing_mean(cache, g):
    xhat, rstd, w, axes = cache
    gxhat = g * w
    gx = rstd * (gxhat - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def sigmoid_wrong_derivative(y, g):
    return (g * y,)


def tanh_wrong_derivative(y, g):
    return (g * (1 - y),)


def gelu_tanh_missing_cubic(cache, g):
    x, approximate, cdf, t = cache
    if approximate == "tanh":
        c = np.sqrt(2.0 / np.pi)
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c),)
    return activations.gelu_backward(cache, g)


def elu_constant_negative_slope(cache, g):
    pos, alpha, e = cache
    return (np.where(pos, g, g * alpha),)


def leaky_relu_swapped(cache, g):
    pos, slope = cache
    return (np.where(pos, slope * g, g),)


def softplus_forward_keep_beta(x, beta=1.0, threshold=20.0):
    y, (linear, z) = activations.softplus_forward(x, beta, threshold)
    return y, (linear, z, beta)


def softplus_ignores_beta(cache, g):
    linear, z, beta = cache
    return (np.where(linear, g, g / (1 + np.exp(-z / beta))),)


def attention_key_unscaled(cache, g):
    gq, gk, gv, *mask = layers.attention_backward(cache, g)
    q, k, v, p, scale, masked = cache
    return (gq, gk / scale, gv, *mask)


def attention_default_scale(cache, g):
    q, k, v, p, scale, masked = cache
    gq, gk, gv, *mask = layers.attention_backward(cache, g)
    default = 1.0 / np.sqrt(q.shape[-1])
    return (gq * default / scale, gk * default / scale, gv, *mask)  # 1/sqrt(E) whatever scale was given


def cross_entropy_not_averaged(cache, g):
    logp, target, count, keep, eps, weight = cache
    grad = np.exp(logp)
    grad[np.arange(grad.shape[0]), target] -= 1
    return (g * grad, None) if weight is None else (g * grad, None, None)


def mse_missing_two(cache, g):
    d, count = cache
    gp = g * d / count
    return gp, -gp


def smooth_l1_positive_slope(cache, g):
    d, pos, quad, beta, count = cache
    slope = np.where(quad, d / beta, 1.0).astype(d.dtype)
    gp = g * slope / count
    return gp, -gp


def bce_target_gradient_dropped(cache, g):
    gx, gt = losses.bce_with_logits_backward(cache, g)
    return gx, np.zeros_like(gt)


# ---------------------------------------------------------------- effects beyond wrong values


def tanh_backward_reuses_saved(y, g):
    y **= 2  # the saved output reused as scratch: right once, wrong on a second backward
    return (g * (1 - y),)


def add_backward_one_buffer(shapes, g):
    a_shape, b_shape = shapes
    out = g.copy()  # one fresh buffer... handed out for both inputs when no broadcasting happened
    return unbroadcast(out, a_shape), unbroadcast(out, b_shape)


def relu_backward_zeroes_grad_out(pos, g):
    g[~pos] = 0  # "saves an allocation": writes into the caller's grad_out
    return (g,)


# ---------------------------------------------------------------- consistent but wrong; torch plugs; engines


def softsign_forward(x):
    # tanh replaced by x / (1 + |x|), with the exact derivative of that: forward and
    # backward agree with each other, and both are the wrong function
    s = np.where(np.real(x) > 0, x, -x)
    return x / (1 + s), s


def softsign_backward(s, g):
    return (g / (1 + s) ** 2,)


def _torch_function(op, backward_bug):
    def make():
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                ctx.save_for_backward(*tensors)
                ctx.hyper = [a for a in args if not isinstance(a, torch.Tensor)]
                return backward_bug.forward(*tensors, *ctx.hyper)

            @staticmethod
            def backward(ctx, g):
                grads = backward_bug.backward(g, *ctx.saved_tensors, *ctx.hyper)
                return tuple(grads) + (None,) * len(ctx.hyper)

        c = Candidate(f"zoo-torch-{op}")
        c.op(op)(Fn)
        return c

    return make


class _TorchLinearSign:
    @staticmethod
    def forward(x, w, b=None):
        y = x @ w.T
        return y if b is None else y + b

    @staticmethod
    def backward(g, x, w, b=None):
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        grads = (g @ w, -(g2.T @ x2))  # sign error in the weight gradient
        return grads + ((g2.sum(0),) if b is not None else ())


class _TorchSoftmaxMissing:
    @staticmethod
    def forward(x, dim):
        return x.softmax(dim)

    @staticmethod
    def backward(g, x, dim):
        return (x.softmax(dim) * g,)  # missing - sum(g * y)


def torch_bad_tanh():
    """A torch.autograd.Function for tanh whose backward uses 1 - y, not 1 - y**2."""
    import torch

    class BadTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y)

    return BadTanh


def _overwriting_engine():
    c = Candidate("zoo-engine-overwrite")

    @c.engine
    def loss_and_grads(graph, tensors):
        values, caches = reference_impl.forward(graph.steps(), tensors)
        grads = {graph.output: np.ones(())}
        for name, op, inputs, _ in reversed(graph.steps()):
            if name in grads:
                for i, gi in zip(inputs, reference_impl.OPS[op].backward(caches[name], grads[name])):
                    if gi is not None:
                        grads[i] = gi  # overwrite at fan-out instead of accumulating
        return float(values[graph.output]), {l.name: grads.get(l.name, np.zeros(l.shape))
                                             for l in graph.differentiable_leaves}

    return c


# ---------------------------------------------------------------- piecewise and smooth activations


def relu6_keep_x(x):
    return activations.relu6_forward(x)[0], x


def relu6_no_upper_clip(x, g):
    return (np.where(x > 0, g, 0),)  # the gradient passes above 6 too: wrong only where x > 6


def hardsigmoid_slope_a_third(inside, g):
    return (np.where(inside, g / 3, 0),)


def hardswish_no_product_rule(cache, g):
    x, lo, hi = cache
    return (np.where(hi, g, np.where(lo, g * (x + 3) / 6, 0)),)  # d/dx x (x + 3) / 6 taken as (x + 3) / 6


def hardshrink_no_dead_zone(keep, g):
    return (g.copy(),)


def softshrink_keep_x(x, lambd=0.5):
    return activations.softshrink_forward(x, lambd)[0], (x, lambd)


def softshrink_sign_slope(cache, g):
    x, lambd = cache
    return (g * np.sign(x) * (np.abs(x) > lambd),)  # -1 below -lambd, where the slope is +1


def threshold_keep_value(x, threshold=0.0, value=0.0):
    y, above = activations.threshold_forward(x, threshold, value)
    return y, (above, value)


def threshold_value_as_slope(cache, g):
    above, value = cache
    return (np.where(above, g, g * value),)  # right only while value == 0


def selu_negative_side_unscaled(cache, g):
    pos, e = cache
    return (np.where(pos, activations.SELU_SCALE * g, g * activations.SELU_ALPHA * e),)


def celu_keep_x(x, alpha=1.0):
    return activations.celu_forward(x, alpha)[0], (x, alpha)


def celu_ignores_alpha(cache, g):
    x, alpha = cache
    return (np.where(x > 0, g, g * np.exp(np.minimum(x, 0))),)  # exp(x), not exp(x / alpha): wrong for alpha != 1


def mish_missing_sigmoid(cache, g):
    x, t = cache
    return (g * (t + x * (1 - t**2)),)


def softsign_not_squared(d, g):
    return (g / d,)


def tanhshrink_tanh_derivative(t, g):
    return (g * (1 - t**2),)


def logsigmoid_wrong_side(x, g):
    return (g * activations._sigmoid(x),)


# ---------------------------------------------------------------- tensor math


def sub_second_operand_positive(shapes, g):
    return unbroadcast(g, shapes[0]), unbroadcast(g, shapes[1])


def div_denominator_not_squared(cache, g):
    a, b = cache
    return unbroadcast(g / b, a.shape), unbroadcast(-g * a / b, b.shape)


def neg_gradient_passed_through(_, g):
    return (g.copy(),)


def abs_negative_side_dropped(sign, g):
    return (g * (sign > 0),)


def clamp_no_mask(inside, g):
    return (g.copy(),)


def sum_scaled_by_count(cache, g):
    shape, dim, keepdim = cache
    (gx,) = tensor_math.sum_backward(cache, g)
    return (gx * shape[dim],)


def mean_divides_by_last_axis(cache, g):
    shape, dim, keepdim = cache
    return (tensor_math._expand(g, shape, dim, keepdim) / shape[-1],)  # right only when dim is the last axis


def logsumexp_keep_x(x, dim=-1, keepdim=False):
    return tensor_math.logsumexp_forward(x, dim, keepdim)[0], (x, dim, keepdim)


def logsumexp_unnormalised(cache, g):
    x, dim, keepdim = cache
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))  # softmax without its denominator
    return (tensor_math._expand(g, x.shape, dim, keepdim) * e,)


def var_assumes_unbiased(cache, g):
    d, dim, correction, keepdim = cache
    return (tensor_math._expand(g, d.shape, dim, keepdim) * 2 * d / (d.shape[dim] - 1),)  # wrong for correction=0


def std_backward_of_var(cache, g):
    d, y, dim, correction, keepdim = cache
    return (tensor_math._expand(g, d.shape, dim, keepdim) * 2 * d / (d.shape[dim] - correction),)  # var's


def norm_backward_as_two(cache, g):
    x, y, dim, p, keepdim = cache
    return (tensor_math._expand(g, x.shape, dim, keepdim) * x / y,)  # the 2-norm's rule, wrong for p = 3


def index_select_overwrites(cache, g):
    shape, index, dim = cache
    gx = np.zeros(shape, dtype=g.dtype)
    gx[(slice(None),) * dim + (index,)] = g  # a slice selected twice keeps one gradient
    return gx, None


def gather_backward_overwrites(cache, g):
    shape, index, dim = cache
    at = list(np.indices(index.shape, sparse=True))
    at[dim] = index
    gx = np.zeros(shape, dtype=g.dtype)
    gx[tuple(at)] = g  # an element gathered twice keeps one gradient
    return gx, None


def cumsum_not_reversed(dim, g):
    return (np.cumsum(g, axis=dim),)


def transpose_not_undone(dims, g):
    return (g.copy(),)  # the gradient keeps the output's layout


def permute_same_permutation(dims, g):
    return (np.transpose(g, dims),)  # right only for a permutation that is its own inverse


def softmin_softmax_sign(cache, g):
    y, dim = cache
    return (y * (g - (g * y).sum(axis=dim, keepdims=True)),)


def glu_gate_derivative_missing(cache, g):
    a, s, dim = cache
    return (np.concatenate([g * s, g * a * s], axis=dim),)


def prelu_weight_gradient_without_x(cache, g):
    x, w, pos, w_shape = cache
    gx, _ = tensor_math.prelu_backward(cache, g)
    gw = np.where(pos, 0, g)
    gw = gw.sum(axis=tuple(i for i in range(x.ndim) if i != 1)) if w_shape[0] > 1 else gw.sum()
    return gx, np.asarray(gw).reshape(w_shape)


# ---------------------------------------------------------------- losses, each wrong in one setting


def l1_not_averaged(cache, g):
    sign, count = cache
    return g * sign, -g * sign  # right only for reduction='sum'


def huber_as_smooth_l1(cache, g):
    d, quad, delta, count = cache
    gp = g * np.where(quad, d / delta, np.sign(d)) / count  # smooth_l1's slope: right only for delta == 1
    return gp, -gp


def soft_margin_drops_the_label(cache, g):
    z, target, count = cache
    return -g * activations._sigmoid(z) / count, None  # right only where the label is 1


def kl_div_batchmean_by_every_element(input, target, reduction="mean", log_target=False):  # noqa: A002
    loss, cache = losses.kl_div_forward(input, target, reduction, log_target)
    if reduction == "batchmean":
        cache = cache[:3] + (input.size,)  # divides the gradient by every element, as 'mean' does
    return loss, cache


def poisson_nll_drops_the_target(cache, g):
    input, target, log_input, eps, count = cache  # noqa: A001
    return g * np.exp(input) / count, None


def gaussian_nll_var_gradient_misses_log_term(cache, g):
    d, v, unclamped, count = cache
    gi, gt, _ = losses.gaussian_nll_backward(cache, g)
    return gi, gt, g * 0.5 * (-d**2 / v**2) * unclamped / count  # d/dv of 0.5 log v dropped


def margin_ranking_second_input_same_sign(cache, g):
    g1, _, none = losses.margin_ranking_backward(cache, g)
    return g1, g1, none


def hinge_embedding_hinge_slope_positive(cache, g):
    target, hinge, count = cache
    slope = np.where(target == 1, 1.0, np.where(hinge, 1.0, 0.0))
    return (g * slope / count).astype(losses.hinge_dtype(target)), None


def nll_mean_over_every_row(logp, target, *weight, reduction="mean", ignore_index=-100):
    loss, (shape, dtype, t, keep, count, w) = losses.nll_forward(logp, target, *weight, reduction=reduction,
                                                                 ignore_index=ignore_index)
    every = logp.shape[0] if not weight else float(np.sum(weight[0][np.where(keep, t, 0)]))
    return loss, (shape, dtype, t, keep, every if reduction == "mean" else count, w)  # ignored rows counted


def nll_mean_over_rows_not_weights(logp, target, *weight, reduction="mean", ignore_index=-100):
    loss, (shape, dtype, t, keep, count, w) = losses.nll_forward(logp, target, *weight, reduction=reduction,
                                                                 ignore_index=ignore_index)
    rows = float(np.sum(keep))  # the mean's divisor: the kept rows, not their class weights
    return loss, (shape, dtype, t, keep, rows if reduction == "mean" else count, w)


def multilabel_soft_margin_not_over_classes(x, target, reduction="mean"):
    loss, (x_, t, count) = losses.multilabel_soft_margin_forward(x, target, reduction)
    return loss, (x_, t, count // x.shape[-1])  # the mean over classes forgotten in the backward


def cross_entropy_smoothing_ignored(cache, g):
    logp, target, count, keep, eps, weight = cache
    return losses.cross_entropy_backward((logp, target, count, keep, 0.0, weight), g)  # right only without smoothing


def cross_entropy_weights_forgotten(cache, g):
    logp, target, count, keep, eps, weight = cache
    gx = losses.cross_entropy_backward((logp, target, count, keep, eps, None), g)[0]  # the divisor still weighted
    return gx, None, None


# ---------------------------------------------------------------- normalization, distances, pooling, layout


def rms_norm_missing_projection(cache, g):
    xhat, rstd, weight, axes = cache
    lead = tuple(range(g.ndim - weight.ndim))
    return rstd * g * weight, (g * xhat).sum(axis=lead)


def group_norm_as_one_group(cache, g):
    xhat, rstd, weight, groups = cache
    n = xhat.shape[0]
    # the statistics' backward over every channel at once: right only for num_groups == 1
    whole = np.broadcast_to(rstd, (n, groups, 1)).mean(axis=1, keepdims=True)
    gx, gw, gb = normalization.group_norm_backward((xhat, whole, weight, 1), g)
    return gx, gw, gb


def instance_norm_missing_mean(cache, g):
    xhat, rstd, weight, groups = cache
    n, c = xhat.shape[:2]
    gxhat = (g * weight.reshape((1, c) + (1,) * (xhat.ndim - 2))).reshape(n, groups, -1)
    flat = xhat.reshape(n, groups, -1)
    gx = (rstd * (gxhat - flat * (gxhat * flat).mean(axis=2, keepdims=True))).reshape(xhat.shape)
    axes = (0,) + tuple(range(2, xhat.ndim))
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def normalize_without_projection(cache, g):
    y, denom, big, dim = cache
    return (g / denom,)


def cosine_similarity_swapped(cache, g):
    g1, g2 = tensor_math.cosine_similarity_backward(cache, g)
    return g1, g1 if g1.shape == g2.shape else g2  # the first input's gradient given to both


def pairwise_distance_second_positive(cache, g):
    gx, _ = tensor_math.pairwise_distance_backward(cache, g)
    return gx, gx.copy()


def pixel_shuffle_backward_as_forward_order(cache, g):
    (n, c, h, w), r = cache
    return (g.reshape(n, c // (r * r), h, r, w, r).transpose(0, 1, 5, 3, 2, 4).reshape(n, c, h, w),)  # i and j swapped


def pixel_unshuffle_backward_as_forward_order(cache, g):
    (n, c, h, w), r = cache
    return (g.reshape(n, c, r, r, h // r, w // r).transpose(0, 1, 4, 3, 5, 2).reshape(n, c, h, w),)


def pad_backward_drops_the_border(cache, g):
    shape, sources = cache
    for axis, src in reversed(sources):
        start = int(np.argmax(src == 0)) if (src == 0).any() else 0
        g = np.take(g, range(start, start + shape[axis]), axis=axis)  # the slice a constant pad would take
    return (np.array(g),)  # the reflected, replicated or wrapped copies' gradients are lost


def max_pool1d_gradient_to_the_first_tap(cache, g):
    x_shape, xp_shape, pads, taps, winner = cache
    return layers.max_pool1d_backward((x_shape, xp_shape, pads, taps, np.zeros_like(winner)), g)


def avg_pool2d_backward_by_window_size(cache, g):
    x_shape, xp_shape, pads, taps, divisor = cache
    # the per-window counts kept (count_include_pad=False is right), a divisor_override taken for the window size
    return layers.avg_pool2d_backward((x_shape, xp_shape, pads, taps, divisor if np.ndim(divisor) else len(taps)), g)


def avg_pool2d_overhang_counted_as_padding(x, kernel_size=2, stride=None, padding=0, count_include_pad=True,
                                           divisor_override=None, ceil_mode=False):
    # a ceil_mode window hanging past the padding divided by the whole kernel, as if
    # the overhang were padding: right for every window that fits
    if ceil_mode and count_include_pad and divisor_override is None:
        divisor_override = int(np.prod(layers.pair(kernel_size)))
    return layers.avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad, divisor_override, ceil_mode)


def avg_pool1d_kernel_squared(cache, g):
    (gx,) = layers.avg_pool1d_backward(cache, g)
    return (gx / len(cache[3]),)  # divides by k * k, as a 2-d pool of a k x k kernel would


def adaptive_avg_pool1d_floor_windows(cache, g):
    shape, wins = cache
    o, size = len(wins), shape[-1]
    floor = [(i * size // o, (i + 1) * size // o) for i in range(o)]  # right only when o divides the length
    return layers.adaptive_avg_pool1d_backward((shape, [(a, max(b, a + 1)) for a, b in floor]), g)


def adaptive_avg_pool2d_floor_rows(cache, g):
    shape, rows, cols = cache
    o, size = len(rows), shape[-2]
    floor = [(i * size // o, max((i + 1) * size // o, i * size // o + 1)) for i in range(o)]
    return layers.adaptive_avg_pool2d_backward((shape, floor, cols), g)


# ---------------------------------------------------------------- settings of existing ops


def avg_pool2d_backward_counts_padding(cache, g):
    x_shape, xp_shape, pads, taps, divisor = cache
    return layers.avg_pool2d_backward((x_shape, xp_shape, pads, taps, len(taps)), g)  # right at the defaults only


def softplus_backward_ignores_threshold(cache, g):
    linear, z = cache
    return (g * activations._sigmoid(z),)  # the sigmoid past the threshold too, where the slope is 1


# ---------------------------------------------------------------- the wider catalogue


def _conv_transpose2d_noting_output_padding(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                                            dilation=1):
    y, cache = spatial.conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return y, (cache, output_padding)


def conv_transpose2d_drops_output_padding(saved, g):
    cache, output_padding = saved
    oph, opw = (output_padding, output_padding) if isinstance(output_padding, int) else output_padding
    g = g.copy()
    g[:, :, g.shape[2] - oph:] = 0  # written for output_padding=0: the rows it adds get no gradient
    g[:, :, :, g.shape[3] - opw:] = 0
    return spatial.conv_transpose2d_backward(cache, g)


def _max_unpool2d_noting_width(x, indices, kernel_size=2, stride=None, padding=0, output_size=None):
    y, cache = spatial.max_unpool2d_forward(x, indices, kernel_size, stride, padding, output_size)
    return y, (cache, spatial.unpool_size(x.shape[2:], kernel_size, stride, padding)[1])


def max_unpool2d_backward_by_the_default_width(saved, g):
    (idx, shape), width = saved
    # each index split into (row, column) by the default plane width: right
    # unless output_size makes the plane wider
    rows, cols = np.divmod(idx, width)
    n, c = shape[:2]
    got = g[np.arange(n)[:, None, None], np.arange(c)[None, :, None], np.minimum(rows, g.shape[2] - 1),
            np.minimum(cols, g.shape[3] - 1)]
    return got.reshape(shape), None


def ctc_mean_over_the_batch_only(cache, g):
    grad, scale, reduction = cache
    if reduction == "mean":  # torch's mean divides each loss by its target length too; this forgets it
        scale = np.full(scale.shape, 1.0 / scale.size)
    return losses.ctc_backward((grad, scale, reduction), g)


def conv_transpose1d_weight_from_group_0(cache, g):
    xg, wg, taps, full_shape, pads, has_bias = cache
    grads = spatial.conv_transpose1d_backward(cache, g)
    same = (np.repeat(xg[:, :1], xg.shape[1], axis=1), wg, taps, full_shape, pads, has_bias)  # every group reads group 0
    return (grads[0], spatial.conv_transpose1d_backward(same, g)[1]) + grads[2:]


def conv_transpose3d_weight_taps_flipped_in_depth(cache, g):
    gx, gw, *rest = spatial.conv_transpose3d_backward(cache, g)
    return (gx, gw[:, :, ::-1]) + tuple(rest)  # the depth taps in a convolution's order: wrong for kernels deeper than 1


def lp_pool3d_p2_over_the_sum(cache, g):
    x, p, taps, s, y = cache
    if p == 1:
        return spatial.lp_pool3d_backward(cache, g)
    safe = np.where(s == 0, 1.0, s)
    gx = np.zeros(x.shape, dtype=np.result_type(x, g))
    for t in taps:
        gx[(Ellipsis,) + t] += np.where(s == 0, 0.0, g / safe) * x[(Ellipsis,) + t]  # x / s where x / y is due
    return (gx,)


def _affine_grid_noting_corners(theta, size=(1, 1, 2, 2), align_corners=False):
    y, base = spatial.affine_grid_forward(theta, size, align_corners)
    return y, (base, size)


def affine_grid_backward_with_corners_aligned(saved, g):
    base, size = saved
    # the base grid rebuilt for the backward as align_corners=True has it: wrong only without it
    return spatial.affine_grid_backward(spatial._base_coordinates(tuple(size), True).astype(base.dtype), g)


def grid_sample_border_slope_through_the_clamp(cache, g):
    shape, batch, taps, sx, sy = cache
    # the unnormalising slope everywhere, also where padding_mode="border" clamped the point to the edge
    whole = (shape, batch, taps, np.full(sx.shape, np.max(sx)), np.full(sy.shape, np.max(sy)))
    return spatial.grid_sample_backward(whole, g)


def unfold_assigns_overlaps(cache, g):
    x_shape, xp_shape, pads, out, taps = cache
    n, c = x_shape[:2]
    cols = g.reshape(n, c, len(taps), *out)
    xp = np.zeros(xp_shape, dtype=g.dtype)
    for k, (si, sj) in enumerate(taps):
        xp[..., si, sj] = cols[:, :, k]  # overlapping blocks overwrite instead of adding
    return (xp[..., pads[0]:pads[0] + x_shape[2], pads[1]:pads[1] + x_shape[3]],)


def fold_backward_pads_one_side(geometry, g):
    x_shape, xp_shape, (ph, pw), (oh, ow), taps = geometry
    gp = np.pad(g, ((0, 0), (0, 0), (0, 2 * ph), (0, 2 * pw)))  # the padding all on the far side
    cols = np.stack([gp[..., si, sj] for si, sj in taps], axis=2)
    return (cols.reshape(x_shape[0], -1, oh * ow),)


def _interpolate_ignoring_align_corners(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    y, mats = spatial.interpolate_forward(x, size, scale_factor, mode, align_corners)
    _, wrong = spatial.interpolate_forward(x, size, scale_factor, mode, False if align_corners else align_corners)
    return y, wrong  # the backward's weights as if align_corners were False


def channel_shuffle_backward_shuffles_again(cache, g):
    shape, groups = cache
    return (spatial.channel_shuffle_forward(g, groups)[0],)  # the same shuffle, not its inverse


def bilinear_x2_gradient_first_output_only(cache, g):
    x1, x2, weight, has_bias = cache
    grads = spatial.bilinear_backward(cache, g)
    g2 = np.einsum("...,ij,...i->...j", g.sum(axis=-1), weight[0], x1)  # right for one output feature only
    return (grads[0], g2) + grads[2:]


def embedding_bag_mean_by_first_bag(cache, g):
    flat, table_shape, table, weights, bags, winners, mode = cache
    if mode != "mean":
        return spatial.embedding_bag_backward(cache, g)
    scale = np.array([len(b) / max(len(bags[0]), 1) if len(b) else 1.0 for b in bags])[:, None]
    return spatial.embedding_bag_backward(cache, g * scale)  # every bag divided by the first bag's size


def pdist_backward_one_side(cache, g):
    shape, i, j, d, dist = cache
    safe = np.where(dist == 0, 1.0, dist)
    contrib = d * (g / safe)[:, None]
    gx = np.zeros(shape, dtype=contrib.dtype)
    np.add.at(gx, i, contrib)  # row j's share forgotten
    return (gx,)


def adaptive_max_assigns_overlaps(cache, g):
    shape, nd, picks = cache
    batch = shape[:-nd]
    gx = np.zeros(shape, dtype=g.dtype)
    for index, region, k in picks:
        sizes = tuple(sl.stop - sl.start for sl in region)
        block = np.zeros(batch + (int(np.prod(sizes)),), dtype=g.dtype)
        np.put_along_axis(block, k[..., None], g[(Ellipsis,) + index][..., None], axis=-1)
        part = gx[(Ellipsis,) + region]
        gx[(Ellipsis,) + region] = np.where(block.reshape(batch + sizes) != 0, block.reshape(batch + sizes), part)
    return (gx,)  # a second window's gradient overwrites the first's where windows overlap


def adaptive_max1d_forgets_the_window_start(cache, g):
    shape, nd, picks = cache
    gx = np.zeros(shape, dtype=g.dtype)
    for index, region, k in picks:
        np.put_along_axis(gx, k[..., None], np.take_along_axis(gx, k[..., None], axis=-1) + g[(Ellipsis,) + index][..., None],
                          axis=-1)  # the winner's place within its window taken as its place in the row
    return (gx,)


def adaptive_avg3d_nominal_divisor(cache, g):
    shape, cells = cache
    outs = [max(cell[a][0] for cell in cells) + 1 for a in range(3)]
    nominal = np.prod([max(1, size // o) for size, o in zip(shape[2:], outs)])
    gx = np.zeros(shape, dtype=g.dtype)
    for cell in cells:
        region = tuple(slice(a, b) for _, (a, b) in cell)
        gx[(Ellipsis,) + region] += g[(Ellipsis,) + tuple(slice(k, k + 1) for k, _ in cell)] / nominal
    return (gx,)  # divided by size // out, wrong where the sizes do not divide


def avg_pool3d_counts_padding(cache, g):
    shape, xp_shape, pads, taps, divisor = cache
    return spatial.avg_pool3d_backward((shape, xp_shape, pads, taps, len(taps)), g)


def lp_pool_p1_as_p2(cache, g):
    x, p, taps, s, y = cache
    if p != 1:
        return spatial.lp_pool2d_backward(cache, g)
    safe = np.where(s == 0, 1.0, np.abs(s))
    gx = np.zeros(x.shape, dtype=np.result_type(x, g))
    for t in taps:
        gx[(Ellipsis,) + t] += g * x[(Ellipsis,) + t] / safe  # the p = 2 slope x / y where p = 1's is 1
    return (gx,)


def lp_pool_overlaps_overwrite(cache, g):
    x, p, taps, s, y = cache
    safe = np.where(s == 0, 1.0, s)
    factor = np.where(s == 0, 0.0, g if p == 1 else g * y / safe)
    gx = np.zeros(x.shape, dtype=np.result_type(x, g))
    for t in taps:
        gx[(Ellipsis,) + t] = factor * (x[(Ellipsis,) + t] ** (p - 1) if p != 1 else 1.0)  # = where += is due
    return (gx,)


def lrn_backward_own_channel_only(cache, g):
    x, base, size, alpha, beta, lo, hi = cache
    return (g * base ** (-beta) - 2 * alpha * beta / size * x * (g * x * base ** (-beta - 1)),)  # no neighbours


def bce_backward_always_mean(cache, g):
    p, target, count = cache
    return g * (p - target) / np.maximum(p * (1 - p), 1e-12) / p.size, None  # divided as for 'mean' under 'sum' too


def cosine_embedding_ignores_the_margin_hinge(cache, g):
    x1, x2, m1, m2, den, cos, slope, count = cache
    target_slope = np.where(slope < 0, -1.0, 1.0)  # every -1 pair treated as active
    return losses.cosine_embedding_backward((x1, x2, m1, m2, den, cos, target_slope, count), g)


def triplet_backward_ignores_swap(cache, g):
    ap, an, pn, swapped, active, count = cache
    return losses.triplet_margin_backward((ap, an, pn, np.zeros_like(swapped), active, count), g)


def triplet_backward_no_hinge(cache, g):
    ap, an, pn, swapped, active, count = cache
    return losses.triplet_margin_backward((ap, an, pn, swapped, np.ones_like(active), count), g)


def multi_margin_p2_as_p1(cache, g):
    shape, rows, target, z, on, p, count = cache
    return losses.multi_margin_backward((shape, rows, target, z, on, 1, count), g)


def _multilabel_first_target_only(x, target, reduction="mean"):
    y, cache = losses.multilabel_margin_forward(x, target, reduction)
    first = np.where(np.arange(target.shape[1])[None, :] == 0, target, -1)  # the backward sees one target a row
    return y, losses.multilabel_margin_forward(x, first, reduction)[1]


# ---------------------------------------------------------------- recurrent


def lstm_forget_bias_gradient_missing(cache, g):
    gx, gh, gc, g_ih, g_hh, gb_ih, gb_hh = recurrent.lstm_backward(cache, g)
    hidden = g_hh.shape[1]
    gb_ih, gb_hh = gb_ih.copy(), gb_hh.copy()
    gb_ih[hidden:2 * hidden] = 0  # the forget gate's bias gets no gradient
    gb_hh[hidden:2 * hidden] = 0
    return gx, gh, gc, g_ih, g_hh, gb_ih, gb_hh


def gru_update_gate_state_path_missing(cache, grad):
    x, w_ih, w_hh, steps = cache
    gx = np.zeros(x.shape, dtype=np.result_type(x, grad))
    g_ih, g_hh = np.zeros(w_ih.shape, dtype=gx.dtype), np.zeros(w_hh.shape, dtype=gx.dtype)
    gb_ih, gb_hh = np.zeros(w_ih.shape[0], dtype=gx.dtype), np.zeros(w_hh.shape[0], dtype=gx.dtype)
    dh = np.zeros(steps[0][0].shape, dtype=gx.dtype)
    for s in reversed(range(x.shape[1])):
        h_prev, r, u, nn, hn = steps[s]
        dh = dh + grad[:, s]
        dn = dh * (1 - u) * (1 - nn * nn)
        du = dh * (h_prev - nn) * u * (1 - u)
        dr = dn * hn * r * (1 - r)
        da = np.concatenate([dr, du, dn], axis=1)
        db = np.concatenate([dr, du, dn * r], axis=1)
        gx[:, s] = da @ w_ih
        g_ih += da.T @ x[:, s]
        gb_ih += da.sum(axis=0)
        g_hh += db.T @ h_prev
        gb_hh += db.sum(axis=0)
        dh = db @ w_hh  # the state's own path, h' = ... + u h, dropped: dh * u is missing
    return gx, dh, g_ih, g_hh, gb_ih, gb_hh


def rnn_truncated_bptt(cache, g):
    x, w_ih, w_hh, steps, out, nonlinearity = cache
    gx = np.zeros(x.shape, dtype=np.result_type(x, g))
    g_ih, g_hh = np.zeros(w_ih.shape, dtype=gx.dtype), np.zeros(w_hh.shape, dtype=gx.dtype)
    gb = np.zeros(w_ih.shape[0], dtype=gx.dtype)
    dh = None
    for s in reversed(range(x.shape[1])):
        h_prev, z = steps[s]
        dz = g[:, s] * (1 - out[s] * out[s]) if nonlinearity == "tanh" else np.where(z > 0, g[:, s], 0)
        gx[:, s] = dz @ w_ih
        g_ih += dz.T @ x[:, s]
        g_hh += dz.T @ h_prev
        gb += dz.sum(axis=0)
        dh = dz @ w_hh  # each step's gradient stops at the step before: no gradient through time
    return gx, dh, g_ih, g_hh, gb, gb.copy()


# ---------------------------------------------------------------- value regimes


def layer_norm_one_pass_variance(x, weight, bias, eps=1e-5):
    """var = E[x^2] - E[x]^2 in the input's dtype: right in exact arithmetic, and in
    float32 it loses its digits to cancellation when the mean is large beside the
    spread (Note [Value regimes])."""
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = np.maximum((x * x).mean(axis=axes, keepdims=True) - mu * mu, 0)
    rstd = 1 / np.sqrt(var + np.asarray(eps, x.dtype))
    xhat = (x - mu) * rstd
    return xhat * weight + bias, (xhat, rstd, weight, axes, True)


# ---------------------------------------------------------------- more tensor math


def exp_backward_of_x(y, g):
    return (g * np.log(y),)  # the input where exp(x) is due


def log_backward_squared(x, g):
    return (g / (x * x),)


def sqrt_backward_missing_half(y, g):
    return (g / y,)


def rsqrt_backward_sign_lost(y, g):
    return (0.5 * g * y * y * y,)


def pow_backward_wrong_exponent(cache, g):
    x, p = cache
    return (g * p * x ** p,)  # x^p where x^(p-1) is due


def maximum_gradient_to_both(cache, g):
    a_shape, b_shape, w = cache
    return unbroadcast(g, a_shape), unbroadcast(g, b_shape)  # the loser gets it too


def minimum_branches_swapped(cache, g):
    a_shape, b_shape, w = cache
    return tensor_math.maximum_backward((a_shape, b_shape, 1 - w), g)


def where_mask_inverted(cache, g):
    x_shape, other_shape, keep = cache
    return tensor_math.where_backward((x_shape, other_shape, ~keep), g)


def amax_backward_expands_the_last_axis(cache, g):
    share, dim, keepdim = cache
    return (np.expand_dims(g, -1) * share if not keepdim else g * share,)  # right only when dim is the last or kept


def amin_backward_to_the_first_element(cache, g):
    share, dim, keepdim = cache
    first = np.zeros_like(share)
    np.put_along_axis(first, np.zeros_like(np.take(share, [0], axis=dim), dtype=int), 1.0, axis=dim)
    return tensor_math.amin_backward((first, dim, keepdim), g)


def cumprod_backward_by_division(cache, g):
    x, dim = cache
    y = np.cumprod(x, axis=dim)
    rev = np.flip(np.cumsum(np.flip(g * y, axis=dim), axis=dim), axis=dim)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.where(x == 0, 0.0, rev / np.where(x == 0, 1.0, x)),)  # y / x: wrong wherever x has a zero


def stack_backward_reversed(cache, g):
    n, dim = cache
    return tuple(reversed(tensor_math.stack_backward(cache, g)))  # each tensor gets another's gradient


ZOO = [
    Bug("linear-sign-error-in-weight-gradient", "linear", "sign error", _numpy("linear", layers.linear_forward, linear_sign_weight)),
    Bug("linear-missing-transpose", "linear", "missing transpose", _numpy("linear", layers.linear_forward, linear_missing_transpose)),
    Bug("linear-bias-not-summed-over-batch", "linear", "bias gradient not summed", _numpy("linear", layers.linear_forward, linear_bias_not_summed)),
    Bug("add-broadcast-not-reduced", "add", "wrong broadcast reduction", _numpy("add", structure.add_forward, add_no_broadcast_reduction)),
    Bug("matmul-vector-from-the-last-row", "matmul", "wrong only for a 1-d operand", _numpy("matmul", layers.matmul_forward, matmul_vector_from_the_last_row)),
    Bug("matmul-broadcast-not-reduced", "matmul", "wrong broadcast reduction", _numpy("matmul", layers.matmul_forward, matmul_no_broadcast_reduction)),
    Bug("mul-wrong-operand", "mul", "wrong operand", _numpy("mul", structure.mul_forward, mul_wrong_operand)),
    Bug("concat-pieces-reversed", "concat", "wrong split", _numpy("concat", structure.concat_forward, concat_pieces_reversed)),
    Bug("conv2d-wrong-for-stride", "conv2d", "conv: only stride > 1", _padded_conv("conv2d", layers.conv2d_forward, _conv2d_bug("stride"))),
    Bug("conv2d-wrong-for-dilation", "conv2d", "conv: only dilation > 1", _padded_conv("conv2d", layers.conv2d_forward, _conv2d_bug("dilation"))),
    Bug("conv2d-wrong-for-groups", "conv2d", "conv: only groups > 1", _padded_conv("conv2d", layers.conv2d_forward, _conv2d_bug("groups"))),
    Bug("conv2d-wrong-with-padding", "conv2d", "conv: only with padding", _padded_conv("conv2d", layers.conv2d_forward, _conv2d_bug("padding"))),
    Bug("conv2d-padding-mode-differentiated-as-zeros", "conv2d", "conv: only padding_mode other than zeros", _numpy("conv2d", layers.conv2d_forward, conv2d_padding_mode_backward_as_zeros)),
    Bug("einsum-summed-letter-as-mean", "einsum", "wrong only for a letter one operand has alone", _numpy("einsum", tensor_math.einsum_forward, einsum_summed_letter_as_mean)),
    Bug("slice-backward-ignores-step", "slice", "wrong only with step > 1", _numpy("slice", tensor_math.slice_forward, slice_backward_without_step)),
    Bug("cross-entropy-probs-mean-over-weights", "cross_entropy_probs", "wrong only with class weights", _numpy("cross_entropy_probs", cross_entropy_probs_mean_over_weights, losses.cross_entropy_probs_backward)),
    Bug("conv1d-wrong-for-stride", "conv1d", "conv: only stride > 1", _padded_conv("conv1d", layers.conv1d_forward, _conv1d_bug("stride"))),
    Bug("max-pool-tie-gradient-to-every-maximum", "max_pool2d", "max-pool ties", _numpy("max_pool2d", max_pool_keep_input, max_pool_all_maxima)),
    Bug("avg-pool-excludes-padding", "avg_pool2d", "forward and backward consistently wrong", _numpy("avg_pool2d", avg_pool_exclude_pad_forward, avg_pool_exclude_pad_backward)),
    Bug("softmax-missing-term", "softmax", "missing term", _numpy("softmax", normalization.softmax_forward, softmax_missing_term)),
    Bug("log-softmax-missing-sum", "log_softmax", "missing term", _numpy("log_softmax", normalization.log_softmax_forward, log_softmax_missing_sum)),
    Bug("layer-norm-missing-term", "layer_norm", "missing term", _numpy("layer_norm", normalization.layer_norm_forward, layer_norm_missing_term)),
    Bug("batch-norm-missing-mean", "batch_norm", "missing term", _numpy("batch_norm", normalization.batch_norm_forward, batch_norm_missing_mean)),
    Bug("sigmoid-wrong-derivative", "sigmoid", "wrong activation derivative", _numpy("sigmoid", activations.sigmoid_forward, sigmoid_wrong_derivative)),
    Bug("tanh-wrong-derivative", "tanh", "wrong activation derivative", _numpy("tanh", activations.tanh_forward, tanh_wrong_derivative)),
    Bug("gelu-tanh-missing-cubic-term", "gelu", "wrong activation derivative", _numpy("gelu", activations.gelu_forward, gelu_tanh_missing_cubic)),
    Bug("elu-constant-negative-slope", "elu", "wrong activation derivative", _numpy("elu", activations.elu_forward, elu_constant_negative_slope)),
    Bug("leaky-relu-slopes-swapped", "leaky_relu", "wrong activation derivative", _numpy("leaky_relu", activations.leaky_relu_forward, leaky_relu_swapped)),
    Bug("softplus-ignores-beta", "softplus", "wrong only in a rare setting", _numpy("softplus", softplus_forward_keep_beta, softplus_ignores_beta)),
    Bug("dropout-not-rescaled", "dropout", "missing factor", _numpy("dropout", structure.dropout_forward, dropout_no_rescale)),
    Bug("embedding-repeated-ids-overwrite", "embedding", "overwrite instead of accumulate", _numpy("embedding", layers.embedding_forward, embedding_overwrites)),
    Bug("batch-norm-eval-backward-of-training-mode", "batch_norm_eval", "wrong mode", _numpy("batch_norm_eval", normalization.batch_norm_eval_forward, batch_norm_eval_with_batch_statistics)),
    Bug("embedding-trains-the-padding-row", "embedding", "wrong only with padding_idx", _numpy("embedding", layers.embedding_forward, embedding_trains_the_padding_row)),
    Bug("attention-backward-ignores-scale", "attention", "wrong only with scale", _numpy("attention", layers.attention_forward, attention_default_scale)),
    Bug("attention-key-gradient-unscaled", "attention", "missing factor", _numpy("attention", layers.attention_forward, attention_key_unscaled)),
    Bug("cross-entropy-not-averaged", "cross_entropy", "missing factor", _numpy("cross_entropy", losses.cross_entropy_forward, cross_entropy_not_averaged)),
    Bug("mse-missing-two", "mse", "missing factor", _numpy("mse", losses.mse_forward, mse_missing_two)),
    Bug("smooth-l1-positive-slope-only", "smooth_l1", "sign error", _numpy("smooth_l1", losses.smooth_l1_forward, smooth_l1_positive_slope)),
    Bug("bce-target-gradient-dropped", "bce_with_logits", "missing gradient", _numpy("bce_with_logits", losses.bce_with_logits_forward, bce_target_gradient_dropped)),
    Bug("tanh-is-softsign-consistently", "tanh", "forward and backward consistently wrong", _numpy("tanh", softsign_forward, softsign_backward)),
    Bug("linear-float16-weight-gradient-in-float32", "linear", "precision loss only in float32", _numpy("linear", layers.linear_forward, linear_float16_in_float32)),
    Bug("torch-function-linear-sign-error", "linear", "sign error (torch autograd.Function)", _torch_function("linear", _TorchLinearSign)),
    Bug("torch-function-softmax-missing-term", "softmax", "missing term (torch autograd.Function)", _torch_function("softmax", _TorchSoftmaxMissing)),
    Bug("engine-overwrites-at-fan-out", "add", "gradient overwritten at fan-out (engine)", _overwriting_engine),
    Bug("tanh-backward-overwrites-its-saved-output", "tanh", "saved values mutated", _numpy("tanh", activations.tanh_forward, tanh_backward_reuses_saved)),
    Bug("add-gradients-share-one-buffer", "add", "aliased gradients", _numpy("add", structure.add_forward, add_backward_one_buffer)),
    Bug("relu-backward-writes-into-grad-out", "relu", "grad_out written", _numpy("relu", activations.relu_forward, relu_backward_zeroes_grad_out)),
    Bug("relu6-no-upper-clip", "relu6", "wrong only above the upper kink", _numpy("relu6", relu6_keep_x, relu6_no_upper_clip)),
    Bug("hardsigmoid-slope-a-third", "hardsigmoid", "wrong activation derivative", _numpy("hardsigmoid", activations.hardsigmoid_forward, hardsigmoid_slope_a_third)),
    Bug("hardswish-no-product-rule", "hardswish", "missing term", _numpy("hardswish", activations.hardswish_forward, hardswish_no_product_rule)),
    Bug("hardshrink-gradient-through-dead-zone", "hardshrink", "missing mask", _numpy("hardshrink", activations.hardshrink_forward, hardshrink_no_dead_zone)),
    Bug("softshrink-sign-slope", "softshrink", "sign error (negative side only)", _numpy("softshrink", softshrink_keep_x, softshrink_sign_slope)),
    Bug("threshold-value-as-slope", "threshold", "wrong only in a rare setting", _numpy("threshold", threshold_keep_value, threshold_value_as_slope)),
    Bug("selu-negative-side-unscaled", "selu", "missing factor (negative side only)", _numpy("selu", activations.selu_forward, selu_negative_side_unscaled)),
    Bug("celu-ignores-alpha", "celu", "wrong only in a rare setting", _numpy("celu", celu_keep_x, celu_ignores_alpha)),
    Bug("mish-missing-sigmoid", "mish", "missing factor", _numpy("mish", activations.mish_forward, mish_missing_sigmoid)),
    Bug("softsign-denominator-not-squared", "softsign", "wrong activation derivative", _numpy("softsign", activations.softsign_forward, softsign_not_squared)),
    Bug("tanhshrink-tanh-derivative", "tanhshrink", "wrong activation derivative", _numpy("tanhshrink", activations.tanhshrink_forward, tanhshrink_tanh_derivative)),
    Bug("sub-second-operand-positive", "sub", "sign error", _numpy("sub", tensor_math.sub_forward, sub_second_operand_positive)),
    Bug("div-denominator-not-squared", "div", "missing factor", _numpy("div", tensor_math.div_forward, div_denominator_not_squared)),
    Bug("neg-gradient-passed-through", "neg", "sign error", _numpy("neg", tensor_math.neg_forward, neg_gradient_passed_through)),
    Bug("abs-negative-side-dropped", "abs", "missing branch", _numpy("abs", tensor_math.abs_forward, abs_negative_side_dropped)),
    Bug("clamp-gradient-not-masked", "clamp", "missing mask", _numpy("clamp", tensor_math.clamp_forward, clamp_no_mask)),
    Bug("sum-gradient-scaled-by-count", "sum", "extra factor", _numpy("sum", tensor_math.sum_forward, sum_scaled_by_count)),
    Bug("mean-divides-by-the-last-axis", "mean", "wrong only for an inner dim", _numpy("mean", tensor_math.mean_forward, mean_divides_by_last_axis)),
    Bug("logsumexp-gradient-unnormalised", "logsumexp", "missing term", _numpy("logsumexp", logsumexp_keep_x, logsumexp_unnormalised)),
    Bug("var-assumes-unbiased", "var", "wrong only in a rare setting", _numpy("var", tensor_math.var_forward, var_assumes_unbiased)),
    Bug("index-select-repeats-overwrite", "index_select", "overwrite instead of accumulate", _numpy("index_select", tensor_math.index_select_forward, index_select_overwrites)),
    Bug("gather-repeats-overwrite", "gather", "overwrite instead of accumulate", _numpy("gather", tensor_math.gather_forward, gather_backward_overwrites)),
    Bug("std-backward-of-var", "std", "missing factor", _numpy("std", tensor_math.std_forward, std_backward_of_var)),
    Bug("norm-backward-as-two-norm", "norm", "wrong only for p=3", _numpy("norm", tensor_math.norm_forward, norm_backward_as_two)),
    Bug("cumsum-gradient-not-reversed", "cumsum", "wrong direction", _numpy("cumsum", tensor_math.cumsum_forward, cumsum_not_reversed)),
    Bug("transpose-gradient-not-transposed-back", "transpose", "wrong layout", _numpy("transpose", tensor_math.transpose_forward, transpose_not_undone)),
    Bug("permute-gradient-by-the-same-permutation", "permute", "wrong only for a non-involution", _numpy("permute", tensor_math.permute_forward, permute_same_permutation)),
    Bug("softmin-backward-of-softmax", "softmin", "sign error", _numpy("softmin", tensor_math.softmin_forward, softmin_softmax_sign)),
    Bug("glu-gate-derivative-missing", "glu", "missing factor", _numpy("glu", tensor_math.glu_forward, glu_gate_derivative_missing)),
    Bug("prelu-weight-gradient-without-x", "prelu", "missing factor (weight only)", _numpy("prelu", tensor_math.prelu_forward, prelu_weight_gradient_without_x)),
    Bug("l1-not-averaged", "l1", "wrong only for reduction='mean'", _numpy("l1", losses.l1_forward, l1_not_averaged)),
    Bug("huber-with-smooth-l1-slope", "huber", "wrong only for delta != 1", _numpy("huber", losses.huber_forward, huber_as_smooth_l1)),
    Bug("soft-margin-drops-the-label", "soft_margin", "wrong only for labels -1", _numpy("soft_margin", losses.soft_margin_forward, soft_margin_drops_the_label)),
    Bug("kl-div-batchmean-by-every-element", "kl_div", "wrong only for reduction='batchmean'", _numpy("kl_div", kl_div_batchmean_by_every_element, losses.kl_div_backward)),
    Bug("poisson-nll-drops-the-target", "poisson_nll", "missing term", _numpy("poisson_nll", losses.poisson_nll_forward, poisson_nll_drops_the_target)),
    Bug("gaussian-nll-var-gradient-misses-log-term", "gaussian_nll", "missing term (var only)", _numpy("gaussian_nll", losses.gaussian_nll_forward, gaussian_nll_var_gradient_misses_log_term)),
    Bug("margin-ranking-second-input-same-sign", "margin_ranking", "sign error", _numpy("margin_ranking", losses.margin_ranking_forward, margin_ranking_second_input_same_sign)),
    Bug("hinge-embedding-hinge-slope-positive", "hinge_embedding", "sign error (labels -1 only)", _numpy("hinge_embedding", losses.hinge_embedding_forward, hinge_embedding_hinge_slope_positive)),
    Bug("nll-mean-counts-ignored-rows", "nll", "wrong only with ignore_index", _numpy("nll", nll_mean_over_every_row, losses.nll_backward)),
    Bug("nll-weighted-mean-over-rows", "nll", "wrong only with class weights", _numpy("nll", nll_mean_over_rows_not_weights, losses.nll_backward)),
    Bug("multilabel-soft-margin-not-over-classes", "multilabel_soft_margin", "missing factor", _numpy("multilabel_soft_margin", multilabel_soft_margin_not_over_classes, losses.multilabel_soft_margin_backward)),
    Bug("cross-entropy-class-weights-forgotten", "cross_entropy", "wrong only with class weights", _numpy("cross_entropy", losses.cross_entropy_forward, cross_entropy_weights_forgotten)),
    Bug("cross-entropy-label-smoothing-ignored", "cross_entropy", "wrong only with label_smoothing", _numpy("cross_entropy", losses.cross_entropy_forward, cross_entropy_smoothing_ignored)),
    Bug("rms-norm-missing-projection", "rms_norm", "missing term", _numpy("rms_norm", normalization.rms_norm_forward, rms_norm_missing_projection)),
    Bug("group-norm-as-one-group", "group_norm", "wrong only for num_groups > 1", _numpy("group_norm", normalization.group_norm_forward, group_norm_as_one_group)),
    Bug("instance-norm-missing-mean", "instance_norm", "missing term", _numpy("instance_norm", normalization.instance_norm_forward, instance_norm_missing_mean)),
    Bug("normalize-without-projection", "normalize", "missing term", _numpy("normalize", normalization.normalize_forward, normalize_without_projection)),
    Bug("cosine-similarity-first-gradient-twice", "cosine_similarity", "wrong operand", _numpy("cosine_similarity", tensor_math.cosine_similarity_forward, cosine_similarity_swapped)),
    Bug("pairwise-distance-second-positive", "pairwise_distance", "sign error", _numpy("pairwise_distance", tensor_math.pairwise_distance_forward, pairwise_distance_second_positive)),
    Bug("pixel-shuffle-sub-pixel-axes-swapped", "pixel_shuffle", "wrong layout", _numpy("pixel_shuffle", tensor_math.pixel_shuffle_forward, pixel_shuffle_backward_as_forward_order)),
    Bug("pixel-unshuffle-sub-pixel-axes-swapped", "pixel_unshuffle", "wrong layout", _numpy("pixel_unshuffle", tensor_math.pixel_unshuffle_forward, pixel_unshuffle_backward_as_forward_order)),
    Bug("pad-backward-drops-the-border", "pad", "wrong only for reflect, replicate, circular", _numpy("pad", tensor_math.pad_forward, pad_backward_drops_the_border)),
    Bug("max-pool1d-gradient-to-the-first-tap", "max_pool1d", "wrong winner", _numpy("max_pool1d", layers.max_pool1d_forward, max_pool1d_gradient_to_the_first_tap)),
    Bug("avg-pool1d-kernel-squared", "avg_pool1d", "extra factor", _numpy("avg_pool1d", layers.avg_pool1d_forward, avg_pool1d_kernel_squared)),
    Bug("adaptive-avg-pool1d-floor-windows", "adaptive_avg_pool1d", "wrong only when sizes do not divide", _numpy("adaptive_avg_pool1d", layers.adaptive_avg_pool1d_forward, adaptive_avg_pool1d_floor_windows)),
    Bug("adaptive-avg-pool2d-floor-rows", "adaptive_avg_pool2d", "wrong only when sizes do not divide", _numpy("adaptive_avg_pool2d", layers.adaptive_avg_pool2d_forward, adaptive_avg_pool2d_floor_rows)),
    Bug("conv3d-depth-taps-undilated", "conv3d", "conv: only dilation > 1", _padded_conv("conv3d", spatial.conv3d_forward, conv3d_depth_taps_undilated)),
    Bug("max-pool3d-crops-depth-as-height", "max_pool3d", "wrong only with padding", _numpy("max_pool3d", spatial.max_pool3d_forward, max_pool3d_crops_depth_as_height)),
    Bug("max-pool2d-drops-the-ceil-mode-overhang", "max_pool2d", "wrong only with ceil_mode", _numpy("max_pool2d", layers.max_pool2d_forward, max_pool_drops_the_overhang)),
    Bug("max-pool2d-backward-undilated", "max_pool2d", "wrong only with dilation > 1", _numpy("max_pool2d", layers.max_pool2d_forward, max_pool_backward_undilated)),
    Bug("avg-pool2d-ceil-overhang-counted-as-padding", "avg_pool2d", "wrong only with ceil_mode", _numpy("avg_pool2d", avg_pool2d_overhang_counted_as_padding, layers.avg_pool2d_backward)),
    Bug("avg-pool2d-backward-ignores-divisor-override", "avg_pool2d", "wrong only with divisor_override", _numpy("avg_pool2d", layers.avg_pool2d_forward, avg_pool2d_backward_by_window_size)),
    Bug("avg-pool2d-backward-counts-the-padding", "avg_pool2d", "wrong only with count_include_pad=False or divisor_override", _numpy("avg_pool2d", layers.avg_pool2d_forward, avg_pool2d_backward_counts_padding)),
    Bug("softplus-backward-ignores-the-threshold", "softplus", "wrong only past the threshold", _numpy("softplus", activations.softplus_forward, softplus_backward_ignores_threshold)),
    Bug("conv-transpose2d-drops-output-padding", "conv_transpose2d", "wrong only with output_padding", _numpy("conv_transpose2d", _conv_transpose2d_noting_output_padding, conv_transpose2d_drops_output_padding)),
    Bug("max-unpool2d-backward-by-the-default-width", "max_unpool2d", "wrong only with an output_size wider than the default", _numpy("max_unpool2d", _max_unpool2d_noting_width, max_unpool2d_backward_by_the_default_width)),
    Bug("conv-transpose1d-weight-from-group-0", "conv_transpose1d", "wrong only for groups > 1", _numpy("conv_transpose1d", spatial.conv_transpose1d_forward, conv_transpose1d_weight_from_group_0)),
    Bug("grid-sample-border-slope-through-the-clamp", "grid_sample", "wrong only with padding_mode='border', outside the image", _numpy("grid_sample", spatial.grid_sample_forward, grid_sample_border_slope_through_the_clamp)),
    Bug("affine-grid-backward-aligns-the-corners", "affine_grid", "wrong only with align_corners=False", _numpy("affine_grid", _affine_grid_noting_corners, affine_grid_backward_with_corners_aligned)),
    Bug("conv-transpose3d-weight-taps-flipped-in-depth", "conv_transpose3d", "wrong only for kernels deeper than 1", _numpy("conv_transpose3d", spatial.conv_transpose3d_forward, conv_transpose3d_weight_taps_flipped_in_depth)),
    Bug("unfold-overlapping-blocks-overwrite", "unfold", "wrong only where blocks overlap", _numpy("unfold", spatial.unfold_forward, unfold_assigns_overlaps)),
    Bug("fold-backward-pads-one-side", "fold", "wrong only with padding", _numpy("fold", spatial.fold_forward, fold_backward_pads_one_side)),
    Bug("interpolate-backward-ignores-align-corners", "interpolate", "wrong only with align_corners=True", _numpy("interpolate", _interpolate_ignoring_align_corners, spatial.interpolate_backward)),
    Bug("channel-shuffle-backward-shuffles-again", "channel_shuffle", "the op, not its inverse", _numpy("channel_shuffle", spatial.channel_shuffle_forward, channel_shuffle_backward_shuffles_again)),
    Bug("bilinear-x2-gradient-first-output-only", "bilinear", "wrong only for several outputs", _numpy("bilinear", spatial.bilinear_forward, bilinear_x2_gradient_first_output_only)),
    Bug("embedding-bag-mean-by-the-first-bag", "embedding_bag", "wrong only for bags of unequal size", _numpy("embedding_bag", spatial.embedding_bag_forward, embedding_bag_mean_by_first_bag)),
    Bug("pdist-backward-one-side", "pdist", "missing term", _numpy("pdist", spatial.pdist_forward, pdist_backward_one_side)),
    Bug("adaptive-max-pool2d-overlaps-overwrite", "adaptive_max_pool2d", "wrong only where windows overlap", _numpy("adaptive_max_pool2d", spatial.adaptive_max_pool2d_forward, adaptive_max_assigns_overlaps)),
    Bug("adaptive-max-pool1d-forgets-the-window-start", "adaptive_max_pool1d", "wrong only for output_size > 1", _numpy("adaptive_max_pool1d", spatial.adaptive_max_pool1d_forward, adaptive_max1d_forgets_the_window_start)),
    Bug("adaptive-max-pool3d-overlaps-overwrite", "adaptive_max_pool3d", "wrong only where windows overlap", _numpy("adaptive_max_pool3d", spatial.adaptive_max_pool3d_forward, adaptive_max_assigns_overlaps)),
    Bug("adaptive-avg-pool3d-nominal-divisor", "adaptive_avg_pool3d", "wrong only when sizes do not divide", _numpy("adaptive_avg_pool3d", spatial.adaptive_avg_pool3d_forward, adaptive_avg3d_nominal_divisor)),
    Bug("avg-pool3d-backward-counts-the-padding", "avg_pool3d", "wrong only with count_include_pad=False", _numpy("avg_pool3d", spatial.avg_pool3d_forward, avg_pool3d_counts_padding)),
    Bug("lp-pool2d-p1-slope-of-p2", "lp_pool2d", "wrong only for norm_type=1", _numpy("lp_pool2d", spatial.lp_pool2d_forward, lp_pool_p1_as_p2)),
    Bug("lp-pool1d-overlapping-windows-overwrite", "lp_pool1d", "wrong only where windows overlap (stride < kernel)", _numpy("lp_pool1d", spatial.lp_pool1d_forward, lp_pool_overlaps_overwrite)),
    Bug("lp-pool3d-p2-slope-over-the-sum", "lp_pool3d", "wrong only for norm_type=2", _numpy("lp_pool3d", spatial.lp_pool3d_forward, lp_pool3d_p2_over_the_sum)),
    Bug("local-response-norm-own-channel-only", "local_response_norm", "wrong only for size > 1", _numpy("local_response_norm", normalization.local_response_norm_forward, lrn_backward_own_channel_only)),
    Bug("ctc-mean-over-the-batch-only", "ctc", "wrong only for reduction='mean' with targets longer than 1", _numpy("ctc", losses.ctc_forward, ctc_mean_over_the_batch_only)),
    Bug("bce-backward-always-divides-by-count", "binary_cross_entropy", "wrong only for reduction='sum'", _numpy("binary_cross_entropy", losses.binary_cross_entropy_forward, bce_backward_always_mean)),
    Bug("cosine-embedding-ignores-the-margin-hinge", "cosine_embedding", "wrong only for dissimilar pairs below the margin", _numpy("cosine_embedding", losses.cosine_embedding_forward, cosine_embedding_ignores_the_margin_hinge)),
    Bug("triplet-backward-ignores-swap", "triplet_margin", "wrong only with swap=True", _numpy("triplet_margin", losses.triplet_margin_forward, triplet_backward_ignores_swap)),
    Bug("triplet-with-distance-no-hinge", "triplet_margin_with_distance", "wrong only where the hinge is off", _numpy("triplet_margin_with_distance", losses.triplet_margin_with_distance_forward, triplet_backward_no_hinge)),
    Bug("multi-margin-p2-slope-of-p1", "multi_margin", "wrong only for p=2", _numpy("multi_margin", losses.multi_margin_forward, multi_margin_p2_as_p1)),
    Bug("multilabel-margin-first-target-only", "multilabel_margin", "wrong only for several targets a row", _numpy("multilabel_margin", _multilabel_first_target_only, losses.multilabel_margin_backward)),
    Bug("lstm-forget-gate-bias-gradient-missing", "lstm", "missing term", _numpy("lstm", recurrent.lstm_forward, lstm_forget_bias_gradient_missing)),
    Bug("gru-state-path-through-the-update-gate-missing", "gru", "missing term", _numpy("gru", recurrent.gru_forward, gru_update_gate_state_path_missing)),
    Bug("rnn-no-gradient-through-time", "rnn", "wrong only for sequences longer than one step", _numpy("rnn", recurrent.rnn_forward, rnn_truncated_bptt)),
    Bug("layer-norm-one-pass-variance", "layer_norm", "wrong only in float32 for a large mean", _numpy("layer_norm", layer_norm_one_pass_variance, normalization.layer_norm_backward)),
    Bug("exp-backward-of-the-input", "exp", "wrong saved value", _numpy("exp", tensor_math.exp_forward, exp_backward_of_x)),
    Bug("log-backward-squared", "log", "wrong power", _numpy("log", tensor_math.log_forward, log_backward_squared)),
    Bug("sqrt-backward-missing-half", "sqrt", "missing factor", _numpy("sqrt", tensor_math.sqrt_forward, sqrt_backward_missing_half)),
    Bug("rsqrt-backward-sign-lost", "rsqrt", "sign error", _numpy("rsqrt", tensor_math.rsqrt_forward, rsqrt_backward_sign_lost)),
    Bug("pow-backward-wrong-exponent", "pow", "off-by-one exponent", _numpy("pow", tensor_math.pow_forward, pow_backward_wrong_exponent)),
    Bug("maximum-gradient-to-both", "maximum", "the loser gets the gradient too", _numpy("maximum", tensor_math.maximum_forward, maximum_gradient_to_both)),
    Bug("minimum-branches-swapped", "minimum", "branches swapped", _numpy("minimum", tensor_math.minimum_forward, minimum_branches_swapped)),
    Bug("where-mask-inverted", "where", "mask inverted", _numpy("where", tensor_math.where_forward, where_mask_inverted)),
    Bug("amax-backward-expands-the-last-axis", "amax", "wrong only with keepdim=False over an inner dim", _numpy("amax", tensor_math.amax_forward, amax_backward_expands_the_last_axis)),
    Bug("amin-backward-to-the-first-element", "amin", "wrong winner", _numpy("amin", tensor_math.amin_forward, amin_backward_to_the_first_element)),
    Bug("cumprod-backward-by-division", "cumprod", "wrong only at zeros", _numpy("cumprod", tensor_math.cumprod_forward, cumprod_backward_by_division)),
    Bug("stack-backward-reversed", "stack", "tensors' gradients swapped", _numpy("stack", tensor_math.stack_forward, stack_backward_reversed)),
    Bug("logsigmoid-sigmoid-of-the-wrong-side", "logsigmoid", "sign error", _numpy("logsigmoid", activations.logsigmoid_forward, logsigmoid_wrong_side)),
]


# ---------------------------------------------------------------- beyond first-order reverse mode


@dataclass(frozen=True)
class CallBug:
    """A Function whose first-order backward is right, with a bug that shows only
    in another mode of differentiation; hunted by ``gradcheck.fuzz`` in that
    mode (``options``), whose failure must say ``says``."""

    id: str
    kind: str
    correct: object  # the Function classes
    buggy: object
    inputs: dict
    options: dict
    says: str


def _call_zoo():
    from user_functions import (CMul, CMulBug, ScatterInto, ScatterIntoInPlace, SinCos, SinCosBug, Square,
                                SquareMixingRule, SwishGate, SwishGateTwice, SwishJ, SwishJBug)

    return [
        CallBug("swish-gate-saved-outside-the-graph", "a double backward broken by a value saved outside the graph",
                SwishGateTwice, SwishGate, {"x": ("N", "D"), "w": ("D",)}, {"order": 2}, "second order"),
        CallBug("swish-wrong-jvp", "a wrong jvp beside a right backward", SwishJ, SwishJBug, {"x": ("N", "D")},
                {"modes": ("fwd",)}, "jvp along x"),
        CallBug("scatter-in-place-under-vmap", "a backward writing a batched gradient into a buffer of its own",
                ScatterInto, ScatterIntoInPlace, {"x": ("N", 5)}, {"modes": ("rev", "batched")}, "under vmap"),
        CallBug("sin-cos-undefined-gradient", "a backward crashing on an undefined output gradient", SinCos,
                SinCosBug, {"x": ("N", "D")}, {}, "gradient undefined"),
        CallBug("complex-mul-missing-conjugate", "a complex VJP missing its conjugate", CMul, CMulBug,
                {"z": ("N", "D"), "w": ("D",)}, {"dtype": "complex128"}, "tensor 'z."),
        CallBug("square-vmap-rule-mixing-samples", "a vmap rule that mixes samples", Square, SquareMixingRule,
                {"x": ("N", "D")}, {"modes": ("rev", "per-sample"), "sizes": {"N": (2, 4)}}, "tensor 'per-sample"),
    ]


CALL_ZOO = _call_zoo()

