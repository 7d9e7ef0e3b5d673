"""Finite differences over any forward function.

``f`` maps a dict of arrays to an array (a scalar loss, or any output).  Three
methods, each in a full mode (every element: a Jacobian) and a directional mode
(derivatives along given directions, all tensors perturbed together):

* ``central``: (f(x + h) - f(x - h)) / 2h, error O(h^2) + rounding O(eps/h);
* ``richardson``: (4 D(h/2) - D(h)) / 3 from two central stencils, error O(h^4);
* ``complex``: Im f(x + ih) / h, no subtraction, so no rounding error: exact to
  working precision for forwards that accept complex input.

Note [Finite-difference step]
The error of a central difference is about h^2 |f'''| / 6 (truncation) plus
eps |f| / h (rounding of the two evaluations).  Balancing the two gives
h ~ eps^(1/3): 6e-6 for float64 (best relative error ~4e-11) and 5e-3 for float32
(~2e-5).  torch.autograd.gradcheck's fixed h = 1e-6 is right for float64 but gives
float32 a rounding error of eps32 / 1e-6 ~ 0.1, the reason float32 checks "fail".
Richardson cancels the h^2 term, so its balance point is eps^(1/5).  The step is
scaled by max(1, |x|) per element so that x + h differs from x in its last bits
by the same relative amount at any magnitude.  With each derivative we return a
predicted error: the rounding bound eps (|f(x+h)| + |f(x-h)|) / 2h, and for
Richardson also the size of the h^4 remainder estimated from the two stencils.

Note [Loss rounding]
The rounding bound eps |f| / h assumes f is computed to within eps of its own
size.  A loss that sums terms of mixed sign is computed only to within eps of
the size of its terms: the probe <g, y> with outputs y near 1000 (a large
offset) and random signs in g has |f| several times below sum |g y|, and each
y_i carries its own rounding of eps |y_i|.  Central differences are judged on
the cheap bound first; when one fails, the re-judgement passes ``noise``, the
magnitude of the loss's terms (sum |g y| for the probe; for a loss that
cancels inside itself, cosine_embedding's 1 - cos, the size its OpDef.terms
gives), and the bound uses max(|f|, noise).  A bug moves a gradient by far more
than that.

Note [Kinks]
At a point where f is not differentiable (relu at 0, a max-pool tie, smooth_l1 at
its threshold) a difference quotient straddling the kink averages two slopes and
disagrees with any analytic gradient.  When ``f`` also returns a *branch
signature* (which side of every kink each kink op is on), an element whose
stencil points do not all share the signature of x is marked ``kink``: the
comparison calls it nondifferentiable instead of failing.  Elements whose stencil
stays on one branch are still checked, so a relu backward that lets gradient
through negative inputs is still caught.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..case import DTYPES, eps_of

__all__ = ["METHODS", "step_size", "FDResult", "jacobian", "jacobian_batched", "directional", "refine", "richardson",
           "largest_magnitude", "dot"]

METHODS = ("central", "richardson", "complex")


def _complex(dtype):
    return np.dtype(DTYPES[str(np.dtype(dtype))].complex or "complex128")


def step_size(dtype, method: str = "central") -> float:
    """The base step h0 for ``method`` in ``dtype`` (see Note [Finite-difference step])."""
    try:
        eps = eps_of(dtype)
    except ValueError:
        raise ValueError(f"no finite-difference step for dtype {dtype!r}; use one of {sorted(DTYPES)}") from None
    if method == "central":
        return eps ** (1 / 3)
    if method == "richardson":
        return eps ** (1 / 5)
    if method == "complex":
        # Any h far below sqrt(eps) leaves the h^2 term under rounding; a tiny h
        # keeps Im f(x + ih) exact for the whole range of |x|.
        return 1e-20 if eps < 1e-10 else 1e-10
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


@dataclass
class FDResult:
    """A numerical derivative, its predicted absolute error and (when branch
    signatures were given) whether its stencil crossed a kink, element by element."""

    value: np.ndarray
    error: np.ndarray
    kink: np.ndarray | None = None


class _Probe:
    """Evaluates f, and keeps whether any evaluation left the branch of x."""

    def __init__(self, f, tensors, with_branches):
        self.f, self.tensors, self.with_branches = f, tensors, with_branches
        self.base = self._call(tensors)[1] if with_branches else None
        self.crossed = False

    def _call(self, t):
        out = self.f(t)
        return (np.asarray(out[0]), out[1]) if self.with_branches else (np.asarray(out), None)

    def __call__(self, t):
        value, sig = self._call(t)
        if self.with_branches and sig != self.base:
            self.crossed = True
        return value


def richardson(d_h, d_half, rounding):
    """Richardson extrapolation of central differences at h (``d_h``) and h/2
    (``d_half``), whose rounding error at h is ``rounding``: the value, and its
    error bound.

    D(h) - D(h/2) = (3/4) c h^2 + O(h^4), so |D(h) - D(h/2)| / 3 is the error of
    D(h/2).  The extrapolated value is more accurate still; we report this bound,
    not a guess at the smaller h^4 remainder, so a high-curvature function is
    never judged against an error it cannot reach."""
    return (4 * d_half - d_h) / 3, 3 * rounding + np.abs(d_half - d_h) / 3


def _evaluate(f, tensors, name, x):
    return f({**tensors, name: x})


def _central(f, tensors, name, x, flat_index, h):
    xp, xm = x.copy(), x.copy()
    xp.flat[flat_index] += h
    xm.flat[flat_index] -= h
    # The step actually taken, after x +- h is rounded to x's dtype.
    two_h = float(xp.flat[flat_index]) - float(xm.flat[flat_index])
    fp, fm = _evaluate(f, tensors, name, xp), _evaluate(f, tensors, name, xm)
    return (fp - fm) / two_h, (np.abs(fp) + np.abs(fm)) / 2


def _derivative(f, tensors, name, x, flat_index, method, h0, eps):
    scale = max(1.0, abs(float(np.real(x.flat[flat_index]))))
    h = h0 * scale
    if method == "complex":
        xc = x.astype(_complex(x.dtype))
        xc.flat[flat_index] += 1j * h
        out = _evaluate(f, tensors, name, xc)
        # Rounding of f itself, carried into the imaginary part: tiny.
        return np.imag(out) / h, eps * np.abs(np.imag(out)) / h
    d1, fabs = _central(f, tensors, name, x, flat_index, h)
    rounding = eps * fabs / h
    if method == "central":
        return d1, rounding
    d2, _ = _central(f, tensors, name, x, flat_index, h / 2)
    return richardson(d1, d2, rounding)


# Note [Step descent]
# The central step is sized by the element's magnitude, h0 max(1, |x|), which
# is right when the loss varies on that scale.  An input offset far from its
# spread (x = 1e3 + noise into a layer norm) varies on the scale of the spread:
# in float32 the step is then 4.9, five spreads wide, and every difference
# taken from it measures curvature, not slope.  So a mismatched element is
# differenced again at h, h/2, h/4, ... until rounding alone (which doubles as
# the step halves) exceeds the best bound found, and judged by the Richardson
# value whose bound is smallest once widened to its distance from the values
# of the neighbouring steps (the smallest of a dozen bounds is biased low: two
# estimates agreeing by coincidence are not a converged one).  A wrong
# gradient stays wrong: the estimates converge to the true slope, not to the
# candidate's.  Where the chosen value neither shows the h^2 convergence
# pattern nor has a bound small beside itself, the element is not converged,
# like a kink, and never a failure on this evidence alone.


def _converging(f, tensors, name, x, flat_index, h0, eps, noise=0.0, levels: int = 12):
    """Richardson from central differences at a descending sequence of steps,
    h, h/2, h/4, ... (Note [Step descent]): the value and error bound of the
    Richardson value whose bound (widened to its neighbours) is smallest, and
    whether the differences converge there.

    In the asymptotic regime D(h) - D(h/2) is four times D(h/2) - D(h/4).  When
    the loss curves on a scale below every step tried (a near-singular
    normalisation in float32), the differences disagree without that pattern
    and no bound derived from them means anything: such an element is returned
    as not converged."""
    scale = max(1.0, abs(float(np.real(x.flat[flat_index]))))
    h = h0 * scale
    d, fabs = _central(f, tensors, name, x, flat_index, h)
    ds, roundings = [d], [eps * np.maximum(fabs, noise) / h]
    values, bounds = [], []
    for k in range(1, levels + 1):
        step = h / 2 ** k
        d, fabs = _central(f, tensors, name, x, flat_index, step)
        ds.append(d)
        roundings.append(eps * np.maximum(fabs, noise) / step)
        value, bound = richardson(ds[k - 1], ds[k], roundings[k])
        values.append(np.asarray(value, dtype=np.float64))
        bounds.append(np.asarray(bound, dtype=np.float64))
        if k >= 4 and np.all(3 * roundings[k] > _neighbourly(values, bounds).min(axis=0)):
            break  # rounding alone now exceeds the best bound: smaller steps only get worse
    errors = _neighbourly(values, bounds)
    k = np.argmin(errors, axis=0)
    shape = np.shape(ds[0])
    value, error = _at(values, k, shape), _at(errors, k, shape)
    # converged: the h^2 pattern where it was chosen, or a bound small beside the slope
    nxt = np.minimum(k + 2, len(ds) - 1)
    step12 = np.abs(_at(ds, k, shape) - _at(ds, k + 1, shape))
    step24 = np.abs(_at(ds, k + 1, shape) - _at(ds, nxt, shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = step12 / step24
    converged = ((step24 <= 4 * _at(roundings, nxt, shape)) | ((ratio > 3) & (ratio < 5.5))
                 | (error <= 0.05 * np.abs(value)))
    # not converged (a jump: relu's slope at 0 under a second-order check): the
    # pair's own bound, so that a disagreement shows as one, marked like a kink,
    # rather than vanishing under a bound as wide as the estimates' own spread
    error = np.where(converged, error, _at(bounds, k, shape))
    return value, error, ~converged


def _neighbourly(values, bounds):
    """Each Richardson value's bound, at least its distance to the values of the
    neighbouring steps: two estimates that agree by coincidence are not taken
    for a converged one (the smallest of many bounds is biased low otherwise)."""
    v, b = np.stack(values), np.stack(bounds)
    out = b.copy()
    if len(values) > 1:
        gap = np.abs(np.diff(v, axis=0))
        out[:-1] = np.maximum(out[:-1], gap)
        out[1:] = np.maximum(out[1:], gap)
    return out


def _at(values, index, shape):
    """``values[index]`` where ``index`` may be an array over the output's shape."""
    stack = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for v in values])
    index = np.asarray(index)
    if index.ndim == 0:
        return stack[int(index)]
    return np.take_along_axis(stack, index[None], 0)[0]


