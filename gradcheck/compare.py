"""Comparing two sources' results: ``CheckRecord`` rows under a tolerance model.

Checks return data; asserting and reporting are thin layers over these records.

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
from dataclasses import asdict, dataclass, replace

import numpy as np

from .graph import Graph
from .numeric import dot as numeric_dot
from .sources import ANALYTIC, SourceResult

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "CheckRecord", "compare", "STATUSES"]

STATUSES = ("pass", "fail", "error", "nondifferentiable", "skipped")
JOINT = "(all tensors)"  # the tensor of a record comparing directions over every tensor at once
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


@dataclass(frozen=True)
class CheckRecord:
    """One comparison of one tensor between two sources (the fields reports use)."""

    case_id: str
    graph: str  # JSON
    seed: int
    op: str  # the op under test: a candidate's op, or the op the disagreement localises to
    tensor: str
    source_a: str
    source_b: str
    dtype: str  # the coarser of the two sources' dtypes
    device: str
    max_abs_err: float
    max_rel_err: float  # max |a - b| / max |b|
    cosine: float
    rtol: float
    atol: float
    ratio: float  # error / tolerance, worst element; <= 1 passes
    status: str
    seconds: float
    index: str = ""  # worst element
    value_a: float = math.nan
    value_b: float = math.nan
    mismatched: int = 0
    numel: int = 0
    nondifferentiable: int = 0  # elements beyond tolerance whose stencil crossed a kink
    nondeterminism: float = 0.0  # largest difference between two backward passes of a source
    message: str = ""
    consumer: str = ""  # the op that consumes the tensor (a leaf's first consumer; a node's own op)

    def to_dict(self):
        return asdict(self)

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "nondifferentiable", "skipped")


def _fmt_index(shape, flat):
    if not shape:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def _judge(a, b, predicted, tol, kink=None, case_scale=0.0):
    """Elementwise comparison; returns the record's numeric fields.  Elements
    flagged in ``kink`` are counted apart and do not decide the status."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} against {b.shape}")
    diff = np.abs(a - b)
    bmax = float(np.max(np.abs(b), initial=0.0))
    floor = max(bmax, 1.0) if b.ndim == 0 else max(bmax, case_scale)
    allowed = tol.atol + tol.rtol * (np.abs(b) + floor)
    if predicted is not None:
        allowed = allowed + PREDICTED_SAFETY * np.asarray(predicted, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(diff == 0, 0.0, diff / allowed)
    nondiff = 0
    if kink is not None:
        kink = np.broadcast_to(np.asarray(kink, dtype=bool), ratios.shape)
        nondiff = int(np.sum(kink & (ratios > 1)))
        ratios = np.where(kink, 0.0, ratios)
    flat = int(np.argmax(ratios)) if ratios.size else 0
    na, nb = math.sqrt(numeric_dot(a, a)), math.sqrt(numeric_dot(b, b))
    cosine = numeric_dot(a, b) / (na * nb) if na > 0 and nb > 0 else float(na == nb)
    return {
        "max_abs_err": float(np.max(diff, initial=0.0)),
        "max_rel_err": float(np.max(diff, initial=0.0) / bmax) if bmax > 0 else float(np.max(diff, initial=0.0)),
        "cosine": cosine,
        "ratio": float(ratios.flat[flat]) if ratios.size else 0.0,
        "index": _fmt_index(a.shape, flat),
        "value_a": float(a.flat[flat]) if a.size else math.nan,
        "value_b": float(b.flat[flat]) if b.size else math.nan,
        "mismatched": int(np.sum(ratios > 1)),
        "numel": int(a.size),
        "nondifferentiable": nondiff,
        "allowed": float(allowed.flat[flat]) if a.size else 0.0,
        "flat": flat,
    }


def failure_message(r: dict, tol: Tolerance, a_name: str, b_name: str) -> str:
    share = 100.0 * r["mismatched"] / max(r["numel"], 1)
    return (
        f"Mismatched elements: {r['mismatched']} / {r['numel']} ({share:.1f}%)\n"
        f"Greatest error/tolerance: {r['ratio']:.3g} at index {r['index']} "
        f"({a_name}={r['value_a']:.10g}, {b_name}={r['value_b']:.10g}, "
        f"|diff|={abs(r['value_a'] - r['value_b']):.3g}, allowed {r['allowed']:.3g})\n"
        f"Greatest absolute difference: {r['max_abs_err']:.3g}; relative to max|{b_name}|: "
        f"{r['max_rel_err']:.3g} (rtol {tol.rtol:g}, atol {tol.atol:g}); cosine {r['cosine']:.6f}"
    )


def _record(graph, seed, a, b, tensor, op, av, bv, predicted, tol, seconds, kink=None, case_scale=0.0,
            positions=None) -> CheckRecord:
    """``positions``: (shape, flat indices) when ``av`` and ``bv`` hold only those
    elements of a tensor of that shape; indices are then given in the tensor."""

    def where(flat, shape):
        return _fmt_index(positions[0], int(positions[1][flat])) if positions else _fmt_index(shape, flat)

    common = dict(case_id=graph.case_id, graph=graph.to_json(), seed=int(seed), op=op, consumer=op, tensor=tensor,
                  source_a=a.source, source_b=b.source, dtype=coarser_dtype(a.dtype, b.dtype),
                  device=a.device if a.device != "cpu" else b.device,
                  rtol=tol.rtol, atol=tol.atol, seconds=seconds)
    av, bv = np.asarray(av), np.asarray(bv)
    bad = [(n, v) for n, v in ((a.source, av), (b.source, bv)) if not np.all(np.isfinite(v))]
    if bad:
        name, v = bad[0]
        flat = int(np.argmax(~np.isfinite(v).ravel()))
        return CheckRecord(**common, max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan,
                           ratio=math.inf, status="error", index=where(flat, v.shape),
                           numel=int(v.size), mismatched=int(np.sum(~np.isfinite(v))),
                           message=f"{name} gave non-finite values for {tensor!r}: "
                                   f"{int(np.sum(~np.isfinite(v)))} of {v.size}, first at {where(flat, v.shape)}")
    try:
        r = _judge(av, bv, predicted, tol, kink, case_scale)
    except ValueError as e:
        return CheckRecord(**common, max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan,
                           ratio=math.inf, status="error", message=f"{tensor!r}: {e}")
    flat = r.pop("flat")
    if positions:
        r["index"] = where(flat, None)
    if r["ratio"] > 1.0:
        status, message = "fail", failure_message(r, tol, a.source, b.source)
    elif r["nondifferentiable"]:
        status = "nondifferentiable"
        message = (f"{r['nondifferentiable']} of {r['numel']} elements differ beyond tolerance where the "
                   f"finite-difference stencil crossed a kink or did not converge; every other element agrees")
    else:
        status, message = "pass", ""
    r.pop("allowed")
    return CheckRecord(**common, **r, status=status, message=message)


def record_for_elements(graph: Graph, a: SourceResult, b_name: str, b_kind: str, tensor: str, shape, elements,
                        av, fd, tol: Tolerance, seconds: float, seed: int = 0) -> CheckRecord:
    """A record comparing only the flat ``elements`` of ``tensor`` (of ``shape``):
    analytic values ``av`` against finite differences ``fd`` (an ``FDResult``), the
    worst element named by its index in the whole tensor."""
    b = SourceResult(b_name, b_kind, math.nan, {}, dtype=a.dtype, device=a.device)
    return _record(graph, seed, a, b, tensor, graph.op_of(tensor), np.asarray(av), fd.value, fd.error, tol,
                   seconds, fd.kink, positions=(tuple(shape), np.asarray(elements)))


def compare(graph: Graph, a: SourceResult, b: SourceResult, *, seed: int = 0,
            tolerance: Tolerance | None = None, outputs: bool = False) -> list:
    """Compare gradients (and, with ``outputs``, every node's forward output) of two
    results of the same case; ``b`` is the side the tolerance scales with.

    Returns one ``CheckRecord`` per differentiable leaf (and per node output).
    """
    dtype = coarser_dtype(a.dtype, b.dtype)
    tol = tolerance or tolerance_for(a.kind, b.kind, dtype)
    seconds = a.seconds + b.seconds
    # A source whose two backward passes differ is allowed that much, and says so.
    jitter = max(a.nondeterminism or 0.0, b.nondeterminism or 0.0)
    case_scale = max((float(np.max(np.abs(np.nan_to_num(np.asarray(g, dtype=np.float64))), initial=0.0))
                      for g in b.grads.values()), default=0.0)
    records = []
    for leaf in graph.differentiable_leaves:
        name, op = leaf.name, graph.op_of(leaf.name)
        if name in a.grads and name in b.grads:
            predicted = _sum_errors(a.grad_errors.get(name), b.grad_errors.get(name))
            if jitter:
                predicted = _sum_errors(predicted, np.full(np.shape(b.grads[name]), jitter / PREDICTED_SAFETY))
            kink = _either(a.grad_kinks.get(name), b.grad_kinks.get(name))
            records.append(_record(graph, seed, a, b, name, op, a.grads[name], b.grads[name], predicted, tol,
                                   seconds, kink, case_scale))
        elif name in a.grads and name in b.directional:
            dirs, fd = b.directional[name]
            g = np.asarray(a.grads[name], dtype=np.float64)
            proj = np.array([numeric_dot(d, g) for d in dirs])
            records.append(_record(graph, seed, a, b, name, op, proj, fd.value, fd.error, tol, seconds, fd.kink))
    if b.joint is not None:
        dirs, fd = b.joint
        grads = {n: np.asarray(a.grads[n], dtype=np.float64) for n in dirs[0]} if dirs else {}
        proj = np.array([sum(numeric_dot(grads[n], d[n]) for n in d) for d in dirs])
        records.append(_record(graph, seed, a, b, JOINT, "", proj, fd.value, fd.error, tol, seconds, fd.kink))
    if outputs:
        for node in graph.nodes:
            if node.name in a.outputs and node.name in b.outputs:
                predicted = _sum_errors(a.output_errors.get(node.name), b.output_errors.get(node.name))
                records.append(_record(graph, seed, a, b, node.name, node.op, a.outputs[node.name],
                                       b.outputs[node.name], predicted, tol, seconds))
    if jitter:
        records = [replace(r, nondeterminism=jitter, message=(r.message + "\n" if r.message else "")
                           + f"note: a source is not deterministic: two backward passes differ by up to {jitter:.3g}")
                   for r in records]
    return records


def coarser_dtype(a: str, b: str) -> str:
    """The less precise of two dtypes: the one a comparison between them is held to."""
    from .numeric import eps_of
    return a if eps_of(a) >= eps_of(b) else b


def _either(x, y):
    if x is None:
        return y
    return x if y is None else (x | y)


def _sum_errors(x, y):
    if x is None:
        return y
    return x if y is None else x + y
