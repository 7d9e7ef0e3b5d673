"""Assertions for test suites, and replay files for the cases that fail them.

    >>> from gradcheck.case import op_cases
    >>> from gradcheck.sources import FiniteDifferences, ReferenceSource
    >>> ref = ReferenceSource()
    >>> records = assert_gradients_agree(op_cases("softmax")[0], ref, FiniteDifferences(ref))

A failing check raises ``GradientMismatch`` whose message names the op, the
tensor, the elements, the tolerance and the graph, writes the case to a replay
file under ``reports/cases/`` (or ``$GRADCHECK_REPORT_DIR/cases/``) and ends
with the one command that replays it from any folder.
"""

from __future__ import annotations

import os

from .case import Case
from .judge import check_pair
from .optim import compare_trajectories
from .profiles import harness_profile, run_seed
from .replay import cases_dir, replay_command, slug, write_gradient_case, write_optimizer_case

__all__ = ["GradientMismatch", "assert_gradients_agree", "assert_trajectories_agree", "describe_failure",
           "RECORD_LISTENERS", "suite"]

MAX_SHOWN = 4

# Callables given every batch of records a check produces, and the replay file of
# a failing batch (the report sink and the session tally register here).
RECORD_LISTENERS: list = []


class GradientMismatch(AssertionError):
    """Two gradient sources disagree beyond tolerance (or one of them failed)."""


def _slug(case: Case) -> str:
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    if not test:
        return f"case-{case.graph.case_id}"
    # One file per test: Hypothesis replays the shrunk example last, so the file
    # left behind holds the smallest failing case.
    return slug(test.replace(".py::", "__"))


def describe_failure(case: Case, records, a_name: str, b_name: str) -> str:
    bad = [r for r in records if r.status in ("fail", "error")]
    seeds = sorted({r.direction_seed for r in records if r.direction_seed >= 0})
    lines = [f"{len(bad)} of {len(records)} checks failed: {a_name} against {b_name}, "
             f"{case.dtype}, seed {case.seed}, scale {case.scale}"
             + (f", data quantized to {case.quantize}" if case.quantize else "")
             + (f", data offset by {case.offset}" if case.offset else "")
             + (f", directions seeded {seeds[0]}" if seeds else "") + f", case {case.graph.case_id}"]
    for r in sorted(bad, key=lambda r: -r.ratio if r.ratio == r.ratio else 0)[:MAX_SHOWN]:
        where = f"tensor {r.tensor!r}" if r.tensor else "the whole case"
        consumer = f" (consumed by {r.consumer})" if r.consumer and r.consumer != r.op and r.tensor else ""
        lines.append(f"\n[{r.status}] op {r.op or '?'}, {where}{consumer}:")
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
    path = write_gradient_case(cases_dir() / f"{_slug(case)}.json", case, a, b,
                               [r for r in records if r.status in ("fail", "error")], outputs)
    for listener in RECORD_LISTENERS:
        listener(records, str(path))
    if a.spec and b.spec:
        text += f"\n\ncase written to {path}\nreplay: {replay_command(path, a, b)}"
    else:
        text += (f"\n\ncase written to {path}\n(a source here was built in code, so the file names "
                 f"no source to replay it with: gradcheck repro {path} --a SPEC --b SPEC)")
    raise GradientMismatch(text)


def assert_trajectories_agree(trajectory, a, b) -> list:
    """Run optimizer runners ``a`` and ``b`` on ``trajectory`` step by step; raise
    ``GradientMismatch`` (with a replay file) on any ``fail`` or ``error`` record.
    A trajectory that diverged beyond the dtype's range is ``skipped`` from there."""
    records = compare_trajectories(trajectory, a, b)
    bad = [r for r in records if r.status in ("fail", "error")]
    path = ""
    if bad:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        name = slug(test.replace(".py::", "__")) if test else f"optimizer-{trajectory.case_id}"
        path = write_optimizer_case(cases_dir() / f"{name}.json", trajectory, a, b, bad)
    for listener in RECORD_LISTENERS:
        listener(records, str(path))
    if not bad:
        return records
    text = "\n\n".join(f"[{r.status}] {r.source_a} against {r.source_b}, {r.dtype}:\n{r.message}" for r in bad[:3])
    if a.spec and b.spec:
        text += f"\n\ncase written to {path}\nreplay: {replay_command(path, a, b)}"
    raise GradientMismatch(text)


def suite(fraction: float = 1.0, minimum: int = 5):
    """Decorator (above ``@given``) putting a test under the harness's Hypothesis
    profile and seed for this session (see ``gradcheck.pytest_plugin``), with
    ``fraction`` of the profile's examples: for tests parametrized many ways (one
    per op), so that a profile sets the whole budget.  Tests without it keep
    their own settings."""
    from hypothesis import seed, settings

    def apply(test):
        profile = harness_profile()
        test = settings(profile, max_examples=max(minimum, int(profile.max_examples * fraction)))(test)
        chosen = run_seed()
        return seed(chosen)(test) if chosen is not None else test

    return apply
