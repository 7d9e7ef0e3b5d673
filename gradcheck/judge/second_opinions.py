"""Second opinions: what could explain a disagreement without a bug, asked before
a failure is reported, in this order (``check_pair`` runs them):

1. localisation: a failing directional check narrowed to the tensor and element;
2. richardson: a tensor failing against central differences judged again
   against Richardson extrapolation (Note [Finite-difference step]); in
   float32, against Richardson differences of the float64 twin (Note [Float64
   differences]);
3. conditioning: a low-precision analytic failure judged against the
   reference's own rounding on the case (Note [Conditioning]), and skipped
   where a normalisation's groups are equal to within rounding (Note
   [Degenerate normalisation]);
4. kinks-across-precisions: a failure next to a kink, within rounding of it
   (Note [Kinks across precisions]); one-sided-kinks: a failure of an op nobody
   described the kinks of, probed with one-sided differences (Note [One-sided
   kinks]);
5. exact-kinks: a candidate taking another element of the subdifferential at an
   exact kink (Note [Exact kinks] in catalogue/kinks.py);
6. nondeterminism: candidate code whose two answers on the same inputs differ;
7. the op under test: the op the disagreement localises to.

Each writes what it concluded into the record's ``opinions`` (and a line in its
message), so the record carries the whole judgement.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace

import numpy as np

from reference_impl import OPS, Op, executor

from ..case import eps_of
from ..catalogue import BUILTIN_OPS, get_op
from ..graph import Graph
from ..sources import numeric
from ..sources.base import ANALYTIC, SourceResult, Unsupported, branch_signature, candidate_of, dtype_of, rademacher
from ..sources.finite_differences import FiniteDifferences, frozen_elements, frozen_results, hold_still
from ..sources.reference import ReferenceOrFormula
from .compare import compare, record_for_elements, scale_of
from .record import JOINT, with_opinion
from .tolerance import PREDICTED_SAFETY, coarser_dtype, element_ratios, judge, tolerance_for

__all__ = ["localise", "escalate", "float64_differences", "out_of_range", "conditioning", "degenerate_normalisations", "torch_deviations", "kinks_across_precisions", "one_sided_kinks", "exact_kinks", "nondeterminism",
           "name_the_op", "under_test", "BISECT_LEAF", "KINK_PERSISTS", "ROUNDING_MARGIN"]

BISECT_LEAF = 32  # bisection stops at a block of this many elements, then differentiates each


def under_test(graph, source) -> list:
    """The ops of ``graph`` whose implementation is ``source``'s own, in graph order."""
    seen = []
    for op in graph.ops:
        if op in source.provides and op not in seen:
            seen.append(op)
    return seen


def _position(flat, shape) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


# ---------------------------------------------------------------- 1. localisation


def localise_directional(differences, graph: Graph, tensors: dict, a_result, tolerance=None, seed=0):
    """After a failing directional check: directions tensor by tensor find the
    failing tensors.  A failing tensor of up to ``bisect_above`` elements is then
    differentiated element by element; a larger one is bisected (``_bisect``)
    down to a block of ``BISECT_LEAF`` elements, which alone are differentiated.
    Either way the records name the element and its two values.

    Returns the per-tensor records, a result holding the full Jacobians (or
    None), and ``{tensor: record}`` for the bisected tensors."""
    per_tensor = FiniteDifferences(differences.of, differences.method, "per-tensor", differences.n_directions, seed)
    coarse = compare(graph, a_result, per_tensor.run(graph, tensors), tolerance=tolerance)
    failing = [r.tensor for r in coarse if r.status == "fail"]
    if not failing:
        return coarse, None, {}
    f, kinky = differences.objective(graph)
    small = [n for n in failing if np.size(tensors[n]) <= differences.bisect_above]
    full = SourceResult(differences.name, differences.method, a_result.loss, {}, dtype=a_result.dtype)
    frozen = frozen_elements(graph)
    for name, r in frozen_results(frozen, numeric.jacobian(f, tensors, small, differences.method, kinky)).items():
        full.grads[name], full.grad_errors[name] = r.value, r.error
        if r.kink is not None:
            full.grad_kinks[name] = r.kink
    tol = tolerance or tolerance_for(a_result.kind, differences.method, coarser_dtype(a_result.dtype, dtype_of(
        graph, tensors)))
    bisected = {name: _bisect(differences, graph, tensors, name, a_result, tol, f, kinky, seed)
                for name in failing if name not in small}
    return coarse, (full if small else None), bisected

def _bisect(differences, graph, tensors, name, a_result, tol, f, kinky, seed):
    """The record of tensor ``name`` from bisection: its elements are halved, and
    the half whose own directional check (random signs on that half, zero
    elsewhere) fails is halved again, until BISECT_LEAF elements are left; those
    are differentiated one by one (Richardson where central differences
    disagree) and compared.  About 2 log2(n) directional checks, not n
    derivatives: a million-element tensor is localised in a few dozen forwards."""
    t0 = time.perf_counter()
    x = np.asarray(tensors[name])
    g = np.ravel(np.asarray(a_result.grads[name], dtype=np.float64))
    rng = np.random.default_rng(seed)
    step_along = differences.of.forward_along if differences.of.steps_along else None
    memo = {"moved": differences.scratch}
    xmax = numeric.largest_magnitude([x])
    lo, hi, probes, stuck = 0, x.size, 0, False
    frozen = frozen_elements(graph)
    while hi - lo > BISECT_LEAF and not stuck:
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            d = np.zeros(x.size, dtype=np.int8)
            d[a:b] = rademacher(rng, (b - a,))
            d = hold_still(frozen, {name: d.reshape(x.shape)})[name]
            fd = numeric.directional(
                lambda t: differences.of.forward(graph, t), tensors, {name: d}, differences.method, xmax=xmax,
                vnorm=math.sqrt(b - a),
                along=(lambda steps: step_along(graph, tensors, {name: d}, steps, memo)) if step_along else None)
            probes += 1
            proj = numeric.dot(g[a:b], np.ravel(d)[a:b])
            if judge(np.array([proj]), np.array([fd.value]), np.array([fd.error]), tol).ratio > 1:
                lo, hi = a, b
                break
        else:
            stuck = True  # neither half fails on its own: the block is differentiated whole
    elements = np.arange(lo, hi)
    fd = frozen_results(frozen, numeric.jacobian(f, tensors, [name], differences.method, kinky, elements=elements),
                        elements)[name]
    record = record_for_elements(graph, a_result, differences.name, differences.method, name, x.shape, elements,
                                 g[elements], fd, tol, time.perf_counter() - t0)
    if record.status == "fail" and differences.method == "central":
        # as check_pair does for full Jacobians: a failure must survive Richardson
        fd = frozen_results(frozen, numeric.refine(f, tensors, [name], kinky, elements=elements), elements)[name]
        record = record_for_elements(graph, a_result, differences.name, "richardson", name, x.shape, elements,
                                     g[elements], fd, tol, time.perf_counter() - t0)
    how = (f"bisected over its {x.size:,} elements ({probes} directional checks"
           + ("; neither half of the last block failed alone" if stuck else "")
           + f"), then elements {_position(lo, x.shape)} to {_position(hi - 1, x.shape)} "
           f"({hi - lo}) differentiated one by one")
    return replace(record, message=(record.message + "\n" + how).strip())


