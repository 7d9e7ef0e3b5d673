"""Each op alone, against every source: the catalogue's samples, then random
shapes and hyperparameters drawn by Hypothesis."""

import pytest
from hypothesis import given, strategies as st

from gradcheck.check import Case
from gradcheck.graph import single_op_graph
from gradcheck.ops import CATALOGUE
from gradcheck.sources import FiniteDifferences
from gradcheck.strategies import cases, single_op_graphs
from gradcheck.testing import assert_gradients_agree, share_of_profile

SAMPLES = [(op.name, i) for op in CATALOGUE.values() for i in range(len(op.samples))]
IDS = [f"{op}-{i}" for op, i in SAMPLES]


def _case(op, i, dtype="float64"):
    return Case(single_op_graph(op, CATALOGUE[op].samples[i]), seed=i, dtype=dtype)


@pytest.mark.parametrize("op,i", SAMPLES, ids=IDS)
def test_sample_backward_matches_central_differences(source, op, i):
    assert_gradients_agree(_case(op, i), source, FiniteDifferences(source, "central"))


@pytest.mark.parametrize("op,i", SAMPLES, ids=IDS)
def test_sample_backward_matches_the_complex_step(source, op, i):
    fd = FiniteDifferences(source, "complex")
    if not fd.supports(_case(op, i).graph):
        pytest.skip(f"{source.name}'s forward of {op} takes no complex input")
    assert_gradients_agree(_case(op, i), source, fd)


@pytest.mark.parametrize("op,i", SAMPLES, ids=IDS)
def test_sample_agrees_with_the_reference(other_source, reference64, op, i):
    assert_gradients_agree(_case(op, i), other_source, reference64, outputs=True)


@pytest.mark.parametrize("op", sorted(CATALOGUE))
@share_of_profile(1 / 4)
@given(data=st.data())
def test_random_settings_backward_matches_differences(source, op, data):
    case = data.draw(cases(single_op_graphs(op)), label="case")
    assert_gradients_agree(case, source, FiniteDifferences(source, "central"))


@pytest.mark.parametrize("op", sorted(CATALOGUE))
@share_of_profile(1 / 4)
@given(data=st.data())
def test_random_settings_agree_with_the_reference(other_source, reference64, op, data):
    case = data.draw(cases(single_op_graphs(op), dtypes=("float64", "float32")), label="case")
    assert_gradients_agree(case, other_source, reference64, outputs=True)
