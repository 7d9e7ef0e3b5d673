"""Running sources on cases and comparing them: the one code path that produces
``CheckRecord``s, for the pytest suites, the CLI and reports alike."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .compare import CheckRecord, Tolerance, compare
from .graph import Graph, materialize, single_op_graph
from .ops import get_op
from .sources import FiniteDifferences, ReferenceSource, Unsupported

__all__ = ["Case", "check_pair", "op_cases", "error_record"]


@dataclass(frozen=True)
class Case:
    """A graph with the values to run it on."""

    graph: Graph
    seed: int = 0
    dtype: str = "float64"
    scale: float = 1.0

    def tensors(self):
        return materialize(self.graph, self.seed, self.dtype, self.scale)


def error_record(case: Case, a_name: str, b_name: str, message: str, device="cpu", op="", seconds=0.0,
                 status="error") -> CheckRecord:
    """A record for a check that could not be made (a source raised, or does not apply)."""
    return CheckRecord(case_id=case.graph.case_id, graph=case.graph.to_json(), seed=case.seed, op=op,
                       tensor="", source_a=a_name, source_b=b_name, dtype=case.dtype, device=device,
                       max_abs_err=math.nan, max_rel_err=math.nan, cosine=math.nan, rtol=math.nan,
                       atol=math.nan, ratio=math.inf if status == "error" else math.nan, status=status,
                       seconds=seconds, message=message)


def check_pair(case: Case, a, b, *, tolerance: Tolerance | None = None, outputs: bool = False) -> list:
    """Run sources ``a`` and ``b`` on ``case`` and compare them; a source that raises
    or does not apply gives one ``error`` or ``skipped`` record instead."""
    op = case.graph.ops[0] if case.graph.ops else ""
    if isinstance(b, FiniteDifferences) and not b.supports(case.graph):
        return [error_record(case, a.name, b.name, f"{b.name} does not apply: the forward takes no complex input",
                             op=op, status="skipped")]
    tensors = case.tensors()
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
    return compare(case.graph, results[0], results[1], seed=case.seed, tolerance=tolerance, outputs=outputs)


def op_cases(op_name: str, dtype: str = "float64", seed: int = 0):
    """A ``Case`` per catalogue sample of the op: the op alone, probed by a random cotangent."""
    op = get_op(op_name)
    return [Case(single_op_graph(op_name, s), seed + i, dtype) for i, s in enumerate(op.samples)]


def reference_vs_fd(op_name: str, method: str = "central", dtype: str = "float64", seed: int = 0) -> list:
    ref = ReferenceSource()
    fd = FiniteDifferences(ref, method)
    return [r for case in op_cases(op_name, dtype, seed) for r in check_pair(case, ref, fd)]