# Note [Joint directions]
# A directional check moves every tensor at once, by one step sized for the
# largest of them.  Where the tensors' scales differ (an offset input beside
# unit weights, large queries beside a small value tensor) that step can be
# far too coarse for a small tensor whose function is strongly curved there,
# and the joint difference is off by truncation while every gradient is right.
# Directional derivatives are linear in the direction: the joint one is the
# sum over tensors of each tensor's slice.  So when no tensor fails on its own
# directions, each slice of the failing joint directions is differenced alone,
# at its own scale, and the joint check is judged again against their sum: a
# gradient error in any tensor still shows (the slices are the very directions
# that failed), while the joint step's truncation does not.


def _joint_again(case, results, tolerance, rows):
    """The joint record judged again against directional derivatives given as
    ``rows`` (one a direction, each the list of parts that sum to it)."""
    dirs, _ = results[1].joint
    refined = replace(results[1], kind="richardson", joint=(dirs, numeric.FDResult(
        np.array([sum(v.value for v in row) for row in rows]), np.array([sum(v.error for v in row) for row in rows]),
        None)))
    return [r for r in compare(case.graph, results[0], refined, seed=case.seed, tolerance=tolerance)
            if r.tensor == JOINT][0]


def localise(case, records, tensors, a, b, results, tolerance):
    """A failing directional check (every tensor at once) becomes records per
    tensor, and per element for the tensors that fail (``localise_directional``)."""
    joint = [r for r in records if r.tensor == JOINT]
    if not joint or joint[0].status != "fail":
        return records, results
    rest = [r for r in records if r.tensor != JOINT]
    dirs, _ = results[1].joint
    plain = (lambda t: b.of.forward(case.graph, t))
    if b.method == "central" and dirs:
        # First the same directions with Richardson extrapolation, which knows its own
        # truncation error: a near miss of the central stencil (a million-element
        # direction, a curved first derivative under a second-order check) passes
        # there, and nothing is localised element by element.
        again = _joint_again(case, results, tolerance, [[numeric.directional(plain, tensors, d, "richardson")]
                                                         for d in dirs])
        if again.status == "pass":
            return [with_opinion(again, "richardson", "pass", "failed against central differences; the same "
                                 "directions agree with Richardson extrapolation, so the central step's "
                                 "truncation, not the gradient, was off", opinions=joint[0].opinions)] + rest, results
    seed = results[1].direction_seed or 0
    coarse, full, bisected = localise_directional(b, case.graph, tensors, results[0], tolerance, seed)
    if full is None and not bisected:
        # No tensor fails on its own directions: the joint ones are judged again as the
        # sum of their slices, each tensor's slice differenced alone at its own scale
        # with Richardson extrapolation (Note [Joint directions]).
        names = list(dirs[0]) if dirs else []
        again = _joint_again(case, results, tolerance, [[numeric.directional(plain, tensors, {n: d[n]}, "richardson")
                                                          for n in names] for d in dirs])
        note = ("no tensor fails on its own directions; the joint directions judged again as the sum of their "
                "slices, each tensor's differenced alone at its own scale with Richardson extrapolation"
                + (": they agree, so the joint step, not the gradient, was off" if again.status == "pass"
                   else ": they still disagree"))
        return [with_opinion(again, "localisation", f"no single tensor; slices {again.status}", note,
                             opinions=joint[0].opinions)] + coarse + rest, results
    fine = {r.tensor: r for r in compare(case.graph, results[0], full, seed=case.seed, tolerance=tolerance)
            } if full is not None else {}
    fine.update({t: replace(r, seed=case.seed) for t, r in bisected.items()})
    note = "(localised from a directional check over every tensor)"
    located = [with_opinion(fine[r.tensor], "localisation", f"element {fine[r.tensor].index}", note)
               if r.tensor in fine else r for r in coarse]
    return located + rest, [results[0], full if full is not None else results[1]]


# ---------------------------------------------------------------- 2. richardson


def loss_terms(case, tensors, results) -> float:
    """The size of the terms the case's loss sums, sum |g y| for a probe head
    <g, y>, or what a loss head's ``OpDef.terms`` says (Note [Loss rounding] in
    sources/numeric.py); 0 when it is not known.  A probe of a loss with
    reduction "none" counts each element's terms where they exceed |y|."""
    graph = case.graph
    head = graph.node(graph.output)
    terms = get_op(head.op).terms
    if head.op != "weighted_sum" and terms is None:
        return 0.0
    values = forward_values(case, tensors, results)
    if values is None or not all(i in values for i in head.inputs):
        return 0.0

    def terms_of(node):
        rule = get_op(node.op).terms
        if rule is None or not all(i in values for i in node.inputs):
            return None
        return np.asarray(rule(*(values[i] for i in node.inputs), **get_op(node.op).full_hyper(node.hyper)))

    if terms is not None:
        return float(terms_of(head))
    y, g = (np.asarray(values[i], dtype=np.float64) for i in head.inputs)
    size = np.abs(y)
    if head.inputs[0] in {n.name for n in graph.nodes}:
        inner = terms_of(graph.node(head.inputs[0]))
        if inner is not None:
            size = np.maximum(size, inner)
    return float(np.sum(size * np.abs(g)))


