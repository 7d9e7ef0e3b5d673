"""The pytest plugin, run on small test files with pytester."""

import json

SUITE = """
from hypothesis import given, strategies as st
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.strategies import cases, graphs
from gradcheck.testing import assert_gradients_agree

REF = ReferenceSource()

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
from gradcheck.testing import assert_gradients_agree

def sigmoid_backward(y, g):
    return (g * y,)  # missing (1 - y)

reference_impl.OPS["sigmoid"] = Op(activations.sigmoid_forward, sigmoid_backward)
REF = ReferenceSource()

@given(data=st.data())
def test_reference(data):
    case = data.draw(cases(graphs(["mlp"], include="sigmoid")))
    assert_gradients_agree(case, REF, FiniteDifferences(REF))
"""


def test_it_uses_the_dev_profile_outside_ci_and_says_so_in_the_header(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'dev' (max_examples=10)*"])
    result.stdout.fnmatch_lines(["gradcheck: * cases (graph, seed, dtype) checked; records: * pass"])
    result.assert_outcomes(passed=1)


def test_it_uses_the_ci_profile_under_ci_and_derandomizes(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'ci' (max_examples=100), derandomized*"])
    result.assert_outcomes(passed=1)


def test_hypothesis_profile_option_picks_a_profile_and_seed_is_printed(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-profile", "dev", "--hypothesis-seed", "7")
    result.stdout.fnmatch_lines(["gradcheck: hypothesis profile 'dev' (max_examples=10), seed 7"])
    result.assert_outcomes(passed=1)


def test_the_options_are_grouped_under_one_heading(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["gradient checks (gradcheck):", "*--gradcheck-report=DIR*"])


def test_a_broken_vjp_fails_with_a_shrunk_graph_and_a_replay_file_in_the_report_dir(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gradcheck-report", "out")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*op sigmoid, tensor 'x1'*", "*Mismatched elements:*",
                                 "*sigm_2 = sigmoid(x1)*", "*replay: gradcheck repro out/*/failures/*.json"])
    (path,) = (pytester.path / "out").glob("*/failures/*.json")
    assert list((pytester.path / "out").glob("*/report.html"))  # the run's report, built at the end
    doc = json.loads(path.read_text())
    assert doc["source_a"] == "reference" and doc["source_b"] == "fd:central:full(reference)"
    assert any(n["op"] == "sigmoid" for n in doc["graph"]["nodes"])
