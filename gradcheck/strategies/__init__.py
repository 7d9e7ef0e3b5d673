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

from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..case import DTYPES, Case
from ..catalogue import BUILTIN_OPS, CATALOGUE, ShapeError, get_op
from ..catalogue.placement import NotHere, head_declared, place_declared
from ..graph import Graph, GraphBuilder

__all__ = ["FAMILIES", "FAMILY_BLOCKS", "FAMILY_OPS", "LOSSES", "graphs", "cases", "single_op_graphs"]

FAMILIES = ("mlp", "cnn", "sequence")
BLOCK_KINDS = ("activation", "layer", "normalization", "branch", "reshape")
_BUILTIN = BUILTIN_OPS


def _ranked(block, family):
    """The built-in ops placed as ``block`` in ``family``, simplest (lowest rank)
    first: shrinking moves toward the front.  From the catalogue's records."""
    found = [(op.placement.families[family], name) for name, op in CATALOGUE.items()
             if name in _BUILTIN and op.placement is not None and op.placement.block == block
             and family in op.placement.families]
    return tuple(name for _, name in sorted(found))


# Body ops per family in kinds of block.  A block draws its kind, then its op:
# drawing among ~20 ops at once gives the first few most of the draws.
FAMILY_BLOCKS = {f: {kind: _ranked(kind, f) for kind in BLOCK_KINDS} for f in FAMILIES}
FAMILY_OPS = {f: tuple(op for kind in BLOCK_KINDS for op in FAMILY_BLOCKS[f][kind]) + _ranked("input", f)
              for f in FAMILIES}
LOSSES = _ranked("head", "mlp")
PLACEABLE = frozenset(op for ops in FAMILY_BLOCKS.values() for kind in ops.values() for op in kind)


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
        declared those settings unsupported); NotHere when it refuses both."""
        if self.accept is None:
            return hyper
        opdef = get_op(op)
        shapes = [self.shapes[i] for i in inputs]
        if self.accept(op, opdef.full_hyper(hyper), shapes):
            return hyper
        if hyper and self.accept(op, opdef.full_hyper({}), shapes):
            return {}
        raise NotHere

    def apply(self, op, *inputs, **hyper):
        opdef = get_op(op)
        hyper = self.settings_for(op, inputs, hyper)
        shape = opdef.shape(*(self.shapes[i] for i in inputs), **opdef.full_hyper(hyper))
        name = self.b.op(op, *inputs, name=self.name(op[:4] + "_"), **hyper)
        self.shapes[name] = tuple(shape)
        if shape:
            self.history.append(name)
        return name


def placer(op):
    """How ``op`` is applied to a tensor: its record's placer, or the generic rule
    for an op a user declared."""
    opdef = get_op(op)
    return opdef.placement.place if opdef.placement is not None else place_declared(op)


def _applies(op, shape) -> bool:
    opdef = get_op(op)
    return opdef.placement is None or opdef.placement.applies(shape)


def _declared_ops(family):
    return [name for name, od in CATALOGUE.items()
            if name not in _BUILTIN and not od.is_loss and family in (od.families or FAMILIES)]


def _declared_losses(family=None):
    return [name for name, od in CATALOGUE.items()
            if name not in _BUILTIN and od.is_loss and (family is None or family in (od.families or FAMILIES))]


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
            return get_op("embedding").placement.place(ctx, ids, vocab)
        except NotHere:
            pass  # refused by the source under test: a plain sequence input instead
    return ctx.leaf("x", (n, t, ctx.dim()), "input")


def _head(ctx, x, losses):
    shape = ctx.shapes[x]
    usable = [l for l in losses if _applies(l, shape)] or ["weighted_sum"]
    loss = ctx.draw(st.sampled_from(usable))
    opdef = get_op(loss)
    (opdef.placement.place if opdef.placement is not None else head_declared(loss))(ctx, x)


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
        placeable = [o for o in ops if o in PLACEABLE or o == "embedding" or o in known_losses or o not in _BUILTIN]
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
            if include not in PLACEABLE and include != "embedding":
                raise InvalidArgument(f"include={include!r} cannot be placed in a graph; "
                                      f"placeable: {sorted(set(PLACEABLE) | {'embedding'} | set(LOSSES))}")
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
    pending = include if include in PLACEABLE or (include in CATALOGUE and include not in _BUILTIN
                                                   and not CATALOGUE[include].is_loss) else None
    at = draw(st.integers(0, depth - 1)) if pending and depth else 0
    for block in range(depth):
        shape = ctx.shapes[x]
        if pending and block >= at and _applies(pending, shape):
            op, pending = pending, None
        else:
            choices = {k: [o for o in v if _applies(o, shape) and o != pending] for k, v in blocks.items()}
            kinds = [k for k in BLOCK_KINDS if choices[k]]
            if not kinds:
                break
            op = draw(st.sampled_from(choices[draw(st.sampled_from(kinds))]))
        try:
            x = placer(op)(ctx, x)
        except (NotHere, ShapeError):
            if op == include:
                pending = include
            continue
    if pending and _applies(pending, ctx.shapes[x]):
        try:
            x = placer(pending)(ctx, x)
            pending = None
        except (NotHere, ShapeError):
            pass
    if include in losses:
        head_losses = (include,)
    else:
        head_losses = tuple(l for l in losses if (ops is None or l in ops or l == "weighted_sum")
                            and (l in LOSSES or family in (CATALOGUE[l].families or FAMILIES))) or ("weighted_sum",)
    try:
        _head(ctx, x, head_losses)
    except NotHere:
        reject()
    graph = ctx.b.build("loss")
    if include is not None and include not in graph.ops:
        reject()
    if graph.size > max_size:
        reject()  # too costly to check element by element (rare with the default sizes)
    return graph


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


OFFSETS = (0.0, 0.0, 0.0, 1000.0)  # a large mean in one low-precision case of four


def cases(graph_strategy=None, dtypes=("float64",), scales=(1.0, 0.5, 2.0, 4.0), quantize=(0.0, 0.5),
          offsets=OFFSETS) -> st.SearchStrategy:
    """``Case``s: a drawn graph with the seed, dtype, value scale, quantisation
    (data rounded to multiples of it: ties and exact zeros, as in pixel data) and
    offset (a large mean added to the data: Note [Value regimes] in case.py) to
    run it on.  ``graph_strategy`` may be a strategy or a fixed ``Graph``."""
    for d in dtypes:
        if d not in DTYPES:
            raise InvalidArgument(f"dtypes contains {d!r}; choose from {tuple(DTYPES)}")
    if not dtypes or not scales:
        raise InvalidArgument("dtypes and scales must not be empty")
    if graph_strategy is None:
        graph_strategy = graphs()
    elif isinstance(graph_strategy, Graph):
        graph_strategy = st.just(graph_strategy)
    # the offset is a low-precision regime: in float64 a large mean costs finite
    # differences more digits than any one-pass variance loses (Note [Value regimes])
    return st.builds(lambda g, seed, dtype, scale, q, offset: Case(g, seed, dtype, scale, q,
                                                                   offset if dtype != "float64" else 0.0),
                     graph_strategy, st.integers(0, 2**32 - 1), st.sampled_from(dtypes),
                     st.sampled_from(scales), st.sampled_from(quantize), st.sampled_from(offsets or (0.0,)))