def _mismatched(names, results, tolerance) -> dict:
    """``{tensor: flat indices of its elements beyond tolerance}`` (every element
    when most are): what a re-judgement needs to recompute."""
    fd = results[1]
    tol = tolerance or tolerance_for(ANALYTIC, fd.kind, fd.dtype)
    scale = scale_of(fd)
    out = {}
    for name in names:
        ratios = element_ratios(results[0].grads[name], fd.grads[name], fd.grad_errors.get(name), tol, scale)
        bad = np.flatnonzero(np.ravel(ratios) > 1)
        out[name] = None if bad.size > ratios.size // 2 else bad
    return out


def escalate(case, records, tensors, a, b, results, tolerance):
    """A tensor that fails against central differences is recomputed with Richardson
    extrapolation (Note [Finite-difference step]) and judged again: a failure must
    survive a finite difference that knows its own truncation error.  Returns the
    records and the results, the differences refined where they were."""
    if not isinstance(b, FiniteDifferences) or b.method != "central":
        return records, results
    if not results[1].grads:
        return records, results
    failed = [r.tensor for r in records if r.status == "fail" and r.tensor in results[1].grads]
    if not failed:
        return records, results
    refined = b.refine(case.graph, tensors, results[1], _mismatched(failed, results, tolerance),
                       noise=loss_terms(case, tensors, results))
    again = {r.tensor: r for r in compare(case.graph, results[0], refined, seed=case.seed, tolerance=tolerance)
             if r.tensor in failed}
    note = "(judged again against Richardson differences after failing against central ones)"
    return [with_opinion(again[r.tensor], "richardson", again[r.tensor].status, note,
                         seconds=r.seconds + refined.seconds, opinions=r.opinions)
            if r.tensor in again else r for r in records], [results[0], refined]


def float64_differences(case, records, tensors, a, b, results, tolerance):
    """Note [Float64 differences]
    In float32 a finite difference of a badly conditioned case (a layer norm
    over two features whose values nearly agree, a batch norm of large
    parameters) can be wrong by more than its error estimate, Richardson's
    included: the step that keeps rounding small is too long for the
    curvature.  When a source that can compute in float64 (the reference, a
    declared op's formula) fails against differences of itself in float32, the
    failing tensors' differences are taken again, by Richardson extrapolation,
    of its float64 twin at the same values, and the float32 gradient is judged
    against those at the same float32 tolerance: the yardstick is made accurate,
    the tolerance is not widened, and a float32 gradient that is off still
    fails.  A candidate whose ops are declared for float32 only has no float64
    twin: the float64 differences are then the reference's (with declared ops'
    formulas), the function its ops claim to compute, whose forward the
    candidate's is checked against elsewhere.  A source with neither keeps its
    failure."""
    if not isinstance(b, FiniteDifferences) or results[0].dtype == "float64":
        return records
    failed = [r.tensor for r in records if r.status == "fail" and r.tensor in results[1].grads]
    if not failed:
        return records
    refined, whose = None, "the float64 computation"
    # the same values held in float64, so that the steps are taken in float64
    # too (x + h rounded to float32 moves x by float32's spacing, not by h)
    wide = _widened(tensors)
    for twin in _float64_twins(a, case.graph):
        differences = FiniteDifferences(twin, "central", "full", b.n_directions, b.seed, full_limit=b.full_limit)
        try:
            refined = differences.refine(case.graph, wide, results[1], failed)
            break
        except Unsupported:
            whose = "the float64 reference (the candidate's ops are declared for float32 only)"
    if refined is None:
        return records
    again = {r.tensor: r for r in compare(case.graph, results[0], refined, seed=case.seed, tolerance=tolerance)
             if r.tensor in failed}
    note = (f"(judged again against Richardson differences of {whose} at the same values, at the "
            "same tolerance: float32 differences cannot resolve this case, see Note [Float64 differences])")
    return [with_opinion(again[r.tensor], "float64-differences", again[r.tensor].status, note,
                         seconds=r.seconds + refined.seconds, opinions=r.opinions)
            if r.tensor in again else r for r in records]


def _widened(tensors) -> dict:
    """The tensors' values held in float64 (integer ones as they are)."""
    return {k: np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
            for k, v in tensors.items()}


def _float64_twins(a, graph):
    """The float64 sources whose differences may stand in for ``a``'s: its own
    twin, then, for a candidate, the reference (Note [Float64 differences])."""
    try:
        yield a.with_dtype("float64")
    except Unsupported:
        pass
    if candidate_of(a) is not None:
        reference = ReferenceOrFormula("float64")
        if reference.can_run(graph):
            yield reference


_FLOATING = re.compile(r"raised (FloatingPointError|RuntimeWarning): (divide by zero|overflow|invalid value)")


def out_of_range(case, records, tensors, dtype, torch_formulas=frozenset()):
    """Note [Out of range]
    A value that is not finite (an exp past float32's 3.4e38 at logits near
    90, a loss of such values) is an error of the source that gave it, unless
    the function itself leaves the dtype's range there: when the reference,
    run in the record's dtype on the same values, is not finite for that tensor
    either, the record is ``skipped`` with that reason: the case lies outside
    what the dtype can represent, and no implementation could be judged on it.
    A source that overflows where the reference stays finite keeps its error,
    with two exceptions.  torch's own ops (``torch_formulas``, the sources
    running no candidate's code) are the comparison, not the code under test,
    and some of their formulas overflow where the function is finite
    (soft_margin_loss's log1p(exp(-y x)) past y x = -709, or -88 in float32):
    such a record is ``skipped`` saying so.  And a candidate's value that torch's
    own formulas, run on the same graph in the same dtype, cannot give finitely
    either is ``skipped`` the same way, saying that torch overflows there too: a
    layer built on torch's ops inherits that limit, and flagging it would flag
    torch.  A candidate that overflows where torch stays finite still errs.
    A source that raised a floating-point warning (NumPy's divide by zero,
    overflow or invalid value, turned into an exception by a warnings filter)
    is asked about the same way as one that returned such a value: a record
    for the whole case is skipped when the reference is not finite anywhere."""
    bad = [r for r in records if r.status == "error" and ("non-finite value" in r.message or _FLOATING.search(r.message))]
    if not bad:
        return records
    import warnings

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # overflowing is what is asked about
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = ReferenceOrFormula(dtype).run(case.graph, tensors)
    except Exception:  # noqa: BLE001 - nothing to say beyond the error itself
        return records
    out = []
    for r in records:
        value = ref.grads.get(r.tensor, ref.outputs.get(r.tensor))
        if not r.tensor:  # the source raised: it had no tensor to give
            value = np.concatenate([np.ravel(v) for v in (*ref.grads.values(), *ref.outputs.values())] or [np.zeros(0)])
        if r in bad and (not np.isfinite(ref.loss) or value is not None and not np.all(np.isfinite(value))):
            r = with_opinion(r, "out-of-range", "skipped", f"(the reference in {dtype} is not finite here either: "
                             f"the case leaves {dtype}'s range, see Note [Out of range])", status="skipped")
        elif r in bad and any(r.message.startswith(f"{name} ") for name in torch_formulas):
            r = with_opinion(r, "out-of-range", "skipped", f"(the reference in {dtype} is finite here: torch's own "
                             f"formula overflows on these values, a limitation of torch and not of the code under "
                             f"test, see Note [Out of range])", status="skipped")
        elif r in bad and _torch_overflows_too(case, tensors, dtype, r.tensor):
            r = with_opinion(r, "out-of-range", "skipped", f"(the reference in {dtype} is finite here, and torch's own "
                             f"ops in {dtype} overflow on these values too: a limit the code inherits from torch, "
                             f"see Note [Out of range])", status="skipped")
        out.append(r)
    return out


