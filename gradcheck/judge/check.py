"""Running sources on cases and comparing them: the one code path that produces
``CheckRecord``s, for the pytest suites, the CLI and reports alike.

    >>> from gradcheck.case import op_cases
    >>> from gradcheck.sources import FiniteDifferences, ReferenceSource
    >>> ref = ReferenceSource()
    >>> [r.status for r in check_pair(op_cases("tanh")[0], ref, FiniteDifferences(ref))]
    ['pass']
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..case import Case
from ..sources.base import ANALYTIC, Unsupported, candidate_of
from ..sources.finite_differences import FiniteDifferences
from ..sources.isolation import WorkerFailure
from . import second_opinions as opinions
from .compare import compare
from .record import unjudged
from .tolerance import Tolerance, coarser_dtype

__all__ = ["check_pair", "error_record", "direction_seed"]


def error_record(case: Case, a, b, message: str, *, status="error", op="", seconds=0.0):
    """A record of a check of ``a`` against ``b`` that judged nothing."""
    return unjudged(case.graph.case_id, case.graph.to_json(), case.seed, a.name, b.name, case.dtype, message,
                    status=status, device=a.device if a.device != "cpu" else b.device, op=op, seconds=seconds,
                    spec_a=a.spec, spec_b=b.spec)


def direction_seed(case: Case) -> int:
    """The seed of finite differences' random directions on ``case``, when they
    have none of their own: derived from the case seed, so a replay draws the same
    directions, and written into every record."""
    return (case.seed * 0x9E3779B1 + 0x7F4A7C15) % 2**32


def check_pair(case: Case, a, b, *, tolerance: Tolerance | None = None, outputs: bool = False,
               tensors: dict | None = None) -> list:
    """Run sources ``a`` (the one under test) and ``b`` on ``case`` and compare them,
    then ask the second opinions (judge/second_opinions.py, in its order) about any
    disagreement.  A source that raises or does not apply gives one ``error`` or
    ``skipped`` record instead.  ``tensors``: the case's values when the caller has
    them already."""
    tensors = case.tensors() if tensors is None else tensors
    mine = opinions.under_test(case.graph, a)
    # a record that judged nothing names the op only when it is a candidate's own
    label = mine[0] if len(mine) == 1 and candidate_of(a) is not None else ""
    differences = isinstance(b, FiniteDifferences)
    if differences:
        why = b.cannot_run(case.graph, tensors)
        if why:
            return [error_record(case, a, b, why, op=label, status="skipped")]
    results = []
    for source in (a, b):
        t0 = time.perf_counter()
        try:
            run = source.run(case.graph, tensors, seed=direction_seed(case)) if source is b and differences else (
                source.run(case.graph, tensors))
        except Unsupported as e:
            return [error_record(case, a, b, f"{source.name}: {e}", op=label, status="skipped")]
        except Exception as e:  # a failing source is a finding, not a crash of the run
            what = str(e) if isinstance(e, WorkerFailure) else f"{type(e).__name__}: {e}"
            records = [error_record(case, a, b, f"{source.name} raised {what}", op=getattr(e, "op", "") or label,
                                    seconds=time.perf_counter() - t0)]
            return opinions.out_of_range(case, records, tensors, case.dtype, _torch_formulas(a, b))
        results.append(run)
    records = compare(case.graph, results[0], results[1], seed=case.seed, tolerance=tolerance, outputs=outputs)
    records = opinions.out_of_range(case, records, tensors, coarser_dtype(results[0].dtype, results[1].dtype),
                                    _torch_formulas(a, b))
    records = _second_opinions(case, records, tensors, a, b, results, tolerance, outputs, mine)
    return [replace(r, spec_a=a.spec, spec_b=b.spec) for r in records]


def _torch_formulas(*sources) -> frozenset:
    """The names of the sources running torch's own ops (no candidate's code), alone
    or through finite differences: Note [Out of range]."""
    from ..sources.torch_autograd import TorchSource

    names = set()
    for s in sources:
        inner = s
        while getattr(inner, "of", None) is not None:
            inner = inner.of
        if isinstance(inner, TorchSource) and candidate_of(s) is None:
            names.add(s.name)
    return frozenset(names)


def _second_opinions(case, records, tensors, a, b, results, tolerance, outputs, mine):
    """What could explain a disagreement without a bug, in the order of the Notes."""
    if isinstance(b, FiniteDifferences) and results[1].joint is not None:
        records, results = opinions.localise(case, records, tensors, a, b, results, tolerance)
    records, results = opinions.escalate(case, records, tensors, a, b, results, tolerance)
    analytic = all(x.kind == ANALYTIC for x in results)

    def failing(also_nondifferentiable=False):
        return any(r.status == "fail" or (also_nondifferentiable and r.status == "nondifferentiable")
                   for r in records)

    if failing() and analytic:
        dtype = coarser_dtype(results[0].dtype, results[1].dtype)
        if dtype != "float64":
            records = opinions.conditioning(case, records, tensors, b, results, tolerance, outputs, dtype)
            records = opinions.degenerate_normalisations(case, records, tensors, results, dtype)
        records = opinions.kinks_across_precisions(case, records, tensors, results, dtype,
                                                   exact_too=candidate_of(a) is None and dtype != "float64")
        records = opinions.torch_deviations(case, records, tensors, results, (a, b))
    if failing() and not analytic:
        records = opinions.float64_differences(case, records, tensors, a, b, results, tolerance)
        dtype = coarser_dtype(results[0].dtype, results[1].dtype)
        if failing() and dtype != "float64":
            records = opinions.conditioning(case, records, tensors, b, results, tolerance, outputs, dtype)
    if failing() and not analytic:
        records = opinions.one_sided_kinks(case, records, tensors, a, b, results, tolerance)
    if failing(also_nondifferentiable=not analytic):
        records = opinions.exact_kinks(case, records, tensors, a, b, results)
    if candidate_of(a) is not None and failing(also_nondifferentiable=not analytic):
        records = opinions.nondeterminism(case, records, tensors, a, results[0])
    return opinions.name_the_op(case, records, tensors, a, b, results, mine)
