"""The one policy of which source pairs run, for which dtype and device.

* the catalogue sweep: the reference VJP against central, Richardson and
  complex-step differences of its own forward (in float64 or float32), torch
  against the float64 reference, and torch against central differences of its
  own forward;
* random graphs: each analytic source against central differences of its own
  forward and against the float64 reference (or a declared op's formula);
* the suites: each source against differences of its own forward in the dtypes
  it takes, and against the reference in the dtypes asked for; torch candidates
  against torch's own ops.

Finite differences run only in dtypes that have them (``case.DTYPES``); a
float16 or bfloat16 source is compared with the float64 reference on the same
rounded values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .case import DIFFERENTIABLE_DTYPES
from .catalogue import CATALOGUE
from .sources import FiniteDifferences, ReferenceOrFormula, ReferenceSource
from .sources.candidate import EngineSource, NumpyCandidateSource, torch_candidate_source
from .sources.isolation import IsolatedSource

__all__ = ["Pair", "sweep_pairs", "graph_pairs", "SuiteSources", "suite_sources", "isolate", "case_dtype", "worst",
           "ops_to_run"]


@dataclass(frozen=True)
class Pair:
    label: str  # column name in the table
    a: object
    b: object
    outputs: bool = False
    dtype: str | None = None  # the case dtype this pair runs in (default: the run's)


def _torch_source(device, dtype):
    from .sources.torch_autograd import TorchSource  # torch is imported only when a torch pair runs

    return TorchSource(device, dtype)


def sweep_pairs(dtype="float64", device="cpu", torch=True, methods=("central", "richardson", "complex")):
    """The source pairs of the catalogue sweep, with cases in ``dtype``."""
    ref = ReferenceSource()
    pairs = [Pair(f"ref~{m}", ref, FiniteDifferences(ref, m)) for m in methods if dtype in DIFFERENTIABLE_DTYPES]
    if torch:
        t = _torch_source(device, dtype)
        pairs.append(Pair(f"{t.name}~ref", t, ReferenceSource(compute_dtype="float64"), outputs=True))
        if dtype in DIFFERENTIABLE_DTYPES:
            pairs.append(Pair(f"{t.name}~central", t, FiniteDifferences(t, "central")))
    return pairs


def graph_pairs(dtype="float64", device="cpu", torch=True, candidate_sources=()):
    """Source pairs for random graphs: analytic sources against finite differences
    of their own forward (float64, or the dtype a candidate declares) and against
    the float64 reference; torch in ``dtype`` against the reference too."""
    ref = ReferenceSource()
    ref64 = ReferenceOrFormula()
    pairs = [Pair("ref~central", ref, FiniteDifferences(ref, "central"))]
    if torch:
        t64 = _torch_source(device, "float64")
        pairs.append(Pair("torch~central", t64, FiniteDifferences(t64, "central")))
        pairs.append(Pair("torch~ref", t64, ref64, outputs=True))
        if dtype != "float64":
            pairs.append(Pair(f"torch-{dtype}~ref", _torch_source(device, dtype), ref64, outputs=True))
    for src in candidate_sources:
        own = src.candidate.float_dtypes(("float64",))[0]
        pairs.append(Pair(f"{src.name}~central", src, FiniteDifferences(src, "central"), dtype=own))
        pairs.append(Pair(f"{src.name}~ref", src, ref64, outputs=True, dtype=own))
    return pairs


def case_dtype(pair: Pair, run_dtype: str) -> str:
    """The dtype a pair's cases are drawn in."""
    if pair.dtype:
        return pair.dtype
    if pair.a.dtype is not None:  # a source fixed to one dtype (torch)
        return pair.a.dtype
    return run_dtype if run_dtype in DIFFERENTIABLE_DTYPES else "float64"


@dataclass
class SuiteSources:
    """The suites' sources: ``self_check`` (source, case dtypes) against differences
    of their own forward, ``vs_reference`` (source, case dtypes) against the float64
    reference, ``torch_candidates`` against torch's own ops."""

    self_check: list
    vs_reference: list
    torch_candidates: list


def suite_sources(candidates, device="cpu", dtype=None, isolate_after=None) -> SuiteSources:
    """The suites' sources for these candidates (none: the reference and torch).
    ``dtype``: the one dtype asked for (default float64 and float32);
    ``isolate_after``: a time limit in seconds to run every candidate source in a
    worker process with (None: in this process)."""
    dtypes = (dtype,) if dtype else ("float64", "float32")
    numpy_dtypes = tuple(d for d in dtypes if d in DIFFERENTIABLE_DTYPES) or ("float64",)
    if not candidates:
        return SuiteSources([(ReferenceSource(), ("float64",)), (_torch_source(device, "float64"), ("float64",))],
                            [(_torch_source(device, d), (d,)) for d in dtypes], [])
    self_check, vs_reference, torch_candidates = [], [], []
    for candidate in candidates:
        # differences of its own forward in the dtypes it declares (float64 unless it says
        # it takes float32 only), against the reference in the dtypes asked for
        own = tuple(d for d in candidate.float_dtypes(("float64",)) if d in DIFFERENTIABLE_DTYPES) or ("float64",)
        against = tuple(d for d in numpy_dtypes if d in candidate.float_dtypes(numpy_dtypes)) or own
        if candidate.numpy_ops:
            src = NumpyCandidateSource(candidate)
            self_check.append((src, own))
            vs_reference.append((src, against))
        if candidate.torch_ops:
            self_check.append((torch_candidate_source(candidate, device, "float64"), ("float64",)))
            for d in dtypes:
                src = torch_candidate_source(candidate, device, d)
                vs_reference.append((src, (d,)))
                torch_candidates.append(src)
        if candidate.loss_and_grads:
            src = EngineSource(candidate)
            self_check.append((src, own))
            vs_reference.append((src, against))
    if isolate_after is not None:
        workers = {}  # one worker a source, shared by the tests that use it

        def isolated(source):
            if id(source) not in workers:
                workers[id(source)] = isolate(source, isolate_after)
            return workers[id(source)]

        self_check = [(isolated(s), d) for s, d in self_check]
        vs_reference = [(isolated(s), d) for s, d in vs_reference]
        torch_candidates = [isolated(s) for s in torch_candidates]
    return SuiteSources(self_check, vs_reference, torch_candidates)


def isolate(source, time_limit: float):
    """``source`` (a candidate's) in a worker process: the worker's own time limit
    stops a hang in Python, the parent's, a little later, one in C."""
    worker = IsolatedSource(source.spec, source.candidate.target, timeout=time_limit + 10, time_limit=time_limit)
    worker.candidate = source.candidate  # for its refusals and its identity in replay files
    worker.breaker = source.candidate.breaker  # a hang or crash in one worker stops its op in all
    worker.accepts = source.accepts
    worker.dtype = source.dtype
    return worker


def worst(records) -> tuple:
    """(worst relative error, status) of a group of records for a table cell."""
    judged = [r for r in records if r.status in ("pass", "fail", "nondifferentiable")]
    rel = max((r.max_rel_err for r in judged), default=math.nan)
    for status in ("error", "fail", "nondifferentiable", "pass", "skipped"):
        if any(r.status == status for r in records):
            return rel, status
    return rel, "skipped"


def ops_to_run(names=None):
    if not names:
        return list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise KeyError(f"unknown op {unknown[0]!r}; the catalogue has {sorted(CATALOGUE)}")
    return list(names)
