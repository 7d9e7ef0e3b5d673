"""Running sources on cases and comparing them: the one code path that produces
``CheckRecord``s, for the pytest suites, the CLI and reports alike."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from reference_impl import executor

from . import numeric
from .compare import PREDICTED_SAFETY, CheckRecord, Tolerance, _judge, coarser_dtype, compare, tolerance_for
from .graph import Graph, materialize, single_op_graph
from .isolation import WorkerFailure
from .numeric import eps_of
from .ops import get_op
from .replay import candidate_of
from .sources import ANALYTIC, FiniteDifferences, ReferenceOrFormula, Unsupported

__all__ = ["Case", "check_pair", "op_cases", "error_record"]


@dataclass(frozen=True)
class Case:
    """A graph with the values to run it on."""

    graph: Graph
    seed: int = 0
    dtype: str = "float64"
    scale: float = 1.0
    quantize: float = 0.0  # > 0: data inputs rounded to multiples of it (ties, exact zeros)

    def __post_init__(self):
        from .graph import DTYPES

        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        if not (isinstance(self.quantize, (int, float)) and math.isfinite(self.quantize) and self.quantize >= 0):
            raise ValueError(f"quantize must be a finite number >= 0, got {self.quantize!r}")

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


def _under_test(graph, source) -> list:
    """The ops of ``graph`` whose implementation is ``source``'s own, in graph order."""
    provides = getattr(source, "provides", frozenset())
    seen = []
    for op in graph.ops:
        if op in provides and op not in seen:
            seen.append(op)
    return seen


def check_pair(case: Case, a, b, *, tolerance: Tolerance | None = None, outputs: bool = False,
               tensors: dict | None = None) -> list:
    """Run sources ``a`` (the one under test) and ``b`` on ``case`` and compare them;
    a source that raises or does not apply gives one ``error`` or ``skipped``
    record instead.  ``tensors``: the case's values when the caller has them."""
    tensors = case.tensors() if tensors is None else tensors
    mine = _under_test(case.graph, a)
    # a record that judged nothing names the op only when it is a candidate's own
    label = mine[0] if len(mine) == 1 and candidate_of(a) is not None else ""
    if isinstance(b, FiniteDifferences):
        why = b.cannot_run(case.graph, tensors)
        if why:
            return [error_record(case, a.name, b.name, why, op=label, status="skipped")]
    results = []
    for source in (a, b):
        t0 = time.perf_counter()
        try:
            results.append(source.run(case.graph, tensors))
        except Unsupported as e:
            return [error_record(case, a.name, b.name, f"{source.name}: {e}", op=label, status="skipped",
                                 device=getattr(source, "device", "cpu"))]
        except Exception as e:  # a failing source is a finding, not a crash of the run
            what = str(e) if isinstance(e, WorkerFailure) else f"{type(e).__name__}: {e}"
            return [error_record(case, a.name, b.name, f"{source.name} raised {what}",
                                 device=getattr(source, "device", "cpu"), op=getattr(e, "op", "") or label,
                                 seconds=time.perf_counter() - t0)]
    records = compare(case.graph, results[0], results[1], seed=case.seed, tolerance=tolerance, outputs=outputs)
    if isinstance(b, FiniteDifferences) and results[1].joint is not None:
        records, results = _localise(case, records, tensors, a, b, results, tolerance)
    records = _escalate(case, records, tensors, a, b, results, tolerance)
    analytic = all(x.kind == ANALYTIC for x in results)
    if any(r.status == "fail" for r in records) and analytic:
        dtype = coarser_dtype(results[0].dtype, results[1].dtype)
        if dtype != "float64":
            records = _judge_against_rounding(case, records, tensors, b, results, tolerance, outputs, dtype)
        records = _explain_kinks(case, records, tensors, results, dtype)
    if any(r.status == "fail" or (r.status == "nondifferentiable" and not analytic) for r in records):
        records = _exact_kinks(case, records, tensors, a, b, results)
    if candidate_of(a) is not None and any(
            r.status == "fail" or (r.status == "nondifferentiable" and not analytic) for r in records):
        records = _nondeterminism(case, records, tensors, a, results[0])
    return _name_the_op(case, records, tensors, a, b, results, mine)


