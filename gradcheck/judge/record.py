"""``CheckRecord``: one comparison of one tensor between two sources, carrying the
whole judgement (what was allowed and why, which second opinions ran and what
each concluded, the sources' settings), so no tolerance is applied that a
report does not show.  Reports are built from these rows alone."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .tolerance import Judgement, Tolerance

__all__ = ["CheckRecord", "STATUSES", "JOINT", "unjudged", "failure_message", "with_opinion"]

STATUSES = ("pass", "fail", "error", "nondifferentiable", "skipped")
JOINT = "(all tensors)"  # the tensor of a record comparing directions over every tensor at once


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
    allowed: float = math.nan  # what was allowed at the worst element (Note [Tolerance model])
    floor: float = math.nan  # the scale rtol applies to besides |b|
    predicted: float = math.nan  # the predicted numerical error at the worst element
    opinions: str = ""  # the second opinions that ran, "name: conclusion; ..." (judge/second_opinions.py)
    spec_a: str = ""  # the sources as replay specs, every setting included
    spec_b: str = ""
    direction_seed: int = -1  # the seed of finite differences' random directions (-1: none drawn)
    order: int = 1  # the order of the derivative checked: 2 for a double backward
    ad_mode: str = "rev"  # "rev", "fwd" (JVPs), "batched" (the backward under vmap), "per-sample" (vmap over
    #                       samples), "undefined" (an output's gradient left undefined)
    step: int = 0  # an optimizer trajectory's step (its tensor a parameter, or "param.buffer"); 0 elsewhere

    def to_dict(self):
        return dict(self.__dict__)  # every field is a scalar or a string: asdict's deep copy costs 3% of a run

    @property
    def passed(self) -> bool:
        return self.status in ("pass", "nondifferentiable", "skipped")


def unjudged(case_id, graph_json, seed, a_name, b_name, dtype, message, *, status="error", device="cpu", op="",
             tensor="", seconds=0.0, tolerance: Tolerance | None = None, **fields) -> CheckRecord:
    """A record of a check that judged nothing: a source raised or gave what cannot
    be compared (``error``), or does not apply (``skipped``)."""
    return CheckRecord(case_id=case_id, graph=graph_json, seed=int(seed), op=op, consumer=fields.pop("consumer", op),
                       tensor=tensor, source_a=a_name, source_b=b_name, dtype=dtype, device=device,
                       max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan,
                       rtol=tolerance.rtol if tolerance else math.nan, atol=tolerance.atol if tolerance else math.nan,
                       ratio=math.inf if status == "error" else math.nan, status=status, seconds=seconds,
                       message=message, **fields)


def failure_message(j: Judgement, tol: Tolerance, a_name: str, b_name: str) -> str:
    share = 100.0 * j.mismatched / max(j.numel, 1)
    return (
        f"Mismatched elements: {j.mismatched} / {j.numel} ({share:.1f}%)\n"
        f"Greatest error/tolerance: {j.ratio:.3g} at index {j.index} "
        f"({a_name}={j.value_a:.10g}, {b_name}={j.value_b:.10g}, "
        f"|diff|={abs(j.value_a - j.value_b):.3g}, allowed {j.allowed:.3g})\n"
        f"Greatest absolute difference: {j.max_abs_err:.3g}; relative to max|{b_name}|: "
        f"{j.max_rel_err:.3g} (rtol {tol.rtol:g}, atol {tol.atol:g}); cosine {j.cosine:.6f}"
    )


def with_opinion(record: CheckRecord, name: str, conclusion: str, note: str = "", **changes) -> CheckRecord:
    """``record`` after the second opinion ``name`` concluded ``conclusion`` (its new
    status, or what it found), ``note`` added to the message.  ``opinions``: those
    already given (when ``record`` is a fresh comparison replacing an earlier one)."""
    before = changes.pop("opinions", record.opinions)
    opinions = f"{before}; {name}: {conclusion}" if before else f"{name}: {conclusion}"
    message = changes.pop("message", record.message)
    if note:
        message = (message + "\n" + note).strip()
    return replace(record, opinions=opinions, message=message, **changes)