def _torch_overflows_too(case, tensors, dtype, tensor) -> bool:
    """Whether torch's own formulas for the graph, in ``dtype``, give a non-finite
    value for ``tensor`` (or the loss) on these values (Note [Out of range])."""
    from ..case import DTYPES
    from ..sources.torch_autograd import TorchSource

    if dtype not in DTYPES:
        return False
    try:
        with np.errstate(all="ignore"):
            ours = TorchSource(dtype=dtype).run(case.graph, tensors)
    except Exception:  # noqa: BLE001 - an op with no torch formula, or one torch refuses: no such excuse
        return False
    value = ours.grads.get(tensor, ours.outputs.get(tensor))
    return not np.isfinite(ours.loss) or value is not None and not np.all(np.isfinite(value))


# ---------------------------------------------------------------- 3. conditioning


ROUNDING_SAFETY = 10.0
# Independent draws of Note [Rounded run] whose worst deviation counts.
ROUNDED_DRAWS = 8


def conditioning(case, records, tensors, b, results, tolerance, outputs, dtype):
    """Note [Conditioning]
    A fixed rtol per dtype cannot know how much a case amplifies rounding: a
    batch norm over two samples, say, turns float32's 1e-7 into 1e-3.  When a
    low-precision analytic comparison fails, the independent side is run again
    in float32 on the same values (the same implementations the check used: the
    reference, or a declared op's formula), and its own deviation from its
    float64 self measures that amplification for this case, element by element.
    That run can be luckier than the code under test: a layer norm of two equal
    values is exact in the reference's two-pass float32 and off by a rounding of
    x * rstd in torch's fused one, and 1 / sqrt(eps) amplifies the difference.
    So the float64 reference is also run with every op's result, forward and
    backward, rounded as float32 would round it (a random relative error of one
    unit roundoff, drawn from the case's seed; Note [Rounded run]) ROUNDED_DRAWS
    times, and the largest of the deviations counts.  A failing tensor is
    judged again allowing ROUNDING_SAFETY times that deviation (scaled from
    float32 to the dtype at hand); the record says so.  A bug changes a gradient by far more than
    rounding does, so it still fails.

    A float32 gradient judged against finite differences is the same
    question: its own rounding may exceed rtol (var(x / p) with x near 1,000
    gives d/dp as a sum of x_i times terms that sum to 0, 2% off in float32,
    correct code included).  When such a tensor still fails after Note
    [Float64 differences], the reference's deviation on the case is added to
    the differences' own error bound, the same way.
    """
    failed = {r.tensor for r in records if r.status == "fail"}
    measure = _independent(b)
    try:
        ref64 = measure.with_dtype("float64").run(case.graph, tensors)
        ref32 = measure.with_dtype("float32").run(case.graph, tensors)
    except Unsupported:
        return records
    rounded = rounded_runs(case, tensors)

    def deviation(kind, t):
        exact = getattr(ref64, kind)[t]
        worst = np.abs(getattr(ref32, kind)[t] - exact)
        for r in rounded:
            worst = np.maximum(worst, np.abs(getattr(r, kind)[t] - exact))
        return worst

    k = ROUNDING_SAFETY * eps_of(dtype) / eps_of("float32") / PREDICTED_SAFETY
    other = results[1]

    def widen(errors, kind, exact):
        return {**errors, **{t: k * deviation(kind, t) + (0.0 if errors.get(t) is None else errors[t])
                             for t in failed if t in exact}}

    widened = replace(other, grad_errors=widen(other.grad_errors, "grads", ref64.grads),
                      output_errors=widen(other.output_errors, "outputs", ref64.outputs))
    again = {r.tensor: r for r in compare(case.graph, results[0], widened, seed=case.seed, tolerance=tolerance,
                                          outputs=outputs) if r.tensor in failed}
    note = (f"(judged again allowing {ROUNDING_SAFETY:g}x the float32 reference's own rounding error on this case, "
            f"see Note [Conditioning])")
    return [with_opinion(again[r.tensor], "conditioning", again[r.tensor].status, note, opinions=r.opinions)
            if r.tensor in again else r for r in records]


