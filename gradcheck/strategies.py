"""Hypothesis strategies for random architectures and the cases they run on.

    >>> from hypothesis import given
    >>> from gradcheck.strategies import cases, graphs
    >>> @given(cases(graphs(families=["mlp"], max_depth=2)))
    ... def test_it(case):
    ...     assert case.graph.shapes[case.graph.output] == ()
    >>> test_it()

``graphs()`` draws the family first (MLP, then CNN, then sequence model), then
the input, then a list of blocks, each an op applied to the current tensor (with
the parameters, constants and branches it needs), then a loss head.  Choices
are ordered simplest first and the number of blocks is drawn before the blocks,
so Hypothesis shrinks a failing graph toward fewer nodes, simpler ops and
smaller dimensions.  ``cases(graphs)`` then draws the seed, dtype and value
scale the graph is run on.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .check import Case
from .graph import DTYPES, Graph, GraphBuilder
from .ops import BUILTIN_OPS, CATALOGUE, ShapeError, get_op

__all__ = ["FAMILIES", "FAMILY_BLOCKS", "FAMILY_OPS", "LOSSES", "graphs", "cases", "single_op_graphs"]

FAMILIES = ("mlp", "cnn", "sequence")
ACTIVATIONS = ("tanh", "relu", "sigmoid", "leaky_relu", "elu", "gelu", "softplus", "silu")
LOSSES = ("weighted_sum", "mse", "cross_entropy", "bce_with_logits", "smooth_l1")

# Body ops per family in kinds of block, each simplest first (shrinking moves
# toward the front).  A block draws its kind, then its op: drawing among ~20 ops
# at once gives the first few most of the draws.
FAMILY_BLOCKS = {
    "mlp": {
        "activation": ACTIVATIONS,
        "layer": ("linear", "matmul"),
        "normalization": ("layer_norm", "batch_norm", "dropout", "softmax", "log_softmax"),
        "branch": ("add", "mul", "concat"),
        "reshape": ("reshape", "flatten"),
    },
    "cnn": {
        "activation": ACTIVATIONS,
        "layer": ("conv2d", "conv1d", "avg_pool2d", "max_pool2d", "linear"),
        "normalization": ("batch_norm", "dropout"),
        "branch": ("add", "mul", "concat"),
        "reshape": ("global_avg_pool", "flatten"),
    },
    "sequence": {
        "activation": ACTIVATIONS,
        "layer": ("linear", "attention", "matmul"),
        "normalization": ("layer_norm", "softmax", "log_softmax", "dropout"),
        "branch": ("add", "mul", "concat"),
        "reshape": ("flatten", "reshape"),
    },
}
BLOCK_KINDS = ("activation", "layer", "normalization", "branch", "reshape")
FAMILY_OPS = {f: tuple(op for kind in BLOCK_KINDS for op in blocks[kind]) + (("embedding",) if f == "sequence" else ())
              for f, blocks in FAMILY_BLOCKS.items()}
_BUILTIN = BUILTIN_OPS


class _NotHere(Exception):
    """The op does not apply to the current tensor's shape."""


class _Ctx:
    """A graph under construction, with the shape of every tensor so far."""

    def __init__(self, draw, max_dim, max_batch, accept=None):
        self.draw, self.max_dim, self.max_batch, self.accept = draw, max_dim, max_batch, accept
        self.b = GraphBuilder()
        self.shapes = {}
        self.history = []  # activations, in order, for residual branches
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def dim(self, lo=1, hi=None):
        return self.draw(st.integers(lo, max(lo, hi or self.max_dim)))

    def leaf(self, prefix, shape, role, dtype="float", init=None):
        name = self.b.leaf(self.name(prefix), shape, role, dtype, init)
        self.shapes[name] = tuple(shape)
        return name

    def param(self, shape, init=None):
        return self.leaf("p", shape, "param", init=init)

    def settings_for(self, op, inputs, hyper, name_prefix=None):
        """``hyper``, or the op's defaults when ``accept`` refuses ``hyper`` (a candidate
        declared those settings unsupported); _NotHere when it refuses both."""
        if self.accept is None:
            return hyper
        opdef = get_op(op)
        shapes = [self.shapes[i] for i in inputs]
        if self.accept(op, opdef.full_hyper(hyper), shapes):
            return hyper
        if hyper and self.accept(op, opdef.full_hyper({}), shapes):
            return {}
        raise _NotHere

    def apply(self, op, *inputs, **hyper):
        opdef = get_op(op)
        hyper = self.settings_for(op, inputs, hyper)
        shape = opdef.shape(*(self.shapes[i] for i in inputs), **opdef.full_hyper(hyper))
        name = self.b.op(op, *inputs, name=self.name(op[:4] + "_"), **hyper)
        self.shapes[name] = tuple(shape)
        if shape:
            self.history.append(name)
        return name


