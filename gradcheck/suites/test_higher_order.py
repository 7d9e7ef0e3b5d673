"""Beyond first-order reverse mode, on random architectures: torch's double
backward against differences of its own backward, and against Richardson
differences of the NumPy reference's hand-written VJPs (gradcheck.sources.
hessian: two independent second derivatives); its forward mode (JVPs) against
differences of its forward and against its backward by the adjoint identity.
The first and the last through ``gradcheck.check`` (Notes [Second order] and
[Forward mode] in gradcheck/front.py), as are its per-sample gradients under
vmap against each sample alone and its backward under vmap over cotangents
against one cotangent at a time (Notes [Per-sample gradients], [Batched
gradients]).  The built-in torch source only: a
candidate's Function need not be twice differentiable or have a jvp.

Values are not quantised here: an element at two kinks at once (x used twice,
each use at smooth_l1's |d| = beta) makes autodiff's sum of per-kink choices a
value outside the one-sided slopes of the composite, which first-order rules
rightly call wrong for one kink.  Exact kinks of higher derivatives are tested
on their own (tests/test_second_order.py, tests/test_forward_mode.py)."""

import pytest
from hypothesis import assume, given, strategies as st

from gradcheck import check
from gradcheck.catalogue import get_op
from gradcheck.sources.base import candidate_of
from gradcheck.sources.hessian import HessianVector
from gradcheck.strategies import FAMILIES, cases, graphs
from gradcheck.testing import assert_gradients_agree, suite

__all__ = [  # the tests, for the thin copies in suites/
    "test_double_backward_matches_differences_of_the_backward",
    "test_forward_mode_matches_differences_and_the_backward",
    "test_double_backward_agrees_with_differences_of_the_references_backward",
    "test_per_sample_gradients_under_vmap_match_each_sample_alone",
    "test_a_candidates_op_in_the_order_and_modes_it_declares",
]


def _twice(accepts):
    """The source's ops that torch can also differentiate twice and in forward mode
    (``OpDef.higher_order``): torch has neither rule for pdist or multi_margin_loss.
    Not with settings whose backward gives elements no gradient by convention
    (embedding's padding_idx, Note [Frozen elements]): forward mode and
    differences of the backward see the true derivative there."""

    def accept(op, hyper, shapes):
        opdef = get_op(op)
        twice = opdef.higher_order(hyper, shapes) if callable(opdef.higher_order) else opdef.higher_order
        if not twice or (accepts is not None and not accepts(op, hyper, shapes)):
            return False
        if opdef.frozen is None:
            return True
        named = {a.name: s for a, s in zip(opdef.bind(len(shapes)), shapes)}
        return not any(m.any() for m in opdef.frozen(named, hyper).values())

    return accept


def _checked(torch_source, case, name=None, **options):
    fn, leaves, names = torch_source.loss_function(case.graph, case.tensors())
    if not leaves:
        pytest.skip("the graph has no differentiable leaf")
    records = check(fn, *leaves, names=names, name=name or f"torch graph {case.graph.case_id}", seed=case.seed,
                    **options)
    assert {r.status for r in records} <= {"pass", "nondifferentiable"}


@pytest.mark.parametrize("family", FAMILIES)
@suite(1 / 4)
@given(data=st.data())
def test_double_backward_matches_differences_of_the_backward(torch_source, self_dtypes, family, data):
    case = data.draw(cases(graphs([family], accept=_twice(torch_source.accepts)), dtypes=self_dtypes, quantize=(0.0,)),
                     label="case")
    _checked(torch_source, case, order=2)


@pytest.mark.parametrize("family", FAMILIES)
@suite(1 / 4)
@given(data=st.data())
def test_forward_mode_matches_differences_and_the_backward(torch_source, self_dtypes, family, data):
    case = data.draw(cases(graphs([family], accept=_twice(torch_source.accepts)), dtypes=self_dtypes, quantize=(0.0,)),
                     label="case")
    _checked(torch_source, case, modes="fwd")