def rounded_runs(case, tensors, draws=ROUNDED_DRAWS):
    """Note [Rounded run]
    The float64 reference on the case with each leaf, each op's forward result
    and each gradient it passes back multiplied by 1 + d, d uniform in [-u, u] for
    float32's unit roundoff u (independently per element, seeded by the case):
    what float32 code that rounds correctly at every op boundary could return,
    computed without float32's own luck.  An op's inputs rounded stand for the
    roundings inside it (torch's fused x * rstd - mean * rstd), and its backward
    runs on a cache from inputs rounded again, independently: a backward that
    recomputes from saved inputs (torch's layer norm, b * x + c with b * x
    near c) rounds apart from the forward it differentiates.  A draw that moves a kink op to another
    branch (a tie in a max pool broken the other way) is not rounding of the
    same function, and gives None: the kink rules judge those cases.

    One draw is one sample of a random error: on a scalar (the loss, a 1-element
    gradient) it lands near zero one time in ten, and float32 code that rounds a
    few times more than once per op (torch's group norm at mean 1,000: a running
    mean, then x * rstd and mean * rstd, each rounded at 2,000 times the output)
    then exceeds ROUNDING_SAFETY times it.  So this gives ``draws`` independent
    draws (those that stay on the exact run's branches), and Note [Conditioning]
    takes the worst of them, element by element.

    A normalisation's backward is the one place where rounding at op
    boundaries undercounts: the reference's formula is consistent with its own
    cache (its x̂ has mean 0 exactly, whatever rounding its input had), while
    float32 code that sums g * x and g over a group whose mean is 1,000 times
    its std loses 1,000 u of the terms it cancels; when the exact gradient is 0
    (a loss whose gradient is constant over the group) that loss is the whole
    result.  So each gradient out of an op with a ``spread`` (Note [Degenerate
    normalisation]) also gets a uniform error of u / spread times the typical
    size of a gradient through that op, at most 1 / (2 DEGENERATE_SLACK) of it:
    a spread below that is left to Note [Degenerate normalisation], which skips
    rather than pass a tensor no tolerance can judge."""
    graph = case.graph
    if not set(graph.ops) <= set(OPS):
        return []
    steps = graph.plan()
    x64 = _widened(tensors)
    with np.errstate(all="ignore"):
        branches = branch_signature(graph, executor.forward(steps, x64, OPS)[0])
    runs = (_rounded_run(graph, steps, x64, branches, np.random.default_rng([case.seed, 0x52_4F_55_4E, draw]))
            for draw in range(draws))
    return [r for r in runs if r is not None]


def _rounded_run(graph, steps, x64, branches, rng):
    """One draw of Note [Rounded run]: None when it leaves the exact run's ``branches``."""
    unit = eps_of("float32") / 2

    def rounded(x):
        x = np.asarray(x)
        if x.dtype.kind not in "fc" or x.size == 0:
            return x
        return x * (1 + rng.uniform(-unit, unit, x.shape))

    def cancelled(op, cache, g, grads, spread):
        """Each gradient plus the float32 rounding of x - mean inside a
        normalisation of relative spread ``spread``: u / spread of the size a
        gradient through the op has (its backward of a random gradient as
        large as ``g``), whatever the formula's exact cancellation gives."""
        probe = rng.standard_normal(np.shape(g)) * np.max(np.abs(g), initial=0.0)
        typical = op.backward(cache, probe)
        return tuple(gi if gi is None or t is None else
                     gi + rng.uniform(-1, 1, np.shape(gi)) * unit / spread * np.sqrt(np.mean(np.abs(t) ** 2))
                     for gi, t in zip(grads, typical))

    def stored(cache):
        """Every float array a backward reads, rounded as float32 code stores it
        (a norm, a mean kept from the forward): its error reaches every element
        the backward scales by it alike."""
        if isinstance(cache, tuple):
            items = [stored(c) for c in cache]
            return type(cache)(*items) if hasattr(cache, "_fields") else tuple(items)  # a NamedTuple too
        if isinstance(cache, list):
            return [stored(c) for c in cache]
        if isinstance(cache, np.ndarray) and cache.dtype.kind in "fc":
            return rounded(cache)
        return cache

    def wrap(name):
        op, spread_of = OPS[name], get_op(name).spread

        def forward(*args, **hyper):
            out, _ = op.forward(*args, **hyper)
            _, cache = op.forward(*(rounded(a) for a in args), **hyper)  # the backward rounds on its own
            cache = stored(cache)
            spread = None if spread_of is None else min(1.0, spread_of(*args, **hyper))
            return rounded(out), (cache, spread)

        def backward(cached, g):
            cache, spread = cached
            grads = op.backward(cache, g)
            if spread is not None and spread >= DEGENERATE_SLACK * eps_of("float32"):  # below: degenerate
                grads = cancelled(op, cache, g, grads, spread)
            return tuple(None if gi is None else rounded(gi) for gi in grads)

        return Op(forward, backward)

    ops = {name: wrap(name) for name in set(graph.ops)}
    with np.errstate(all="ignore"):
        values, caches = executor.forward(steps, {k: rounded(v) for k, v in x64.items()}, ops)
        if branch_signature(graph, values) != branches:
            return None
        grads = executor.backward(steps, values, caches, graph.output, ops)
    leaf_grads = {leaf.name: np.zeros_like(x64[leaf.name]) if grads.get(leaf.name) is None else grads[leaf.name]
                  for leaf in graph.differentiable_leaves}
    return SourceResult("rounded reference", ANALYTIC, float(np.real(values[graph.output])), leaf_grads,
                        {n.name: values[n.name] for n in graph.nodes}, dtype="float64")


# ---------------------------------------------------------------- 3b. degenerate normalisations

# A normalised group whose spread is below this many units of rounding of its
# size keeps fewer than 8 bits of x - mean in the dtype: Note [Degenerate normalisation].
DEGENERATE_SLACK = 256


def degenerate_normalisations(case, records, tensors, results, dtype):
    """Note [Degenerate normalisation]
    A normalisation of values that are equal, or equal but for a few roundings
    (a layer norm of a sum of two copies of one row, a batch norm over two
    samples quantised alike), is differentiable, but x - mean is then the
    rounding of its inputs: in float32 one rounding of 200 times 1 / sqrt(eps),
    torch's fused x * rstd - mean * rstd against the reference's exact two-pass
    zero, and the gradients through it a cancellation of terms 1 / sqrt(eps)
    larger than themselves.  No precision-independent tolerance can judge such a
    case, and Note [Conditioning] cannot bound it either: how much an
    implementation loses there depends on its formula, not on the case.  So, in
    a dtype coarser than float64 only, a record that failed on a graph where a
    normalisation's input has a group of relative spread (std / max|x|) under
    DEGENERATE_SLACK units of rounding is ``skipped`` naming that op and group;
    float64 still judges the same graphs, and a failure elsewhere stays one."""
    planned = _planned_values(case, tensors, results, "spread")
    if planned is None:
        return records
    steps, values = planned
    near = []
    for name, op_name, inputs, hyper in steps:
        spread = get_op(op_name).spread
        if spread is not None:
            s = spread(*(values[i] for i in inputs), **hyper)
            if s < DEGENERATE_SLACK * eps_of(dtype):
                near.append(f"{name} ({op_name}) normalises a group of values equal to {s:.2g} of their size")
    if not near:
        return records
    why = (f"({'; '.join(near)}: in {dtype}, x - mean there is rounding, and no tolerance can judge what the "
           f"op makes of it, see Note [Degenerate normalisation])")
    return [with_opinion(r, "degenerate-normalisation", "skipped", why, status="skipped") if r.status == "fail" else r
            for r in records]


