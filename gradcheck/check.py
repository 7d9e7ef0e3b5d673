"""Running sources on cases and comparing them: the one code path that produces
``CheckRecord``s, for the pytest suites, the CLI and reports alike."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from reference_impl import executor

from .compare import PREDICTED_SAFETY, CheckRecord, Tolerance, coarser_dtype, compare
from .graph import Graph, materialize, single_op_graph
from . import numeric
from .numeric import eps_of
from .ops import get_op
from .sources import ANALYTIC, FiniteDifferences, ReferenceSource, Unsupported

__all__ = ["Case", "check_pair", "op_cases", "error_record"]


@dataclass(frozen=True)
class Case:
    """A graph with the values to run it on."""

    graph: Graph
    seed: int = 0
    dtype: str = "float64"
    scale: float = 1.0
    quantize: float = 0.0  # > 0: data inputs rounded to multiples of it (ties, exact zeros)

    def tensors(self):
        return materialize(self.graph, self.seed, self.dtype, self.scale, self.quantize)


def error_record(case: Case, a_name: str, b_name: str, message: str, device="cpu", op="", seconds=0.0,
                 status="error") -> CheckRecord:
    """A record for a check that could not be made (a source raised, or does not apply)."""
    return CheckRecord(case_id=case.graph.case_id, graph=case.graph.to_json(), seed=case.seed, op=op,
                       tensor="", source_a=a_name, source_b=b_name, dtype=case.dtype, device=device,
                       max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan, rtol=math.nan,
                       atol=math.nan, ratio=math.inf if status == "error" else math.nan, status=status,
                       seconds=seconds, message=message)


def check_pair(case: Case, a, b, *, tolerance: Tolerance | None = None, outputs: bool = False,
               tensors: dict | None = None) -> list:
    """Run sources ``a`` and ``b`` on ``case`` and compare them; a source that raises
    or does not apply gives one ``error`` or ``skipped`` record instead.
    ``tensors``: the case's values when the caller has them already."""
    op = case.graph.ops[0] if case.graph.ops else ""
    if isinstance(b, FiniteDifferences) and not b.supports(case.graph):
        return [error_record(case, a.name, b.name, f"{b.name} does not apply: the forward takes no complex input",
                             op=op, status="skipped")]
    tensors = case.tensors() if tensors is None else tensors
    results = []
    for source in (a, b):
        t0 = time.perf_counter()
        try:
            results.append(source.run(case.graph, tensors))
        except Unsupported as e:
            return [error_record(case, a.name, b.name, f"{source.name}: {e}", op=op, status="skipped",
                                 device=getattr(source, "device", "cpu"))]
        except Exception as e:  # a failing source is a finding, not a crash of the run
            return [error_record(case, a.name, b.name, f"{source.name} raised {type(e).__name__}: {e}",
                                 device=getattr(source, "device", "cpu"), op=op,
                                 seconds=time.perf_counter() - t0)]
    records = compare(case.graph, results[0], results[1], seed=case.seed, tolerance=tolerance, outputs=outputs)
    if isinstance(b, FiniteDifferences) and results[1].joint is not None:
        records, results = _localise(case, records, tensors, a, b, results, tolerance)
    records = _escalate(case, records, tensors, a, b, results, tolerance)
    if any(r.status == "fail" for r in records) and all(x.kind == ANALYTIC for x in results):
        dtype = coarser_dtype(results[0].dtype, results[1].dtype)
        if dtype != "float64":
            records = _judge_against_rounding(case, records, tensors, results, tolerance, outputs, dtype)
        records = _explain_kinks(case, records, dtype)
    return records


ROUNDING_SAFETY = 10.0


def _judge_against_rounding(case, records, tensors, results, tolerance, outputs, dtype):
    """Note [Conditioning]
    A fixed rtol per dtype cannot know how much a case amplifies rounding: a
    batch norm over two samples, say, turns float32's 1e-7 into 1e-3.  When a
    low-precision analytic comparison fails, the reference itself is run in
    float32 on the same values, and its own deviation from the float64 reference
    measures that amplification for this case, element by element.  A failing
    tensor is judged again allowing ROUNDING_SAFETY times that deviation (scaled
    from float32 to the dtype at hand); the record says so.  A bug changes a
    gradient by far more than rounding does, so it still fails.
    """
    failed = {r.tensor for r in records if r.status == "fail"}
    try:
        ref64 = ReferenceSource(compute_dtype="float64").run(case.graph, tensors)
        ref32 = ReferenceSource(compute_dtype="float32").run(case.graph, tensors)
    except Unsupported:
        return records
    k = ROUNDING_SAFETY * eps_of(dtype) / eps_of("float32") / PREDICTED_SAFETY
    b = results[1]
    widened = replace(
        b,
        grad_errors={**b.grad_errors, **{t: k * np.abs(ref32.grads[t] - ref64.grads[t]) for t in failed
                                         if t in ref64.grads}},
        output_errors={**b.output_errors, **{t: k * np.abs(ref32.outputs[t] - ref64.outputs[t]) for t in failed
                                             if t in ref64.outputs}})
    again = {r.tensor: r for r in compare(case.graph, results[0], widened, seed=case.seed, tolerance=tolerance,
                                          outputs=outputs) if r.tensor in failed}
    note = (f"(judged again allowing {ROUNDING_SAFETY:g}x the float32 reference's own rounding error on this case, "
            f"see Note [Conditioning])")
    return [replace(again[r.tensor], message=(again[r.tensor].message + "\n" + note).strip())
            if r.tensor in again else r for r in records]


