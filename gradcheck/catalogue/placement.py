"""Placement: how random graphs apply each op to the tensor at hand.

A placer ``place(ctx, x)`` applies its op to tensor ``x`` of the graph under
construction (drawing the op's hyperparameters and creating the parameters and
constants it needs through ``ctx``) and returns the new tensor's name, or raises
``NotHere`` when the op does not fit; the precondition beside it says up front
which shapes it can take.  A head ``place(ctx, x)`` ends the graph with its loss,
named "loss".  Each catalogue record names its placer in ``OpDef.placement``;
``place_declared`` and ``head_declared`` place the ops users declare.

``ctx`` (``gradcheck.strategies``) offers: ``draw`` (Hypothesis's), ``dim``,
``leaf``, ``param``, ``apply(op, *inputs, **hyper)``, ``settings_for``,
``shapes`` (name -> shape), ``history`` (earlier activations) and ``b`` (the
GraphBuilder).
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from .opdef import ShapeError, get_op, is_builtin

__all__ = ["NotHere", "place_activation", "place_linear", "place_matmul", "place_conv", "place_pool",
           "place_global_avg_pool", "place_flatten", "place_reshape", "place_softmax", "place_layer_norm",
           "place_batch_norm", "place_dropout", "place_binary", "place_divide", "place_reduce", "place_cumsum",
           "place_transpose", "place_permute", "place_glu", "place_prelu", "place_rms_norm", "place_group_norm",
           "place_instance_norm", "place_normalize", "place_pair_reduce", "place_pixel_shuffle",
           "place_pixel_unshuffle", "place_pad", "place_adaptive_pool", "place_concat", "place_attention", "place_embedding",
           "place_declared", "head_probe", "head_targets", "head_with", "head_classes", "head_kl_div", "head_declared",
           "classes", "rank_at_least", "rank_is", "spatial", "reshapable", "per_channel", "place_conv_transpose",
           "place_unfold", "place_fold", "place_interpolate", "place_channel_shuffle", "head_ctc", "place_max_unpool",
           "place_bilinear", "place_affine_grid", "place_grid_sample", "place_embedding_bag", "place_pdist",
           "place_lp_pool",
           "place_volume", "place_local_response_norm", "head_bce", "head_cosine_embedding", "head_triplet",
           "head_multi_margin", "head_multilabel_margin", "place_recurrent", "place_positive", "place_where",
           "place_cumprod", "place_stack", "place_bounded", "place_norm", "place_batch_norm_eval",
           "place_index_select", "place_gather", "place_conv3d"]


class NotHere(Exception):
    """The op does not apply to the current tensor."""


# ---------------------------------------------------------------- preconditions


def rank_is(n):
    return lambda shape: len(shape) == n


def rank_at_least(n):
    return lambda shape: len(shape) >= n


def spatial(shape) -> bool:
    """(N, C, H, W) with room for a 2 x 2 window."""
    return len(shape) == 4 and min(shape[2:]) >= 2


def reshapable(shape) -> bool:
    return len(shape) >= 3 or (len(shape) == 2 and any(shape[1] % f == 0 for f in range(2, shape[1])))


def per_channel(shape) -> bool:
    """At least two values per channel (axis 1): batch statistics that are not constant."""
    return len(shape) >= 2 and math.prod(shape) // shape[1] >= 2


# ---------------------------------------------------------------- body ops


def place_activation(op, **hyper_choices):
    def place(ctx, x):
        hyper = {k: ctx.draw(st.sampled_from(v)) for k, v in hyper_choices.items()}
        return ctx.apply(op, x, **hyper)

    return place


def place_linear(ctx, x):
    shape = ctx.shapes[x]
    out = ctx.dim()
    w = ctx.param((out, shape[-1]))
    if ctx.draw(st.booleans()):
        return ctx.apply("linear", x, w)
    return ctx.apply("linear", x, w, ctx.param((out,)))


def place_matmul(ctx, x):
    """x @ W; in one case of four x @ v with a vector v (a score per row), and
    on a 3-d x in one of eight v @ x (a weighted sum over the rows)."""
    shape = ctx.shapes[x]
    if len(shape) < 2:
        raise NotHere
    kind = ctx.draw(st.integers(0, 7))
    if kind == 0 and len(shape) >= 3:
        return ctx.apply("matmul", ctx.param((shape[-2],)), x)
    if kind <= 2:
        return ctx.apply("matmul", x, ctx.param((shape[-1],)))
    return ctx.apply("matmul", x, ctx.param((shape[-1], ctx.dim())))


def _fit_conv(ctx, sizes, in_ch, nd):
    """Draw conv geometry that fits the spatial sizes; fall back to the simplest."""
    k = ctx.draw(st.integers(1, 3))
    stride = ctx.draw(st.integers(1, 2))
    padding = ctx.draw(st.integers(0, 1))
    dilation = ctx.draw(st.integers(1, 2))
    divisors = [g for g in range(1, in_ch + 1) if in_ch % g == 0]
    groups = ctx.draw(st.sampled_from(divisors))
    if any(s + 2 * padding < dilation * (k - 1) + 1 for s in sizes):
        k, dilation = 1, 1
    out_ch = groups * ctx.draw(st.integers(1, max(1, ctx.max_dim // groups)))
    hyper = {}
    for key, v, default in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1),
                            ("groups", groups, 1)):
        if v != default:
            hyper[key] = v
    hyper.update(_conv_padding(ctx, sizes, k, stride, dilation, padding))
    return (out_ch, in_ch // groups) + (k,) * nd, hyper


def _conv_padding(ctx, sizes, k, stride, dilation, padding):
    """One conv in four pads by name ("same", which keeps a stride-1 output's
    size and puts an odd tap of padding after, or "valid"); one padded conv in
    three pads by reflecting, replicating or wrapping the input instead of with
    zeros (nn.ConvNd's padding_mode), where the input is large enough."""
    hyper = {}
    if ctx.draw(st.integers(0, 3)) == 0:
        if stride == 1 and ctx.draw(st.booleans()):
            hyper["padding"] = "same"
        elif min(sizes) >= dilation * (k - 1) + 1:  # "valid": no padding, the kernel must fit
            hyper["padding"] = "valid"
    after = dilation * (k - 1) - dilation * (k - 1) // 2 if hyper.get("padding") == "same" else padding
    if after and hyper.get("padding") != "valid" and ctx.draw(st.integers(0, 2)) == 0:
        modes = ["replicate"] + (["circular"] if after <= min(sizes) else []) + (["reflect"] if after < min(sizes) else [])
        hyper["padding_mode"] = ctx.draw(st.sampled_from(modes))
    return hyper


def place_conv(nd):
    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != nd + 2:
            raise NotHere
        wshape, hyper = _fit_conv(ctx, shape[2:], shape[1], nd)
        w = ctx.param(wshape)
        if ctx.draw(st.booleans()):
            return ctx.apply(f"conv{nd}d", x, w, **hyper)
        return ctx.apply(f"conv{nd}d", x, w, ctx.param((wshape[0],)), **hyper)

    return place


def place_pool(op, nd=2):
    """A pooling window over the ``nd`` spatial axes of (N, C, *spatial)."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != nd + 2 or min(shape[2:]) < 2:
            raise NotHere
        k = ctx.draw(st.integers(2, min(3, *shape[2:])))
        hyper = {"kernel_size": k}
        stride = ctx.draw(st.integers(1, k))
        if stride != k:
            hyper["stride"] = stride
        padding = ctx.draw(st.integers(0, k // 2))
        if padding:
            hyper["padding"] = padding
            if op.startswith("avg") and ctx.draw(st.booleans()):
                hyper["count_include_pad"] = False  # the padding left out of each window's divisor
        if op == "avg_pool2d" and ctx.draw(st.integers(0, 3)) == 0:
            hyper["divisor_override"] = k * k + 1  # a fixed divisor, not the window's size
        if op == "max_pool2d" and ctx.draw(st.integers(0, 3)) == 0 and min(shape[2:]) + 2 * padding >= 2 * (k - 1) + 1:
            hyper["dilation"] = 2  # windows with holes
        if op in ("max_pool2d", "avg_pool2d") and _overhangs(shape[2:], k, stride, padding, hyper.get("dilation", 1)) \
                and ctx.draw(st.integers(0, 2)) == 0:
            hyper["ceil_mode"] = True  # a last window hanging past the end where sizes do not divide
        return ctx.apply(op, x, **hyper)

    return place


def _overhangs(sizes, k, stride, padding, dilation):
    """Whether ceil_mode adds a window along some axis (one hanging past the end):
    drawn only there, where it changes what the op computes."""
    from reference_impl.layers import pool_out

    return any(pool_out(n, k, stride, padding, dilation, True) > pool_out(n, k, stride, padding, dilation)
               for n in sizes)


def place_global_avg_pool(ctx, x):
    if len(ctx.shapes[x]) < 3:
        raise NotHere
    return ctx.apply("global_avg_pool", x)


def place_flatten(ctx, x):
    if len(ctx.shapes[x]) < 3:
        raise NotHere
    return ctx.apply("flatten", x)


def place_reshape(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) >= 3:
        return ctx.apply("reshape", x, shape=(shape[0], -1))
    last = shape[-1]
    factors = [f for f in range(2, last) if last % f == 0]
    if len(shape) != 2 or not factors:
        raise NotHere
    f = ctx.draw(st.sampled_from(factors))
    return ctx.apply("reshape", x, shape=(shape[0], f, last // f))


def place_softmax(op):
    def place(ctx, x):
        shape = ctx.shapes[x]
        nd = len(shape)
        dim = ctx.draw(st.sampled_from([-1] + list(range(1, nd - 1))))
        if shape[dim] < 2:  # a softmax over one value is the constant 1: degenerate
            raise NotHere
        return ctx.apply(op, x, **({} if dim == -1 else {"dim": dim}))

    return place


def place_layer_norm(ctx, x):
    shape = ctx.shapes[x]
    k = ctx.draw(st.integers(1, max(1, min(2, len(shape) - 1))))
    norm = shape[-k:]
    if math.prod(norm) < 3:  # one value normalises to a constant, two to +-1: see place_group_norm
        raise NotHere
    affine = ctx.draw(st.integers(0, 7))
    if affine == 0:  # no weight or bias: normalized_shape says where
        return ctx.apply("layer_norm", x, normalized_shape=tuple(norm))
    w = ctx.param(norm, init={"kind": "normal", "mean": 1.0, "std": 0.3})
    if affine == 1:  # a weight and no bias
        return ctx.apply("layer_norm", x, w)
    return ctx.apply("layer_norm", x, w, ctx.param(norm))


def place_batch_norm(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 2 or math.prod(shape) // shape[1] < 3:  # three values a channel: see place_group_norm
        raise NotHere
    w = ctx.param((shape[1],), init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("batch_norm", x, w, ctx.param((shape[1],)))


def place_batch_norm_eval(ctx, x):
    """Batch norm in eval mode: running statistics as constants (a variance kept
    away from 0, as a trained one is)."""
    shape = ctx.shapes[x]
    if len(shape) < 2:
        raise NotHere
    c = (shape[1],)
    mean = ctx.leaf("running_mean", c, "const", init={"kind": "normal", "std": 0.5})
    var = ctx.leaf("running_var", c, "const", init={"kind": "uniform", "low": 0.5, "high": 2.0})
    w = ctx.param(c, init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("batch_norm_eval", x, mean, var, w, ctx.param(c))


def place_dropout(ctx, x):
    p = ctx.draw(st.sampled_from([0.5, 0.2]))
    mask = ctx.leaf("mask", ctx.shapes[x], "const", init={"kind": "mask", "p": p})
    return ctx.apply("dropout", x, mask, p=p)


def _partner(ctx, x, fits):
    """An earlier activation fitting ``fits`` (a residual branch), or x itself."""
    earlier = [h for h in ctx.history if h != x and fits(ctx.shapes[h])]
    return ctx.draw(st.sampled_from([x] + earlier))


def place_binary(op):
    def place(ctx, x):
        shape = ctx.shapes[x]
        kind = ctx.draw(st.sampled_from(["branch", "param"]))
        if kind == "param":  # a broadcast parameter: a bias, a per-channel scale, a gate
            nd = len(shape)
            layouts = [shape[-1:], (1,) * nd] + ([(1, shape[1]) + (1,) * (nd - 2)] if nd >= 3 else [])
            pshape = ctx.draw(st.sampled_from(layouts))
            other = ctx.param(pshape, init={"kind": "normal", "mean": 1.0 if op == "mul" else 0.0, "std": 0.5})
        else:
            other = _partner(ctx, x, lambda s: s == shape)
            if other == x:  # a fresh side branch: a transform of x, then combine
                other = ctx.apply(ctx.draw(st.sampled_from(["tanh", "sigmoid"])), x)
        return ctx.apply(op, x, other)

    return place


def place_divide(ctx, x):
    """x over a broadcast parameter kept away from 0 (a learned temperature, a
    per-channel scale)."""
    shape = ctx.shapes[x]
    nd = len(shape)
    layouts = [shape[-1:], (1,) * nd] + ([(1, shape[1]) + (1,) * (nd - 2)] if nd >= 3 else [])
    other = ctx.param(ctx.draw(st.sampled_from(layouts)), init={"kind": "uniform", "low": 0.5, "high": 2.0})
    return ctx.apply("div", x, other)


def _inner_dim(ctx, shape, least=2):
    """A non-batch axis holding at least ``least`` values."""
    dims = [d for d in range(1, len(shape)) if shape[d] >= least]
    if not dims:
        raise NotHere
    return ctx.draw(st.sampled_from(dims))


def place_reduce(op, corrections=None):
    """A reduction over an inner axis, keepdim drawn (var: its correction too)."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        hyper = {}
        if corrections is not None:
            hyper["correction"] = ctx.draw(st.sampled_from(corrections))
        dim = _inner_dim(ctx, shape, 2 + hyper.get("correction", 0))
        hyper["dim"] = ctx.draw(st.sampled_from([dim, dim - len(shape)]))  # counted from either end
        if ctx.draw(st.booleans()):
            hyper["keepdim"] = True
        return ctx.apply(op, x, **hyper)

    return place


def place_norm(ctx, x):
    """A p-norm over an inner axis, p and keepdim drawn."""
    shape = ctx.shapes[x]
    dim = _inner_dim(ctx, shape, 2)
    hyper = {"dim": ctx.draw(st.sampled_from([dim, dim - len(shape)])), "p": ctx.draw(st.sampled_from([2.0, 3.0]))}
    if ctx.draw(st.booleans()):
        hyper["keepdim"] = True
    return ctx.apply("norm", x, **hyper)


def place_cumsum(ctx, x):
    return ctx.apply("cumsum", x, dim=_inner_dim(ctx, ctx.shapes[x]))


def place_transpose(ctx, x):
    nd = len(ctx.shapes[x])
    if nd < 3:
        raise NotHere
    d0 = ctx.draw(st.integers(1, nd - 2))
    d1 = ctx.draw(st.integers(d0 + 1, nd - 1))
    return ctx.apply("transpose", x, dim0=d0, dim1=d1)


def place_permute(ctx, x):
    """The inner axes rotated (a 3-cycle and more from 4 axes: not its own inverse)."""
    nd = len(ctx.shapes[x])
    if nd < 3:
        raise NotHere
    inner = list(range(1, nd))
    k = ctx.draw(st.integers(1, nd - 2))
    return ctx.apply("permute", x, dims=tuple([0] + inner[k:] + inner[:k]))


def place_glu(ctx, x):
    shape = ctx.shapes[x]
    dims = [d for d in range(1, len(shape)) if shape[d] % 2 == 0]
    if not dims:
        raise NotHere
    d = ctx.draw(st.sampled_from(dims))
    return ctx.apply("glu", x, **({} if d == len(shape) - 1 else {"dim": d}))


def place_prelu(ctx, x):
    shape = ctx.shapes[x]
    w = ctx.param(ctx.draw(st.sampled_from([(1,), (shape[1],)])), init={"kind": "normal", "mean": 0.25, "std": 0.1})
    return ctx.apply("prelu", x, w)


def place_rms_norm(ctx, x):
    shape = ctx.shapes[x]
    k = ctx.draw(st.integers(1, max(1, min(2, len(shape) - 1))))
    norm = shape[-k:]
    w = ctx.param(norm, init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("rms_norm", x, w)


def place_group_norm(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 2:
        raise NotHere
    c, per = shape[1], math.prod(shape[2:])
    # three values a group at least: two normalise to +-1 whatever they are, and the
    # gradient left (through eps alone) is a cancellation no precision can judge
    groups = [g for g in range(1, c + 1) if c % g == 0 and (c // g) * per >= 3]
    if not groups:
        raise NotHere
    g = ctx.draw(st.sampled_from(groups))
    w = ctx.param((c,), init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("group_norm", x, w, ctx.param((c,)), **({} if g == 1 else {"num_groups": g}))


def place_instance_norm(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 3 or math.prod(shape[2:]) < 3:  # three values an instance: see place_group_norm
        raise NotHere
    w = ctx.param((shape[1],), init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("instance_norm", x, w, ctx.param((shape[1],)))


def place_normalize(ctx, x):
    shape = ctx.shapes[x]
    dims = [d for d in range(1, len(shape)) if shape[d] >= 2]
    if not dims:
        raise NotHere
    d = ctx.draw(st.sampled_from(dims))
    return ctx.apply("normalize", x, **({} if d == 1 else {"dim": d}))


def place_pair_reduce(op):
    """x against an earlier activation of its shape (or a transform of x): a
    similarity or a distance, reducing one axis."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) < 2 or shape[-1] < 2:
            raise NotHere
        other = _partner(ctx, x, lambda s: s == shape)
        if other == x:
            other = ctx.apply(ctx.draw(st.sampled_from(["tanh", "sigmoid"])), x)
        hyper = {}
        if op == "cosine_similarity":
            d = ctx.draw(st.sampled_from([d for d in range(1, len(shape)) if shape[d] >= 2] or [len(shape) - 1]))
            hyper = {} if d == 1 else {"dim": d}
        elif ctx.draw(st.booleans()):
            hyper["keepdim"] = True
        return ctx.apply(op, x, other, **hyper)

    return place


def place_pixel_shuffle(ctx, x):
    """A sub-pixel upsampling: a 1 x 1 convolution to 4 C channels when x has too
    few, then the shuffle by 2."""
    shape = ctx.shapes[x]
    if len(shape) != 4:
        raise NotHere
    if shape[1] % 4:
        x = ctx.apply("conv2d", x, ctx.param((4 * shape[1], shape[1], 1, 1)))
    return ctx.apply("pixel_shuffle", x, upscale_factor=2)


def place_pixel_unshuffle(ctx, x):
    """A space-to-depth by a factor dividing both sides (a constant pad of one row
    or column first when an odd side leaves none)."""
    shape = ctx.shapes[x]
    if len(shape) != 4:
        raise NotHere
    factors = [r for r in (2, 3) if shape[2] % r == 0 and shape[3] % r == 0]
    if not factors:
        x = ctx.apply("pad", x, pad=(0, shape[3] % 2, 0, shape[2] % 2))
        factors = [2]
    return ctx.apply("pixel_unshuffle", x, downscale_factor=ctx.draw(st.sampled_from(factors)))


def place_pad(ctx, x):
    """torch's pad: constant pads any trailing axes; reflect, replicate and
    circular pad every axis after (N, C), each by less than its size."""
    shape = ctx.shapes[x]
    if len(shape) < 3:
        raise NotHere
    mode = ctx.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    axes = ctx.draw(st.integers(1, 2 if len(shape) >= 4 else 1)) if mode == "constant" else len(shape) - 2
    if axes > 2:
        raise NotHere
    pads = []
    for k in range(axes):
        size = shape[len(shape) - 1 - k]
        most = 2 if mode in ("constant", "replicate") else min(2, size - 1)
        if most < 1:
            raise NotHere
        pads += [ctx.draw(st.integers(0, most)), ctx.draw(st.integers(1, most))]
    hyper = {"pad": tuple(pads), "mode": mode}
    if mode == "constant" and ctx.draw(st.booleans()):
        hyper["value"] = 0.5
    return ctx.apply("pad", x, **hyper)


def place_adaptive_pool(op, nd):
    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != nd + 2 or min(shape[2:]) < 2:
            raise NotHere
        sizes = tuple(ctx.draw(st.integers(1, s)) for s in shape[2:])  # windows overlap unless sizes divide
        return ctx.apply(op, x, output_size=sizes[0] if nd == 1 else sizes)

    return place


def place_concat(ctx, x):
    shape = ctx.shapes[x]
    dim = ctx.draw(st.sampled_from([1, -1])) if len(shape) > 2 else 1
    d = dim % len(shape)
    other = _partner(ctx, x, lambda s: len(s) == len(shape) and all(
        a == b for i, (a, b) in enumerate(zip(s, shape)) if i != d))
    return ctx.apply("concat", x, other, **({} if dim == 1 else {"dim": dim}))


def place_attention(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 2:
        raise NotHere
    if ctx.draw(st.booleans()):  # q, k, v projections
        e = ctx.dim()
        q, k, v = (ctx.apply("linear", x, ctx.param((e, shape[-1]))) for _ in range(3))
    else:
        q = k = v = x
    hyper = {"scale": 0.5} if ctx.draw(st.integers(0, 3)) == 0 else {}
    if ctx.draw(st.integers(0, 2)) == 0:  # an additive mask (a relative-position bias), instead of causal
        mask = ctx.leaf("attn_mask", ctx.shapes[q][-2:-1] + ctx.shapes[k][-2:-1], "const")
        return ctx.apply("attention", q, k, v, mask, **hyper)
    if ctx.draw(st.booleans()):
        hyper["causal"] = True
    return ctx.apply("attention", q, k, v, **hyper)


def _declared_inputs(ctx, x, opdef):
    """x and fresh leaves for a declared op's other inputs, shaped by its
    ``arg_shapes(x_shape, hyper)`` (default: like x), with the hyperparameters
    drawn from its ``hyper_strategy(x_shape)``; None when they cannot be made."""
    shape = ctx.shapes[x]
    hyper = ctx.draw(opdef.hyper_strategy(shape)) if opdef.hyper_strategy else {}
    shapes = opdef.arg_shapes(shape, hyper) if opdef.arg_shapes else {a.name: shape for a in opdef.inputs[1:]}
    args = [x]
    for arg in opdef.inputs[1:]:
        if arg.name not in shapes:
            if arg.optional:
                continue
            return None
        init = opdef.init.get(arg.name)
        if arg.dtype == "int" and not init:
            return None
        args.append(ctx.leaf("p" if arg.role == "param" else arg.name[:6], shapes[arg.name], arg.role, arg.dtype,
                             init))
    return args, hyper


def place_declared(op):
    """The generic rule for ops a user declares with their own OpDef: x is the
    first tensor input, the others fresh leaves (``_declared_inputs``)."""

    def place(ctx, x):
        made = _declared_inputs(ctx, x, get_op(op))
        if made is None:
            raise NotHere
        args, hyper = made
        return ctx.apply(op, *args, **hyper)

    return place


def place_embedding(ctx, ids, vocab):
    """The sequence family's input: integer ids through an embedding table, a
    padding row (0, as tokenizers put it) drawn in one case of three."""
    hyper = {"padding_idx": 0} if ctx.draw(st.integers(0, 2)) == 0 else {}
    return ctx.apply("embedding", ids, ctx.param((vocab, ctx.dim())), **hyper)


# ---------------------------------------------------------------- loss heads


def _finish(ctx, loss, args, hyper):
    """The loss node, with settings the source under test takes, else a probe head.
    One catalogue loss in six is a body op instead: reduction "none", its
    per-element (or per-row) losses probed in a random direction (shrinking
    toward the reduced loss, one node fewer).  A loss a user declared keeps the
    settings its own strategy draws."""
    try:
        hyper = ctx.settings_for(loss, args, hyper)
    except NotHere:
        if loss == "weighted_sum":
            raise
        return head_probe(ctx, args[0])
    if is_builtin(loss) and "reduction" in get_op(loss).hyper and ctx.draw(st.integers(0, 5)) == 5:
        per = {**hyper, "reduction": "none"}
        try:
            taken = ctx.settings_for(loss, args, per)
        except NotHere:
            taken = None
        if taken == per:
            return head_probe(ctx, ctx.apply(loss, *args, **per))
    ctx.b.op(loss, *args, name="loss", **hyper)


def head_probe(ctx, x):
    """weighted_sum against a random constant: the VJP probed in a random direction."""
    _finish(ctx, "weighted_sum", (x, ctx.leaf("probe", ctx.shapes[x], "const")), {})


def head_targets(loss, target=None, betas=False):
    """A loss of predictions against a target leaf (like x, with init ``target``; or
    class ids when ``target`` is "classes"), its reduction (and smooth_l1's beta)
    drawn."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        if target == "classes":
            other = ctx.leaf("y", (shape[0],), "const", "int", {"kind": "randint", "high": shape[1]})
        else:
            other = ctx.leaf("target", shape, "input", init=target)
        hyper = {}
        if ctx.draw(st.booleans()):
            hyper["reduction"] = "sum"
        if betas and ctx.draw(st.booleans()):
            hyper["beta"] = 0.5
        _finish(ctx, loss, (x, other), hyper)

    return place


def head_with(loss, *others, draws=None, reductions=("mean", "sum")):
    """A loss of x against leaves made by ``others`` (each (prefix, role, init) or
    a callable(ctx, shape) -> name), its reduction and ``draws`` (hyperparameter
    choices) drawn."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        args = [x]
        for o in others:
            args.append(o(ctx, shape) if callable(o) else ctx.leaf(o[0], shape, o[1], init=o[2]))
        hyper = {}
        reduction = ctx.draw(st.sampled_from(reductions))
        if reduction != "mean":
            hyper["reduction"] = reduction
        for k, choices in (draws or {}).items():
            v = ctx.draw(st.sampled_from(choices))
            if v != choices[0]:
                hyper[k] = v
        _finish(ctx, loss, tuple(args), hyper)

    return place


def head_kl_div(ctx, x):
    """kl_div of x (log-probabilities) against a constant target: probabilities,
    or log-probabilities with log_target; reduction mean, sum or batchmean."""
    shape = ctx.shapes[x]
    hyper = {}
    if ctx.draw(st.booleans()):
        hyper["log_target"] = True
        target = ctx.leaf("t", shape, "const", init={"kind": "normal", "mean": -1.0, "std": 0.5})
    else:
        target = ctx.leaf("t", shape, "const", init={"kind": "uniform", "low": 0.05, "high": 1.0})
    reduction = ctx.draw(st.sampled_from(["mean", "sum", "batchmean"] if len(shape) else ["mean", "sum"]))
    if reduction != "mean":
        hyper["reduction"] = reduction
    _finish(ctx, "kl_div", (x, target), hyper)


def head_classes(loss, smoothing=False):
    """A loss of (N, C) logits against class ids, with reduction, ignore_index
    (a class some row keeps) and label smoothing drawn."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        hyper = {}
        if ctx.draw(st.booleans()):
            hyper["reduction"] = "sum"
        init = {"kind": "randint", "high": shape[1]}
        if ctx.draw(st.booleans()):
            # a class some row has (so the setting is exercised) and some row has not
            hyper["ignore_index"] = init["not_all"] = init["some"] = ctx.draw(st.integers(0, shape[1] - 1))
        if smoothing and ctx.draw(st.booleans()):
            hyper["label_smoothing"] = 0.1
        other = ctx.leaf("y", (shape[0],), "const", "int", init)
        args = (x, other)
        if loss in ("cross_entropy", "nll") and ctx.draw(st.integers(0, 2)) == 0:  # class weights, one case in three
            args += (ctx.leaf("class_weight", (shape[1],), "const", init={"kind": "uniform", "low": 0.5,
                                                                           "high": 2.0}),)
        _finish(ctx, loss, args, hyper)

    return place


def head_ctc(ctx, x):
    """ctc_loss over a sequence (N, L, D): log_softmax over D of its (L, N, D)
    transpose as log_probs (T = L steps, C = D classes); any other tensor is
    flattened and projected by a linear layer to T x C logits first.  Targets
    of up to T / 2 labels (never the blank: 0 or, one case in four, C - 1),
    input and target lengths drawn below the longest (each alignment possible)."""
    shape = ctx.shapes[x]
    if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
        if len(shape) > 2:
            x = ctx.apply("flatten", x)
        if len(ctx.shapes[x]) != 2:
            raise NotHere
        steps, classes = ctx.draw(st.integers(2, 4)), ctx.draw(st.integers(2, 4))
        x = ctx.apply("linear", x, ctx.param((steps * classes, ctx.shapes[x][1])))
        x = ctx.apply("reshape", x, shape=(ctx.shapes[x][0], steps, classes))
        shape = ctx.shapes[x]
    n, steps, classes = shape
    lp = ctx.apply("log_softmax", ctx.apply("transpose", x, dim0=0, dim1=1), dim=-1)
    hyper = {}
    last = ctx.draw(st.integers(0, 3)) == 0
    if last:
        hyper["blank"] = classes - 1
    width = ctx.draw(st.integers(1, steps // 2))
    if ctx.draw(st.booleans()):
        labels = tuple(ctx.draw(st.integers(0, width)) for _ in range(n))
        inputs = tuple(ctx.draw(st.integers(max(1, 2 * k - 1), steps)) for k in labels)
        hyper.update(target_lengths=labels, input_lengths=inputs)
    if ctx.draw(st.booleans()):
        hyper["reduction"] = "sum"
    init = {"kind": "randint", "high": classes - 1} if last else {"kind": "randint", "low": 1, "high": classes}
    _finish(ctx, "ctc", (lp, ctx.leaf("targets", (n, width), "const", "int", init)), hyper)


def head_class_probabilities(ctx, x):
    """cross_entropy against a target of class probabilities (a differentiable
    leaf, rows not normalised: torch does not ask it), reduction, label
    smoothing and class weights drawn."""
    shape = ctx.shapes[x]
    hyper = {}
    if ctx.draw(st.booleans()):
        hyper["reduction"] = "sum"
    if ctx.draw(st.booleans()):
        hyper["label_smoothing"] = 0.1
    args = (x, ctx.leaf("target", shape, "input", init={"kind": "uniform", "low": 0.05, "high": 1.0}))
    if ctx.draw(st.integers(0, 2)) == 0:
        args += (ctx.leaf("class_weight", (shape[1],), "const", init={"kind": "uniform", "low": 0.5, "high": 2.0}),)
    _finish(ctx, "cross_entropy_probs", args, hyper)


def classes(shape) -> bool:
    """(N, C) logits with at least two classes."""
    return len(shape) == 2 and shape[1] >= 2


def head_declared(loss):
    """A loss a user declared, as the head: x is its first input, the others fresh
    leaves in their declared roles; a probe head when it does not fit."""

    def place(ctx, x):
        opdef = get_op(loss)
        made = _declared_inputs(ctx, x, opdef)
        if made is None:
            return head_probe(ctx, x)
        args, hyper = made
        try:
            fits = opdef.shape(*(ctx.shapes[a] for a in args), **opdef.full_hyper(hyper)) == ()
        except ShapeError:
            fits = False
        if not fits:
            return head_probe(ctx, x)
        _finish(ctx, loss, args, hyper)

    return place


# ---------------------------------------------------------------- the wider catalogue


def _as_volume(ctx, x):
    """x as (N, C, D, H, W): an image (N, C, H, W) reshaped to (N, 1, C, H, W),
    its channels the depth; NotHere for other ranks."""
    shape = ctx.shapes[x]
    if len(shape) == 4:
        x = ctx.apply("reshape", x, shape=(shape[0], 1) + tuple(shape[1:]))
    if len(ctx.shapes[x]) != 5:
        raise NotHere
    return x


def _nd_input(ctx, x, nd):
    """x as (N, C, *spatial) with ``nd`` spatial axes (an image seen as a volume
    for nd = 3); NotHere for other ranks."""
    if nd == 3:
        x = _as_volume(ctx, x)
    if len(ctx.shapes[x]) != nd + 2:
        raise NotHere
    return x


def place_conv3d(ctx, x):
    """A convolution over volumes: (N, C, H, W) seen as (N, 1, C, H, W), channels
    the depth; stride, padding, dilation and groups drawn as for conv2d."""
    x = _as_volume(ctx, x)
    shape = ctx.shapes[x]
    wshape, hyper = _fit_conv(ctx, shape[2:], shape[1], 3)
    w = ctx.param(wshape)
    if ctx.draw(st.booleans()):
        return ctx.apply("conv3d", x, w, **hyper)
    return ctx.apply("conv3d", x, w, ctx.param((wshape[0],)), **hyper)


def place_conv_transpose(nd):
    """An upsampling convolution: stride, padding, output_padding (below the
    stride or dilation), dilation and groups drawn (over volumes: an image
    (N, C, H, W) seen as (N, 1, C, H, W))."""

    def place(ctx, x):
        x = _nd_input(ctx, x, nd)
        shape = ctx.shapes[x]
        in_ch = shape[1]
        k = ctx.draw(st.integers(1, 3))
        stride = ctx.draw(st.integers(1, 2))
        dilation = ctx.draw(st.integers(1, 2))
        padding = ctx.draw(st.integers(0, (dilation * (k - 1)) // 2))
        output_padding = ctx.draw(st.integers(0, max(stride, dilation) - 1))
        groups = ctx.draw(st.sampled_from([g for g in range(1, in_ch + 1) if in_ch % g == 0]))
        out_per_group = ctx.draw(st.integers(1, max(1, ctx.max_dim // groups)))
        hyper = {key: v for key, v, default in (("stride", stride, 1), ("padding", padding, 0),
                                                 ("output_padding", output_padding, 0), ("groups", groups, 1),
                                                 ("dilation", dilation, 1)) if v != default}
        w = ctx.param((in_ch, out_per_group) + (k,) * nd)
        op = f"conv_transpose{nd}d"
        if ctx.draw(st.booleans()):
            return ctx.apply(op, x, w, **hyper)
        return ctx.apply(op, x, w, ctx.param((out_per_group * groups,)), **hyper)

    return place


def place_unfold(ctx, x):
    """im2col: the (N, C kh kw, L) blocks of an image (then a linear over blocks
    is a convolution written by hand)."""
    shape = ctx.shapes[x]
    if len(shape) != 4:
        raise NotHere
    k = ctx.draw(st.integers(1, min(2, *shape[2:])))
    hyper = {"kernel_size": k}
    if ctx.draw(st.booleans()):
        hyper["stride"] = 2
    if ctx.draw(st.booleans()):
        hyper["padding"] = 1
    return ctx.apply("unfold", x, **hyper)


def place_fold(ctx, x):
    """col2im: (N, C, H, W) unfolded by a 2 x 2 window (stride 1, perhaps padded,
    or stride 2), then folded back; overlapping blocks add (unfold then fold is
    not the identity)."""
    shape = ctx.shapes[x]
    if len(shape) != 4 or min(shape[2:]) < 2:
        raise NotHere
    stride = ctx.draw(st.sampled_from([1, 2]))
    h, w = shape[2:]
    if stride == 2 and (h % 2 or w % 2):
        stride = 1
    hyper = {"stride": 2} if stride == 2 else {}
    if stride == 1 and ctx.draw(st.booleans()):
        hyper["padding"] = 1
    cols = ctx.apply("unfold", x, kernel_size=2, **hyper)
    return ctx.apply("fold", cols, output_size=(h, w), kernel_size=2, **hyper)


def place_interpolate(ctx, x):
    """Upsampling (or resizing) of (N, C, L) or (N, C, H, W): a mode for the rank,
    align_corners for the linear and cubic ones, a scale factor or a size."""
    shape = ctx.shapes[x]
    if len(shape) not in (3, 4):
        raise NotHere
    modes = ["nearest", "nearest-exact", "linear"] if len(shape) == 3 else ["nearest", "nearest-exact", "bilinear",
                                                                             "bicubic"]
    mode = ctx.draw(st.sampled_from(modes))
    hyper = {"mode": mode} if mode != "nearest" else {}
    if mode not in ("nearest", "nearest-exact") and ctx.draw(st.booleans()):
        hyper["align_corners"] = True
    elif mode not in ("nearest", "nearest-exact"):
        hyper["align_corners"] = False
    if ctx.draw(st.booleans()):
        hyper["scale_factor"] = ctx.draw(st.sampled_from([2.0, 1.5]))
    else:
        sizes = tuple(ctx.draw(st.integers(1, 2 * s)) for s in shape[2:])
        hyper["size"] = sizes[0] if len(sizes) == 1 else sizes
    return ctx.apply("interpolate", x, **hyper)


def place_channel_shuffle(op):
    """A ShuffleNet channel shuffle; with fewer than 6 channels (where every
    shuffle is the identity or its own inverse) a 1 x 1 convolution to 6 first."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) not in (3, 4):
            raise NotHere
        if shape[1] < 6:
            nd = len(shape) - 2
            x = ctx.apply(f"conv{nd}d", x, ctx.param((6, shape[1]) + (1,) * nd))
            shape = ctx.shapes[x]
        groups = ctx.draw(st.sampled_from([g for g in range(2, shape[1]) if shape[1] % g == 0] or [shape[1]]))
        return ctx.apply(op, x, groups=groups)

    return place


def place_bilinear(ctx, x):
    """x against an earlier activation with the same batch dims (or a transform of x)."""
    shape = ctx.shapes[x]
    other = _partner(ctx, x, lambda s: len(s) == len(shape) and s[:-1] == shape[:-1])
    if other == x:
        other = ctx.apply(ctx.draw(st.sampled_from(["tanh", "sigmoid"])), x)
    out = ctx.dim()
    w = ctx.param((out, shape[-1], ctx.shapes[other][-1]))
    if ctx.draw(st.booleans()):
        return ctx.apply("bilinear", x, other, w)
    return ctx.apply("bilinear", x, other, w, ctx.param((out,)))


def place_affine_grid(ctx, x):
    """A spatial transformer's grid from features (N, F): theta = a linear map of
    them to (N, 2, 3) (or (N, 3, 4) for volumes), then the grid of a drawn output
    size, align_corners drawn; the graph goes on from the grid (N, H, W, 2)."""
    shape = ctx.shapes[x]
    if len(shape) != 2:
        raise NotHere
    nd = ctx.draw(st.sampled_from([2, 3]))
    theta = ctx.apply("reshape", ctx.apply("linear", x, ctx.param((nd * (nd + 1), shape[1]))),
                      shape=(shape[0], nd, nd + 1))
    hyper = {"size": (shape[0], 1) + tuple(ctx.draw(st.integers(1, 3)) for _ in range(nd))}
    if ctx.draw(st.booleans()):
        hyper["align_corners"] = True
    return ctx.apply("affine_grid", theta, **hyper)


def place_grid_sample(ctx, x):
    """An image (N, C, H, W) read at a grid of points: an input grid (N, Ho, Wo, 2)
    of points in and a little beyond [-1, 1], or a spatial transformer's
    affine_grid of a theta parameter; mode, padding_mode and align_corners drawn."""
    shape = ctx.shapes[x]
    if len(shape) != 4:
        raise NotHere
    n, out = shape[0], (ctx.draw(st.integers(1, 3)), ctx.draw(st.integers(1, 3)))
    hyper = {}
    for key, choices in (("mode", ["bilinear", "nearest"]), ("padding_mode", ["zeros", "border"]),
                         ("align_corners", [False, True])):
        value = ctx.draw(st.sampled_from(choices))
        if value != choices[0]:
            hyper[key] = value
    if ctx.draw(st.booleans()):
        grid = ctx.leaf("grid", (n, *out, 2), "input", init={"kind": "uniform", "low": -1.2, "high": 1.2})
    else:
        theta = ctx.param((n, 2, 3))
        grid = ctx.apply("affine_grid", theta, size=(n, 1, *out), align_corners=hyper.get("align_corners", False))
    return ctx.apply("grid_sample", x, grid, **hyper)


def place_embedding_bag(ctx, x):
    """A bag of ids per sample pooled (sum, mean or max) from a table, added to x
    (N, D): a feature the model learns from ids.  Ids repeat within a bag; with
    1-d ids the bags are cut at drawn offsets (an empty bag possible)."""
    shape = ctx.shapes[x]
    if len(shape) != 2:
        raise NotHere
    n, d = shape
    vocab = ctx.draw(st.integers(2, 6))
    mode = ctx.draw(st.sampled_from(["mean", "sum", "max"]))
    hyper = {} if mode == "mean" else {"mode": mode}
    init = {"kind": "randint", "high": vocab}
    if ctx.draw(st.booleans()):
        ids = ctx.leaf("ids", (n, ctx.draw(st.integers(1, 4))), "const", "int", init)
    else:
        total = ctx.draw(st.integers(1, 3 * n))
        cuts = sorted(ctx.draw(st.lists(st.integers(0, total), min_size=n - 1, max_size=n - 1)))
        hyper["offsets"] = tuple([0] + cuts)
        ids = ctx.leaf("ids", (total,), "const", "int", init)
    args = [ids, ctx.param((vocab, d))]
    if mode == "sum" and ctx.draw(st.booleans()):
        args.append(ctx.leaf("w", ctx.shapes[ids], "input"))
    bag = ctx.apply("embedding_bag", *args, **hyper)
    return ctx.apply("add", x, bag)


def place_pdist(ctx, x):
    """The distances between the rows of a (N, D) activation."""
    shape = ctx.shapes[x]
    if len(shape) != 2 or shape[0] < 2:
        raise NotHere
    return ctx.apply("pdist", x)


def place_lp_pool(nd):
    def place(ctx, x):
        if nd == 3:
            if min(ctx.shapes[x][-3:], default=0) < 2:
                raise NotHere  # before the reshape to a volume
            x = _as_volume(ctx, x)
        shape = ctx.shapes[x]
        if len(shape) != nd + 2 or min(shape[2:]) < 2:
            raise NotHere
        k = ctx.draw(st.integers(2, min(3, *shape[2:])))
        hyper = {"kernel_size": k}
        if ctx.draw(st.booleans()):
            hyper["norm_type"] = 1.0
        stride = ctx.draw(st.integers(1, k))
        if stride != k:
            hyper["stride"] = stride
        return ctx.apply(f"lp_pool{nd}d", x, **hyper)

    return place


def place_max_unpool(nd):
    """A max pool undone: x's values written at distinct indices (as a max
    pool's are) into planes a kernel larger, stride, padding and a larger
    output_size drawn (volumes: (N, C, H, W) seen as (N, 1, C, H, W))."""

    def place(ctx, x):
        from reference_impl.spatial import unpool_size

        x = _nd_input(ctx, x, nd)
        shape = ctx.shapes[x]
        k = 2 if nd == 3 else ctx.draw(st.integers(2, 3))
        hyper = {"kernel_size": k}
        stride = ctx.draw(st.integers(1, k))
        if stride != k:
            hyper["stride"] = stride
        padding = ctx.draw(st.integers(0, k // 2))
        if padding:
            hyper["padding"] = padding
        plane = unpool_size(shape[2:], k, stride, padding)
        if stride > 1 and ctx.draw(st.integers(0, 3)) == 0:
            plane = tuple(p + 1 for p in plane)  # output_size past the default, as an odd-sized pool's input
            hyper["output_size"] = plane if nd > 1 else plane[0]
        if min(plane) < 1 or math.prod(plane) < math.prod(shape[2:]):
            raise NotHere
        ids = ctx.leaf("indices", shape, "const", "int", {"kind": "distinct", "high": math.prod(plane)})
        return ctx.apply(f"max_unpool{nd}d", x, ids, **hyper)

    return place


def place_volume(op):
    """A pool over volumes (avg_pool3d, max_pool3d, the adaptive ones): (N, C, H, W)
    seen as (N, 1, C, H, W), channels the depth."""

    def place(ctx, x):
        x = _as_volume(ctx, x)
        shape = ctx.shapes[x]
        if op.startswith("adaptive"):  # an output size per axis, windows overlapping unless sizes divide
            return ctx.apply(op, x, output_size=tuple(ctx.draw(st.integers(1, s)) for s in shape[2:]))
        k = tuple(ctx.draw(st.integers(1, min(2, s))) for s in shape[2:])
        hyper = {"kernel_size": k}
        if ctx.draw(st.booleans()):
            hyper["stride"] = 1
        if any(kk == 2 for kk in k) and ctx.draw(st.booleans()):
            hyper["padding"] = tuple(1 if kk == 2 else 0 for kk in k)  # at most half of each kernel side
            if op == "avg_pool3d" and ctx.draw(st.booleans()):
                hyper["count_include_pad"] = False
        return ctx.apply(op, x, **hyper)

    return place


def place_local_response_norm(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 3:
        raise NotHere
    size = ctx.draw(st.integers(1, max(1, min(5, shape[1]))))
    hyper = {"size": size}
    if ctx.draw(st.booleans()):  # a strong normalisation, so its gradient matters
        hyper.update(alpha=1.0, beta=0.75, k=2.0)
    return ctx.apply("local_response_norm", x, **hyper)


def head_bce(ctx, x):
    """binary_cross_entropy of probabilities sigmoid(tanh(x)) against targets in
    [0, 1].  The tanh keeps p within [0.27, 0.73]: for p within 1e-4 of 0 or 1
    the rounding of p is amplified 1 / (1 - p) times in log(1 - p), and float64
    differences can no longer judge the loss (that saturation is why
    bce_with_logits exists)."""
    p = ctx.apply("sigmoid", ctx.apply("tanh", x))
    t = ctx.leaf("t", ctx.shapes[p], "const", init={"kind": "uniform", "low": 0.0, "high": 1.0})
    _finish(ctx, "binary_cross_entropy", (p, t), {"reduction": "sum"} if ctx.draw(st.booleans()) else {})


def _rows(ctx, x):
    """x as (N, D): flattened when it has more dims."""
    shape = ctx.shapes[x]
    if len(shape) == 1:
        raise NotHere
    return x if len(shape) == 2 else ctx.apply("flatten", x)


def head_cosine_embedding(ctx, x):
    x = _rows(ctx, x)
    shape = ctx.shapes[x]
    if shape[1] < 2:  # the cosine of one feature is its sign: a step, its gradient nothing but rounding
        raise NotHere
    other = ctx.leaf("x2", shape, "input")
    y = ctx.leaf("y", (shape[0],), "const", init={"kind": "sign"})
    hyper = {}
    if ctx.draw(st.booleans()):
        hyper["margin"] = 0.3
    if ctx.draw(st.booleans()):
        hyper["reduction"] = "sum"
    _finish(ctx, "cosine_embedding", (x, other, y), hyper)


def head_triplet(loss):
    def place(ctx, x):
        x = _rows(ctx, x)
        shape = ctx.shapes[x]
        positive, negative = ctx.leaf("pos", shape, "input"), ctx.leaf("neg", shape, "input")
        hyper = {}
        if ctx.draw(st.booleans()):
            hyper["swap"] = True
        if ctx.draw(st.booleans()):
            hyper["margin"] = 2.0
        if ctx.draw(st.booleans()):
            hyper["reduction"] = "sum"
        _finish(ctx, loss, (x, positive, negative), hyper)

    return place


def head_multi_margin(ctx, x):
    shape = ctx.shapes[x]
    hyper = {}
    if ctx.draw(st.booleans()):
        hyper["p"] = 2
    if ctx.draw(st.booleans()):
        hyper["margin"] = 0.5
    if ctx.draw(st.booleans()):
        hyper["reduction"] = "sum"
    y = ctx.leaf("y", (shape[0],), "const", "int", {"kind": "randint", "high": shape[1]})
    _finish(ctx, "multi_margin", (x, y), hyper)


def head_multilabel_margin(ctx, x):
    shape = ctx.shapes[x]
    y = ctx.leaf("y", shape, "const", "int", {"kind": "label_lists"})
    _finish(ctx, "multilabel_margin", (x, y), {"reduction": "sum"} if ctx.draw(st.booleans()) else {})


def place_recurrent(op, gates, cells=1):
    """A recurrent layer over the sequence (N, T, D): hidden size drawn, initial
    state(s) an input of the graph, torch's weight layout."""

    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != 3:
            raise NotHere
        n, _, d = shape
        hidden = ctx.dim()
        # the initial state is not data: drawn at half scale, and no offset moves it (Note [Value regimes])
        states = [ctx.leaf("h" if k == 0 else "c", (n, hidden), "input", init={"kind": "normal", "std": 0.5})
                  for k in range(cells)]
        weights = [ctx.param((gates * hidden, d)), ctx.param((gates * hidden, hidden)),
                   ctx.param((gates * hidden,)), ctx.param((gates * hidden,))]
        hyper = {"nonlinearity": "relu"} if op == "rnn" and ctx.draw(st.booleans()) else {}
        return ctx.apply(op, x, *states, *weights, **hyper)

    return place


def place_positive(op):
    """An op defined for positive inputs (log, sqrt): softplus(x) first."""

    def place(ctx, x):
        return ctx.apply(op, ctx.apply("softplus", x))

    return place


def place_where(ctx, x):
    """x where a constant mask holds, another activation of its shape (or a
    transform of x) elsewhere."""
    shape = ctx.shapes[x]
    other = _partner(ctx, x, lambda s: s == shape)
    if other == x:
        other = ctx.apply(ctx.draw(st.sampled_from(["tanh", "sigmoid"])), x)
    mask = ctx.leaf("mask", shape, "const", init={"kind": "mask", "p": 0.5})
    return ctx.apply("where", x, mask, other)


def place_index_select(ctx, x):
    """Slices of x along an inner axis picked by constant ids, some repeated, in
    any order (an embedding-like lookup inside a layer)."""
    shape = ctx.shapes[x]
    dim = _inner_dim(ctx, shape, 1)
    n = ctx.draw(st.integers(1, shape[dim] + 1))
    index = ctx.leaf("index", (n,), "const", "int", {"kind": "randint", "high": shape[dim]})
    return ctx.apply("index_select", x, index, dim=ctx.draw(st.sampled_from([dim, dim - len(shape)])))


def place_gather(ctx, x):
    """torch.gather along the last axis, by constant ids of x's shape (a top-k
    pick, a label's score), repeats allowed."""
    shape = ctx.shapes[x]
    if len(shape) < 2 or shape[-1] < 2:
        raise NotHere
    m = ctx.draw(st.integers(1, shape[-1]))
    index = ctx.leaf("index", shape[:-1] + (m,), "const", "int", {"kind": "randint", "high": shape[-1]})
    return ctx.apply("gather", x, index, dim=-1)


def place_cumprod(ctx, x):
    if len(ctx.shapes[x]) < 2:
        raise NotHere
    return ctx.apply("cumprod", x, dim=_inner_dim(ctx, ctx.shapes[x]))


def place_stack(ctx, x):
    """x stacked with an earlier activation of its shape (or a transform of x) on a new axis."""
    shape = ctx.shapes[x]
    other = _partner(ctx, x, lambda s: s == shape)
    if other == x:
        other = ctx.apply(ctx.draw(st.sampled_from(["tanh", "sigmoid"])), x)
    dim = ctx.draw(st.integers(1, len(shape)))
    return ctx.apply("stack", x, other, dim=dim)


def place_bounded(op, **hyper_choices):
    """An op that grows without bound (exp, pow) on tanh(x): unbounded, exp of a
    scale-4 sum is e^40 and pow of an offset input 1e6, and every op after it then
    sees inf, which takes the case out of range instead of checking anything."""

    def place(ctx, x):
        hyper = {k: ctx.draw(st.sampled_from(v)) for k, v in hyper_choices.items()}
        return ctx.apply(op, ctx.apply("tanh", x), **{k: v for k, v in hyper.items() if v != hyper_choices[k][0]})

    return place


def place_slice(ctx, x):
    """A slice of an inner axis: a start (counted from either end), an end past
    it or none, and a step of 1 or 2."""
    shape = ctx.shapes[x]
    dim = _inner_dim(ctx, shape)
    n = shape[dim]
    start = ctx.draw(st.integers(0, n - 1))
    hyper = {"dim": ctx.draw(st.sampled_from([dim, dim - len(shape)]))}
    if start:
        hyper["start"] = ctx.draw(st.sampled_from([start, start - n]))
    end = ctx.draw(st.integers(start + 1, n + 1))  # n + 1: past the end, which Python clips
    if end != n:
        hyper["end"] = end
    if ctx.draw(st.integers(0, 2)) == 0:
        hyper["step"] = 2
    return ctx.apply("slice", x, **hyper)


_LETTERS = "abcdefgh"


def place_einsum(ctx, x):
    """An einsum of x: its last axis contracted with a weight (a projection),
    or summed; its elementwise product with a partner of its shape summed over
    the last axis (a row-wise dot); on 3 or more axes, its last two swapped, or the
    scores of its rows against a partner's (q k^T over the last axis)."""
    shape = ctx.shapes[x]
    nd = len(shape)
    if nd < 2:  # the batch axis stays
        raise NotHere
    lead = _LETTERS[:nd - 1]
    kinds = ["project", "dot", "sum"] + (["swap", "scores"] if nd >= 3 else [])
    kind = ctx.draw(st.sampled_from(kinds))
    if kind == "project":
        return ctx.apply("einsum", x, ctx.param((shape[-1], ctx.dim())), equation=f"{lead}y,yz->{lead}z")
    if kind == "sum":  # a letter only x has, dropped: its gradient repeats along it
        return ctx.apply("einsum", x, equation=f"{lead}y->{lead}")
    if kind == "swap":
        return ctx.apply("einsum", x, equation=f"{lead[:-1]}xy->{lead[:-1]}yx")
    other = _partner(ctx, x, lambda s: s == shape)
    if kind == "dot":
        return ctx.apply("einsum", x, other, equation=f"{lead}y,{lead}y->{lead}")
    batch = lead[:-1]
    return ctx.apply("einsum", x, other, equation=f"{batch}xy,{batch}wy->{batch}xw")
