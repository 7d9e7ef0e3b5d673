"""Kinks: where an op is not differentiable, how far its inputs are from there,
and what a right answer is exactly there.

``branch(*inputs, **hyper)`` says which side of each kink the inputs are on
(Note [Kinks] in sources/numeric.py); ``margin`` the smallest distance of any
input to a kink; ``subgradient`` rules judge a candidate's VJP at an exact kink
(Note [Exact kinks]).  The ``spread`` of a normalisation says how near its
groups are to equal values, the point where it is differentiable but rounding
decides its output (Note [Degenerate normalisation] in
judge/second_opinions.py)."""

from __future__ import annotations

import numpy as np

from reference_impl import OPS as _ref_ops
from reference_impl import layers as _ref_layers

from .opdef import get_op

__all__ = ["sign_branch", "max_pool_branch", "smooth_l1_branch", "sign_margin", "max_pool_margin", "smooth_l1_margin", "elementwise_subgradient", "max_pool_subgradient"]
from .shapes import pair

def sign_branch(x, **_):
    return np.real(x) > 0


def points_branch(points):
    """The branch of an elementwise op with kinks (or jumps) at ``points(**hyper)``:
    one mask x > p a point, stacked."""

    def branch(x, **hyper):
        return np.stack([np.real(x) > p for p in points(**hyper)])

    return branch


def points_margin(points):
    """How far the nearest element is from any of ``points(**hyper)``."""

    def margin(x, **hyper):
        r = np.real(x)
        return float(min((np.min(np.abs(r - p), initial=np.inf) for p in points(**hyper)), default=np.inf))

    return margin


def max_pool_branch(x, **hyper):
    return _ref_layers.max_pool2d_forward(x, **hyper)[1][-1]  # the winner of each window


def smooth_l1_branch(pred, target, beta=1.0, **_):
    d = np.real(pred - target)
    return np.stack([d > 0, np.abs(d) < beta])


def difference_branch(pred, target, *_, **__):
    """The sign of pred - target (l1's kink at 0)."""
    return np.real(pred - target) > 0


def difference_margin(pred, target, *_, **__):
    return float(np.min(np.abs(np.real(pred - target)), initial=np.inf))


def hinge_branch(offset, sign=-1.0):
    """Where a hinge max(0, z) switches, z = offset + sign * x (hinge_embedding's
    margin - x), from hyper ``offset``'s value."""

    def branch(x, *_, **hyper):
        return np.real(hyper.get(offset, 1.0) + sign * x) > 0

    def margin(x, *_, **hyper):
        return float(np.min(np.abs(np.real(hyper.get(offset, 1.0) + sign * x)), initial=np.inf))

    return branch, margin


def ranking_branch(x1, x2, target, margin=0.0, **_):
    return np.real(-target * (x1 - x2) + margin) > 0


def ranking_margin(x1, x2, target, margin=0.0, **_):
    return float(np.min(np.abs(np.real(-target * (x1 - x2) + margin)), initial=np.inf))


def sign_margin(x, **_):
    return float(np.min(np.abs(np.real(x)), initial=np.inf))