def torch_deviations(case, records, tensors, results, sources):
    """Note [Torch's own deviations]
    torch's built-in backward is not right everywhere: cosine_similarity clamps
    its norms at eps in place under no_grad, and its backward then
    differentiates the norm its forward replaced, so for a vector whose norm is
    below eps the gradient differs from differences of torch's own forward.  A
    check of a correct implementation against torch cannot judge such a case,
    so when a built-in torch source is one side, a record that failed on a graph
    where an op's ``torch_deviates`` rule names its inputs is ``skipped`` with
    that reason; the reference and candidates are still judged there against
    finite differences, and a failure elsewhere stays one."""
    from ..sources.torch_autograd import TorchSource

    if not any(isinstance(s, TorchSource) and candidate_of(s) is None for s in sources):
        return records
    planned = _planned_values(case, tensors, results, "torch_deviates")
    if planned is None:
        return records
    steps, values = planned
    why = [reason for _, op, inputs, hyper in steps if get_op(op).torch_deviates
           for reason in [get_op(op).torch_deviates(*(values[i] for i in inputs), **hyper)] if reason]
    if not why:
        return records
    # the reason first: a skip is reported by its first line
    return [with_opinion(r, "torch-deviation", "skipped", status="skipped",
                         message=f"{'; '.join(why)}\n{r.message}")
            if r.status == "fail" else r for r in records]


# ---------------------------------------------------------------- 4. kinks across precisions


# An intermediate value within this many units of rounding (of the coarser dtype,
# relative to its op's inputs) from a kink may take the other branch in the other
# source: see Note [Kinks across precisions].
KINK_SLACK = 64


def forward_values(case, tensors, results):
    """Every leaf and node value of the case in float64, from the analytic result
    that has them (the independent side's first): no re-run, so no op
    implementation other than the check's own is needed."""
    for result in reversed(results):
        if result.kind == ANALYTIC and all(n.name in result.outputs for n in case.graph.nodes):
            values = _widened(tensors)
            values.update({k: np.asarray(v, dtype=np.float64) for k, v in result.outputs.items()})
            return values
    return None


def _planned_values(case, tensors, results, rule):
    """The graph's steps and every value in float64 (``forward_values``), when
    some op of the graph has ``rule`` (an OpDef field: margin, spread, ...); None
    when none has it or no result holds the values."""
    steps = case.graph.plan()
    if not any(getattr(get_op(op), rule) for _, op, _, _ in steps):
        return None
    values = forward_values(case, tensors, results)
    return None if values is None else (steps, values)


def kinks_across_precisions(case, records, tensors, results, dtype, exact_too=False):
    """Note [Kinks across precisions]
    Two analytic sources in different precisions (torch in float32 against the
    float64 reference) see intermediate values that differ by rounding.  When
    one lies that close to a kink (a relu input near 0, a near-tie in a max-pool
    window), the two sources may take different branches, and their gradients
    differ by a whole slope without either being wrong.  Only then, and only for
    records that failed, the status becomes ``nondifferentiable`` with the margin
    that explains it; a failure on a graph far from every kink stays a failure.
    Exact kinks (margin 0) are judged by Note [Exact kinks] instead, except
    for the built-in sources (``exact_too``), whose conventions at an exact kink
    agree by construction: a float64 value exactly at a kink is, in float32, a
    rounding away from it on either side (an attention output equal to its
    quantised target in float64 only).
    """
    planned = _planned_values(case, tensors, results, "margin")
    if planned is None:
        return records
    steps, values = planned
    near = []
    for name, op_name, inputs, hyper in steps:
        op = get_op(op_name)
        if op.margin is None:
            continue
        args = [values[i] for i in inputs]
        scale = max(1.0, max(float(np.max(np.abs(a), initial=0.0)) for a in args if a.dtype.kind == "f"))
        margin = op.margin(*args, **hyper)
        if (0 < margin or exact_too and margin == 0) and margin < KINK_SLACK * eps_of(dtype) * scale:
            near.append(f"{name} ({op_name}) is {margin:.3g} from a kink")
    if not near:
        return records
    why = "a kink op's input is within rounding of its kink in " + dtype + ": " + "; ".join(near)
    return [with_opinion(r, "kinks-across-precisions", "nondifferentiable", why, status="nondifferentiable")
            if r.status == "fail" else r for r in records]


# ---------------------------------------------------------------- 4b. one-sided kinks

KINK_PROBES = 64  # the most mismatched elements of one tensor probed one by one
KINK_LEVELS = 4  # steps h, h/2, h/4, h/8
KINK_PERSISTS = 0.75  # a jump that shrinks by less than this when h halves is a kink, not curvature
ROUNDING_MARGIN = 8.0


def _unknown_kinks(graph) -> bool:
    """Whether ``graph`` has an op that could have kinks nobody described: one a
    user declared (or a function given to ``gradcheck.check``) without a branch
    signature."""
    return any(op not in BUILTIN_OPS and get_op(op).branch is None for op in graph.ops)


