"""The NumPy reference's vectorised forwards over stacks of perturbed copies agree
with running each copy on its own, for every op, sample and moved input; and full
differences built on them agree with the element-by-element ones."""

from dataclasses import replace

import numpy as np
import pytest

import reference_impl
from reference_impl import Op, executor, losses
from gradcheck.catalogue import CATALOGUE
from gradcheck.catalogue import batching as rules
from gradcheck.sources import batching
from gradcheck.case import Case, op_cases
from gradcheck.graph import GraphBuilder, single_op_graph
from gradcheck.catalogue import BUILTIN_OPS
from gradcheck.sources import FiniteDifferences, ReferenceSource, Source


def _cases():
    for op in sorted(BUILTIN_OPS):
        for i, case in enumerate(op_cases(op)):
            for leaf in case.graph.differentiable_leaves:
                yield pytest.param(case, leaf.name, id=f"{op}-{i}-{leaf.name}")


def _one_by_one(graph, tensors, name, copies):
    return np.array([executor.forward(graph.plan(), {**tensors, name: c}, reference_impl.OPS)[0][graph.output]
                     for c in copies])


def _per_element_cases():
    """Each loss's samples with reduction "none" (a body op, probed by weighted_sum)."""
    for op in sorted(o.name for o in CATALOGUE.values() if o.is_loss and "reduction" in o.hyper):
        for i, sample in enumerate(CATALOGUE[op].samples):
            graph = single_op_graph(op, replace(sample, hyper={**sample.hyper, "reduction": "none"}))
            for leaf in graph.differentiable_leaves:
                yield pytest.param(Case(graph), leaf.name, id=f"{op}-{i}-none-{leaf.name}")


@pytest.mark.parametrize("case,name", list(_cases()) + list(_per_element_cases()))
def test_stacked_copies_give_each_copy_its_own_loss(case, name):
    graph, tensors = case.graph, case.tensors()
    x = tensors[name]
    rng = np.random.default_rng(0)
    copies = x[None] + 1e-3 * rng.standard_normal((5,) + x.shape)
    down = graph.downstream(name)
    unperturbed = executor.forward(graph.plan(), tensors, reference_impl.OPS)[0]
    values, stacked = batching.forward_copies([s for s in graph.plan() if s[0] in down],
                                              {k: v for k, v in unperturbed.items() if k not in down},
                                              name, copies, reference_impl.OPS)
    expected = _one_by_one(graph, tensors, name, copies)
    assert values[graph.output].shape == (5,)
    np.testing.assert_allclose(values[graph.output], expected, rtol=1e-13, atol=1e-15)


def test_every_op_with_a_rule_is_applied_by_it_not_copy_by_copy(monkeypatch):
    calls = []
    monkeypatch.setattr(batching, "loop", lambda *a: calls.append(a) or np.zeros(a[-1]))
    x = np.random.default_rng(1).standard_normal((3, 2, 4))
    out = batching.apply("tanh", reference_impl.OPS["tanh"].forward, [x], [True], {}, 3)
    assert not calls and np.array_equal(out, np.tanh(x))
    # a candidate's forward (not the reference's) goes copy by copy even where a rule exists
    batching.apply("tanh", lambda x: (np.tanh(x), None), [x], [True], {}, 3)
    assert len(calls) == 1


def test_losses_with_reduction_none_give_the_elements_the_mean_averages():
    p, t = np.random.default_rng(2).standard_normal((2, 4, 3))
    per, _ = losses.mse_forward(p, t, reduction="none")
    assert per.shape == (4, 3) and np.isclose(per.mean(), losses.mse_forward(p, t)[0])
    logits, target = p, np.array([0, 2, 1, 1])
    per, cache = losses.cross_entropy_forward(logits, target, reduction="none")
    assert per.shape == (4,) and np.isclose(per.sum(), losses.cross_entropy_forward(logits, target, reduction="sum")[0])
    # its VJP with one cotangent a row equals the sum-reduced VJP scaled row by row
    g = np.array([1.0, 2.0, 0.5, -1.0])
    gx, _ = losses.cross_entropy_backward(cache, g)
    _, cache_sum = losses.cross_entropy_forward(logits, target, reduction="sum")
    rows = [losses.cross_entropy_backward(cache_sum, 1.0)[0][i] * g[i] for i in range(4)]
    np.testing.assert_allclose(gx, np.array(rows))
    with pytest.raises(ValueError, match="'mean', 'sum' or 'none'"):
        losses.mse_forward(p, t, reduction="avg")


def _cnn():
    b = GraphBuilder()
    h = b.op("relu", b.op("conv2d", b.input("x", (2, 3, 6, 6)), b.param("k", (4, 3, 3, 3)), b.param("c", (4,)),
                          padding=1))
    h = b.op("flatten", b.op("max_pool2d", h, kernel_size=2))
    h = b.op("linear", h, b.param("w", (5, 36)), b.param("bw", (5,)))
    return b.build(b.op("cross_entropy", h, b.const("y", (2,), dtype="int", init={"kind": "randint", "high": 5}),
                        name="loss"))