def max_pool_margin(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    # The gap between the two largest values of each window (padding excluded).
    pads, taps = _ref_layers.pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    xp = np.pad(np.real(x).astype(np.float64), ((0, 0), (0, 0)) + pads, constant_values=-np.inf)
    return _top_two_gap(np.stack([xp[..., si, sj] for si, sj in taps], axis=-1))


def smooth_l1_margin(pred, target, beta=1.0, **_):
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


def elementwise_subgradient(name):
    """The rule of an elementwise op with kinks: at each element exactly at a kink,
    the gradient lies between grad_out times the left and the right slope (both
    taken by one-sided differences of the reference forward); elsewhere it is the
    reference's."""

    def rule(inputs, hyper, g, gc, gr, tol):
        (x,), (gc,), (gr,) = inputs, gc, gr
        op = get_op(name)
        delta = 1e-12 * np.maximum(1.0, np.abs(x))
        at = op.branch(x + delta, **hyper) != op.branch(x - delta, **hyper)
        at = at.reshape((-1,) + x.shape).any(axis=0)  # a branch may stack one mask a kink (hardtanh's two)
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


def prelu_subgradient(inputs, hyper, g, gc, gr, tol):
    """prelu at x == 0: x's gradient lies between grad_out times the two slopes
    (1 and the weight); the weight's gets nothing from those elements (they
    are multiplied by x = 0), so it must be the reference's."""
    (x, w), (gx, gw), (rx, rw) = inputs, gc, gr
    at = np.real(x) == 0
    off = _off_kink("prelu", "x", gx, rx, at, tol) or _off_kink("prelu", "weight", gw, rw, np.zeros_like(rw, bool), tol)
    if off or not np.any(at):
        return off, ""
    slope = w.reshape((1, -1) + (1,) * (x.ndim - 2)) if w.size > 1 else w.reshape(())
    lo, hi = np.minimum(g, g * slope), np.maximum(g, g * slope)
    slack = _local_tolerance(rx, tol)
    outside = at & ((gx < lo - slack) | (gx > hi + slack))
    if np.any(outside):
        i = tuple(int(j) for j in np.argwhere(outside)[0])
        return (f"prelu: x is exactly 0 at {i}, where the subdifferential gives grad_out times a slope between the "
                f"weight and 1, so [{np.broadcast_to(lo, x.shape)[i]:.10g}, {np.broadcast_to(hi, x.shape)[i]:.10g}];"
                f" the candidate gave {gx[i]:.10g}"), ""
    i = tuple(int(j) for j in np.argwhere(at)[0])
    return "", (f"x of prelu is exactly 0 at {int(np.sum(at))} element(s), e.g. {i}: the candidate gave "
                f"{gx[i]:.10g}, reference {rx[i]:.10g}")


def max_pool_subgradient(inputs, hyper, g, gc, gr, tol):
    """A tie in a window may send its gradient to any of its maxima or split it
    among them: the gradient of an element tied in some windows lies between the
    sums of those windows' negative and positive gradients (plus what it gets as
    the sole maximum of others), every (sample, channel) plane keeps the total,
    and elements tied nowhere get exactly the reference's gradient."""
    (x,), (gc,), (gr,) = inputs, gc, gr
    pads, taps = _ref_layers.pool_geometry(x.shape, hyper["kernel_size"], hyper["stride"], hyper["padding"],
                                           hyper.get("dilation", 1), hyper.get("ceil_mode", False))
    return _window_ties("max_pool2d", x, pads, taps, g, gc, gr, tol)


def max_pool3d_subgradient(inputs, hyper, g, gc, gr, tol):
    """max_pool2d's rule on (D, H, W) windows."""
    from reference_impl.spatial import pool_taps

    (x,), (gc,), (gr,) = inputs, gc, gr
    pads, taps = pool_taps(x.shape[2:], hyper["kernel_size"], hyper["stride"], hyper["padding"])
    return _window_ties("max_pool3d", x, tuple((p, p) for p in pads), taps, g, gc, gr, tol)


def max_pool3d_branch(x, **hyper):
    return _ref_ops["max_pool3d"].forward(x, **hyper)[1][-1]  # the winner of each window


def max_pool3d_margin(x, kernel_size=2, stride=None, padding=0):
    from reference_impl.spatial import pool_taps

    pads, taps = pool_taps(x.shape[2:], kernel_size, stride, padding)
    xp = np.pad(np.real(x).astype(np.float64), ((0, 0), (0, 0)) + tuple((p, p) for p in pads),
                constant_values=-np.inf)
    return _top_two_gap(np.stack([xp[(Ellipsis,) + t] for t in taps], axis=-1))


def _top_two_gap(windows) -> float:
    """The least gap between the two largest values of a window (padding's -inf
    excluded): how far the windows are from a tie."""
    if windows.shape[-1] < 2:
        return np.inf
    top2 = np.sort(windows, axis=-1)[..., -2:]
    with np.errstate(invalid="ignore"):
        gap = top2[..., 1] - top2[..., 0]
    return float(np.min(np.where(np.isfinite(gap), gap, np.inf), initial=np.inf))


def _window_ties(name, x, pads, taps, g, gc, gr, tol):
    """The tie rule of a max pool whose windows are ``taps`` (tuples of slices, one
    per spatial axis, of x padded by ``pads``, (before, after) per axis)."""
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads), constant_values=-np.inf)
    windows = np.stack([xp[(Ellipsis,) + tuple(t)] for t in taps], axis=-1)
    top = windows.max(axis=-1, keepdims=True)
    is_max = windows == top
    tied = is_max & (is_max.sum(axis=-1, keepdims=True) > 1)
    fixed, lo_var, hi_var = (np.zeros(xp.shape) for _ in range(3))
    at = np.zeros(xp.shape, dtype=bool)
    for k, t in enumerate(taps):
        sl = (Ellipsis,) + tuple(t)
        sole = is_max[..., k] & ~tied[..., k]
        fixed[sl] += np.where(sole, g, 0)
        lo_var[sl] += np.where(tied[..., k], np.minimum(g, 0), 0)
        hi_var[sl] += np.where(tied[..., k], np.maximum(g, 0), 0)
        at[sl] |= tied[..., k]
    crop = (slice(None), slice(None)) + tuple(slice(p[0], p[0] + s) for p, s in zip(pads, x.shape[2:]))
    return _judge_ties(name, "window", fixed[crop], lo_var[crop], hi_var[crop], at[crop], gc, gr, tol)


