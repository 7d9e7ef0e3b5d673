"""Assertions for test suites, and replay files for the cases that fail them.

    >>> from gradcheck.check import op_cases
    >>> from gradcheck.sources import FiniteDifferences, ReferenceSource
    >>> ref = ReferenceSource()
    >>> records = assert_gradients_agree(op_cases("softmax")[0], ref, FiniteDifferences(ref))

A failing check raises ``GradientMismatch`` whose message names the op, the
tensor, the elements, the tolerance and the graph, writes the case to a JSON file
under ``reports/failures/`` (or ``$GRADCHECK_REPORT_DIR/failures/``) and ends
with the one command that replays it: ``gradcheck repro <file>``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .check import Case, check_pair
from .graph import Graph

__all__ = ["GradientMismatch", "assert_gradients_agree", "write_case", "read_case", "failures_dir",
           "RECORD_LISTENERS", "share_of_profile"]

CASE_FORMAT = "gradcheck-case/1"
MAX_SHOWN = 4

# Callables given every batch of records a check produces, and the replay file of
# a failing batch (the report sink and the session tally register here).
RECORD_LISTENERS: list = []


class GradientMismatch(AssertionError):
    """Two gradient sources disagree beyond tolerance (or one of them failed)."""


def failures_dir() -> Path:
    return Path(os.environ.get("GRADCHECK_REPORT_DIR") or "reports") / "failures"


def _slug(case: Case) -> str:
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    if not test:
        return f"case-{case.graph.case_id}"
    # One file per test: Hypothesis replays the shrunk example last, so the file
    # left behind holds the smallest failing case.
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test.replace(".py::", "__")).strip("_")[:150]


def write_case(path, case: Case, a_spec: str, b_spec: str, records=(), outputs=False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": CASE_FORMAT, "case_id": case.graph.case_id, "graph": case.graph.to_dict(),
        "seed": case.seed, "dtype": case.dtype, "scale": case.scale, "quantize": case.quantize,
        "source_a": a_spec, "source_b": b_spec, "outputs": outputs,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
        "records": [{k: v for k, v in r.to_dict().items() if k != "graph"} for r in records],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)
    return path


def read_case(path):
    """``(case, source_a spec, source_b spec, outputs)`` from a replay file."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != CASE_FORMAT:
        raise ValueError(f"{path}: not a gradcheck case file (format {doc.get('format')!r}, expected {CASE_FORMAT!r})")
    case = Case(Graph.from_dict(doc["graph"]), int(doc["seed"]), doc["dtype"], float(doc["scale"]),
                float(doc.get("quantize", 0.0)))
    return case, doc["source_a"], doc["source_b"], bool(doc.get("outputs", False))


def describe_failure(case: Case, records, a_name: str, b_name: str) -> str:
    bad = [r for r in records if r.status in ("fail", "error")]
    lines = [f"{len(bad)} of {len(records)} checks failed: {a_name} against {b_name}, "
             f"{case.dtype}, seed {case.seed}, scale {case.scale}"
             + (f", data quantized to {case.quantize}" if case.quantize else "") + f", case {case.graph.case_id}"]
    for r in sorted(bad, key=lambda r: -r.ratio if r.ratio == r.ratio else 0)[:MAX_SHOWN]:
        where = f"tensor {r.tensor!r}" if r.tensor else "the whole case"
        lines.append(f"\n[{r.status}] op {r.op or '?'}, {where}:")
        lines.extend("  " + line for line in r.message.splitlines())
    if len(bad) > MAX_SHOWN:
        lines.append(f"\n... and {len(bad) - MAX_SHOWN} more")
    lines.append(f"\ngraph ({len(case.graph.nodes)} nodes):")
    lines.append(case.graph.describe())
    return "\n".join(lines)


def assert_gradients_agree(case: Case, a, b, *, outputs: bool = False, tolerance=None) -> list:
    """Check ``a`` against ``b`` on ``case``; raise ``GradientMismatch`` on any
    ``fail`` or ``error`` record, else return the records."""
    records = check_pair(case, a, b, tolerance=tolerance, outputs=outputs)
    if not any(r.status in ("fail", "error") for r in records):
        for listener in RECORD_LISTENERS:
            listener(records, "")
        return records
    text = describe_failure(case, records, a.name, b.name)
    a_spec, b_spec = getattr(a, "spec", ""), getattr(b, "spec", "")
    path = write_case(failures_dir() / f"{_slug(case)}.json", case, a_spec, b_spec,
                      [r for r in records if r.status in ("fail", "error")], outputs)
    for listener in RECORD_LISTENERS:
        listener(records, str(path))
    if a_spec and b_spec:
        text += f"\n\ncase written to {path}\nreplay: gradcheck repro {path}"
    else:
        text += (f"\n\ncase written to {path}\n(a source here was built in code, so the file names "
                 f"no source to replay it with: gradcheck repro {path} --a SPEC --b SPEC)")
    raise GradientMismatch(text)


def share_of_profile(fraction: float, minimum: int = 5):
    """Hypothesis settings with ``fraction`` of the active profile's examples: for
    tests parametrized many ways (one per op), so a profile sets the whole budget."""
    from hypothesis import settings

    return settings(max_examples=max(minimum, int(settings.default.max_examples * fraction)))