def refine(f, tensors: dict, wrt, with_branches: bool = False, elements=None, noise: float = 0.0) -> dict:
    """Richardson over descending steps with a convergence check (Note [Step
    descent]): ``{name: FDResult}`` whose ``kink`` also marks elements where the
    differences did not converge.
    ``elements``: flat indices to differentiate (results then 1-D, one per index).
    ``noise``: a floor under |f| in the rounding bound (Note [Loss rounding])."""
    probe = _Probe(f, tensors, with_branches)
    out = {}
    for name in wrt:
        x = np.asarray(tensors[name])
        # From the central step down: refinement is for losses that curve faster
        # than the central step assumed, so a larger Richardson step would not do.
        h0, eps = step_size(x.dtype, "central"), eps_of(x.dtype)
        values, errors, bad = [], [], []
        for i in range(x.size) if elements is None else elements:
            probe.crossed = False
            d, e, unconverged = _converging(probe, tensors, name, x, i, h0, eps, noise)
            values.append(d)
            errors.append(np.broadcast_to(e, np.shape(d)))
            bad.append(bool(np.any(unconverged)) or probe.crossed)
        v = np.moveaxis(np.asarray(values), 0, -1)
        e = np.moveaxis(np.asarray(errors), 0, -1)
        shape = x.shape if elements is None else (len(elements),)
        out[name] = FDResult(v.reshape(v.shape[:-1] + shape), e.reshape(e.shape[:-1] + shape),
                             np.asarray(bad).reshape(shape))
    return out


