"""Directional checks over every tensor at once, their localisation, and batched
full Jacobians."""

import numpy as np
import pytest

from reference_impl import Op, activations
from zoo import torch_bad_tanh
from gradcheck.case import Case, op_cases
from gradcheck.judge import check_pair
from gradcheck.judge import JOINT
from gradcheck.graph import GraphBuilder
from gradcheck.sources import FiniteDifferences, ReferenceSource

torch = pytest.importorskip("torch")
from gradcheck.sources.torch_autograd import TorchSource  # noqa: E402


def mlp(width=6):
    b = GraphBuilder()
    h = b.op("tanh", b.op("linear", b.input("x", (4, 5)), b.param("w1", (width, 5)), b.param("b1", (width,))))
    h = b.op("linear", h, b.param("w2", (3, width)))
    return b.build(b.op("mse", h, b.input("t", (4, 3)), name="loss"))


BAD_TANH = ReferenceSource({"tanh": Op(activations.tanh_forward, lambda y, g: (g * (1 - y),))}, name="bad")


@pytest.mark.parametrize("source", [ReferenceSource(), TorchSource()], ids=["reference", "torch"])
def test_a_correct_source_passes_the_joint_directional_check(source):
    records = check_pair(Case(mlp(), seed=1), source, FiniteDifferences(source, mode="directional", n_directions=3))
    assert [r.tensor for r in records] == [JOINT] and records[0].status == "pass"
    assert records[0].numel == 3  # one projection per direction


def test_a_failing_directional_check_is_localised_to_the_tensor_and_element():
    records = check_pair(Case(mlp(), seed=1), BAD_TANH, FiniteDifferences(BAD_TANH, mode="directional"))
    by = {r.tensor: r for r in records}
    assert JOINT not in by  # replaced by the per-tensor records
    for name in ("x", "w1", "b1"):  # upstream of the bad tanh
        assert by[name].status == "fail" and by[name].numel == np.prod(mlp().leaf(name).shape)
        assert by[name].index.startswith("(") and "at index" in by[name].message
    for name in ("w2", "t"):
        assert by[name].status == "pass"


def test_a_large_tensor_has_no_false_alarm_in_directional_mode():
    # 200,000 elements: the step scales with ||v||_2, so truncation stays small
    b = GraphBuilder()
    h = b.op("tanh", b.op("mul", b.input("x", (400, 500)), b.param("s", (400, 500))))
    g = b.build(b.op("weighted_sum", h, b.const("p", (400, 500)), name="loss"))
    src = TorchSource()
    (r,) = check_pair(Case(g, seed=0), src, FiniteDifferences(src, mode="directional", n_directions=2))
    assert r.status == "pass" and r.max_rel_err < 1e-7


def test_batched_full_differences_match_element_by_element_ones():
    src = TorchSource()
    case = Case(mlp(), seed=2)
    t = case.tensors()
    batched = FiniteDifferences(src, "central").run(case.graph, t)
    plain = FiniteDifferences(ReferenceSource(), "central").run(case.graph, t)
    for name in batched.grads:
        np.testing.assert_allclose(batched.grads[name], plain.grads[name], rtol=1e-7, atol=1e-9)


def test_batched_full_differences_catch_a_torch_bug_at_its_element():
    BadTanh = torch_bad_tanh()
    bad = TorchSource(ops={"tanh": BadTanh.apply}, name="torch-bad")
    records = check_pair(Case(mlp(), seed=1), bad, FiniteDifferences(bad, "central"))
    assert {r.tensor for r in records if r.status == "fail"} == {"x", "w1", "b1"}


def test_auto_mode_is_full_for_small_graphs_and_directional_above_the_limit():
    src = ReferenceSource()
    case = Case(mlp(), seed=0)
    small = FiniteDifferences(src, mode="auto", full_limit=10_000).run(case.graph, case.tensors())
    large = FiniteDifferences(src, mode="auto", full_limit=10).run(case.graph, case.tensors())
    assert small.grads and small.joint is None
    assert large.joint is not None and not large.grads


def test_every_catalogue_op_batches_under_vmap():
    src = TorchSource()
    for case in (c for op in ("conv2d", "batch_norm", "attention", "embedding", "max_pool2d", "layer_norm",
                              "cross_entropy", "concat") for c in op_cases(op)):
        assert {r.status for r in check_pair(case, src, FiniteDifferences(src))} <= {"pass", "nondifferentiable"}
    assert not any(v is False for v in getattr(src, "_vmap_ok", {}).values())


def _w1_as_constant():
    b = GraphBuilder()
    h = b.op("linear", b.input("x", (4, 5)), b.const("w1", (6, 5)), b.param("b1", (6,)))
    return b.build(b.op("mse", h, b.input("t", (4, 6)), name="loss"))


