"""The pytest plugin, run on small test files with pytester."""

import json

SUITE = """
from hypothesis import given, strategies as st
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.strategies import cases, graphs
from gradcheck.testing import assert_gradients_agree, suite

REF = ReferenceSource()

@suite()
@given(data=st.data())
def test_reference(data):
    case = data.draw(cases(graphs(["mlp"], max_depth=2)))
    assert_gradients_agree(case, REF, FiniteDifferences(REF))
"""

BROKEN = """
import numpy as np
from hypothesis import given, strategies as st
import reference_impl
from reference_impl import Op, activations
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.strategies import cases, graphs
from gradcheck.testing import assert_gradients_agree, suite

def sigmoid_backward(y, g):
    return (g * y,)  # missing (1 - y)

reference_impl.OPS["sigmoid"] = Op(activations.sigmoid_forward, sigmoid_backward)
REF = ReferenceSource()

@suite()
@given(data=st.data())
def test_reference(data):
    case = data.draw(cases(graphs(["mlp"], include="sigmoid")))
    assert_gradients_agree(case, REF, FiniteDifferences(REF))
"""


def test_it_uses_the_dev_profile_outside_ci_and_prints_a_concrete_seed(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'dev' (max_examples=10) for the harness's checks, "
                                 "seed * (replay this draw with --gradcheck-seed *)"])
    result.stdout.fnmatch_lines(["gradcheck: * cases (graph, seed, dtype) checked; records: * pass"])
    result.assert_outcomes(passed=1)


def test_it_uses_the_ci_profile_under_ci_and_derandomizes(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'ci' (max_examples=100) for the harness's checks, "
                                 "derandomized*"])
    result.assert_outcomes(passed=1)


def test_the_profile_option_picks_a_profile_and_the_seed_option_fixes_the_draw(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradcheck-profile", "dev",
                                           "--gradcheck-seed", "7")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'dev' (max_examples=10) for the harness's checks, "
                                 "seed 7 (replay this draw with --gradcheck-seed 7)"])
    result.assert_outcomes(passed=1)


UNRELATED = """
import os
from hypothesis import given, settings, strategies as st

RUNS = []

@given(st.integers())
def test_someone_elses_property(n):
    RUNS.append(n)

def test_record_what_it_ran_with():
    with open(os.environ["SEEN"], "w") as f:
        f.write(f"{len(RUNS)} {settings.default!r}")
"""


def test_a_users_other_hypothesis_tests_keep_their_own_settings_under_ci_and_outside(pytester, monkeypatch):
    pytester.makepyfile(test_unrelated=UNRELATED)
    for ci in ("true", ""):
        monkeypatch.setenv("CI", ci)
        seen = {}
        for plugin in ("gradcheck", "no:gradcheck"):
            monkeypatch.setenv("SEEN", str(pytester.path / f"seen-{plugin}"))
            result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", plugin)
            result.assert_outcomes(passed=2)
            seen[plugin] = (pytester.path / f"seen-{plugin}").read_text()
        # the same examples and the same settings as without the plugin installed
        assert seen["gradcheck"] == seen["no:gradcheck"], seen


COMPARES_NOTHING = """
from gradcheck.case import op_cases
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.sources.torch_autograd import TorchSource
from gradcheck.testing import assert_gradients_agree

def test_torch_against_its_complex_step():
    torch_source = TorchSource()
    assert_gradients_agree(op_cases("tanh")[0], torch_source, FiniteDifferences(torch_source, "complex"))

def test_reference_against_its_complex_step():
    ref = ReferenceSource()
    assert_gradients_agree(op_cases("tanh")[0], ref, FiniteDifferences(ref, "complex"))
"""


def test_a_test_that_compared_nothing_is_skipped_with_the_reason_not_passed(pytester):
    pytester.makepyfile(test_nothing=COMPARES_NOTHING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*compared nothing: *does not take complex input*"])


OUTER_TIMER = """
import time
import numpy as np
import pytest
from reference_impl import activations
from gradcheck import Candidate
from gradcheck.sources.candidate import candidate_sources
from gradcheck.judge import check_pair
from gradcheck.case import op_cases
from gradcheck.sources import ReferenceSource

@pytest.mark.timeout(3)
def test_one_guarded_call_then_too_long():
    c = Candidate("c")
    c.numpy_ops["tanh"] = (activations.tanh_forward, activations.tanh_backward)
    (src,) = candidate_sources(c)
    check_pair(op_cases("tanh")[0], src, ReferenceSource())
    time.sleep(8)
"""


def test_the_candidate_time_limit_keeps_pytest_timeouts_timer(pytester):
    pytester.makepyfile(test_timer=OUTER_TIMER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout-method", "signal")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])


def test_the_options_are_grouped_under_one_heading(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["gradient checks (gradcheck):", "*--gradcheck-report=DIR*"])


def test_a_broken_vjp_fails_with_a_shrunk_graph_and_a_replay_file_in_the_report_dir(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradcheck-report", "out")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*op sigmoid, tensor 'x1'*", "*Mismatched elements:*",
                                 "*sigm_2 = sigmoid(x1)*", "*replay: gradcheck repro */out/*/cases/*.json"])
    (path,) = (pytester.path / "out").glob("*/cases/*.json")
    assert list((pytester.path / "out").glob("*/report.html"))  # the run's report, built at the end
    doc = json.loads(path.read_text())
    assert doc["source_a"] == "reference"
    assert doc["source_b"] == "fd:central:full:n=4,seed=case,full=2000,bisect=4096(reference)"
    assert any(n["op"] == "sigmoid" for n in doc["graph"]["nodes"])


def test_under_xdist_the_workers_records_make_one_report_equal_to_a_serial_runs(pytester):
    """Note [Reports under pytest-xdist]: with -n 2 every worker streams its own
    records file, the controller merges them into one report, and the counts line
    and the seed are those of a serial run with the same profile and seed."""
    import json

    import pandas as pd

    from gradcheck.report import read_records

    args = ("-p", "no:cacheprovider", "--pyargs", "gradcheck.suites.test_ops", "-k", "tanh or softplus",
            "--gradcheck-seed", "7", "--gradcheck-profile", "dev")
    serial = pytester.runpytest_subprocess(*args, "--gradcheck-report", str(pytester.path / "serial"))
    parallel = pytester.runpytest_subprocess(*args, "-n", "2", "--gradcheck-report", str(pytester.path / "xdist"))
    runs = {}
    for name, result in (("serial", serial), ("xdist", parallel)):
        assert result.ret == 0, result.stdout.str()[-3000:]
        counts = [line for line in result.outlines if line.startswith("gradcheck: ") and "cases (graph" in line]
        (run,) = list((pytester.path / name).iterdir())
        assert not list(run.glob("records-*.jsonl")) and (run / "report.html").is_file()
        assert json.loads((run / "run.json").read_text())["seed"] == 7
        runs[name] = (counts, read_records(run))
    assert runs["serial"][0] == runs["xdist"][0] and runs["serial"][0]  # the same counts line
    key = ["case_id", "seed", "tensor", "source_a", "source_b", "dtype", "status", "check"]
    a, b = (runs[n][1][key].astype(str).sort_values(key).reset_index(drop=True) for n in ("serial", "xdist"))
    assert len(a) > 50
    pd.testing.assert_frame_equal(a, b)
