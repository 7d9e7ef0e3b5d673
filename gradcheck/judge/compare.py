"""Comparing two sources' results on one case: a ``CheckRecord`` per tensor,
judged under the tolerance model (judge/tolerance.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..graph import Graph
from ..sources.base import SourceResult
from ..sources.numeric import dot
from .record import JOINT, CheckRecord, failure_message, unjudged
from .tolerance import PREDICTED_SAFETY, Tolerance, coarser_dtype, format_index, judge, tolerance_for

__all__ = ["compare", "record_for_elements", "scale_of"]


def _record(graph, seed, a, b, tensor, op, av, bv, predicted, tol, seconds, kink=None, case_scale=0.0,
            positions=None) -> CheckRecord:
    """``positions``: (shape, flat indices) when ``av`` and ``bv`` hold only those
    elements of a tensor of that shape; indices are then given in the tensor."""

    def where(flat, shape):
        return format_index(positions[0], int(positions[1][flat])) if positions else format_index(shape, flat)

    seed_used = b.direction_seed if b.direction_seed is not None else -1
    common = dict(case_id=graph.case_id, graph_json=graph.to_json(), seed=seed, a_name=a.source, b_name=b.source,
                  dtype=coarser_dtype(a.dtype, b.dtype), device=a.device if a.device != "cpu" else b.device, op=op,
                  tensor=tensor, seconds=seconds, tolerance=tol, direction_seed=seed_used)
    av, bv = np.asarray(av), np.asarray(bv)
    bad = [(n, v) for n, v in ((a.source, av), (b.source, bv)) if not np.all(np.isfinite(v))]
    if bad:
        name, v = bad[0]
        flat = int(np.argmax(~np.isfinite(v).ravel()))
        return unjudged(**common, message=f"{name} gave non-finite values for {tensor!r}: "
                        f"{int(np.sum(~np.isfinite(v)))} of {v.size}, first at {where(flat, v.shape)}",
                        index=where(flat, v.shape), numel=int(v.size), mismatched=int(np.sum(~np.isfinite(v))))
    try:
        j = judge(av, bv, predicted, tol, kink, case_scale)
    except ValueError as e:
        return unjudged(**common, message=f"{tensor!r}: {e}")
    if positions:
        j = replace(j, index=where(j.flat, None))
    if j.ratio > 1.0:
        status, message = "fail", failure_message(j, tol, a.source, b.source)
    elif j.nondifferentiable:
        status = "nondifferentiable"
        message = (f"{j.nondifferentiable} of {j.numel} elements differ beyond tolerance where the "
                   f"finite-difference stencil crossed a kink or did not converge; every other element agrees")
    else:
        status, message = "pass", ""
    return CheckRecord(case_id=graph.case_id, graph=graph.to_json(), seed=int(seed), op=op, consumer=op,
                       tensor=tensor, source_a=a.source, source_b=b.source, dtype=common["dtype"],
                       device=common["device"], rtol=tol.rtol, atol=tol.atol, seconds=seconds, status=status,
                       message=message, direction_seed=seed_used, **j.fields)


def record_for_elements(graph: Graph, a: SourceResult, b_name: str, b_kind: str, tensor: str, shape, elements,
                        av, fd, tol: Tolerance, seconds: float, seed: int = 0) -> CheckRecord:
    """A record comparing only the flat ``elements`` of ``tensor`` (of ``shape``):
    analytic values ``av`` against finite differences ``fd`` (an ``FDResult``), the
    worst element named by its index in the whole tensor."""
    b = SourceResult(b_name, b_kind, math.nan, {}, dtype=a.dtype, device=a.device)
    return _record(graph, seed, a, b, tensor, graph.op_of(tensor), np.asarray(av), fd.value, fd.error, tol,
                   seconds, fd.kink, positions=(tuple(shape), np.asarray(elements)))


def scale_of(b: SourceResult) -> float:
    """The largest gradient of ``b``'s in the case: the floor of relative tolerance
    for every tensor (a tensor whose own gradients are tiny is judged at the case's
    scale)."""
    return max((float(np.max(np.abs(np.nan_to_num(np.asarray(g, dtype=np.float64))), initial=0.0))
                for g in b.grads.values()), default=0.0)


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
    case_scale = scale_of(b)
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
            proj = np.array([dot(d, g) for d in dirs])
            records.append(_record(graph, seed, a, b, name, op, proj, fd.value, fd.error, tol, seconds, fd.kink))
    if b.joint is not None:
        dirs, fd = b.joint
        grads = {n: np.asarray(a.grads[n], dtype=np.float64) for n in dirs[0]} if dirs else {}
        proj = np.array([sum(dot(grads[n], d[n]) for n in d) for d in dirs])
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


def _either(x, y):
    if x is None:
        return y
    return x if y is None else (x | y)


def _sum_errors(x, y):
    if x is None:
        return y
    return x if y is None else x + y