def jacobian(f, tensors: dict, wrt=None, method: str = "central", with_branches: bool = False,
             elements=None) -> dict:
    """d f / d tensors[name] for each name in ``wrt`` (default: every float tensor).

    Returns ``{name: FDResult}`` whose value has shape ``f_out.shape + x.shape``.
    With ``with_branches``, ``f`` returns ``(value, signature)`` and each result has
    a ``kink`` mask shaped like x (Note [Kinks]).  ``elements``: flat indices to
    differentiate, the same for every name (the last axis is then one per index).

        >>> import numpy as np
        >>> r = jacobian(lambda t: (t["x"] ** 3).sum(), {"x": np.array([1.0, 2.0])})
        >>> np.allclose(r["x"].value, [3.0, 12.0])
        True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if wrt is None:
        wrt = [k for k, v in tensors.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    probe = _Probe(f, tensors, with_branches)
    out = {}
    for name in wrt:
        x = np.asarray(tensors[name])
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"cannot differentiate {name!r}: dtype {x.dtype} is not floating point")
        h0, eps = step_size(x.dtype, method), eps_of(x.dtype)
        values, errors, kinks = [], [], []
        for i in range(x.size) if elements is None else elements:
            probe.crossed = False
            d, e = _derivative(probe, tensors, name, x, i, method, h0, eps)
            values.append(d)
            errors.append(np.broadcast_to(e, np.shape(d)))
            kinks.append(probe.crossed)
        # stack gives (x.size, *out); move the perturbed axis last, then unflatten it.
        v = np.moveaxis(np.asarray(values), 0, -1)
        e = np.moveaxis(np.asarray(errors), 0, -1)
        shape = x.shape if elements is None else (len(elements),)
        kink = np.asarray(kinks).reshape(shape) if with_branches else None
        out[name] = FDResult(v.reshape(v.shape[:-1] + shape), e.reshape(e.shape[:-1] + shape), kink)
    return out


def largest_magnitude(arrays) -> float:
    """max |x| over every element of ``arrays`` (real parts): the scale of a point.
    From max and min, so no |x| array the size of the model is made."""
    out = 0.0
    for x in arrays:
        x = np.real(np.asarray(x))
        if x.size:
            out = max(out, float(x.max()), -float(x.min()))  # methods: no dispatch wrapper a call
    return out


def dot(a, b) -> float:
    """sum(a * b) over every element, with no temporary the size of a.  einsum
    rather than np.dot: np.dot calls a threaded BLAS, whose threads fight torch's
    own for the cores (a 1e5-element np.dot right after a torch op took 8 ms on
    two cores, einsum 0.07 ms)."""
    a, b = np.ravel(a), np.ravel(b)
    # accumulated in float64 (or complex) whatever the inputs: int8 signs do not overflow
    return float(np.real(np.einsum("i,i->", a, b, dtype=np.result_type(a, b, np.float64))))


def _sq_norm(v) -> float:
    return dot(np.conj(v) if np.iscomplexobj(v) else v, v)


def directional(f, tensors: dict, directions: dict, method: str = "central",
                with_branches: bool = False, along=None, xmax: float | None = None,
                vnorm: float | None = None) -> FDResult:
    """The derivative of ``f`` along ``directions`` (a dict of arrays shaped like the
    tensors they perturb), all perturbed together in one stencil.  ``kink`` is a
    single boolean when ``with_branches`` (Note [Kinks]).  ``along(steps)``, when
    given, returns f at x + t * directions for each t in ``steps`` (a source that
    can step along a direction itself, without a copy of every tensor a step).
    ``xmax`` (``largest_magnitude`` of the tensors) and ``vnorm`` (the 2-norm of the
    directions), when the caller knows them: passes over every element saved.

    The step is h0 * max(1, max|x|) / ||v||_2: the point moves by h0 times its
    scale in Euclidean distance, as one element does in ``jacobian``.  Scaling by
    max|v| instead would move a million-element point a thousand times further,
    and truncation (third derivatives summed along v) would grow with the size.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = list(directions)
    xs = {n: np.asarray(tensors[n]) for n in names}
    dtype = xs[names[0]].dtype
    h0, eps = step_size(dtype, method), eps_of(dtype)
    if xmax is None:
        xmax = largest_magnitude(xs.values())
    if vnorm is None:
        vnorm = math.sqrt(sum(_sq_norm(v) for v in directions.values()))
    if vnorm == 0:
        raise ValueError("directional: every direction is zero")
    h = h0 * max(1.0, xmax) / vnorm
    if along is not None and method != "complex" and not with_branches:
        steps = [h, -h] if method == "central" else [h, -h, h / 2, -h / 2]
        fs = [np.asarray(v, dtype=np.float64) for v in along(steps)]
        d1, r1 = (fs[0] - fs[1]) / (2 * h), eps * (np.abs(fs[0]) + np.abs(fs[1])) / (2 * h)
        if method == "central":
            return FDResult(d1, r1, None)
        d2 = (fs[2] - fs[3]) / h
        return FDResult(*richardson(d1, d2, r1), None)

    # in each tensor's own dtype, so that x + t v keeps it
    directions = {n: np.asarray(directions[n], dtype=xs[n].dtype) for n in names}
    probe = _Probe(f, tensors, with_branches)

    def kink():
        return np.asarray(probe.crossed) if with_branches else None

    def at(t):
        return probe({**tensors, **{n: xs[n] + t * directions[n] for n in names}})

    if method == "complex":
        cdt = _complex(dtype)
        out = probe({**tensors, **{n: xs[n].astype(cdt) + 1j * h * directions[n] for n in names}})
        return FDResult(np.imag(out) / h, eps * np.abs(np.imag(out)) / h, kink())

    def central(step):
        fp, fm = at(step), at(-step)
        return (fp - fm) / (2 * step), eps * (np.abs(fp) + np.abs(fm)) / (2 * step)

    d1, r1 = central(h)
    if method == "central":
        return FDResult(d1, r1, kink())
    d2, _ = central(h / 2)
    return FDResult(*richardson(d1, d2, r1), kink())