# ---------------------------------------------------------------- placement rules
#
# place_<op>(ctx, x) applies the op to tensor x (drawing its hyperparameters and
# creating its parameters) and returns the new tensor, or raises _NotHere.


def _activation(op, **hyper_choices):
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
    shape = ctx.shapes[x]
    if len(shape) < 2:
        raise _NotHere
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
    return (out_ch, in_ch // groups) + (k,) * nd, hyper


def _place_conv(nd):
    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != nd + 2:
            raise _NotHere
        wshape, hyper = _fit_conv(ctx, shape[2:], shape[1], nd)
        w = ctx.param(wshape)
        if ctx.draw(st.booleans()):
            return ctx.apply(f"conv{nd}d", x, w, **hyper)
        return ctx.apply(f"conv{nd}d", x, w, ctx.param((wshape[0],)), **hyper)

    return place


def _place_pool(op):
    def place(ctx, x):
        shape = ctx.shapes[x]
        if len(shape) != 4 or min(shape[2:]) < 2:
            raise _NotHere
        k = ctx.draw(st.integers(2, min(3, *shape[2:])))
        hyper = {"kernel_size": k}
        stride = ctx.draw(st.integers(1, k))
        if stride != k:
            hyper["stride"] = stride
        padding = ctx.draw(st.integers(0, k // 2))
        if padding:
            hyper["padding"] = padding
        return ctx.apply(op, x, **hyper)

    return place


def place_global_avg_pool(ctx, x):
    if len(ctx.shapes[x]) < 3:
        raise _NotHere
    return ctx.apply("global_avg_pool", x)


def place_flatten(ctx, x):
    if len(ctx.shapes[x]) < 3:
        raise _NotHere
    return ctx.apply("flatten", x)


def place_reshape(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) >= 3:
        return ctx.apply("reshape", x, shape=(shape[0], -1))
    last = shape[-1]
    factors = [f for f in range(2, last) if last % f == 0]
    if len(shape) != 2 or not factors:
        raise _NotHere
    f = ctx.draw(st.sampled_from(factors))
    return ctx.apply("reshape", x, shape=(shape[0], f, last // f))


def _place_softmax(op):
    def place(ctx, x):
        shape = ctx.shapes[x]
        nd = len(shape)
        dim = ctx.draw(st.sampled_from([-1] + list(range(1, nd - 1))))
        if shape[dim] < 2:  # a softmax over one value is the constant 1: degenerate
            raise _NotHere
        return ctx.apply(op, x, **({} if dim == -1 else {"dim": dim}))

    return place


def place_layer_norm(ctx, x):
    shape = ctx.shapes[x]
    k = ctx.draw(st.integers(1, max(1, min(2, len(shape) - 1))))
    norm = shape[-k:]
    if math.prod(norm) < 2:  # normalising one value gives a constant: degenerate
        raise _NotHere
    w = ctx.param(norm, init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("layer_norm", x, w, ctx.param(norm))


def place_batch_norm(ctx, x):
    shape = ctx.shapes[x]
    if len(shape) < 2 or math.prod(shape) // shape[1] < 2:
        raise _NotHere
    w = ctx.param((shape[1],), init={"kind": "normal", "mean": 1.0, "std": 0.3})
    return ctx.apply("batch_norm", x, w, ctx.param((shape[1],)))


def place_dropout(ctx, x):
    p = ctx.draw(st.sampled_from([0.5, 0.2]))
    mask = ctx.leaf("mask", ctx.shapes[x], "const", init={"kind": "mask", "p": p})
    return ctx.apply("dropout", x, mask, p=p)


def _partner(ctx, x, fits):
    """An earlier activation fitting ``fits`` (a residual branch), or x itself."""
    earlier = [h for h in ctx.history if h != x and fits(ctx.shapes[h])]
    return ctx.draw(st.sampled_from([x] + earlier))


def _place_binary(op):
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
        raise _NotHere
    if ctx.draw(st.booleans()):  # q, k, v projections
        e = ctx.dim()
        q, k, v = (ctx.apply("linear", x, ctx.param((e, shape[-1]))) for _ in range(3))
    else:
        q = k = v = x
    causal = ctx.draw(st.booleans())
    return ctx.apply("attention", q, k, v, **({"causal": True} if causal else {}))


def _place_declared(op):
    """The generic rule for ops a user declares with their own OpDef: x is the
    first tensor input; hyperparameters come from ``hyper_strategy(x_shape)``; the
    other inputs are fresh leaves shaped by ``arg_shapes(x_shape, hyper)``."""

    def place(ctx, x):
        opdef = get_op(op)
        shape = ctx.shapes[x]
        hyper = ctx.draw(opdef.hyper_strategy(shape)) if opdef.hyper_strategy else {}
        shapes = opdef.arg_shapes(shape, hyper) if opdef.arg_shapes else {a.name: shape for a in opdef.inputs[1:]}
        args = [x]
        for arg in opdef.inputs[1:]:
            if arg.name not in shapes:
                if arg.optional:
                    continue
                raise _NotHere
            init = opdef.init.get(arg.name)
            if arg.dtype == "int" and not init:
                raise _NotHere
            args.append(ctx.leaf(arg.name[:1] if arg.role != "param" else "p", shapes[arg.name], arg.role,
                                 arg.dtype, init))
        return ctx.apply(op, *args, **hyper)

    return place


def placer(op):
    """The placement rule of ``op``: a built-in one, or the generic rule for ops
    declared outside the built-in catalogue."""
    if op in PLACERS:
        return PLACERS[op]
    if op in CATALOGUE and op not in _BUILTIN:
        return _place_declared(op)
    raise KeyError(op)


def _declared_ops(family):
    return [name for name, od in CATALOGUE.items()
            if name not in _BUILTIN and not od.is_loss and family in (od.families or FAMILIES)]


def _declared_losses(family=None):
    return [name for name, od in CATALOGUE.items()
            if name not in _BUILTIN and od.is_loss and (family is None or family in (od.families or FAMILIES))]


PLACERS = {
    "tanh": _activation("tanh"), "relu": _activation("relu"), "sigmoid": _activation("sigmoid"),
    "leaky_relu": _activation("leaky_relu", negative_slope=[0.01, 0.2]),
    "elu": _activation("elu", alpha=[1.0, 0.5]),
    "gelu": _activation("gelu", approximate=["none", "tanh"]),
    "softplus": _activation("softplus", beta=[1.0, 2.0]),
    "silu": _activation("silu"),
    "linear": place_linear, "matmul": place_matmul,
    "conv1d": _place_conv(1), "conv2d": _place_conv(2),
    "max_pool2d": _place_pool("max_pool2d"), "avg_pool2d": _place_pool("avg_pool2d"),
    "global_avg_pool": place_global_avg_pool, "flatten": place_flatten, "reshape": place_reshape,
    "softmax": _place_softmax("softmax"), "log_softmax": _place_softmax("log_softmax"),
    "layer_norm": place_layer_norm, "batch_norm": place_batch_norm, "dropout": place_dropout,
    "add": _place_binary("add"), "mul": _place_binary("mul"), "concat": place_concat,
    "attention": place_attention,
}


# ---------------------------------------------------------------- inputs and heads


def _input(ctx, family, ops, force_embedding=False):
    n = ctx.dim(1, ctx.max_batch)
    if family == "mlp":
        return ctx.leaf("x", (n, ctx.dim()), "input")
    if family == "cnn":
        use_1d = "conv1d" in ops and ("conv2d" not in ops or ctx.draw(st.booleans()))
        c = ctx.dim(1, min(3, ctx.max_dim))
        if use_1d:
            return ctx.leaf("x", (n, c, ctx.dim(2, ctx.max_dim + 2)), "input")
        return ctx.leaf("x", (n, c, ctx.dim(2, ctx.max_dim), ctx.dim(2, ctx.max_dim)), "input")
    t = ctx.dim(1, min(4, ctx.max_dim))
    if force_embedding or ("embedding" in ops and ctx.draw(st.booleans())):
        vocab = ctx.dim(2, ctx.max_dim + 2)
        ids = ctx.leaf("ids", (n, t), "const", "int", {"kind": "randint", "high": vocab})
        try:
            return ctx.apply("embedding", ids, ctx.param((vocab, ctx.dim())))
        except _NotHere:
            pass  # refused by the source under test: a plain sequence input instead
    return ctx.leaf("x", (n, t, ctx.dim()), "input")


def _head(ctx, x, losses):
    shape = ctx.shapes[x]
    usable = [l for l in losses if l != "cross_entropy" or (len(shape) == 2 and shape[1] >= 2)] or ["weighted_sum"]
    loss = ctx.draw(st.sampled_from(usable))
    if loss not in LOSSES:
        try:
            return _declared_head(ctx, x, loss)
        except (_NotHere, ShapeError):
            loss = "weighted_sum"
    if loss == "weighted_sum":
        other = ctx.leaf("probe", shape, "const")
    elif loss == "cross_entropy":
        other = ctx.leaf("y", (shape[0],), "const", "int", {"kind": "randint", "high": shape[1]})
    elif loss == "bce_with_logits":
        other = ctx.leaf("target", shape, "input", init={"kind": "uniform", "low": 0.0, "high": 1.0})
    else:
        other = ctx.leaf("target", shape, "input")
    hyper = {}
    if loss != "weighted_sum" and ctx.draw(st.booleans()):
        hyper["reduction"] = "sum"
    if loss == "smooth_l1" and ctx.draw(st.booleans()):
        hyper["beta"] = 0.5
    try:
        hyper = ctx.settings_for(loss, (x, other), hyper)
    except _NotHere:
        if loss == "weighted_sum":
            raise
        return _head(ctx, x, ["weighted_sum"])
    ctx.b.op(loss, x, other, name="loss", **hyper)


def _declared_head(ctx, x, loss):
    """A loss a user declared, as the head: x is its first input, the others fresh
    leaves shaped by its ``arg_shapes`` (default: like x) in their declared roles."""
    opdef = get_op(loss)
    shape = ctx.shapes[x]
    hyper = ctx.draw(opdef.hyper_strategy(shape)) if opdef.hyper_strategy else {}
    shapes = opdef.arg_shapes(shape, hyper) if opdef.arg_shapes else {a.name: shape for a in opdef.inputs[1:]}
    args = [x]
    for arg in opdef.inputs[1:]:
        if arg.name not in shapes:
            if arg.optional:
                continue
            raise _NotHere
        init = opdef.init.get(arg.name)
        if arg.dtype == "int" and not init:
            raise _NotHere
        args.append(ctx.leaf(arg.name[:6], shapes[arg.name], arg.role, arg.dtype, init))
    if opdef.shape(*(ctx.shapes[a] for a in args), **opdef.full_hyper(hyper)) != ():
        raise _NotHere
    hyper = ctx.settings_for(loss, args, hyper)
    ctx.b.op(loss, *args, name="loss", **hyper)


# ---------------------------------------------------------------- public strategies


def _check_positive_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if value < lo:
        raise InvalidArgument(f"{name}={value!r} must be at least {lo}")


def graphs(families=FAMILIES, ops=None, *, include=None, min_depth=0, max_depth=4, max_dim=5, max_batch=3,
           losses=None, max_size=600, accept=None) -> st.SearchStrategy:
    """Valid random graphs.

    families: any of ``mlp`` (on (N, D)), ``cnn`` (on (N, C, H, W) or (N, C, L)),
    ``sequence`` (on (N, T, D), or integer ids through an embedding).
    ops: restrict the body to these ops (default: every op of the family).
    include: an op every drawn graph contains, at a drawn position in an otherwise
    random graph (a loss op becomes the head; embedding, the input).  Rare ops
    get as many draws as common ones this way.
    min_depth, max_depth: the number of blocks; max_dim: the largest feature,
    channel or spatial size; max_batch: the largest batch; losses: the heads to
    choose from (default: the built-in ones and any a user declared); max_size: the
    most differentiable scalars in a graph (the cost of a full finite-difference
    check); accept: ``accept(op, hyper, input_shapes) -> bool``, the settings a
    source under test takes (a candidate's declared ``supports``): a refused
    setting falls back to the op's defaults, and is left out if they are refused
    too.
    """
    families = tuple(families)
    for f in families:
        if f not in FAMILIES:
            raise InvalidArgument(f"families contains {f!r}; choose from {FAMILIES}")
    if not families:
        raise InvalidArgument("families is empty")
    _check_positive_int("min_depth", min_depth, 0)
    _check_positive_int("max_depth", max_depth, 0)
    if min_depth > max_depth:
        raise InvalidArgument(f"min_depth={min_depth} is larger than max_depth={max_depth}")
    _check_positive_int("max_dim", max_dim, 2)
    _check_positive_int("max_batch", max_batch, 1)
    _check_positive_int("max_size", max_size, 1)
    known_losses = LOSSES + tuple(_declared_losses())
    losses = known_losses if losses is None else tuple(losses)
    bad = [l for l in losses if l not in known_losses]
    if bad or not losses:
        raise InvalidArgument(f"losses={list(losses)!r}: choose one or more of {known_losses}")
    if accept is not None and not callable(accept):
        raise InvalidArgument(f"accept={accept!r} must be a callable (op, hyper, shapes) -> bool")
    if ops is not None:
        ops = tuple(ops)
        unknown = [o for o in ops if o not in CATALOGUE]
        if unknown:
            raise InvalidArgument(f"ops contains unknown op {unknown[0]!r}; the catalogue has {sorted(CATALOGUE)}")
        placeable = [o for o in ops if o in PLACERS or o == "embedding" or o in known_losses or o not in _BUILTIN]
        if not placeable:
            raise InvalidArgument(f"ops={list(ops)!r}: none of them can be placed in a graph body")
    usable = [f for f in families
              if ops is None or set(ops) & (set(FAMILY_OPS[f]) | set(LOSSES) | set(_declared_ops(f))
                                            | set(_declared_losses(f)))]
    if not usable:
        raise InvalidArgument(f"no family among {families} uses any of ops={list(ops)!r}")
    if include is not None:
        if include in known_losses:
            if include not in losses:
                raise InvalidArgument(f"include={include!r} is a loss not among losses={list(losses)!r}")
            if include == "cross_entropy":
                usable = [f for f in usable if f == "mlp"] or usable
            elif include not in LOSSES:
                usable = [f for f in usable if f in (CATALOGUE[include].families or FAMILIES)]
                if not usable:
                    raise InvalidArgument(f"include={include!r} declares families {CATALOGUE[include].families}, "
                                          f"none among {families}")
        elif include in _BUILTIN or include not in CATALOGUE:
            if include not in PLACERS and include != "embedding":
                raise InvalidArgument(f"include={include!r} cannot be placed in a graph; "
                                      f"placeable: {sorted(set(PLACERS) | {'embedding'} | set(LOSSES))}")
            usable = [f for f in usable if include in FAMILY_OPS[f]]
            if not usable:
                raise InvalidArgument(f"include={include!r} belongs to no family among {families}")
            if ops is not None and include not in ops:
                raise InvalidArgument(f"include={include!r} is not among ops={list(ops)!r}")
            min_depth = max(min_depth, 0 if include == "embedding" else 1)
            max_depth = max(max_depth, min_depth)
        else:  # an op a user declared
            usable = [f for f in usable if f in (CATALOGUE[include].families or FAMILIES)]
            if not usable:
                raise InvalidArgument(f"include={include!r} declares families {CATALOGUE[include].families}, "
                                      f"none among {families}")
            min_depth, max_depth = max(min_depth, 1), max(max_depth, 1)
    return _graphs(tuple(usable), ops, include, min_depth, max_depth, max_dim, max_batch, losses, max_size, accept)


@st.composite
def _graphs(draw, families, ops, include, min_depth, max_depth, max_dim, max_batch, losses, max_size, accept):
    family = draw(st.sampled_from(families))
    blocks = {kind: [o for o in FAMILY_BLOCKS[family][kind] if ops is None or o in ops] for kind in BLOCK_KINDS}
    blocks["layer"] += [o for o in _declared_ops(family) if ops is None or o in ops]
    ctx = _Ctx(draw, max_dim, max_batch, accept)
    x = _input(ctx, family, FAMILY_OPS[family] if ops is None else ops, force_embedding=include == "embedding")
    depth = draw(st.integers(min_depth, max_depth))
    pending = include if include in PLACERS or (include in CATALOGUE and include not in _BUILTIN
                                                 and not CATALOGUE[include].is_loss) else None
    at = draw(st.integers(0, depth - 1)) if pending and depth else 0
    for block in range(depth):
        shape = ctx.shapes[x]
        if pending and block >= at and _may_apply(pending, shape):
            op, pending = pending, None
        else:
            choices = {k: [o for o in v if _may_apply(o, shape) and o != pending] for k, v in blocks.items()}
            kinds = [k for k in BLOCK_KINDS if choices[k]]
            if not kinds:
                break
            op = draw(st.sampled_from(choices[draw(st.sampled_from(kinds))]))
        try:
            x = placer(op)(ctx, x)
        except (_NotHere, ShapeError):
            if op == include:
                pending = include
            continue
    if pending and _may_apply(pending, ctx.shapes[x]):
        try:
            x = placer(pending)(ctx, x)
            pending = None
        except (_NotHere, ShapeError):
            pass
    if include in losses:
        head_losses = (include,)
    else:
        head_losses = tuple(l for l in losses if (ops is None or l in ops or l == "weighted_sum")
                            and (l in LOSSES or family in (CATALOGUE[l].families or FAMILIES))) or ("weighted_sum",)
    try:
        _head(ctx, x, head_losses)
    except _NotHere:
        from hypothesis import reject

        reject()
    graph = ctx.b.build("loss")
    if include is not None and include not in graph.ops:
        from hypothesis import reject

        reject()
    if graph.size > max_size:
        # Too costly to check element by element: reject (rare with the default sizes).
        from hypothesis import reject

        reject()
    return graph


def _may_apply(op, shape):
    nd = len(shape)
    need = {"conv2d": nd == 4, "max_pool2d": nd == 4 and min(shape[2:]) >= 2,
            "avg_pool2d": nd == 4 and min(shape[2:]) >= 2, "conv1d": nd == 3,
            "global_avg_pool": nd >= 3, "flatten": nd >= 3, "matmul": nd >= 2, "attention": nd >= 2,
            "batch_norm": nd >= 2 and math.prod(shape) // shape[1] >= 2,
            "reshape": nd >= 3 or (nd == 2 and any(shape[1] % f == 0 for f in range(2, shape[1])))}
    return need.get(op, True)


def single_op_graphs(op: str, **kwargs) -> st.SearchStrategy:
    """Graphs of one ``op`` placed on a random input, with a random loss head."""
    if op not in CATALOGUE:
        raise InvalidArgument(f"unknown op {op!r}; the catalogue has {sorted(CATALOGUE)}")
    if op not in _BUILTIN:
        if CATALOGUE[op].is_loss:
            return graphs(ops=(op,), include=op, min_depth=0, max_depth=0, **kwargs)
        return graphs(ops=(op,), include=op, min_depth=1, max_depth=1, **kwargs)
    if op in LOSSES:
        families = ("mlp",) if op == "cross_entropy" else FAMILIES  # cross_entropy takes (N, C)
        return graphs(families, ops=(op,), include=op, min_depth=0, max_depth=0, losses=(op,), **kwargs)
    families = [f for f in FAMILIES if op in FAMILY_OPS[f]]
    return graphs(families, ops=(op,), include=op, min_depth=0 if op == "embedding" else 1,
                  max_depth=0 if op == "embedding" else 1, **kwargs)


def cases(graph_strategy=None, dtypes=("float64",), scales=(1.0, 0.5, 2.0), quantize=(0.0, 0.5)) -> st.SearchStrategy:
    """``Case``s: a drawn graph with the seed, dtype, value scale and quantisation
    (data rounded to multiples of it: ties and exact zeros, as in pixel data) to
    run it on.  ``graph_strategy`` may be a strategy or a fixed ``Graph``."""
    for d in dtypes:
        if d not in DTYPES:
            raise InvalidArgument(f"dtypes contains {d!r}; choose from {DTYPES}")
    if not dtypes or not scales:
        raise InvalidArgument("dtypes and scales must not be empty")
    if graph_strategy is None:
        graph_strategy = graphs()
    elif isinstance(graph_strategy, Graph):
        graph_strategy = st.just(graph_strategy)
    return st.builds(Case, graph_strategy, st.integers(0, 2**32 - 1), st.sampled_from(dtypes),
                     st.sampled_from(scales), st.sampled_from(quantize))