def _nondeterminism(case, records, tensors, a, first):
    """A failing check of candidate code runs that code once more on the same
    inputs: a source whose two answers differ is ``nondeterministic``, and its
    records say so (an error: nothing compared against it can be trusted)."""
    try:
        again = a.run(case.graph, tensors)
    except Exception:  # noqa: BLE001 - a second call that raises is beside the point here
        return records
    worst, where = 0.0, ""
    for kind, mine, theirs in (("gradient", first.grads, again.grads), ("output", first.outputs, again.outputs)):
        for name in mine.keys() & theirs.keys():
            x, y = np.asarray(mine[name], dtype=np.float64), np.asarray(theirs[name], dtype=np.float64)
            if x.shape == y.shape and x.size:
                d = float(np.max(np.abs(x - y)))
                if d > worst:
                    worst, where = d, f"the {kind} of {name!r}"
    if worst == 0:
        return records
    note = (f"nondeterministic: two calls of {a.name} on the same inputs differ by up to {worst:.3g} ({where}); "
            f"a comparison with them cannot be trusted")
    return [replace(r, status="error", message=(note + "\n" + r.message).strip())
            if r.status in ("fail", "nondifferentiable") else r for r in records]


ROUNDING_SAFETY = 10.0


def _judge_against_rounding(case, records, tensors, b, results, tolerance, outputs, dtype):
    """Note [Conditioning]
    A fixed rtol per dtype cannot know how much a case amplifies rounding: a
    batch norm over two samples, say, turns float32's 1e-7 into 1e-3.  When a
    low-precision analytic comparison fails, the independent side is run again
    in float32 on the same values (the same implementations the check used: the
    reference, or a declared op's formula), and its own deviation from its
    float64 self measures that amplification for this case, element by element.
    A failing tensor is judged again allowing ROUNDING_SAFETY times that
    deviation (scaled from float32 to the dtype at hand); the record says so.
    A bug changes a gradient by far more than rounding does, so it still fails.
    """
    failed = {r.tensor for r in records if r.status == "fail"}
    if not hasattr(b, "with_dtype"):
        return records
    try:
        ref64 = b.with_dtype("float64").run(case.graph, tensors)
        ref32 = b.with_dtype("float32").run(case.graph, tensors)
    except Unsupported:
        return records
    k = ROUNDING_SAFETY * eps_of(dtype) / eps_of("float32") / PREDICTED_SAFETY
    other = results[1]
    widened = replace(
        other,
        grad_errors={**other.grad_errors, **{t: k * np.abs(ref32.grads[t] - ref64.grads[t]) for t in failed
                                             if t in ref64.grads}},
        output_errors={**other.output_errors, **{t: k * np.abs(ref32.outputs[t] - ref64.outputs[t]) for t in failed
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


def _forward_values(case, tensors, results):
    """Every leaf and node value of the case in float64, from the analytic result
    that has them (the independent side's first): no re-run, so no op
    implementation other than the check's own is needed."""
    for result in reversed(results):
        if result.kind == ANALYTIC and all(n.name in result.outputs for n in case.graph.nodes):
            values = {k: np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
                      for k, v in tensors.items()}
            values.update({k: np.asarray(v, dtype=np.float64) for k, v in result.outputs.items()})
            return values
    return None


def _explain_kinks(case: Case, records, tensors, results, dtype):
    """Note [Kinks across precisions]
    Two analytic sources in different precisions (torch in float32 against the
    float64 reference) see intermediate values that differ by rounding.  When
    one lies that close to a kink (a relu input near 0, a near-tie in a max-pool
    window), the two sources may take different branches, and their gradients
    differ by a whole slope without either being wrong.  Only then, and only for
    records that failed, the status becomes ``nondifferentiable`` with the margin
    that explains it; a failure on a graph far from every kink stays a failure.
    Exact kinks (margin 0) are judged by Note [Exact kinks] instead.
    """
    steps = case.graph.plan()
    if not any(get_op(op).margin for _, op, _, _ in steps):
        return records
    values = _forward_values(case, tensors, results)
    if values is None:
        return records
    near = []
    for name, op_name, inputs, hyper in steps:
        op = get_op(op_name)
        if op.margin is None:
            continue
        args = [values[i] for i in inputs]
        scale = max(1.0, max(float(np.max(np.abs(a), initial=0.0)) for a in args if a.dtype.kind == "f"))
        margin = op.margin(*args, **hyper)
        if 0 < margin < KINK_SLACK * eps_of(dtype) * scale:
            near.append(f"{name} ({op_name}) is {margin:.3g} from a kink")
    if not near:
        return records
    why = "a kink op's input is within rounding of its kink in " + dtype + ": " + "; ".join(near)
    return [replace(r, status="nondifferentiable", message=r.message + "\n" + why) if r.status == "fail" else r
            for r in records]


def _independent(b):
    """The source whose single ops stand for the math: ``b`` when it is analytic,
    else the reference (with declared ops' formulas)."""
    return b if not isinstance(b, FiniteDifferences) and hasattr(b, "local_op") else ReferenceOrFormula()


def _local_ops(source, ops):
    """``{op: Op}`` of ``source`` for these ops, or None when it runs whole graphs only."""
    if not hasattr(source, "local_op"):
        return None
    try:
        return {op: source.local_op(op) for op in ops}
    except (Unsupported, KeyError):
        return None


def _vjp(op_impl, inputs, hyper, g, dtype):
    """One op's input gradients for cotangent ``g``, computed in ``dtype``, as float64."""
    cast = [x.astype(dtype) if x.dtype.kind == "f" else x for x in inputs]
    out, saved = op_impl.forward(*cast, **hyper)
    grads = op_impl.backward(saved, np.asarray(g, dtype=np.result_type(out)))
    return [None if gi is None else np.asarray(gi, dtype=np.float64) for gi in grads]


def _exact_kinks(case, records, tensors, a, b, results):
    """Note [Exact kinks] in ops.py, for a case that failed (or that finite
    differences called nondifferentiable) with an input exactly at a kink of an
    op under test: that node is judged on its own by the op's subgradient rule,
    and the case recomputed with the candidate's choice there."""
    graph = case.graph
    values = _forward_values(case, tensors, results)
    mine = set(_under_test(graph, a))
    if values is None or not mine or mine == set(graph.ops) and not getattr(a, "candidate", None):
        return records  # the reference's (or torch's) own conventions are not under judgement
    kinks = []
    for name, op_name, inputs, hyper in graph.plan():
        op = get_op(op_name)
        if op_name in mine and op.subgradient is not None and op.margin(*(values[i] for i in inputs), **hyper) == 0:
            kinks.append(name)
    if not kinks:
        return records
    indep = _independent(b)
    ours = _local_ops(a, {graph.node(n).op for n in kinks})
    theirs = _local_ops(indep, set(graph.ops))
    if ours is None or theirs is None:
        return records
    dtype = results[0].dtype if results[0].dtype in ("float64", "float32") else "float32"
    tol = tolerance_for(ANALYTIC, ANALYTIC, dtype)
    # the case with the candidate's op at the kink nodes only, the rest the reference's
    steps, table = [], dict(theirs)
    for name, op_name, inputs, hyper in graph.plan():
        key = f"{op_name}@{name}" if name in kinks else op_name
        if name in kinks:
            table[key] = ours[op_name]
        steps.append((name, key, inputs, dict(hyper)))
    leaves = {k: v for k, v in values.items() if k in {l.name for l in graph.leaves}}
    try:
        loss, hybrid_values, hybrid_grads = executor.loss_and_grads(steps, leaves, graph.output, table)
    except Exception:  # noqa: BLE001 - a candidate op that fails here failed the check already
        return records
    verdicts = []
    hypers = {step[0]: step[3] for step in graph.plan()}
    for name in kinks:
        node = graph.node(name)
        op = get_op(node.op)
        inputs = [values[i] for i in node.inputs]
        hyper = dict(hypers[name])
        g = np.asarray(hybrid_grads.get(name, np.zeros(graph.shapes[name])), dtype=np.float64)
        try:
            gc = _vjp(ours[node.op], inputs, hyper, g, dtype)
            gr = _vjp(theirs[node.op], inputs, hyper, g, "float64")
        except Exception:  # noqa: BLE001
            return records
        pairs = [(x, c, r) for arg, x, c, r in zip(op.bind(len(inputs)), inputs, gc, gr)
                 if arg.differentiable and c is not None and r is not None]
        violation, explanation = op.subgradient(tuple(p[0] for p in pairs), hyper, g, tuple(p[1] for p in pairs),
                                                tuple(p[2] for p in pairs), tol)
        verdicts.append((name, violation, explanation))
    broken = [(n, v) for n, v, _ in verdicts if v]
    if broken:
        why = "; ".join(f"node {n}: {v}" for n, v in broken)
        note = f"at an exact kink, outside the subdifferential (Note [Exact kinks]): {why}"
        return [replace(r, status="fail", message=(r.message + "\n" + note).strip())
                if r.status in ("fail", "nondifferentiable") and r.tensor else r for r in records]
    explained = "; ".join(f"node {n}: {e}" for n, _, e in verdicts if e)
    out = []
    for r in records:
        if r.status != "fail" or r.tensor not in hybrid_grads and r.tensor not in hybrid_values:
            out.append(r)
            continue
        mine_value = results[0].grads.get(r.tensor, results[0].outputs.get(r.tensor))
        other = hybrid_grads.get(r.tensor) if r.tensor in results[0].grads else hybrid_values.get(r.tensor)
        if mine_value is None or other is None:
            out.append(r)
            continue
        judged = _judge(mine_value, np.asarray(other, dtype=np.float64), None, tol)
        if judged["ratio"] <= 1:
            out.append(replace(r, status="nondifferentiable", message=(
                r.message + "\nan input is exactly at a kink, where any element of the subdifferential is right, "
                "and the candidate's choice is one (Note [Exact kinks]): " + explained).strip()))
        else:
            out.append(r)
    return out


def _name_the_op(case, records, tensors, a, b, results, mine):
    """Each record's ``op`` becomes the op under test: the one op of ``a``'s own in
    the graph, else (several, or a source that implements every op) the op whose
    VJP the disagreement localises to when the ops are checked one by one.  An
    error that names its op keeps it; ``consumer`` keeps the tensor's consumer."""
    def named(r):  # an error raised by candidate code, which said its op
        return r.status == "error" and r.op and not r.tensor

    if len(mine) == 1:
        return [r if named(r) else replace(r, op=mine[0]) for r in records]
    if not mine or not any(r.status in ("fail", "error") and not named(r) for r in records):
        return records
    culprit = _localise_op(case, tensors, a, b, results, mine)
    if not culprit:
        return records
    return [replace(r, op=culprit) if r.status in ("fail", "error") and not named(r) else r for r in records]


def _localise_op(case, tensors, a, b, results, candidates) -> str:
    """The first node (in graph order) of an op in ``candidates`` whose VJP on its
    own, at the case's values and a random cotangent, disagrees with the
    independent side's (an analytic ``b``) or with differences of its own forward;
    "" when none does (the fault is in how the ops are put together)."""
    values = _forward_values(case, tensors, results)
    ours = _local_ops(a, candidates)
    if values is None or ours is None:
        return ""
    analytic = not isinstance(b, FiniteDifferences)
    theirs = _local_ops(_independent(b), candidates) if analytic else None
    dtype = results[0].dtype if results[0].dtype in ("float64", "float32") else "float32"
    rng = np.random.default_rng(case.seed)
    for index, (name, op_name, inputs, hyper) in enumerate(case.graph.plan()):
        if op_name not in candidates:
            continue
        op = get_op(op_name)
        args = [values[i] for i in inputs]
        g = rng.standard_normal(case.graph.shapes[name])
        try:
            mine = _vjp(ours[op_name], args, hyper, g, dtype)
            if theirs is not None:
                other = _vjp(theirs[op_name], args, hyper, g, "float64")
                tol = tolerance_for(ANALYTIC, ANALYTIC, dtype)
                errors = [None] * len(args)
                kinks = [None] * len(args)
            else:
                other, errors, kinks = _local_differences(ours[op_name], op, args, hyper, g, dtype)
                tol = tolerance_for(ANALYTIC, "central", dtype)
        except Exception:  # noqa: BLE001 - an op that raises on its own is the culprit
            return op_name
        for arg, x, m, o, e, k in zip(op.bind(len(args)), args, mine, other, errors, kinks):
            if not arg.differentiable or m is None or o is None:
                continue
            if _judge(m, o, e, tol, k)["ratio"] > 1:
                return op_name
    return ""


def _local_differences(op_impl, op, args, hyper, g, dtype):
    """Central differences of <g, op(args)> for each differentiable input, in ``dtype``."""
    cast = {str(i): (x.astype(dtype) if x.dtype.kind == "f" else x) for i, x in enumerate(args)}
    order = [str(i) for i in range(len(args))]

    def f(t):
        out = op_impl.forward(*(t[k] for k in order), **hyper)[0]
        value = float(np.sum(np.asarray(out, dtype=np.float64) * g))
        if op.branch is None:
            return value
        return value, np.ascontiguousarray(op.branch(*(t[k] for k in order), **hyper)).tobytes()

    wrt = [str(i) for i, arg in enumerate(op.bind(len(args))) if arg.differentiable and args[i].dtype.kind == "f"]
    jac = numeric.jacobian(f, cast, wrt, "central", with_branches=op.branch is not None)
    values, errors, kinks = [], [], []
    for i in range(len(args)):
        r = jac.get(str(i))
        values.append(None if r is None else r.value)
        errors.append(None if r is None else r.error)
        kinks.append(None if r is None else r.kink)
    return values, errors, kinks


def op_cases(op_name: str, dtype: str = "float64", seed: int = 0):
    """A ``Case`` per catalogue sample of the op: the op alone, probed by a random cotangent."""
    op = get_op(op_name)
    return [Case(single_op_graph(op_name, s), seed + i, dtype) for i, s in enumerate(op.samples)]