def jacobian_batched(batched, tensors: dict, wrt, method: str = "central", chunk_bytes: int = 32 << 20) -> dict:
    """Like ``jacobian`` for a scalar ``f``, but evaluating perturbed copies in
    batches: ``batched(name, index, steps)`` returns f at copies of tensor ``name``
    whose flat element ``index[j]`` moved by ``steps[j]``, as many copies a batch
    as fit in ``chunk_bytes``; or ``(f, crossed)`` with a boolean per copy that
    left the branch of x, which becomes the result's ``kink`` (Note [Kinks]).
    Central and Richardson only."""
    if method not in ("central", "richardson"):
        raise ValueError(f"batched differences take 'central' or 'richardson', not {method!r}")
    out = {}
    for name in wrt:
        x = np.asarray(tensors[name])
        h0 = step_size(x.dtype, "central" if method == "central" else "richardson")
        eps = eps_of(x.dtype)
        flat = x.reshape(-1)
        values, errors = np.empty(x.size), np.empty(x.size)
        kinks = None
        chunk = max(1, min(x.size, chunk_bytes // max(2 * x.nbytes, 1)))  # 2 copies an element: + and -
        for start in range(0, x.size, chunk):
            idx = np.arange(start, min(start + chunk, x.size))
            h = h0 * np.maximum(1.0, np.abs(flat[idx]))

            def stencil(step):
                nonlocal kinks
                step = step.astype(x.dtype)
                # the step actually taken, after x +- h is rounded to x's dtype
                taken = (flat[idx] + step).astype(np.float64) - (flat[idx] - step).astype(np.float64)
                # both sides of the stencil in one batch: one call, half the overhead
                f = batched(name, np.concatenate([idx, idx]), np.concatenate([step, -step]))
                if isinstance(f, tuple):
                    f, crossed = f
                    kinks = np.zeros(x.size, dtype=bool) if kinks is None else kinks
                    kinks[idx] |= crossed[: len(idx)] | crossed[len(idx):]
                f = np.asarray(f, dtype=np.float64)
                fp, fm = f[: len(idx)], f[len(idx):]
                return (fp - fm) / taken, eps * (np.abs(fp) + np.abs(fm)) / taken

            d1, r1 = stencil(h)
            if method == "central":
                values[idx], errors[idx] = d1, r1
            else:
                d2, _ = stencil(h / 2)
                values[idx], errors[idx] = richardson(d1, d2, r1)
        out[name] = FDResult(values.reshape(x.shape), errors.reshape(x.shape),
                             None if kinks is None else kinks.reshape(x.shape))
    return out