def _judge_ties(name, unit, fixed, lo_var, hi_var, at, gc, gr, tol):
    """The verdict of a max pool's tie rule: ``fixed`` what each element gets as
    the sole maximum of a ``unit`` (window, cell), ``lo_var``/``hi_var`` the
    negative and positive gradients of the units it is tied in, ``at`` where it
    is tied.  (violation, explanation), as a subgradient rule returns."""
    off = _off_kink(name, "x", gc, gr, at, tol)
    if off or not np.any(at):
        return off, ""
    slack = _local_tolerance(gr, tol)
    lo, hi = fixed + lo_var - slack, fixed + hi_var + slack
    outside = at & ((gc < lo) | (gc > hi))
    if np.any(outside):
        i = tuple(int(j) for j in np.argwhere(outside)[0])
        return (f"{name}: x at {i} is tied for the maximum of a {unit}; its gradient may lie in "
                f"[{lo[i] + slack[i]:.10g}, {hi[i] - slack[i]:.10g}], the candidate gave {gc[i]:.10g}"), ""
    axes = tuple(range(2, gc.ndim))
    plane_c, plane_r = gc.sum(axis=axes), gr.sum(axis=axes)
    lost = np.abs(plane_c - plane_r) > _local_tolerance(plane_r, tol) * max(1, int(np.prod(gc.shape[2:]))) ** 0.5
    if np.any(lost):
        n, c = (int(j) for j in np.argwhere(lost)[0])
        return (f"{name}: the gradients of sample {n}, channel {c} add up to {plane_c[n, c]:.10g}, but every "
                f"way of sharing tied {unit}s' gradients among their maxima adds up to {plane_r[n, c]:.10g}"), ""
    i = tuple(int(j) for j in np.argwhere(at)[0])
    return ("", f"x of {name} holds exact ties in its {unit}s ({int(np.sum(at))} tied element(s), e.g. {i}): "
                f"the candidate gave {gc[i]:.10g} there, the reference (first maximum) {gr[i]:.10g}; any share "
                f"among the maxima is right")


def _hyper_2d(kernel_size=2, stride=None, padding=0, **_):
    return {"kernel_size": (1, kernel_size), "stride": (1, kernel_size if stride is None else stride),
            "padding": (0, padding)}


def max_pool1d_branch(x, **hyper):
    return max_pool_branch(x[:, :, None, :], **_hyper_2d(**hyper))


def max_pool1d_margin(x, **hyper):
    return max_pool_margin(x[:, :, None, :], **_hyper_2d(**hyper))


def max_pool1d_subgradient(inputs, hyper, g, gc, gr, tol):
    """max_pool2d's rule on windows one row high."""
    (x,), (gc1,), (gr1,) = inputs, gc, gr
    return max_pool_subgradient((x[:, :, None, :],), _hyper_2d(**hyper), g[:, :, None, :], (gc1[:, :, None, :],),
                                (gr1[:, :, None, :],), tol)