def test_batched_full_differences_of_the_reference_match_element_by_element_ones():
    case = Case(_cnn(), seed=3)
    tensors, ref = case.tensors(), ReferenceSource()
    batched = FiniteDifferences(ref).run(case.graph, tensors)

    class Plain(Source):  # the same reference without batched_forward: one forward an element
        name = "plain"
        shows_branches = True
        forward = staticmethod(ref.forward)
        forward_with_branches = staticmethod(ref.forward_with_branches)

    plain = FiniteDifferences(Plain()).run(case.graph, tensors)
    for name in batched.grads:
        np.testing.assert_allclose(batched.grads[name], plain.grads[name], rtol=1e-9, atol=1e-10)
        # kinks found the same way: a copy whose relu or max-pool branch changed
        np.testing.assert_array_equal(batched.grad_kinks.get(name, False), plain.grad_kinks.get(name, False))


def test_a_candidate_numpy_op_runs_copy_by_copy_and_its_bug_is_still_found():
    bad = ReferenceSource({"relu": Op(reference_impl.OPS["relu"].forward, lambda pos, g: (g,))}, name="bad-relu")
    case = Case(_cnn(), seed=3)
    from gradcheck.judge import check_pair

    records = check_pair(case, bad, FiniteDifferences(bad))
    assert any(r.status == "fail" and r.tensor in ("x", "k", "c") for r in records)


def test_slices_hold_as_many_copies_as_the_budget_allows():
    assert batching.slices(10, 30, budget=100) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert batching.slices(3, 10**9, budget=100) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def _first_input_cases():
    for op in sorted(name for name, opdef in CATALOGUE.items() if opdef.batching is not None):
        for i, case in enumerate(op_cases(op)):
            node = case.graph.nodes[0]
            first = node.inputs[0]
            if first in {leaf.name for leaf in case.graph.differentiable_leaves}:
                yield pytest.param(case, node, id=f"{op}-{i}")


@pytest.mark.parametrize("case,node", list(_first_input_cases()))
def test_ops_with_a_rule_never_fall_back_to_the_loop_when_their_first_input_is_stacked(case, node, monkeypatch):
    def no_loop(*a):
        raise AssertionError(f"{node.op} ran copy by copy")

    monkeypatch.setattr(batching, "loop", no_loop)  # where apply falls back to it
    monkeypatch.setattr(rules, "loop", no_loop)  # where a rule does
    tensors = case.tensors()
    args = [tensors[i] for i in node.inputs]
    first = next(leaf for leaf in case.graph.leaves if leaf.name == node.inputs[0])
    # a third copy on other branches; an input drawn in a range (probabilities) stays in it
    third = args[0] * 0.5 if first.init.get("kind") == "uniform" else args[0] - 0.5
    stacked = np.stack([args[0], args[0] * 1.001, third])
    hyper = case.graph.plan()[0][3]
    out = batching.apply(node.op, reference_impl.OPS[node.op].forward, [stacked] + args[1:],
                         [True] + [False] * (len(args) - 1), hyper, 3)
    for j in range(3):
        alone = reference_impl.OPS[node.op].forward(stacked[j], *args[1:], **hyper)[0]
        np.testing.assert_allclose(out[j], alone, rtol=1e-13, atol=1e-15)


def _weight_cases():
    for op in ("linear", "conv1d", "conv2d"):
        for i, case in enumerate(op_cases(op)):
            node = case.graph.nodes[0]
            if case.graph.plan()[0][3].get("groups", 1) != 1:
                continue
            for k in range(1, len(node.inputs)):
                yield pytest.param(case, node, k, id=f"{op}-{i}-{node.inputs[k]}")


@pytest.mark.parametrize("case,node,k", list(_weight_cases()))
def test_a_stacked_weight_or_bias_runs_as_one_call_with_the_copies_features_side_by_side(case, node, k,
                                                                                        monkeypatch):
    def no_loop(*a):
        raise AssertionError(f"{node.op} ran copy by copy")

    monkeypatch.setattr(batching, "loop", no_loop)  # where apply falls back to it
    monkeypatch.setattr(rules, "loop", no_loop)  # where a rule does
    args = [case.tensors()[i] for i in node.inputs]
    hyper = case.graph.plan()[0][3]
    rng = np.random.default_rng(k)
    stacked = args[k][None] + 0.1 * rng.standard_normal((4,) + args[k].shape)
    flags = [j == k for j in range(len(args))]
    out = batching.apply(node.op, reference_impl.OPS[node.op].forward,
                         [stacked if j == k else a for j, a in enumerate(args)], flags, hyper, 4)
    for j in range(4):
        alone = reference_impl.OPS[node.op].forward(*[stacked[j] if i == k else a for i, a in enumerate(args)],
                                                    **hyper)[0]
        np.testing.assert_allclose(out[j], alone, rtol=1e-13, atol=1e-15)