def _localise(case, records, tensors, a, b, results, tolerance):
    """A failing directional check (every tensor at once) becomes records per
    tensor, and per element for the tensors that fail (``FiniteDifferences.localise``)."""
    from .compare import JOINT

    joint = [r for r in records if r.tensor == JOINT]
    if not joint or joint[0].status != "fail":
        return records, results
    coarse, full, bisected = b.localise(case.graph, tensors, results[0], tolerance)
    rest = [r for r in records if r.tensor != JOINT]
    if full is None and not bisected:
        # No tensor fails on its own: judge the joint directions again with Richardson
        # differences, whose two stencils bound the truncation a central one cannot see.
        dirs, _ = results[1].joint
        plain = (lambda t: b.of.forward(case.graph, t))
        vals = [numeric.directional(plain, tensors, d, "richardson") for d in dirs]
        refined = replace(results[1], kind="richardson", joint=(dirs, numeric.FDResult(
            np.array([v.value for v in vals]), np.array([v.error for v in vals]), None)))
        again = [r for r in compare(case.graph, results[0], refined, seed=case.seed, tolerance=tolerance)
                 if r.tensor == JOINT][0]
        note = ("no tensor fails on its own directions; judged again against Richardson differences"
                + ("" if again.status == "pass" else ": the disagreement needs several tensors moving together"))
        return [replace(again, message=(again.message + "\n" + note).strip())] + coarse + rest, results
    fine = {r.tensor: r for r in compare(case.graph, results[0], full, seed=case.seed, tolerance=tolerance)
            } if full is not None else {}
    fine.update({t: replace(r, seed=case.seed) for t, r in bisected.items()})
    note = "(localised from a directional check over every tensor)"
    located = [replace(fine[r.tensor], message=(fine[r.tensor].message + "\n" + note).strip())
               if r.tensor in fine else r for r in coarse]
    return located + rest, [results[0], full if full is not None else results[1]]


def _escalate(case, records, tensors, a, b, results, tolerance):
    """A tensor that fails against central differences is recomputed with Richardson
    extrapolation (Note [Finite-difference step]) and judged again: a failure must
    survive a finite difference that knows its own truncation error."""
    if not isinstance(b, FiniteDifferences) or b.method != "central":
        return records
    if not results[1].grads:
        return records
    failed = [r.tensor for r in records if r.status == "fail" and r.tensor in results[1].grads]
    if not failed:
        return records
    refined = b.refine(case.graph, tensors, results[1], failed)
    again = {r.tensor: r for r in compare(case.graph, results[0], refined, seed=case.seed, tolerance=tolerance)
             if r.tensor in failed}
    note = "(judged again against Richardson differences after failing against central ones)"
    return [replace(again[r.tensor], seconds=r.seconds + refined.seconds,
                    message=(again[r.tensor].message + "\n" + note).strip())
            if r.tensor in again else r for r in records]


# An intermediate value within this many units of rounding (of the coarser dtype,
# relative to its op's inputs) from a kink may take the other branch in the other
# source: see Note [Kinks across precisions].
KINK_SLACK = 64


def _explain_kinks(case: Case, records, dtype):
    """Note [Kinks across precisions]
    Two analytic sources in different precisions (torch in float32 against the
    float64 reference) see intermediate values that differ by rounding.  When
    one lies that close to a kink (a relu input near 0, a near-tie in a max-pool
    window), the two sources may take different branches, and their gradients
    differ by a whole slope without either being wrong.  Only then, and only for
    records that failed, the status becomes ``nondifferentiable`` with the margin
    that explains it; a failure on a graph far from every kink stays a failure.
    """
    steps = case.graph.steps()
    if not any(get_op(op).margin for _, op, _, _ in steps):
        return records
    ref = ReferenceSource(compute_dtype="float64")
    values, _ = executor.forward(steps, ref._cast(case.tensors()), ref.ops)
    near = []
    for name, op_name, inputs, hyper in steps:
        op = get_op(op_name)
        if op.margin is None:
            continue
        args = [values[i] for i in inputs]
        scale = max(1.0, max(float(np.max(np.abs(a), initial=0.0)) for a in args if a.dtype.kind == "f"))
        margin = op.margin(*args, **hyper)
        # margin 0 is an exact tie or an exact zero: no rounding decides the branch
        # there, both sources see the same values, and the tie-breaking convention
        # (the first maximum, as torch) is part of what is checked.
        if 0 < margin < KINK_SLACK * eps_of(dtype) * scale:
            near.append(f"{name} ({op_name}) is {margin:.3g} from a kink")
    if not near:
        return records
    why = "a kink op's input is within rounding of its kink in " + dtype + ": " + "; ".join(near)
    return [replace(r, status="nondifferentiable", message=r.message + "\n" + why) if r.status == "fail" else r
            for r in records]


def op_cases(op_name: str, dtype: str = "float64", seed: int = 0):
    """A ``Case`` per catalogue sample of the op: the op alone, probed by a random cotangent."""
    op = get_op(op_name)
    return [Case(single_op_graph(op_name, s), seed + i, dtype) for i, s in enumerate(op.samples)]

