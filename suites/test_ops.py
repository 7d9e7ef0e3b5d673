"""Each op alone, against every source: the catalogue's samples, then random
shapes and hyperparameters drawn by Hypothesis.  With --candidate, the ops the
candidate provides, run through the candidate."""

import pytest
from hypothesis import given, strategies as st

from gradcheck.check import Case
from gradcheck.graph import single_op_graph
from gradcheck.ops import CATALOGUE
from gradcheck.sources import FiniteDifferences
from gradcheck.strategies import cases, single_op_graphs
from gradcheck.testing import assert_gradients_agree, share_of_profile


def _case(sample, dtype="float64"):
    op, i = sample
    return Case(single_op_graph(op, CATALOGUE[op].samples[i]), seed=i, dtype=dtype)


def test_sample_backward_matches_central_differences(source, sample):
    assert_gradients_agree(_case(sample), source, FiniteDifferences(source, "central"))


def test_sample_backward_matches_the_complex_step(source, sample):
    fd = FiniteDifferences(source, "complex")
    if not fd.supports(_case(sample).graph):
        pytest.skip(f"{source.name}'s forward of {sample[0]} takes no complex input")
    assert_gradients_agree(_case(sample), source, fd)


def test_sample_agrees_with_the_reference(other_source, case_dtypes, reference64, sample):
    for dtype in case_dtypes:
        assert_gradients_agree(_case(sample, dtype), other_source, reference64, outputs=True)


@share_of_profile(1 / 4)
@given(data=st.data())
def test_random_settings_backward_matches_differences(source, op, data):
    case = data.draw(cases(single_op_graphs(op)), label="case")
    assert_gradients_agree(case, source, FiniteDifferences(source, "central"))


@share_of_profile(1 / 4)
@given(data=st.data())
def test_random_settings_agree_with_the_reference(other_source, case_dtypes, reference64, op, data):
    case = data.draw(cases(single_op_graphs(op), dtypes=case_dtypes), label="case")
    assert_gradients_agree(case, other_source, reference64, outputs=True)
