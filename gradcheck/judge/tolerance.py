"""The tolerance model and the judgement of one pair of arrays under it.

Note [Tolerance model]
Element i of gradient a is judged against the other source's b by

    |a_i - b_i| <= rtol * (|b_i| + floor) + k * predicted_i

rtol comes from a table keyed by (kind of the comparison, dtype): two analytic
sources agree to rounding of the forward and backward arithmetic, a finite
difference only to its truncation and rounding error (Note [Finite-difference
step]).  The floor is the largest gradient of the whole case: rounding follows
the size of the terms that are summed, not each result, so a tiny element is not
held to a tiny absolute error, and a gradient that is small by cancellation
(batch norm's projection) or zero in exact arithmetic (the bias just before a
batch norm, which removes any shift) is judged at the scale of those terms.  A
bug changes a gradient by its own size, which is far above rtol times that floor
for every tensor that matters to the loss.  ``predicted_i`` is the finite-difference engine's own
error estimate for that element (zero for analytic sources) with safety factor
k = 4.  A scalar output (a loss) is a reduction whose value can cancel far
below its terms, so its floor is max(|b|, 1) rather than |b|: inputs are drawn
at unit scale, and rounding error follows the terms, not the sum.  The record's ``ratio`` is the largest left/right quotient: at most 1
passes, and how far above 1 says how bad a failure is.  Every number used is in
the record, so no tolerance is applied that the report does not show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..case import eps_of
from ..sources.base import ANALYTIC
from ..sources.numeric import dot

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "coarser_dtype", "Judgement", "judge", "element_ratios",
           "PREDICTED_SAFETY"]

PREDICTED_SAFETY = 4.0


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float = 0.0


# (kind, dtype) -> Tolerance; kind is "analytic" or a finite-difference method.
# atol is the absolute floor for a case whose gradients are all zero in exact
# arithmetic (a loss that is constant in its inputs): about the rounding of
# unit-scale terms in the dtype, and in finite differences eps / h of them.
TOLERANCES = {
    (ANALYTIC, "float64"): Tolerance(1e-10, 1e-13),
    (ANALYTIC, "float32"): Tolerance(2e-4, 1e-6),
    (ANALYTIC, "float16"): Tolerance(2e-2, 1e-3),
    (ANALYTIC, "bfloat16"): Tolerance(1e-1, 1e-2),
    ("central", "float64"): Tolerance(1e-8, 1e-10),
    ("richardson", "float64"): Tolerance(1e-8, 1e-10),
    ("complex", "float64"): Tolerance(1e-12, 1e-14),
    ("central", "float32"): Tolerance(5e-3, 1e-4),
    ("richardson", "float32"): Tolerance(5e-3, 1e-4),
    ("complex", "float32"): Tolerance(1e-5, 1e-7),
}


def tolerance_for(kind_a: str, kind_b: str, dtype: str, overrides=None) -> Tolerance:
    """The tolerance for comparing sources of these kinds in ``dtype``: a
    finite-difference side sets the kind; otherwise the pair is analytic."""
    kind = next((k for k in (kind_b, kind_a) if k != ANALYTIC), ANALYTIC)
    table = {**TOLERANCES, **(overrides or {})}
    try:
        return table[(kind, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance for ({kind!r}, {dtype!r}); known: {sorted(table)}") from None


def coarser_dtype(a: str, b: str) -> str:
    """The less precise of two dtypes: the one a comparison between them is held to."""
    return a if eps_of(a) >= eps_of(b) else b


@dataclass(frozen=True)
class Judgement:
    """Everything a comparison of two arrays found, at its worst element and over all."""

    max_abs_err: float
    max_rel_err: float
    cosine: float
    ratio: float  # the worst |a - b| / allowed; <= 1 passes
    flat: int  # the worst element, flat
    index: str  # the worst element, as an index
    value_a: float
    value_b: float
    mismatched: int
    numel: int
    nondifferentiable: int  # elements beyond tolerance that were flagged (a kink, rounding noise)
    allowed: float  # what was allowed at the worst element: atol + rtol (|b| + floor) + k predicted
    floor: float  # the scale rtol is applied to besides |b|
    predicted: float  # the predicted numerical error at the worst element (0 for analytic pairs)

    @property
    def fields(self) -> dict:
        """The record's numeric fields."""
        return {k: getattr(self, k) for k in ("max_abs_err", "max_rel_err", "cosine", "ratio", "index", "value_a",
                                              "value_b", "mismatched", "numel", "nondifferentiable", "allowed",
                                              "floor", "predicted")}


def format_index(shape, flat) -> str:
    if not shape:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def _ratios(a, b, predicted, tol: Tolerance, case_scale=0.0):
    """|a - b| / allowed element by element, the allowed error, the predicted part
    of it, and the floor rtol is applied to besides |b|."""
    diff = np.abs(a - b)
    bmax = float(np.max(np.abs(b), initial=0.0))
    floor = max(bmax, 1.0) if b.ndim == 0 else max(bmax, case_scale)
    allowed = tol.atol + tol.rtol * (np.abs(b) + floor)
    pred = np.zeros(()) if predicted is None else PREDICTED_SAFETY * np.asarray(predicted, dtype=np.float64)
    allowed = allowed + pred
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(diff == 0, 0.0, diff / allowed)
    return ratios, allowed, pred, floor


def element_ratios(a, b, predicted, tol: Tolerance, case_scale=0.0) -> np.ndarray:
    """Each element's |a - b| over what ``judge`` allows it: above 1 mismatches."""
    return _ratios(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), predicted, tol, case_scale)[0]


def judge(a, b, predicted, tol: Tolerance, kink=None, case_scale=0.0) -> Judgement:
    """Elementwise comparison of ``a`` against ``b`` (Note [Tolerance model]).
    Elements flagged in ``kink`` are counted apart and do not decide the ratio."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} against {b.shape}")
    diff = np.abs(a - b)
    bmax = float(np.max(np.abs(b), initial=0.0))
    ratios, allowed, pred, floor = _ratios(a, b, predicted, tol, case_scale)
    nondiff = 0
    if kink is not None:
        kink = np.broadcast_to(np.asarray(kink, dtype=bool), ratios.shape)
        nondiff = int(np.sum(kink & (ratios > 1)))
        ratios = np.where(kink, 0.0, ratios)
    flat = int(np.argmax(ratios)) if ratios.size else 0
    na, nb = math.sqrt(dot(a, a)), math.sqrt(dot(b, b))
    cosine = dot(a, b) / (na * nb) if na > 0 and nb > 0 else float(na == nb)
    worst = float(np.max(diff, initial=0.0))
    at = (lambda arr: float(np.broadcast_to(arr, ratios.shape).flat[flat]) if ratios.size else 0.0)
    return Judgement(
        max_abs_err=worst, max_rel_err=worst / bmax if bmax > 0 else worst, cosine=cosine,
        ratio=float(ratios.flat[flat]) if ratios.size else 0.0, flat=flat, index=format_index(a.shape, flat),
        value_a=float(a.flat[flat]) if a.size else math.nan, value_b=float(b.flat[flat]) if b.size else math.nan,
        mismatched=int(np.sum(ratios > 1)), numel=int(a.size), nondifferentiable=nondiff,
        allowed=at(allowed), floor=floor, predicted=at(pred / PREDICTED_SAFETY))