def norm_branch(*names):
    """Where a norm along ``dim`` (hyper) passes eps: x / max(||x||, eps) is a
    constant-divisor function below, a direction above (normalize,
    cosine_similarity; discontinuous at a zero vector)."""

    def norms(xs, dim=1, eps=1e-12, **_):
        return [np.sqrt(np.sum(np.real(x) ** 2, axis=dim)) for x in xs]

    def branch(*xs, **hyper):
        eps = hyper.get("eps", 1e-12)
        return np.stack([n > eps for n in norms(xs, **hyper)])

    def margin(*xs, **hyper):
        eps = hyper.get("eps", 1e-12)
        return float(min(np.min(np.abs(n - eps), initial=np.inf) for n in norms(xs, **hyper)))

    return branch, margin


# ---------------------------------------------------------------- kinks of the wider catalogue


def _gap(block):
    """The gap between the two largest values along the last axis (inf for one value)."""
    if block.shape[-1] < 2:
        return np.inf
    top = np.sort(np.real(block).astype(np.float64), axis=-1)[..., -2:]
    return float(np.min(top[..., 1] - top[..., 0], initial=np.inf))


def adaptive_max_branch(x, output_size=1):
    nd = x.ndim - 2
    picks = _ref_ops[f"adaptive_max_pool{nd}d"].forward(x, output_size)[1][2]
    return np.stack([k for _, _, k in picks])  # the winner of each cell


def adaptive_max_margin(x, output_size=1):
    from reference_impl.spatial import windows_nd

    nd = x.ndim - 2
    cells, _ = windows_nd(x.shape[-nd:], output_size)
    gaps = [_gap(x[(Ellipsis,) + tuple(slice(a, b) for _, (a, b) in cell)].reshape(x.shape[:-nd] + (-1,)))
            for cell in cells]
    return float(min(gaps, default=np.inf))


def adaptive_max_subgradient(inputs, hyper, g, gc, gr, tol):
    """max_pool2d's rule on adaptive windows (which overlap where the sizes do not
    divide), in 1, 2 or 3 spatial dims: an element tied for the maximum of some
    cells has a gradient between the sums of those cells' negative and positive
    gradients (plus what it gets as the sole maximum of others), every (sample,
    channel) keeps its total, and elements tied nowhere get the reference's."""
    from reference_impl.spatial import windows_nd

    (x,), (gc,), (gr,) = inputs, gc, gr
    nd = x.ndim - 2
    name = f"adaptive_max_pool{nd}d"
    cells, _ = windows_nd(x.shape[-nd:], hyper.get("output_size", 1))
    fixed, lo_var, hi_var = (np.zeros(x.shape) for _ in range(3))
    at = np.zeros(x.shape, dtype=bool)
    xr = np.real(x)
    for cell in cells:
        index = (Ellipsis,) + tuple(k for k, _ in cell)
        region = (Ellipsis,) + tuple(slice(a, b) for _, (a, b) in cell)
        block = xr[region]
        top = block.reshape(block.shape[:2] + (-1,)).max(axis=-1).reshape(block.shape[:2] + (1,) * nd)
        is_max = block == top
        count = is_max.reshape(block.shape[:2] + (-1,)).sum(axis=-1).reshape(block.shape[:2] + (1,) * nd)
        gi = g[index].reshape(g.shape[:2] + (1,) * nd)
        tied = is_max & (count > 1)
        fixed[region] += np.where(is_max & ~tied, gi, 0)
        lo_var[region] += np.where(tied, np.minimum(gi, 0), 0)
        hi_var[region] += np.where(tied, np.maximum(gi, 0), 0)
        at[region] |= tied
    return _judge_ties(name, "cell", fixed, lo_var, hi_var, at, gc, gr, tol)


def embedding_padding_row(shapes, hyper):
    """The table row padding_idx names: looked up, never trained."""
    pad = hyper.get("padding_idx")
    if pad is None:
        return {}
    mask = np.zeros(shapes["table"], dtype=bool)
    mask[pad] = True
    return {"table": mask}