@pytest.mark.parametrize("family", FAMILIES)
@suite(1 / 4)
@given(data=st.data())
def test_double_backward_agrees_with_differences_of_the_references_backward(torch_source, self_dtypes, reference64,
                                                                          family, data):
    """torch's Hessian-vector products against Richardson differences of the
    NumPy reference's hand-written VJPs: two independent second derivatives."""
    case = data.draw(cases(graphs([family], accept=_twice(torch_source.accepts)), dtypes=self_dtypes, quantize=(0.0,)),
                     label="case")
    assert_gradients_agree(case, HessianVector(torch_source, seed=case.seed),
                           HessianVector(reference64, seed=case.seed, differences=True))


def _batch_leaves(graph):
    """The leaves carrying the batch: the data input and every other non-parameter
    leaf whose first axis has its length (targets, masks, a second input)."""
    n = graph.shapes[graph.leaves[0].name][:1]
    return [leaf.name for leaf in graph.leaves if leaf.role != "param" and graph.shapes[leaf.name][:1] == n]


def _each_sample_runs(torch_source, case, batch):
    """Whether the graph's torch forward runs on each sample of its batch leaves
    alone, to a finite loss: not where an op fixes the batch size (a reshape to
    (N, ...)), nor where a sample alone has no loss (a cross-entropy mean over
    its one row, at ignore_index: 0 / 0)."""
    import torch

    fn, leaves, names = torch_source.loss_function(case.graph, case.tensors(), also=batch)
    n = next(t.shape[0] for name, t in zip(names, leaves) if name in batch)
    try:
        with torch.no_grad():
            return all(bool(torch.isfinite(fn(*(t[i:i + 1] if name in batch else t for name, t in zip(names, leaves)))
                                           ).all()) for i in range(n))
    except (RuntimeError, ValueError, IndexError):
        return False


@pytest.mark.parametrize("family", FAMILIES)
@suite(1 / 4)
@given(data=st.data())
def test_per_sample_gradients_under_vmap_match_each_sample_alone(torch_source, self_dtypes, family, data):
    """vmap(grad(loss of one sample)) over the batch leaves against the same
    gradient one sample at a time, and the backward under vmap over three
    cotangents against each alone: every op's batching rules, forward and
    backward, on random architectures."""
    case = data.draw(cases(graphs([family], accept=lambda op, hyper, shapes: (
        _twice(torch_source.accepts)(op, hyper, shapes) and get_op(op).vmap)), dtypes=self_dtypes, quantize=(0.0,)),
        label="case")
    batch = _batch_leaves(case.graph)
    assume(_each_sample_runs(torch_source, case, batch))
    fn, leaves, names = torch_source.loss_function(case.graph, case.tensors(), also=batch)
    records = check(fn, *leaves, names=names, name=f"torch graph {case.graph.case_id}", seed=case.seed,
                    modes=("batched", "per-sample"), samples=batch)
    assert {r.ad_mode for r in records} == {"batched", "per-sample"}
    assert {r.status for r in records} == {"pass"}


@suite(1 / 2)
@given(data=st.data())
def test_a_candidates_op_in_the_order_and_modes_it_declares(higher_source, higher_op, data):
    """A candidate's torch op that declared ``order=2`` or ``modes=("rev", "fwd",
    "batched")`` (OpOptions), checked so inside random graphs containing it."""
    options = candidate_of(higher_source).options_of(higher_op)
    # the other ops of the graph differentiable twice and in forward mode too (not multilabel_margin)
    case = data.draw(cases(graphs(include=higher_op, accept=_twice(higher_source.accepts)), quantize=(0.0,)),
                     label="case")
    name = f"{higher_op} in graph {case.graph.case_id}"
    if options.order == 2:
        _checked(higher_source, case, name, order=2)
    if set(options.modes) - {"rev"}:
        _checked(higher_source, case, name, modes=options.modes)
