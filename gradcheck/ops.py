"""The op catalogue: one plain ``OpDef`` record per differentiable operation.

An ``OpDef`` says which tensors an op takes and in what role, its
hyperparameters with their defaults, the rule giving its output shape, and a few
``Sample`` settings (shapes, hyperparameters, value ranges) on which each source
is checked op by op.  The catalogue is data: adding an op is adding a record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from reference_impl import OPS as _ref_ops
from reference_impl import layers as _ref_layers

from .frozen import Frozen

__all__ = ["TensorArg", "OpDef", "Sample", "ShapeError", "CATALOGUE", "get_op", "register_op"]

PARAM, INPUT, CONST = "param", "input", "const"
ROLES = (PARAM, INPUT, CONST)


class ShapeError(ValueError):
    """Input shapes or hyperparameters an op cannot take."""


@dataclass(frozen=True)
class TensorArg:
    """One tensor input of an op.

    role: ``param`` (trainable), ``input`` (a differentiable activation or data
    tensor) or ``const`` (never differentiated: labels, ids, masks).
    """

    name: str
    role: str = INPUT
    dtype: str = "float"  # or "int"
    optional: bool = False
    variadic: bool = False  # takes one or more tensors (concat)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"TensorArg {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.dtype not in ("float", "int"):
            raise ValueError(f"TensorArg {self.name!r}: dtype must be 'float' or 'int', got {self.dtype!r}")

    @property
    def differentiable(self) -> bool:
        return self.role != CONST and self.dtype == "float"


@dataclass(frozen=True)
class Sample:
    """One setting to check an op on: a shape per tensor input (a list of shapes
    for a variadic one), hyperparameters, and init overrides per tensor."""

    shapes: Mapping
    hyper: Mapping = field(default_factory=dict)
    init: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class OpDef:
    name: str
    inputs: tuple
    shape: Callable  # shape(*input_shapes, **hyper) -> output shape, or raises ShapeError
    hyper: Mapping = field(default_factory=dict)  # name -> default
    family: str = "layer"  # layer | activation | normalization | structure | loss
    kinks: bool = False  # has points where it is not differentiable (relu at 0, ...)
    # The forward accepts complex input (Note [Complex step] in reference_impl/_util.py):
    # a bool, or a predicate on the full hyperparameters.
    complex_step: bool | Callable = True
    samples: tuple = ()
    init: Mapping = field(default_factory=dict)  # tensor name -> init spec overriding the role's default
    # For ops with kinks: branch(*inputs, **hyper) -> array saying which side of each
    # kink the inputs are on (Note [Kinks] in numeric.py).
    branch: Callable | None = None
    # For ops with kinks: margin(*inputs, **hyper) -> the smallest distance of any
    # input to a kink (relu's 0, the gap between a pool window's top two values).
    margin: Callable | None = None
    # For ops whose derivative jumps at a kink: subgradient(inputs, hyper, grad_out,
    # candidate_grads, reference_grads, tolerance) -> (violation, explanation): the
    # violation is "" when the candidate's local VJP is an element of the
    # subdifferential (Note [Exact kinks]); the explanation says what each side gave.
    subgradient: Callable | None = None
    # For ops placed into random graphs by the generic rule (ops a user declares):
    # hyper_strategy(x_shape) -> a Hypothesis strategy of hyperparameter dicts, and
    # arg_shapes(x_shape, hyper) -> {name: shape} for the tensor inputs after the first
    # (default: each the shape of x).  families: where the op may be placed.
    hyper_strategy: Callable | None = None
    arg_shapes: Callable | None = None
    families: tuple = ()
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        # Declared order, kept for callables that take hyperparameters positionally
        # (torch.autograd.Function.apply takes no keywords).
        object.__setattr__(self, "hyper_names", tuple(self.hyper))
        object.__setattr__(self, "hyper", Frozen(self.hyper))
        object.__setattr__(self, "samples", tuple(self.samples))
        object.__setattr__(self, "init", Frozen(self.init))

    def supports_complex_step(self, hyper: Mapping) -> bool:
        full = self.full_hyper(hyper)
        return self.complex_step(full) if callable(self.complex_step) else bool(self.complex_step)

    @property
    def is_loss(self) -> bool:
        return self.family == "loss"

    def arg(self, name: str) -> TensorArg:
        for a in self.inputs:
            if a.name == name:
                return a
        raise KeyError(f"op {self.name!r} has no tensor input {name!r}")

    def full_hyper(self, hyper: Mapping) -> dict:
        """``hyper`` with defaults filled in; an unknown name is an error."""
        unknown = set(hyper) - set(self.hyper)
        if unknown:
            raise ShapeError(
                f"op {self.name!r} has no hyperparameter {sorted(unknown)[0]!r}; "
                f"it takes {sorted(self.hyper) or 'none'}"
            )
        return {**self.hyper, **hyper}

    def bind(self, n_inputs: int) -> list:
        """The TensorArgs matched by ``n_inputs`` tensors, in order."""
        required = [a for a in self.inputs if not a.optional and not a.variadic]
        variadic = [a for a in self.inputs if a.variadic]
        if variadic:
            if n_inputs < len(required) + 1:
                raise ShapeError(f"op {self.name!r} takes at least {len(required) + 1} tensors, got {n_inputs}")
            return required + variadic * (n_inputs - len(required))
        if not len(required) <= n_inputs <= len(self.inputs):
            raise ShapeError(
                f"op {self.name!r} takes {len(required)}"
                + (f" to {len(self.inputs)}" if len(self.inputs) > len(required) else "")
                + f" tensors ({', '.join(a.name for a in self.inputs)}), got {n_inputs}"
            )
        return list(self.inputs[:n_inputs])


CATALOGUE: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    if op.name in CATALOGUE:
        raise ValueError(f"op {op.name!r} is already in the catalogue")
    CATALOGUE[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; the catalogue has {sorted(CATALOGUE)}") from None


# ---------------------------------------------------------------- shape rules


def _need(cond, msg):
    if not cond:
        raise ShapeError(msg)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _same(x, **_):
    return tuple(x)


def _linear_shape(x, weight, bias=None):
    _need(len(x) >= 1 and len(weight) == 2, f"linear: x must have >= 1 dims and weight 2, got {x} and {weight}")
    _need(x[-1] == weight[1], f"linear: x has {x[-1]} features but weight {weight} expects {weight[1]}")
    _need(bias is None or tuple(bias) == (weight[0],), f"linear: bias {bias} must be ({weight[0]},)")
    return tuple(x[:-1]) + (weight[0],)


def _matmul_shape(a, b):
    _need(len(a) >= 2 and len(b) >= 2, f"matmul: both operands need >= 2 dims, got {a} and {b}")
    _need(a[-1] == b[-2], f"matmul: inner sizes differ: {a} @ {b}")
    try:
        batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    except ValueError:
        raise ShapeError(f"matmul: batch dims {a[:-2]} and {b[:-2]} do not broadcast") from None
    return tuple(batch) + (a[-2], b[-1])


def _conv_shape(nd):
    def rule(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        name = f"conv{nd}d"
        _need(len(x) == nd + 2 and len(weight) == nd + 2, f"{name}: x and weight need {nd + 2} dims, got {x}, {weight}")
        geo = [(s, p, d) for s, p, d in zip(*(_pair(v) if nd == 2 else (v,) for v in (stride, padding, dilation)))]
        _need(groups >= 1 and x[1] % groups == 0 and weight[0] % groups == 0,
              f"{name}: groups={groups} must divide in_channels={x[1]} and out_channels={weight[0]}")
        _need(weight[1] * groups == x[1], f"{name}: weight {weight} with groups={groups} expects {weight[1] * groups} channels, x has {x[1]}")
        _need(bias is None or tuple(bias) == (weight[0],), f"{name}: bias {bias} must be ({weight[0]},)")
        spatial = []
        for size, k, (s, p, d) in zip(x[2:], weight[2:], geo):
            _need(s >= 1 and p >= 0 and d >= 1, f"{name}: need stride >= 1, padding >= 0, dilation >= 1")
            o = _out(size, k, s, p, d)
            _need(o >= 1, f"{name}: kernel {k} (dilation {d}) does not fit input {size} with padding {p}")
            spatial.append(o)
        return (x[0], weight[0], *spatial)

    return rule


def _pool_shape(name):
    def rule(x, kernel_size=2, stride=None, padding=0):
        _need(len(x) == 4, f"{name}: x must be (N, C, H, W), got {x}")
        ks, ss, ps = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
        out = []
        for size, k, s, p in zip(x[2:], ks, ss, ps):
            _need(k >= 1 and s >= 1, f"{name}: kernel_size and stride must be >= 1")
            _need(0 <= p <= k // 2, f"{name}: padding {p} must be at most half the kernel {k}")
            o = _out(size, k, s, p)
            _need(o >= 1, f"{name}: kernel {k} does not fit input {size}")
            out.append(o)
        return (x[0], x[1], *out)

    return rule


def _global_pool_shape(x):
    _need(len(x) >= 3, f"global_avg_pool: x must be (N, C, *spatial), got {x}")
    return (x[0], x[1])


def _dim_shape(name):
    def rule(x, dim=-1):
        _need(-len(x) <= dim < len(x), f"{name}: dim {dim} out of range for {len(x)}-d input")
        return tuple(x)

    return rule


def _layer_norm_shape(x, weight, bias, eps=1e-5):
    k = len(weight)
    _need(k >= 1 and tuple(x[-k:]) == tuple(weight) and tuple(weight) == tuple(bias),
          f"layer_norm: weight {weight} and bias {bias} must equal the trailing dims of x {x}")
    return tuple(x)


def _batch_norm_shape(x, weight, bias, eps=1e-5):
    _need(len(x) >= 2, f"batch_norm: x must be (N, C, ...), got {x}")
    _need(tuple(weight) == (x[1],) == tuple(bias), f"batch_norm: weight and bias must be ({x[1]},)")
    _need(np.prod(x) // x[1] > 1, f"batch_norm: needs more than one value per channel, got {x}")
    return tuple(x)


def _broadcast_shape(name):
    def rule(a, b):
        try:
            return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
        except ValueError:
            raise ShapeError(f"{name}: shapes {a} and {b} do not broadcast") from None

    return rule


def _concat_shape(*xs, dim=1):
    nd = len(xs[0])
    _need(-nd <= dim < nd, f"concat: dim {dim} out of range for {nd}-d inputs")
    d = dim % nd
    for s in xs:
        _need(len(s) == nd and all(a == b for i, (a, b) in enumerate(zip(s, xs[0])) if i != d),
              f"concat: shapes {[tuple(s) for s in xs]} differ outside dim {dim}")
    return tuple(xs[0][:d]) + (sum(s[d] for s in xs),) + tuple(xs[0][d + 1:])


def _reshape_shape(x, shape):
    shape = tuple(shape)
    _need(shape.count(-1) <= 1, f"reshape: at most one -1 in {shape}")
    known = math.prod(s for s in shape if s != -1)
    total = math.prod(x)
    if -1 in shape:
        _need(known > 0 and total % known == 0, f"reshape: cannot view {x} as {shape}")
        shape = tuple(total // known if s == -1 else s for s in shape)
    _need(math.prod(shape) == total, f"reshape: cannot view {x} ({total} elements) as {shape}")
    return shape


def _flatten_shape(x, start_dim=1, end_dim=-1):
    nd = len(x)
    _need(-nd <= start_dim < nd and -nd <= end_dim < nd, f"flatten: dims out of range for {x}")
    s, e = start_dim % nd, end_dim % nd
    _need(s <= e, f"flatten: start_dim {start_dim} after end_dim {end_dim}")
    return tuple(x[:s]) + (math.prod(x[s:e + 1]),) + tuple(x[e + 1:])


def _dropout_shape(x, mask, p=0.5):
    _need(tuple(mask) == tuple(x), f"dropout: mask {mask} must match x {x}")
    _need(0 <= p < 1, f"dropout: p must be in [0, 1), got {p}")
    return tuple(x)


def _embedding_shape(ids, table):
    _need(len(table) == 2, f"embedding: table must be (num_embeddings, dim), got {table}")
    return tuple(ids) + (table[1],)


def _attention_shape(q, k, v, causal=False):
    _need(len(q) >= 2 and len(k) == len(q) == len(v), f"attention: q, k, v need the same rank >= 2, got {q}, {k}, {v}")
    _need(tuple(q[:-2]) == tuple(k[:-2]) == tuple(v[:-2]), f"attention: batch dims differ: {q}, {k}, {v}")
    _need(q[-1] == k[-1], f"attention: q and k need the same embedding size, got {q[-1]} and {k[-1]}")
    _need(k[-2] == v[-2], f"attention: k and v need the same length, got {k[-2]} and {v[-2]}")
    return tuple(q[:-1]) + (v[-1],)


def _pairwise_loss_shape(name):
    def rule(pred, target, **hyper):
        _need(tuple(pred) == tuple(target), f"{name}: pred {pred} and target {target} must have the same shape")
        _need(hyper.get("reduction", "mean") in ("mean", "sum"), f"{name}: reduction must be 'mean' or 'sum'")
        _need(hyper.get("beta", 1.0) > 0, f"{name}: beta must be > 0")
        return ()

    return rule


def _cross_entropy_shape(logits, target, reduction="mean"):
    _need(len(logits) == 2 and tuple(target) == (logits[0],), f"cross_entropy: logits (N, C) and target (N,), got {logits}, {target}")
    _need(reduction in ("mean", "sum"), "cross_entropy: reduction must be 'mean' or 'sum'")
    return ()


def _weighted_sum_shape(x, weight):
    _need(tuple(x) == tuple(weight), f"weighted_sum: weight {weight} must match x {x}")
    return ()


# ---------------------------------------------------------------- the catalogue

X = TensorArg("x")
W = TensorArg("weight", PARAM)
B = TensorArg("bias", PARAM)
B_OPT = TensorArg("bias", PARAM, optional=True)


def _S(shapes, hyper=None, init=None):
    return Sample(shapes, hyper or {}, init or {})


def _sign_branch(x, **_):
    return np.real(x) > 0


def _max_pool_branch(x, **hyper):
    return _ref_layers.max_pool2d_forward(x, **hyper)[1][-1]  # the winner of each window


def _smooth_l1_branch(pred, target, beta=1.0, **_):
    d = np.real(pred - target)
    return np.stack([d > 0, np.abs(d) < beta])


def _sign_margin(x, **_):
    return float(np.min(np.abs(np.real(x)), initial=np.inf))


def _max_pool_margin(x, kernel_size=2, stride=None, padding=0):
    # The gap between the two largest values of each window (padding excluded).
    xp = np.pad(np.real(x).astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)) if
                isinstance(padding, int) else ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2),
                constant_values=-np.inf)
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(kernel_size if stride is None else stride)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    windows = np.stack([xp[..., i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                        for i in range(kh) for j in range(kw)], axis=-1)
    if windows.shape[-1] < 2:
        return np.inf
    top2 = np.sort(windows, axis=-1)[..., -2:]
    with np.errstate(invalid="ignore"):
        gap = top2[..., 1] - top2[..., 0]
    return float(np.min(np.where(np.isfinite(gap), gap, np.inf), initial=np.inf))


def _smooth_l1_margin(pred, target, beta=1.0, **_):
    d = np.abs(np.real(pred - target))
    return float(min(np.min(d, initial=np.inf), np.min(np.abs(d - beta), initial=np.inf)))


# Note [Exact kinks]
# With quantised data an input lands exactly on a kink (relu's 0), or a pool
# window holds exact ties.  There the op is not differentiable and any element
# of its subdifferential is a right answer: relu may give 0, 1 or anything
# between times grad_out; a max-pool tie may send the window's gradient to any
# of its maxima, or split it among them.  The reference takes one convention
# (the left slope, the first maximum), so a correct candidate that takes
# another differs from it.  When a check fails on a case with an exact kink,
# the candidate's op is judged again at that node alone against the rule
# below; if it lies in the subdifferential there (and agrees everywhere else),
# the whole case is recomputed with the candidate's choice at that node, and a
# candidate that then agrees is ``nondifferentiable``, not failing.  A rule that
# is violated keeps the failure and says where and by how much.


def _local_tolerance(g_ref, tol):
    scale = float(np.max(np.abs(g_ref), initial=0.0))
    return tol.atol + tol.rtol * (np.abs(g_ref) + scale)


def _off_kink(name, arg, gc, gr, at, tol):
    bad = ~at & (np.abs(gc - gr) > _local_tolerance(gr, tol))
    if np.any(bad):
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        return (f"{name}: the gradient of {arg!r} also differs away from the kink, at {i}: "
                f"{gc[i]:.10g} against {gr[i]:.10g}")
    return ""


def _elementwise_subgradient(name):
    """The rule of an elementwise op with kinks: at each element exactly at a kink,
    the gradient lies between grad_out times the left and the right slope (both
    taken by one-sided differences of the reference forward); elsewhere it is the
    reference's."""

    def rule(inputs, hyper, g, gc, gr, tol):
        (x,), (gc,), (gr,) = inputs, gc, gr
        op = get_op(name)
        delta = 1e-12 * np.maximum(1.0, np.abs(x))
        at = op.branch(x + delta, **hyper) != op.branch(x - delta, **hyper)
        off = _off_kink(name, "x", gc, gr, at, tol)
        if off or not np.any(at):
            return off, ""
        forward = _ref_ops[name].forward
        h = 1e-7 * np.maximum(1.0, np.abs(x)) * at
        f0 = forward(x, **hyper)[0]
        right = (forward(x + h, **hyper)[0] - f0) / np.where(at, h, 1.0)
        left = (f0 - forward(x - h, **hyper)[0]) / np.where(at, h, 1.0)
        lo, hi = np.minimum(g * left, g * right), np.maximum(g * left, g * right)
        slack = 1e-5 * np.abs(g) * np.maximum(1.0, np.maximum(np.abs(left), np.abs(right))) + _local_tolerance(gr, tol)
        outside = at & ((gc < lo - slack) | (gc > hi + slack))
        if np.any(outside):
            i = tuple(int(j) for j in np.argwhere(outside)[0])
            return (f"{name}: x is exactly at the kink at {i}, where the subdifferential gives grad_out times a "
                    f"slope between {left[i]:.6g} (left) and {right[i]:.6g} (right), so [{lo[i]:.10g}, {hi[i]:.10g}];"
                    f" the candidate gave {gc[i]:.10g}"), ""
        i = tuple(int(j) for j in np.argwhere(at)[0])
        return ("", f"x of {name} is exactly at the kink at {int(np.sum(at))} element(s), e.g. {i}: the left slope "
                    f"gives {g[i] * left[i]:.10g}, the right slope {g[i] * right[i]:.10g}, the candidate "
                    f"{gc[i]:.10g}, reference {gr[i]:.10g}")

    return rule


