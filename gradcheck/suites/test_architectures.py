"""Random architectures: every analytic source against finite differences of its
own forward, and against the reference; failures shrink to the smallest graph.

Two kinds of draw: free graphs of each family, and graphs that contain a given
op somewhere (so a rare op gets as many draws as a common one).  With
--candidate the op-targeted draws cover the candidate's ops."""

import pytest
from hypothesis import given, strategies as st

from gradcheck.sources import FiniteDifferences
from gradcheck.strategies import FAMILIES, cases, graphs
from gradcheck.testing import assert_gradients_agree, suite

__all__ = [  # the tests, for the thin copies in suites/
    "test_backward_matches_differences_of_its_own_forward",
    "test_gradients_and_outputs_agree_with_the_reference",
    "test_graphs_containing_op_match_differences",
    "test_graphs_containing_op_agree_with_the_reference",
    "test_torch_candidate_agrees_with_torch_builtin_ops",
    "test_cuda_agrees_with_the_reference",
]


@pytest.mark.parametrize("family", FAMILIES)
@suite()
@given(data=st.data())
def test_backward_matches_differences_of_its_own_forward(source, self_dtypes, family, data):
    case = data.draw(cases(graphs([family], accept=source.accepts), dtypes=self_dtypes), label="case")
    assert_gradients_agree(case, source, FiniteDifferences(source, "central"))


@pytest.mark.parametrize("family", FAMILIES)
@suite()
@given(data=st.data())
def test_gradients_and_outputs_agree_with_the_reference(other_source, case_dtypes, reference64, family, data):
    case = data.draw(cases(graphs([family], accept=other_source.accepts), dtypes=case_dtypes), label="case")
    assert_gradients_agree(case, other_source, reference64, outputs=True)


@suite(1 / 4)
@given(data=st.data())
def test_graphs_containing_op_match_differences(source, self_dtypes, op, data):
    case = data.draw(cases(graphs(include=op, accept=source.accepts), dtypes=self_dtypes), label="case")
    assert_gradients_agree(case, source, FiniteDifferences(source, "central"))


@suite(1 / 4)
@given(data=st.data())
def test_graphs_containing_op_agree_with_the_reference(other_source, case_dtypes, reference64, op, data):
    case = data.draw(cases(graphs(include=op, accept=other_source.accepts), dtypes=case_dtypes), label="case")
    assert_gradients_agree(case, other_source, reference64, outputs=True)


@suite(1 / 4)
@given(data=st.data())
def test_torch_candidate_agrees_with_torch_builtin_ops(torch_candidate, op, data):
    from gradcheck.catalogue import get_op
    from gradcheck.sources.torch_autograd import TorchSource

    if get_op(op).torch is None:
        pytest.skip(f"torch has no built-in formula for {op}")
    builtin = TorchSource(torch_candidate.device, torch_candidate.dtype)
    case = data.draw(cases(graphs(include=op, accept=torch_candidate.accepts), dtypes=(torch_candidate.dtype,)),
                     label="case")
    assert_gradients_agree(case, torch_candidate, builtin, outputs=True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@suite()
@given(data=st.data())
def test_cuda_agrees_with_the_reference(reference64, dtype, data):
    from gradcheck.sources.torch_autograd import TorchSource

    case = data.draw(cases(graphs(), dtypes=(dtype,)), label="case")
    assert_gradients_agree(case, TorchSource("cuda", dtype, check_determinism=True), reference64, outputs=True)