def _grid_pixels(x, grid, align_corners):
    """grid_sample's pixel coordinates before any clamping (its kinks: pixel
    centres for bilinear, half-way between them for nearest; the border's edges
    are pixel centres too)."""
    from reference_impl.spatial import grid_pixel

    h, w = np.shape(x)[2:]
    grid = np.real(grid)
    return (grid_pixel(grid[..., 0], w, align_corners, "zeros")[0], grid_pixel(grid[..., 1], h, align_corners, "zeros")[0])


def grid_sample_branch(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    shift = 0.5 if mode == "nearest" else 0.0
    return np.stack([np.floor(p + shift) for p in _grid_pixels(x, grid, align_corners)])


def grid_sample_margin(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    shift = 0.5 if mode == "nearest" else 0.0
    return float(min(np.min(np.abs(p + shift - np.rint(p + shift)), initial=np.inf)
                     for p in _grid_pixels(x, grid, align_corners)))


def grid_sample_subgradient(inputs, hyper, g, gc, gr, tol):
    """Bilinear grid_sample with a grid coordinate exactly on a pixel centre: the
    output is continuous there, so x's gradient is the reference's, and the
    grid's lies between grad_out times the left and the right slope along that
    coordinate (one-sided differences of the reference forward; every point
    moves at once, each output reading one point).  Nearest keeps the
    reference's choice at a point half-way between two pixels."""
    (x, grid), (gxc, ggc), (gxr, ggr) = inputs, gc, gr
    off = _off_kink("grid_sample", "x", gxc, gxr, np.zeros(np.shape(gxr), bool), tol)
    if off or hyper.get("mode", "bilinear") != "bilinear":
        return off or _off_kink("grid_sample", "grid", ggc, ggr, np.zeros(np.shape(ggr), bool), tol), ""
    at = np.stack([p == np.rint(p) for p in _grid_pixels(x, grid, hyper.get("align_corners", False))], axis=-1)
    off = _off_kink("grid_sample", "grid", ggc, ggr, at, tol)
    if off or not np.any(at):
        return off, ""
    forward = _ref_ops["grid_sample"].forward
    f0 = forward(x, grid, **hyper)[0]
    h = 1e-7 * np.maximum(1.0, np.abs(grid)) * at
    sides = []
    for sign in (1.0, -1.0):
        moved = [np.sum(g * (forward(x, grid + sign * h * (np.arange(2) == k), **hyper)[0] - f0), axis=1)
                 for k in range(2)]
        sides.append(np.stack(moved, axis=-1) / np.where(at, sign * h, 1.0))
    right, left = sides
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    slack = 1e-5 * np.maximum(1.0, np.maximum(np.abs(left), np.abs(right))) + _local_tolerance(ggr, tol)
    outside = at & ((ggc < lo - slack) | (ggc > hi + slack))
    if np.any(outside):
        i = tuple(int(j) for j in np.argwhere(outside)[0])
        return (f"grid_sample: grid coordinate {i} is exactly on a pixel centre, where the subdifferential of the "
                f"loss along it is [{lo[i]:.10g}, {hi[i]:.10g}] (left {left[i]:.10g}, right {right[i]:.10g}); the "
                f"candidate gave {ggc[i]:.10g}"), ""
    i = tuple(int(j) for j in np.argwhere(at)[0])
    return "", (f"a grid coordinate of grid_sample is exactly on a pixel centre at {int(np.sum(at))} element(s), e.g. "
                f"{i}: the left slope gives {left[i]:.10g}, the right {right[i]:.10g}, the candidate {ggc[i]:.10g}, "
                f"reference {ggr[i]:.10g}")


def lp_pool_branch(x, norm_type=2.0, kernel_size=2, stride=None):
    s = _ref_ops[f"lp_pool{x.ndim - 2}d"].forward(x, norm_type, kernel_size, stride)[1][3]
    return np.real(s) > 0 if norm_type == 1 else np.real(s) != 0


def lp_pool_margin(x, norm_type=2.0, kernel_size=2, stride=None):
    # p = 2: a window's 2-norm is its distance to the all-zero window, where sqrt is
    # not differentiable; p = 1: |sum| / sqrt(window size) is the distance to sum = 0
    nd = x.ndim - 2
    if norm_type == 2:
        s = _ref_ops[f"lp_pool{nd}d"].forward(np.real(x), 2.0, kernel_size, stride)[1][3]
        return float(np.min(np.sqrt(np.abs(s)), initial=np.inf))
    s = _ref_ops[f"lp_pool{nd}d"].forward(np.real(x), 1.0, kernel_size, stride)[1][3]
    k = np.prod(pair(kernel_size) if nd == 2 else (kernel_size,))
    return float(np.min(np.abs(s), initial=np.inf) / np.sqrt(k))


def pdist_branch(x, p=2.0):
    return _ref_ops["pdist"].forward(np.real(x), p)[0] > 0


def pdist_margin(x, p=2.0):
    return float(np.min(_ref_ops["pdist"].forward(np.real(x), p)[0], initial=np.inf))


def cosine_embedding_branch(x1, x2, target, margin=0.0, **_):
    return _ref_ops["cosine_embedding"].forward(np.real(x1), np.real(x2), target, margin)[1][6] > 0


def cosine_embedding_margin(x1, x2, target, margin=0.0, **_):
    # |cos - margin| over the gradient of cos (at most 1 / ||x||) bounds the distance
    x1, x2 = np.real(x1), np.real(x2)
    cos = _ref_ops["cosine_embedding"].forward(x1, x2, target, margin)[1][5]
    scale = np.minimum(np.linalg.norm(x1, axis=-1), np.linalg.norm(x2, axis=-1))
    return float(np.min(np.where(target == -1, np.abs(cos - margin) * scale, np.inf), initial=np.inf))


def _triplet_terms(anchor, positive, negative, margin, eps, swap):
    from reference_impl.losses import distance

    a, p, n = (np.real(t) for t in (anchor, positive, negative))
    (d_ap, v_ap), (d_an, v_an), (d_pn, v_pn) = distance(a, p, eps), distance(a, n, eps), distance(p, n, eps)
    d_neg = np.minimum(d_an, d_pn) if swap else d_an
    # a distance near 0 is the norm's kink (|a - p + eps| itself for one feature):
    # which side of 0 each component of a close pair is on
    near = np.concatenate([np.where(d[..., None] < 1e-3, np.sign(v), 0) for d, v in
                           ((d_ap, v_ap), (d_an, v_an), (d_pn, v_pn))], axis=-1)
    return margin + d_ap - d_neg, (d_an - d_pn) if swap else np.full(d_an.shape, np.inf), near


def triplet_terms(anchor, positive, negative, margin=1.0, eps=1e-6, swap=False, reduction="mean", **_):
    """The size of the terms each row's margin + d(a, p) - d(a, n) sums (Note
    [Loss rounding] in sources/numeric.py): two distances far above their
    difference (an anchor far from both) cancel to within eps of themselves."""
    from reference_impl.losses import distance

    a, p, n = (np.real(t) for t in (anchor, positive, negative))
    z, _, _ = _triplet_terms(a, p, n, margin, eps, swap)
    d_neg = np.minimum(distance(a, n, eps)[0], distance(p, n, eps)[0]) if swap else distance(a, n, eps)[0]
    rows = np.where(z > 0, abs(margin) + distance(a, p, eps)[0] + d_neg, 0.0)
    return rows if reduction == "none" else float(np.sum(rows) if reduction == "sum" else np.mean(rows))


def triplet_branch(anchor, positive, negative, margin=1.0, eps=1e-6, swap=False, **_):
    z, swing, near = _triplet_terms(anchor, positive, negative, margin, eps, swap)
    return np.concatenate([np.stack([z > 0, swing > 0], axis=-1), near > 0], axis=-1)


def triplet_margin_rule(anchor, positive, negative, margin=1.0, eps=1e-6, swap=False, **_):
    # each distance moves at most 1 per unit of input: |z| / 3 bounds the distance to the hinge
    z, swing, _ = _triplet_terms(anchor, positive, negative, margin, eps, swap)
    return float(min(np.min(np.abs(z), initial=np.inf), np.min(np.abs(swing), initial=np.inf)) / 3)


def multi_margin_branch(x, target, p=1, margin=1.0, **_):
    rows = np.arange(x.shape[0])
    z = margin - np.real(x)[rows, target][:, None] + np.real(x)
    return z > 0


def multi_margin_margin(x, target, p=1, margin=1.0, **_):
    rows = np.arange(x.shape[0])
    z = margin - np.real(x)[rows, target][:, None] + np.real(x)
    other = np.arange(x.shape[1])[None, :] != target[:, None]
    return float(np.min(np.abs(z[other]), initial=np.inf) / np.sqrt(2))


def _multilabel_z(x, target):
    from reference_impl.losses import label_sets

    x = np.real(x)
    is_target = np.zeros(x.shape, dtype=bool)
    for r, labels in enumerate(label_sets(target)):
        is_target[r, labels] = True
    pairs = is_target[:, :, None] & ~is_target[:, None, :]
    return 1 - x[:, :, None] + x[:, None, :], pairs


def multilabel_margin_branch(x, target, **_):
    z, pairs = _multilabel_z(x, target)
    return pairs & (z > 0)


def multilabel_margin_margin(x, target, **_):
    z, pairs = _multilabel_z(x, target)
    return float(np.min(np.abs(z[pairs]), initial=np.inf) / np.sqrt(2))


def embedding_bag_branch(ids, table, *weights, mode="mean", offsets=None):
    if mode != "max":
        return np.zeros(1, dtype=bool)
    winners = _ref_ops["embedding_bag"].forward(ids, np.real(table), *weights, offsets=offsets, mode=mode)[1][5]
    return np.concatenate([w for w in winners if w is not None] or [np.zeros(0, dtype=int)])


def embedding_bag_margin(ids, table, *weights, mode="mean", offsets=None):
    # in max mode: the gap between a bag's largest value and the next one from another id
    if mode != "max":
        return np.inf
    from reference_impl.spatial import bags

    flat, table = ids.reshape(-1), np.real(table)
    gaps = []
    for positions in bags(ids, offsets):
        distinct = np.unique(flat[positions])
        if len(distinct) > 1:
            gaps.append(_gap(table[distinct].T))
    return float(min(gaps, default=np.inf))


def bce_branch(p, target, **_):
    """binary_cross_entropy clamps each log at -100, and torch's backward divides
    by max(p (1 - p), 1e-12): within 1e-12 of 0 or 1 (a saturated sigmoid) the
    derivative torch computes is no longer the forward's, and 1 - p has lost its
    digits anyway; the branch is which side of that clamp each p is on."""
    r = np.real(p)
    return r * (1 - r) > 1e-12


def bce_margin(p, target, **_):
    # inside the clamp (p (1 - p) <= 1e-12) the derivative torch computes is not the
    # forward's at all: such a p sits on the kink
    r = np.real(p)
    if np.any(r * (1 - r) <= 1e-12):
        return 0.0
    return float(np.min(np.abs(np.minimum(r, 1 - r) - 1e-12), initial=np.inf))


def rnn_branch(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """A relu RNN's kinks: the sign of every step's pre-activation (none for tanh)."""
    if nonlinearity != "relu":
        return np.zeros(1, dtype=bool)
    steps = _ref_ops["rnn"].forward(np.real(x), np.real(h0), np.real(w_ih), np.real(w_hh), np.real(b_ih),
                                    np.real(b_hh), nonlinearity)[1][3]
    return np.stack([z > 0 for _, z in steps])


def rnn_margin(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    if nonlinearity != "relu":
        return np.inf
    steps = _ref_ops["rnn"].forward(np.real(x), np.real(h0), np.real(w_ih), np.real(w_hh), np.real(b_ih),
                                    np.real(b_hh), nonlinearity)[1][3]
    return float(min(np.min(np.abs(z), initial=np.inf) for _, z in steps))


def binary_extreme_rule(largest):
    """maximum / minimum: which operand wins each element; the margin is how close
    the two are (a tie is the kink, where torch splits the gradient)."""

    def branch(a, b, **_):
        return np.real(a) > np.real(b) if largest else np.real(a) < np.real(b)

    def margin(a, b, **_):
        return float(np.min(np.abs(np.real(a) - np.real(b)), initial=np.inf))

    return branch, margin


def reduce_extreme_rule(largest):
    """amax / amin over dim: the winner along the axis; the margin is the gap to the
    runner-up (a tie is the kink)."""

    def branch(x, dim=-1, keepdim=False):
        r = np.real(x)
        return np.argmax(r, axis=dim) if largest else np.argmin(r, axis=dim)

    def margin(x, dim=-1, keepdim=False):
        r = np.moveaxis(np.real(x), dim, -1)
        return _gap(r if largest else -r)

    return branch, margin


def std_branch(x, dim=-1, **_):
    """std = sqrt(var) is a cone at a constant row (std(c + t v) = |t| std(v)):
    which rows are constant."""
    r = np.real(x)
    return np.all(r == np.take(r, [0], axis=dim), axis=dim)


def std_margin(x, dim=-1, **_):
    """How far the row nearest to constant is from it: its std (torch's
    backward gives 0 at a constant row, 0/0 masked; a row equal but for the
    rounding of its mean gives any direction)."""
    return float(np.min(np.std(np.real(x).astype(np.float64), axis=dim), initial=np.inf))


def cosine_similarity_torch_deviation(x1, x2, dim=1, eps=1e-8, **_):
    """torch clamps cosine_similarity's norms at eps in place under no_grad, so
    its backward still differentiates the norm it replaced: a vector whose norm
    is below eps gets a gradient that differences of torch's own forward do
    not (0.8% off for a norm of 1e-10)."""
    small = [float(np.min(np.sqrt(np.sum(np.abs(x) ** 2, axis=dim)), initial=np.inf)) for x in (x1, x2)]
    if min(small) >= eps:
        return ""
    return (f"an input of cosine_similarity has a norm of {min(small):.3g}, below eps={eps:g}, where torch's backward "
            f"differentiates the norm its forward clamped (see Note [Torch's own deviations])")


# ---------------------------------------------------------------- spreads of normalisations


def _relative_spread(groups) -> float:
    """The smallest std / max|x| of the rows of ``groups`` (inf for a row of zeros,
    which every precision normalises exactly)."""
    g = np.real(np.asarray(groups)).astype(np.float64)
    if g.size == 0:
        return float("inf")
    size = np.max(np.abs(g), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(size > 0, np.std(g, axis=1) / np.where(size > 0, size, 1.0), np.inf)
    return float(np.min(ratio, initial=np.inf))


def layer_norm_spread(x, weight=None, *_, normalized_shape=None, **__):
    x = np.asarray(x)
    k = len(normalized_shape) if weight is None else np.ndim(weight)
    return _relative_spread(x.reshape(-1, int(np.prod(x.shape[x.ndim - k:]))))


def batch_norm_spread(x, *_, **__):
    x = np.asarray(x)
    return _relative_spread(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1))


def group_norm_spread(x, *_, num_groups=1, **__):
    x = np.asarray(x)
    return _relative_spread(x.reshape(x.shape[0] * num_groups, -1))


def instance_norm_spread(x, *_, **__):
    x = np.asarray(x)
    return _relative_spread(x.reshape(x.shape[0] * x.shape[1], -1))


def reduction_spread(x, *_, dim=-1, **__):
    """var and std subtract the mean along ``dim`` as a normalisation does: their
    backward, 2 (x - mean) / (n - correction), cancels as one."""
    x = np.moveaxis(np.asarray(x), dim, -1)
    return _relative_spread(x.reshape(-1, x.shape[-1]))


def ctc_terms(log_probs, targets, input_lengths=None, target_lengths=None, blank=0, reduction="mean", **_):
    """The size of the terms ctc_loss is summed from (Note [Loss rounding] in
    sources/numeric.py): -log of a probability that code working in probability
    space (Graves's per-step rescaling) builds as a sum of one log per step, of
    numbers near 1, each rounded to eps of 1; a loss near 0 (every alignment
    certain) is then known to eps times its steps, not eps times itself."""
    from reference_impl.losses import ctc_lengths

    inputs, labels = ctc_lengths(*np.shape(log_probs)[:2], np.shape(targets)[1], input_lengths, target_lengths)
    per = np.asarray(inputs, dtype=np.float64)
    if reduction == "none":
        return per
    if reduction == "sum":
        return float(per.sum())
    return float(np.mean(per / np.maximum(np.asarray(labels), 1)))
