"""The graph executor on branched graphs, and planted bugs it must not hide."""

import numpy as np
import pytest

import reference_impl
from reference_impl import Op, activations
from gradcheck.case import Case
from gradcheck.judge import check_pair
from gradcheck.graph import GraphBuilder
from gradcheck.case import materialize
from gradcheck.sources import FiniteDifferences, ReferenceSource


def branched_graph():
    """A residual add, a concat, a tensor used twice by one node, a shared weight."""
    b = GraphBuilder()
    x = b.input("x", (4, 6))
    w1 = b.param("w1", (5, 6))
    h = b.op("linear", x, w1, b.param("b1", (5,)), name="h")
    r = b.op("tanh", h, name="r")
    res = b.op("add", r, h, name="res")  # h feeds tanh and add
    c = b.op("concat", res, r, name="c", dim=1)  # r feeds add and concat
    sq = b.op("mul", c, c, name="sq")  # the same tensor twice in one node
    n = b.op("layer_norm", sq, b.param("g", (10,), init={"kind": "normal", "mean": 1.0, "std": 0.2}),
             b.param("beta", (10,)), name="n")
    out = b.op("linear", n, b.param("w2", (3, 10)), name="out")
    again = b.op("linear", b.input("x2", (4, 5)), b.param("w3", (6, 5)), name="again")
    shared = b.op("linear", again, w1, name="shared")  # w1 used by two linears
    both = b.op("add", out, b.op("linear", shared, b.param("w4", (3, 5))), name="both")
    return b.build(b.op("mse", both, b.input("target", (4, 3)), name="loss"))


@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
def test_branched_graph_gradients_match_finite_differences(method):
    ref = ReferenceSource()
    records = check_pair(Case(branched_graph(), seed=7), ref, FiniteDifferences(ref, method))
    assert {r.tensor for r in records} == {"x", "w1", "b1", "g", "beta", "w2", "x2", "w3", "w4", "target"}
    bound = 1e-12 if method == "complex" else 1e-8
    for r in records:
        assert r.status == "pass", r.message
        assert r.max_rel_err <= bound, (r.tensor, r.max_rel_err)


def test_fan_out_gradients_are_summed():
    b = GraphBuilder()
    x = b.input("x", (3,))
    sq = b.op("mul", x, x)
    y = b.op("add", sq, x)
    g = b.build(b.op("weighted_sum", y, b.const("ones", (3,), init={"kind": "uniform", "low": 1, "high": 1}),
                     name="loss"))
    t = materialize(g, 0)
    grads = reference_impl.loss_and_grads(g.steps(), t, g.output)[2]
    np.testing.assert_allclose(grads["x"], 2 * t["x"] + 1, rtol=1e-15)


def test_a_leaf_the_loss_ignores_gets_a_zero_gradient():
    b = GraphBuilder()
    b.param("unused", (2, 2))
    x = b.input("x", (3,))
    g = b.build(b.op("weighted_sum", x, b.const("p", (3,)), name="loss"))
    r = ReferenceSource().run(g, materialize(g, 0))
    np.testing.assert_array_equal(r.grads["unused"], np.zeros((2, 2)))


class OverwritingSource(ReferenceSource):
    """A backprop engine with the classic bug: at fan-out the last gradient wins."""

    def run(self, graph, tensors):
        result = super().run(graph, tensors)
        values, caches = reference_impl.forward(graph.steps(), tensors, self.ops)
        grads = {graph.output: np.ones_like(values[graph.output])}
        for name, op, inputs, _ in reversed(graph.steps()):
            if name in grads:
                for inp, gi in zip(inputs, self.ops[op].backward(caches[name], grads[name])):
                    if gi is not None:
                        grads[inp] = gi  # overwrite instead of accumulate
        result.grads = {l.name: grads.get(l.name, np.zeros_like(tensors[l.name]))
                        for l in graph.differentiable_leaves}
        return result


def test_overwriting_at_fan_out_is_caught_and_located():
    bad = OverwritingSource(name="overwriting")
    records = check_pair(Case(branched_graph(), seed=7), bad, FiniteDifferences(ReferenceSource(), "central"))
    failed = {r.tensor for r in records if r.status == "fail"}
    # Everything upstream of a fan-out point is wrong; leaves past all fan-outs are right.
    assert {"x", "w1", "b1"} <= failed
    assert "w2" not in failed and "target" not in failed


def test_a_wrong_vjp_is_reported_as_a_failing_record_with_where_and_how_much():
    def sigmoid_backward_wrong(y, g):
        return (g * y,)  # forgot the (1 - y) factor

    bad = ReferenceSource({"sigmoid": Op(activations.sigmoid_forward, sigmoid_backward_wrong)}, name="bad")
    b = GraphBuilder()
    h = b.op("sigmoid", b.op("linear", b.input("x", (3, 4)), b.param("w", (2, 4))))
    g = b.build(b.op("weighted_sum", h, b.const("p", (3, 2)), name="loss"))
    records = check_pair(Case(g, seed=1), bad, FiniteDifferences(bad, "central"))
    by_tensor = {r.tensor: r for r in records}
    for name in ("x", "w"):
        r = by_tensor[name]
        assert r.status == "fail"
        assert r.ratio > 1e3 and r.mismatched > 0
        # the op whose VJP is wrong, not the first consumer of the leaf
        assert r.op == "sigmoid" and r.consumer == "linear"
        assert r.source_a == "bad" and r.source_b == "central-fd(bad)"
        assert "Mismatched elements" in r.message and f"at index {r.index}" in r.message
        assert "rtol 1e-08" in r.message


def test_a_correct_source_on_the_same_graph_passes():
    ref = ReferenceSource()
    b = GraphBuilder()
    h = b.op("sigmoid", b.op("linear", b.input("x", (3, 4)), b.param("w", (2, 4))))
    g = b.build(b.op("weighted_sum", h, b.const("p", (3, 2)), name="loss"))
    assert all(r.status == "pass" for r in check_pair(Case(g, seed=1), ref, FiniteDifferences(ref)))
