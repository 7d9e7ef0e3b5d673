"""Every seeded bug of the zoo is caught under the ci profile, and shrunk.

The hunt runs what `pytest suites/ --candidate ...` runs on the bug's op: random
graphs containing it, the candidate against finite differences of its own forward
(float64) and against the float64 reference (float64 and float32 cases).
Results, with the time to the first failing example and the size of the shrunk
graph, go to reports/zoo.md.
"""

import os
import statistics
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gradcheck.sources.candidate import candidate_sources, torch_candidate_source
from gradcheck.sources import FiniteDifferences, ReferenceOrFormula
from gradcheck.strategies import cases, graphs
from gradcheck.testing import GradientMismatch, assert_gradients_agree

from zoo import CALL_ZOO, ZOO

RESULTS = {}


def hunt(bug, fd_mode="full"):
    candidate = bug.make()
    ref = ReferenceOrFormula()
    sources = candidate_sources(candidate)
    first, failing = [], []
    t0 = time.perf_counter()

    @settings(settings.get_profile("gradcheck-ci"), database=None)
    @given(data=st.data())
    def search(data):
        case = data.draw(cases(graphs(include=bug.op), dtypes=("float64", "float32")), label="case")
        for source in sources:
            if case.dtype != "float64" and getattr(source, "torch_dtype", None) is not None:
                source = torch_candidate_source(candidate, "cpu", case.dtype)
            try:  # the cheap analytic comparison first, then finite differences
                assert_gradients_agree(case, source, ref, outputs=True)
                if case.dtype == "float64":
                    fd = FiniteDifferences(source, "central", fd_mode, n_directions=2)
                    assert_gradients_agree(case, source, fd)
            except GradientMismatch as e:
                first.append(time.perf_counter() - t0)
                failing.append((case, str(e)))
                raise

    try:
        search()
    except GradientMismatch:
        pass
    total = time.perf_counter() - t0
    if not failing:
        return dict(detected=False, seconds_to_detect=None, seconds_total=total, shrunk_nodes=None, message="")
    case, message = failing[-1]
    body = [n for n in case.graph.nodes if n.name != case.graph.output]
    return dict(detected=True, seconds_to_detect=first[0], seconds_total=total, shrunk_nodes=len(body),
                graph=case.graph.describe(), ops=case.graph.ops, message=message)


# the summary reads what the hunts recorded in this process: under pytest-xdist they share one worker
pytestmark = pytest.mark.xdist_group("zoo")


@pytest.mark.parametrize("bug", ZOO, ids=[b.id for b in ZOO])
def test_seeded_bug_is_caught_and_shrunk(bug, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCHECK_REPORT_DIR", str(tmp_path))
    result = hunt(bug)
    RESULTS[bug.id] = (bug, result)
    assert result["detected"], f"{bug.id} ({bug.kind}) was not caught"
    assert bug.op in result["ops"], result["graph"]  # the shrunk graph keeps the buggy op
    assert "Mismatched elements" in result["message"] or "[error]" in result["message"], result["message"]
    if "engine" not in bug.kind:  # a whole-model engine has no op of its own to blame
        assert f"] op {bug.op}, " in result["message"], result["message"]  # the op under test, not a consumer
    # at most one placed block: attention's is 4 nodes with its q, k, v projections
    assert result["shrunk_nodes"] <= 4, result["graph"]


@pytest.mark.parametrize("bug", ZOO, ids=[b.id for b in ZOO])
def test_seeded_bug_is_caught_in_directional_mode(bug, tmp_path, monkeypatch):
    """Detection does not drop when finite differences run along directions over
    every tensor at once (the fast mode) instead of element by element."""
    monkeypatch.setenv("GRADCHECK_REPORT_DIR", str(tmp_path))
    result = hunt(bug, fd_mode="directional")
    assert result["detected"], f"{bug.id} ({bug.kind}) was not caught in directional mode"
    assert bug.op in result["ops"], result["graph"]


def test_zoo_summary_every_bug_caught_and_report_written():
    if len(RESULTS) < len(ZOO):
        pytest.skip("the zoo ran partly (-k); the summary needs every bug")
    detected = [r for _, r in RESULTS.values() if r["detected"]]
    rate = len(detected) / len(ZOO)
    median = statistics.median(r["seconds_to_detect"] for r in detected)
    lines = [f"# Seeded-bug zoo: {len(detected)}/{len(ZOO)} caught ({rate:.0%}), "
             f"median time to detection {median:.2f} s", "",
             "| bug | kind | op | caught | s to first failure | s with shrinking | shrunk body nodes |",
             "|---|---|---|---|---|---|---|"]
    for bug, r in RESULTS.values():
        lines.append(f"| {bug.id} | {bug.kind} | {bug.op} | {'yes' if r['detected'] else 'NO'} | "
                     f"{r['seconds_to_detect'] or 0:.2f} | {r['seconds_total']:.2f} | {r['shrunk_nodes']} |")
    out = Path(os.environ.get("GRADCHECK_ZOO_REPORT", "reports/zoo.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert len(ZOO) >= 25
    assert rate == 1.0


@pytest.mark.parametrize("bug", CALL_ZOO, ids=[b.id for b in CALL_ZOO])
def test_a_bug_in_another_mode_of_differentiation_is_caught_and_named(bug):
    """The correct Function passes fuzz in that mode; the buggy one fails it, with
    a message naming the mode, the tensor and, for a wrong value, the element."""
    from gradcheck import CheckFailed, fuzz

    assert fuzz(bug.correct.apply, inputs=bug.inputs, examples=20, **bug.options) >= 20
    with pytest.raises(CheckFailed) as info:
        fuzz(bug.buggy.apply, inputs=bug.inputs, examples=20, **bug.options)
    text = str(info.value)
    assert bug.says in text and "tensor " in text, text
    failing = [r for r in info.value.records if r.status in ("fail", "error")]
    assert failing and all(r.status == "error" or r.index for r in failing)
