"""Each op alone, against every source: the catalogue's samples, then random
shapes and hyperparameters drawn by Hypothesis.  With --candidate, the ops the
candidate provides, run through the candidate."""

from hypothesis import given, strategies as st

from gradcheck.case import Case
from gradcheck.graph import single_op_graph
from gradcheck.catalogue import CATALOGUE
from gradcheck.sources import FiniteDifferences
from gradcheck.strategies import cases, single_op_graphs
from gradcheck.testing import assert_gradients_agree, suite

__all__ = [  # the tests, for the thin copies in suites/
    "test_sample_backward_matches_central_differences",
    "test_sample_backward_matches_the_complex_step",
    "test_sample_agrees_with_the_reference",
    "test_random_settings_backward_matches_differences",
    "test_random_settings_agree_with_the_reference",
]


def _case(sample, dtype="float64"):
    op, i = sample
    return Case(single_op_graph(op, CATALOGUE[op].samples[i]), seed=i, dtype=dtype)


def test_sample_backward_matches_central_differences(source, self_dtypes, sample):
    for dtype in self_dtypes:
        assert_gradients_agree(_case(sample, dtype), source, FiniteDifferences(source, "central"))


def test_sample_backward_matches_the_complex_step(source, self_dtypes, sample):
    # skipped, with the reason, where the source's forward is not complex-analytic
    assert_gradients_agree(_case(sample, self_dtypes[0]), source, FiniteDifferences(source, "complex"))


def test_sample_agrees_with_the_reference(other_source, case_dtypes, reference64, sample):
    for dtype in case_dtypes:
        assert_gradients_agree(_case(sample, dtype), other_source, reference64, outputs=True)


@suite(1 / 4)
@given(data=st.data())
def test_random_settings_backward_matches_differences(source, self_dtypes, op, data):
    case = data.draw(cases(single_op_graphs(op, accept=source.accepts), dtypes=self_dtypes), label="case")
    assert_gradients_agree(case, source, FiniteDifferences(source, "central"))


@suite(1 / 4)
@given(data=st.data())
def test_random_settings_agree_with_the_reference(other_source, case_dtypes, reference64, op, data):
    case = data.draw(cases(single_op_graphs(op, accept=other_source.accepts), dtypes=case_dtypes), label="case")
    assert_gradients_agree(case, other_source, reference64, outputs=True)