def _max_pool_subgradient(inputs, hyper, g, gc, gr, tol):
    """A tie in a window may send its gradient to any of its maxima or split it
    among them: the gradient of an element tied in some windows lies between the
    sums of those windows' negative and positive gradients (plus what it gets as
    the sole maximum of others), every (sample, channel) plane keeps the total,
    and elements tied nowhere get exactly the reference's gradient."""
    (x,), (gc,), (gr,) = inputs, gc, gr
    kernel_size, stride, padding = hyper["kernel_size"], hyper["stride"], hyper["padding"]
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(kernel_size if stride is None else stride), _pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    oh, ow = g.shape[2:]
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    windows = np.stack([xp[..., i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] for i, j in taps], axis=-1)
    top = windows.max(axis=-1, keepdims=True)
    is_max = windows == top
    tied = is_max & (is_max.sum(axis=-1, keepdims=True) > 1)
    fixed, lo_var, hi_var = (np.zeros(xp.shape) for _ in range(3))
    at = np.zeros(xp.shape, dtype=bool)
    for k, (i, j) in enumerate(taps):
        sl = (Ellipsis, slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
        sole = is_max[..., k] & ~tied[..., k]
        fixed[sl] += np.where(sole, g, 0)
        lo_var[sl] += np.where(tied[..., k], np.minimum(g, 0), 0)
        hi_var[sl] += np.where(tied[..., k], np.maximum(g, 0), 0)
        at[sl] |= tied[..., k]
    crop = (slice(None), slice(None), slice(ph, ph + x.shape[2]), slice(pw, pw + x.shape[3]))
    fixed, lo_var, hi_var, at = fixed[crop], lo_var[crop], hi_var[crop], at[crop]
    off = _off_kink("max_pool2d", "x", gc, gr, at, tol)
    if off or not np.any(at):
        return off, ""
    slack = _local_tolerance(gr, tol)
    lo, hi = fixed + lo_var - slack, fixed + hi_var + slack
    outside = at & ((gc < lo) | (gc > hi))
    if np.any(outside):
        i = tuple(int(j) for j in np.argwhere(outside)[0])
        return (f"max_pool2d: x at {i} is tied for the maximum of a window; its gradient may lie in "
                f"[{lo[i] + slack[i]:.10g}, {hi[i] - slack[i]:.10g}], the candidate gave {gc[i]:.10g}"), ""
    plane_c, plane_r = gc.sum(axis=(2, 3)), gr.sum(axis=(2, 3))
    lost = np.abs(plane_c - plane_r) > _local_tolerance(plane_r, tol) * max(1, x.shape[2] * x.shape[3]) ** 0.5
    if np.any(lost):
        n, c = (int(j) for j in np.argwhere(lost)[0])
        return (f"max_pool2d: the gradients of sample {n}, channel {c} add up to {plane_c[n, c]:.10g}, but every "
                f"way of sharing tied windows' gradients among their maxima adds up to {plane_r[n, c]:.10g}"), ""
    i = tuple(int(j) for j in np.argwhere(at)[0])
    return ("", f"x of max_pool2d holds exact ties in its windows ({int(np.sum(at))} tied element(s), e.g. {i}): "
                f"the candidate gave {gc[i]:.10g} there, the reference (first maximum) {gr[i]:.10g}; any share "
                f"among the maxima is right")


def _activation(name, hyper=None, kinks=False, complex_step=True, settings=({},)):
    return OpDef(
        name, (X,), _same, hyper or {}, family="activation", kinks=kinks, complex_step=complex_step,
        branch=_sign_branch if kinks else None, margin=_sign_margin if kinks else None,
        subgradient=_elementwise_subgradient(name) if kinks else None,
        samples=tuple(_S({"x": shape}, h) for shape in ((7,), (3, 5), (2, 3, 4)) for h in settings),
    )


_OPS = [
    OpDef("linear", (X, W, B_OPT), _linear_shape, samples=(
        _S({"x": (4, 3), "weight": (5, 3), "bias": (5,)}),
        _S({"x": (4, 3), "weight": (2, 3)}),
        _S({"x": (2, 3, 6), "weight": (4, 6), "bias": (4,)}),
    ), doc="y = x W^T + b"),
    OpDef("matmul", (TensorArg("a"), TensorArg("b")), _matmul_shape, samples=(
        _S({"a": (3, 4), "b": (4, 2)}),
        _S({"a": (2, 3, 4), "b": (2, 4, 5)}),
        _S({"a": (2, 1, 3, 4), "b": (3, 4, 2)}),  # broadcast batch dims
    ), doc="batched a @ b with broadcasting batch dims"),
    OpDef("conv1d", (X, W, B_OPT), _conv_shape(1),
          {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}, samples=(
        _S({"x": (2, 3, 9), "weight": (4, 3, 3), "bias": (4,)}),
        _S({"x": (2, 4, 10), "weight": (6, 2, 3)}, {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}),
        _S({"x": (1, 2, 7), "weight": (2, 2, 2), "bias": (2,)}, {"stride": 3, "padding": 2}),
    )),
    OpDef("conv2d", (X, W, B_OPT), _conv_shape(2),
          {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}, samples=(
        _S({"x": (2, 3, 5, 5), "weight": (4, 3, 3, 3), "bias": (4,)}),
        _S({"x": (2, 2, 6, 7), "weight": (3, 2, 2, 3)}, {"stride": (2, 1), "padding": (1, 0)}),
        _S({"x": (1, 4, 7, 7), "weight": (4, 2, 3, 3), "bias": (4,)}, {"dilation": 2, "groups": 2, "padding": 1}),
        _S({"x": (2, 3, 6, 6), "weight": (3, 1, 2, 2)}, {"stride": 2, "groups": 3}),
    )),
    OpDef("max_pool2d", (X,), _pool_shape("max_pool2d"),
          {"kernel_size": 2, "stride": None, "padding": 0}, kinks=True, branch=_max_pool_branch,
          margin=_max_pool_margin, subgradient=_max_pool_subgradient, samples=(
        _S({"x": (2, 2, 4, 4)}),
        _S({"x": (1, 3, 5, 6)}, {"kernel_size": 3, "stride": 1, "padding": 1}),
        _S({"x": (2, 1, 7, 5)}, {"kernel_size": (3, 2), "stride": (2, 1)}),
    )),
    OpDef("avg_pool2d", (X,), _pool_shape("avg_pool2d"),
          {"kernel_size": 2, "stride": None, "padding": 0}, samples=(
        _S({"x": (2, 2, 4, 4)}),
        _S({"x": (1, 3, 5, 6)}, {"kernel_size": 3, "stride": 1, "padding": 1}),
        _S({"x": (2, 1, 7, 5)}, {"kernel_size": (3, 2), "stride": (2, 1)}),
    )),
    OpDef("global_avg_pool", (X,), _global_pool_shape, samples=(
        _S({"x": (2, 3, 4, 4)}), _S({"x": (3, 2, 5)}),
    )),
    _activation("relu", kinks=True),
    _activation("leaky_relu", {"negative_slope": 0.01}, kinks=True,
                settings=({}, {"negative_slope": 0.2})),
    _activation("elu", {"alpha": 1.0}, kinks=True, settings=({}, {"alpha": 0.5})),
    # NumPy has no complex erf, so only the tanh form takes the complex step.
    _activation("gelu", {"approximate": "none"}, complex_step=lambda h: h["approximate"] == "tanh",
                settings=({}, {"approximate": "tanh"})),
    _activation("sigmoid"),
    _activation("tanh"),
    _activation("softplus", {"beta": 1.0, "threshold": 20.0}, settings=({}, {"beta": 2.0})),
    _activation("silu"),
    OpDef("softmax", (X,), _dim_shape("softmax"), {"dim": -1}, family="normalization", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}), _S({"x": (6,)}, {"dim": 0}),
    )),
    OpDef("log_softmax", (X,), _dim_shape("log_softmax"), {"dim": -1}, family="normalization", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}), _S({"x": (6,)}, {"dim": 0}),
    )),
    OpDef("layer_norm", (X, W, B), _layer_norm_shape, {"eps": 1e-5}, family="normalization", samples=(
        _S({"x": (4, 6), "weight": (6,), "bias": (6,)}),
        _S({"x": (2, 3, 5), "weight": (5,), "bias": (5,)}),
        _S({"x": (2, 3, 4), "weight": (3, 4), "bias": (3, 4)}, {"eps": 1e-3}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}}),
    OpDef("batch_norm", (X, W, B), _batch_norm_shape, {"eps": 1e-5}, family="normalization", samples=(
        _S({"x": (6, 3), "weight": (3,), "bias": (3,)}),
        _S({"x": (3, 2, 4, 4), "weight": (2,), "bias": (2,)}),
        _S({"x": (4, 3, 5), "weight": (3,), "bias": (3,)}, {"eps": 1e-3}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}}),
    OpDef("add", (TensorArg("a"), TensorArg("b")), _broadcast_shape("add"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (2, 1, 4), "b": (3, 1)}),
    )),
    OpDef("mul", (TensorArg("a"), TensorArg("b")), _broadcast_shape("mul"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (2, 1, 4), "b": (3, 1)}),
    )),
    OpDef("concat", (TensorArg("x", variadic=True),), _concat_shape, {"dim": 1}, family="structure", samples=(
        _S({"x": [(2, 3), (2, 4)]}), _S({"x": [(2, 3, 2), (1, 3, 2), (3, 3, 2)]}, {"dim": 0}),
        _S({"x": [(2, 2, 3), (2, 2, 1)]}, {"dim": -1}),
    )),
    OpDef("reshape", (X,), _reshape_shape, {"shape": (-1,)}, family="structure", samples=(
        _S({"x": (2, 3, 4)}, {"shape": (6, 4)}), _S({"x": (4, 6)}, {"shape": (2, -1, 3)}),
    )),
    OpDef("flatten", (X,), _flatten_shape, {"start_dim": 1, "end_dim": -1}, family="structure", samples=(
        _S({"x": (2, 3, 4, 2)}), _S({"x": (2, 3, 4, 2)}, {"start_dim": 0, "end_dim": 1}),
    )),
    OpDef("dropout", (X, TensorArg("mask", CONST)), _dropout_shape, {"p": 0.5}, family="structure", samples=(
        _S({"x": (4, 5), "mask": (4, 5)}, {"p": 0.5}, {"mask": {"kind": "mask", "p": 0.5}}),
        _S({"x": (2, 3, 4), "mask": (2, 3, 4)}, {"p": 0.2}, {"mask": {"kind": "mask", "p": 0.2}}),
    )),
    OpDef("embedding", (TensorArg("ids", CONST, dtype="int"), TensorArg("table", PARAM)), _embedding_shape,
          samples=(
        _S({"ids": (5,), "table": (4, 3)}, init={"ids": {"kind": "randint", "high": 4}}),
        _S({"ids": (3, 6), "table": (5, 2)}, init={"ids": {"kind": "randint", "high": 5}}),
    ), doc="table[ids]; repeated ids accumulate gradient"),
    OpDef("attention", (TensorArg("q"), TensorArg("k"), TensorArg("v")), _attention_shape, {"causal": False},
          samples=(
        _S({"q": (4, 3), "k": (5, 3), "v": (5, 2)}),
        _S({"q": (2, 4, 3), "k": (2, 4, 3), "v": (2, 4, 3)}, {"causal": True}),
        _S({"q": (2, 2, 3, 4), "k": (2, 2, 5, 4), "v": (2, 2, 5, 3)}, {"causal": True}),
    ), doc="scaled dot-product attention softmax(q k^T / sqrt(E)) v"),
    OpDef("mse", (TensorArg("pred"), TensorArg("target")), _pairwise_loss_shape("mse"),
          {"reduction": "mean"}, family="loss", samples=(
        _S({"pred": (4, 3), "target": (4, 3)}), _S({"pred": (5,), "target": (5,)}, {"reduction": "sum"}),
    )),
    OpDef("smooth_l1", (TensorArg("pred"), TensorArg("target")), _pairwise_loss_shape("smooth_l1"),
          {"beta": 1.0, "reduction": "mean"}, family="loss", kinks=True,
          branch=_smooth_l1_branch, margin=_smooth_l1_margin, samples=(
        _S({"pred": (4, 3), "target": (4, 3)}),
        _S({"pred": (6,), "target": (6,)}, {"beta": 0.5, "reduction": "sum"}),
    )),
    OpDef("bce_with_logits", (TensorArg("logits"), TensorArg("target")), _pairwise_loss_shape("bce_with_logits"),
          {"reduction": "mean"}, family="loss", samples=(
        _S({"logits": (4, 3), "target": (4, 3)}, init={"target": {"kind": "uniform", "low": 0.0, "high": 1.0}}),
        _S({"logits": (6,), "target": (6,)}, {"reduction": "sum"},
           init={"target": {"kind": "uniform", "low": 0.0, "high": 1.0}}),
    )),
    OpDef("cross_entropy", (TensorArg("logits"), TensorArg("target", CONST, dtype="int")), _cross_entropy_shape,
          {"reduction": "mean"}, family="loss", samples=(
        _S({"logits": (4, 5), "target": (4,)}, init={"target": {"kind": "randint", "high": 5}}),
        _S({"logits": (6, 3), "target": (6,)}, {"reduction": "sum"}, init={"target": {"kind": "randint", "high": 3}}),
    )),
    OpDef("weighted_sum", (X, TensorArg("weight", CONST)), _weighted_sum_shape, family="loss",
          samples=(_S({"x": (3, 4), "weight": (3, 4)}),),
          doc="sum(x * weight) with a fixed weight: the probe head of single-op graphs"),
]

for _op in _OPS:
    register_op(_op)
del _op

BUILTIN_OPS = frozenset(CATALOGUE)  # before any user declares an op