def one_sided_kinks(case, records, tensors, a, b, results, tolerance):
    """Note [One-sided kinks]
    An op the catalogue does not describe (a user's declared op without a branch
    signature, a function given to ``gradcheck.check``) may have kinks nobody
    told us about: a fused relu, a clamp, a max.  A central difference whose
    stencil straddles one averages two slopes, and a correct gradient fails.  So
    before such a failure is reported, each mismatched element (up to
    KINK_PROBES of a tensor) is probed along its own axis with one-sided
    differences d+ = (L(x+h) - L(x)) / h and d- = (L(x) - L(x-h)) / h of the
    check's scalar loss, for h, h/2, h/4, h/8.  On a smooth function the jump
    d+ - d- is curvature and halves with h; at a kink it stays.

    * The jump persists at the finest step (shrinks by less than KINK_PERSISTS,
      and is beyond rounding): x is at a kink of the loss along this axis, where
      any value between the two one-sided slopes is a subgradient.  A candidate
      inside [min(d-, d+), max(d-, d+)] (within the tolerance) is
      ``nondifferentiable``; outside, it stays a failure, and says both slopes.
    * The jump vanishes at a finer step: the kink was within h of x but not at
      it.  The central difference at the finest step is on one side, and the
      candidate is judged against it (nondifferentiable if it agrees).

    A wrong gradient of a smooth function stays a failure: at h/8 the interval
    of one-sided slopes is a few times h |L''| wide, and the finest central
    difference is as accurate as the first up to 8x the rounding error, which
    the tolerance allows for.  Tensors localised by bisection (over
    ``bisect_above`` elements) are not probed.
    """
    if not isinstance(b, FiniteDifferences) or b.method == "complex" or not _unknown_kinks(case.graph):
        return records
    fd = results[1]
    failed = [r for r in records if r.status == "fail" and r.tensor in fd.grads and r.tensor in results[0].grads]
    if not failed:
        return records
    dtype = fd.dtype if fd.dtype in ("float64", "float32", "float16", "bfloat16") else "float64"
    tol = tolerance or tolerance_for(ANALYTIC, b.method, dtype)
    scale = scale_of(fd)
    loss = (lambda t: float(np.real(b.of.forward(case.graph, t))))
    base = loss(tensors)
    kinks, notes, changed = dict(fd.grad_kinks), {}, set()
    for r in failed:
        name = r.tensor
        mine = np.asarray(results[0].grads[name], dtype=np.float64)
        theirs = np.asarray(fd.grads[name], dtype=np.float64)
        ratios = element_ratios(mine, theirs, fd.grad_errors.get(name), tol, scale)
        old = fd.grad_kinks.get(name)
        if old is not None:
            ratios = np.where(np.broadcast_to(old, ratios.shape), 0.0, ratios)
        bad = np.flatnonzero(ratios.ravel() > 1)
        if bad.size > KINK_PROBES:
            notes[name] = (f"{bad.size} mismatched elements, more than the {KINK_PROBES} probed for kinks "
                           f"(Note [One-sided kinks]): not probed")
            continue
        mask = np.zeros(mine.size, dtype=bool)
        unexplained = []
        for flat in bad:
            ok, why = _probe_kink(loss, base, tensors, name, int(flat), float(mine.ravel()[flat]), dtype, tol, scale)
            mask[flat] = ok
            if not ok:
                unexplained.append(f"{_position(int(flat), mine.shape)}: {why}")
        if mask.any():
            changed.add(name)
            kinks[name] = mask.reshape(mine.shape) | (False if old is None else np.broadcast_to(old, mine.shape))
        head = f"probed {bad.size} mismatched element(s) with one-sided differences (Note [One-sided kinks])"
        if not mask.any():
            notes[name] = f"{head}: none is at or next to a kink (e.g. {unexplained[0]})"
        else:
            notes[name] = (f"{head}: {int(mask.sum())} at or next to a kink, where the candidate is a one-sided "
                           f"slope or between the two" + ("; not explained: " + "; ".join(unexplained[:2])
                                                          if unexplained else ""))
    probed = replace(fd, grad_kinks=kinks)
    again = {r.tensor: r for r in compare(case.graph, results[0], probed, seed=case.seed, tolerance=tolerance)}
    out = []
    for r in records:
        if r.tensor not in notes:
            out.append(r)
            continue
        new = again.get(r.tensor, r) if r.tensor in changed else r
        out.append(with_opinion(new, "one-sided-kinks", new.status, notes[r.tensor], opinions=r.opinions,
                                seconds=r.seconds))
    return out


def _probe_kink(loss, base, tensors, name, flat, candidate, dtype, tol, scale):
    """(explained, why not) for element ``flat`` of leaf ``name``: Note [One-sided kinks]."""
    x = np.array(tensors[name], copy=True)
    x0 = x.ravel()[flat]
    eps = eps_of(dtype)
    h0 = numeric.step_size(dtype) * max(1.0, abs(float(x0)))
    moved = dict(tensors)
    levels = []
    for k in range(KINK_LEVELS):
        row = []
        for sign in (1, -1):
            y = x.copy()
            y.ravel()[flat] = x0 + sign * h0 / 2 ** k
            step = abs(float(y.ravel()[flat]) - float(x0))  # the step the dtype could take
            moved[name] = y
            row.append((loss(moved), step))
        (up, hu), (down, hd) = row
        if hu == 0 or hd == 0:
            break
        dp, dm = (up - base) / hu, (base - down) / hd
        central = (up - down) / (hu + hd)
        rounding = ROUNDING_MARGIN * eps * (abs(base) + abs(up) + abs(down)) / min(hu, hd)
        levels.append((dp, dm, central, rounding))
    if len(levels) < 2:
        return False, "the dtype cannot take a smaller step"
    dp, dm, central, rounding = levels[-1]
    jump, before = abs(dp - dm), abs(levels[-2][0] - levels[-2][1])
    allowed = tol.atol + tol.rtol * (max(abs(dp), abs(dm)) + scale) + rounding
    if jump > rounding and jump >= KINK_PERSISTS * before:
        lo, hi = min(dp, dm), max(dp, dm)
        # one-sided differences are first-order: each slope is off by about what
        # it moved when the step last halved (a kink of a smooth-sided function)
        trunc = max(abs(dp - levels[-2][0]), abs(dm - levels[-2][1]))
        if lo - allowed - trunc <= candidate <= hi + allowed + trunc:
            return True, ""
        return False, (f"a kink: one-sided slopes {dm:.6g} (left) and {dp:.6g} (right), the candidate's "
                       f"{candidate:.6g} is outside them")
    if abs(candidate - central) <= allowed:
        return True, ""
    return False, f"no kink at step h/{2 ** (len(levels) - 1)}: differences {central:.6g}, the candidate's {candidate:.6g}"


# ---------------------------------------------------------------- 5. exact kinks


def _independent(b):
    """The source whose single ops stand for the math: ``b`` when it is analytic,
    else the reference (with declared ops' formulas)."""
    return b if not isinstance(b, FiniteDifferences) else ReferenceOrFormula()


def _local_ops(source, ops):
    """``{op: Op}`` of ``source`` for these ops, or None when it runs whole graphs only."""
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