@pytest.mark.parametrize("fuse_limit", [1 << 16, 0], ids=["one-flat-add", "add-per-tensor"])
@pytest.mark.parametrize("source", [ReferenceSource(), TorchSource()], ids=["reference", "torch"])
def test_one_finite_differences_object_reused_across_graphs_gives_what_a_fresh_one_gives(source, fuse_limit,
                                                                                          monkeypatch):
    # Scratch buffers for the moved point live on from run to run; a leaf of one
    # graph ("w1", moved) must not leak into another where it is a constant.
    from gradcheck.sources import torch_autograd

    monkeypatch.setattr(torch_autograd, "FUSE_LIMIT", fuse_limit)
    fd = FiniteDifferences(source, mode="directional", n_directions=2)
    for graph in (mlp(6), _w1_as_constant(), mlp(3), _w1_as_constant()):
        tensors = Case(graph, seed=2).tensors()
        reused = fd.run(graph, tensors).joint[1].value
        fresh = FiniteDifferences(source, mode="directional", n_directions=2).run(graph, tensors).joint[1].value
        np.testing.assert_array_equal(reused, fresh)


def test_the_flat_add_of_small_models_moves_every_tensor_as_the_add_per_tensor_does(monkeypatch):
    from gradcheck.sources import torch_autograd

    graph = mlp(6)
    tensors = Case(graph, seed=4).tensors()
    src = TorchSource()
    values = {}
    for limit in (1 << 16, 0):
        monkeypatch.setattr(torch_autograd, "FUSE_LIMIT", limit)
        values[limit] = FiniteDifferences(src, mode="directional", n_directions=3).run(graph, tensors).joint[1].value
    np.testing.assert_array_equal(values[1 << 16], values[0])


def _wide_layer():
    b = GraphBuilder()
    h = b.op("tanh", b.op("linear", b.input("x", (4, 300)), b.param("w", (200, 300)), b.param("bias", (200,))))
    return b.build(b.op("weighted_sum", h, b.const("p", (4, 200)), name="loss"))


def _linear_with_bad_weight_gradient(where):
    from reference_impl import layers

    def backward(cache, g):
        gx, gw, gb = layers.linear_backward(cache, g)
        gw = gw.copy()
        gw[where] += 0.5  # one element of a 60,000-element weight gradient is wrong
        return gx, gw, gb

    return ReferenceSource({"linear": Op(layers.linear_forward, backward)}, name="bad-linear")


@pytest.mark.parametrize("where", [(17, 42), (199, 299), (0, 0)])
def test_a_large_failing_tensor_is_bisected_down_to_the_wrong_element(where):
    bad = _linear_with_bad_weight_gradient(where)
    fd = FiniteDifferences(bad, mode="directional", n_directions=2)
    records = check_pair(Case(_wide_layer(), seed=5), bad, fd)
    by = {r.tensor: r for r in records}
    assert by["w"].status == "fail" and by["w"].index == str(where)
    assert "bisected over its 60,000 elements" in by["w"].message
    assert abs(by["w"].value_a - by["w"].value_b) == pytest.approx(0.5, rel=1e-6)
    assert by["w"].numel <= 32  # only the last block was differentiated element by element
    assert by["x"].status == "pass" and by["bias"].status == "pass"


def test_bisection_of_a_correct_source_finds_nothing_and_a_wrong_scale_is_found_anywhere():
    from reference_impl import layers

    def scaled(cache, g):
        gx, gw, gb = layers.linear_backward(cache, g)
        return gx, gw * 1.01, gb

    bad = ReferenceSource({"linear": Op(layers.linear_forward, scaled)}, name="scaled-linear")
    records = check_pair(Case(_wide_layer(), seed=6), bad, FiniteDifferences(bad, mode="directional"))
    w = {r.tensor: r for r in records}["w"]
    assert w.status == "fail" and "bisected" in w.message and w.mismatched >= 1
    ref = ReferenceSource()
    assert {r.status for r in check_pair(Case(_wide_layer(), seed=6), ref,
                                         FiniteDifferences(ref, mode="directional"))} == {"pass"}


@pytest.mark.parametrize("fuse_limit", [1 << 16, 0], ids=["one-flat-add", "add-per-tensor"])
def test_scratch_buffers_do_not_pile_up_over_many_graphs(fuse_limit, monkeypatch):
    from gradcheck.sources import torch_autograd

    monkeypatch.setattr(torch_autograd, "FUSE_LIMIT", fuse_limit)
    fd = FiniteDifferences(TorchSource(), mode="directional", n_directions=1)
    for graph in [mlp(width) for width in range(2, 12)] + [_w1_as_constant()]:
        fd.run(graph, Case(graph, seed=0).tensors())
    leaves = {leaf.name for leaf in _w1_as_constant().differentiable_leaves}
    assert set(fd.scratch) <= leaves | {("flat",)}  # no buffer left for w1, w2 of the MLPs
    flat = fd.scratch.get(("flat",))
    assert flat is None or flat[1].numel() == _w1_as_constant().size  # the latest layout only