def exact_kinks(case, records, tensors, a, b, results):
    """Note [Exact kinks] in ops.py, for a case that failed (or that finite
    differences called nondifferentiable) with an input exactly at a kink of an
    op under test: that node is judged on its own by the op's subgradient rule,
    and the case recomputed with the candidate's choice there."""
    graph = case.graph
    values = forward_values(case, tensors, results)
    mine = set(under_test(graph, a))
    if values is None or not mine or mine == set(graph.ops) and candidate_of(a) is None:
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
    # The candidate's op at a kink node sees the candidate's own values of its
    # inputs: a tie in the reference's values may be a rounding away from one in
    # the candidate's (an average computed another way), and the candidate's
    # choice is the one its own values made.
    own = results[0].outputs if results[0].kind == ANALYTIC else {}

    def own_values(names, fallback):
        return [np.asarray(own[n], dtype=np.float64) if n in own and np.shape(own[n]) == np.shape(v) else v
                for n, v in zip(names, fallback)]

    def on_own_values(impl, names):
        def forward(*args, **hyper):
            return impl.forward(*(x.astype(a.dtype) if a.dtype.kind == "f" else x
                                  for x, a in zip(own_values(names, args), args)), **hyper)
        return Op(forward, impl.backward)

    # the case with the candidate's op at the kink nodes only, the rest the reference's
    steps, table = [], dict(theirs)
    for name, op_name, inputs, hyper in graph.plan():
        key = f"{op_name}@{name}" if name in kinks else op_name
        if name in kinks:
            table[key] = on_own_values(ours[op_name], inputs)
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
            gc = _vjp(ours[node.op], own_values(node.inputs, inputs), hyper, g, dtype)
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
        return [with_opinion(r, "exact-kinks", "outside the subdifferential", note, status="fail")
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
        if judge(mine_value, np.asarray(other, dtype=np.float64), None, tol).ratio <= 1:
            out.append(with_opinion(r, "exact-kinks", "nondifferentiable", "an input is exactly at a kink, where "
                                    "any element of the subdifferential is right, and the candidate's choice is one "
                                    "(Note [Exact kinks]): " + explained, status="nondifferentiable"))
        else:
            out.append(with_opinion(r, "exact-kinks", "fail"))
    return out


# ---------------------------------------------------------------- 6. nondeterminism


def nondeterminism(case, records, tensors, a, first):
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
    return [with_opinion(r, "nondeterminism", f"differs by {worst:.3g}", status="error",
                         message=(note + "\n" + r.message).strip())
            if r.status in ("fail", "nondifferentiable") else r for r in records]


# ---------------------------------------------------------------- 7. the op under test


def name_the_op(case, records, tensors, a, b, results, mine):
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
        return [with_opinion(r, "op-under-test", "no single op's VJP disagrees on its own")
                if r.status == "fail" else r for r in records]
    return [with_opinion(r, "op-under-test", culprit, op=culprit) if r.status in ("fail", "error") and not named(r)
            else r for r in records]


LOCAL_FULL_LIMIT = 512  # inputs up to this many scalars are differentiated element by element on their own


def _localise_op(case, tensors, a, b, results, candidates) -> str:
    """The first node (in graph order) of an op in ``candidates`` whose VJP on its
    own, at the case's values and a random cotangent, disagrees with the
    independent side's (an analytic ``b``) or with differences of its own forward
    (element by element for small inputs, along random directions for large
    ones, so a million-element weight costs two forwards); "" when none does (the
    fault is in how the ops are put together)."""
    values = forward_values(case, tensors, results)
    ours = _local_ops(a, candidates)
    if values is None or ours is None:
        return ""
    analytic = not isinstance(b, FiniteDifferences)
    theirs = _local_ops(_independent(b), candidates) if analytic else None
    dtype = results[0].dtype if results[0].dtype in ("float64", "float32") else "float32"
    rng = np.random.default_rng(case.seed)
    for name, op_name, inputs, hyper in case.graph.plan():
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
                pairs = [(m, o, None, None) for m, o in zip(mine, other)]
            else:
                tol = tolerance_for(ANALYTIC, "central", dtype)
                pairs = _local_differences(ours[op_name], op, args, hyper, g, dtype, mine, rng)
        except Exception:  # noqa: BLE001 - an op that raises on its own is the culprit
            return op_name
        for arg, (m, o, e, k) in zip(op.bind(len(args)), pairs):
            if arg.differentiable and m is not None and o is not None and judge(m, o, e, tol, k).ratio > 1:
                return op_name
    return ""


def _local_differences(op_impl, op, args, hyper, g, dtype, vjps, rng):
    """For each differentiable input: (the VJP, central differences of <g, op(args)>,
    their predicted error, kinks crossed), element by element up to
    LOCAL_FULL_LIMIT scalars, else both projected on two random directions."""
    cast = {str(i): (x.astype(dtype) if x.dtype.kind == "f" else x) for i, x in enumerate(args)}
    order = [str(i) for i in range(len(args))]

    def f(t):
        out = op_impl.forward(*(t[k] for k in order), **hyper)[0]
        value = float(np.sum(np.asarray(out, dtype=np.float64) * g))
        if op.branch is None:
            return value
        return value, np.ascontiguousarray(op.branch(*(t[k] for k in order), **hyper)).tobytes()

    kinky = op.branch is not None
    out = []
    masks = {} if op.frozen is None else op.frozen({a.name: x.shape for a, x in zip(op.bind(len(args)), args)},
                                                   op.full_hyper(hyper))
    for i, arg in enumerate(op.bind(len(args))):
        if not (arg.differentiable and args[i].dtype.kind == "f") or vjps[i] is None:
            out.append((None, None, None, None))
        elif args[i].size <= LOCAL_FULL_LIMIT:
            frozen = {str(i): masks[arg.name]} if arg.name in masks else {}
            r = frozen_results(frozen, numeric.jacobian(f, cast, [str(i)], "central", with_branches=kinky))[str(i)]
            out.append((vjps[i], r.value, r.error, r.kink))
        else:
            dirs = [rng.standard_normal(args[i].shape) for _ in range(2)]
            rs = [numeric.directional(f, cast, {str(i): d}, "central", kinky) for d in dirs]
            out.append((np.array([numeric.dot(vjps[i], d) for d in dirs]), np.array([float(r.value) for r in rs]),
                        np.array([float(r.error) for r in rs]),
                        np.array([bool(r.kink) for r in rs]) if kinky else None))
    return out
