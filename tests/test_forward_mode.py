"""Forward mode through the front door: ``check(..., modes=("rev", "fwd"))``
(Note [Forward mode] in gradcheck/front.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcheck import CheckFailed, check, fuzz

from user_functions import ScatterInto, ScatterIntoInPlace, SinCos, SinCosBug, SwishJ, SwishJBug


class ReluJ(torch.autograd.Function):
    """relu whose jvp takes slope ``AT_ZERO`` at exactly 0."""

    AT_ZERO = 1.0

    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_forward(inputs[0])
        ctx.save_for_backward(inputs[0])

    @classmethod
    def _slope(cls, x):
        return (x > 0).to(x.dtype) + cls.AT_ZERO * (x == 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0).to(g.dtype)

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return t * ReluJ._slope(x)


class ReluJHalf(ReluJ):
    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return t * 0.5 * (x > 0).to(x.dtype)  # bug: half the slope wherever x > 0


class NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def _x(dtype=torch.float64, shape=(4, 5)):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("fn", [torch.tanh, F.gelu, SwishJ.apply, lambda x: F.layer_norm(x, (5,)),
                                lambda x: torch.softmax(x, -1)], ids=["tanh", "gelu", "function", "layer_norm",
                                                                       "softmax"])
def test_correct_forward_mode_passes(fn, dtype):
    records = check(fn, _x(dtype), modes=("rev", "fwd"))
    kinds = {r.tensor for r in records}
    assert {"jvp along input0", "<u, J v> along input0"} <= kinds or {"jvp along x", "<u, J v> along x"} <= kinds
    assert {r.status for r in records} == {"pass"}


def test_a_wrong_jvp_is_caught_by_differences_and_by_the_adjoint_identity():
    assert {r.status for r in check(SwishJBug.apply, _x())} == {"pass"}  # the backward is right
    with pytest.raises(CheckFailed) as info:
        check(SwishJBug.apply, _x(), modes=("rev", "fwd"))
    text = str(info.value)
    assert "tensor 'jvp along x'" in text and "at index (" in text and "allowed" in text
    assert "tensor '<u, J v> along x'" in text and "adjoint identity" in text
    failed = {r.tensor for r in info.value.records if r.status == "fail"}
    assert failed == {"jvp along x", "<u, J v> along x"}
    with pytest.raises(CheckFailed, match="jvp along"):
        check(SwishJBug.apply, _x(torch.float32), modes="fwd")


def test_a_stencil_across_an_exact_kink_is_nondifferentiable_and_bugs_elsewhere_still_fail():
    x = torch.tensor([[-1.0, 0.0, 0.5], [0.0, 2.0, -0.3]], dtype=torch.float64)
    for fn in (torch.relu, F.leaky_relu, ReluJ.apply):
        statuses = {r.tensor: r.status for r in check(fn, x, modes="fwd")}
        assert statuses[next(t for t in statuses if t.startswith("jvp along"))] == "nondifferentiable", statuses
        assert set(statuses.values()) <= {"nondifferentiable", "pass"}, statuses
        assert {r.status for r in check(fn, x + 3.0, modes="fwd")} == {"pass"}
    with pytest.raises(CheckFailed, match="jvp along"):
        check(ReluJHalf.apply, x, modes="fwd")


def test_a_function_without_forward_mode_is_an_error_that_says_so():
    with pytest.raises(CheckFailed, match="no forward mode .* jvp staticmethod"):
        check(NoJvp.apply, _x(), modes=("rev", "fwd"))
    assert {r.status for r in check(NoJvp.apply, _x())} == {"pass"}


def test_module_parameters_in_forward_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh()).double()
    records = check(net, _x().detach(), modes="fwd")
    assert {r.tensor for r in records} == {"jvp (all tensors)", "<u, J v> (all tensors)"}
    assert {r.status for r in records} == {"pass"}


class ScaleShift(torch.autograd.Function):
    """x * w + b with a jvp that drops b's tangent when ``BUG``."""

    BUG = False

    @staticmethod
    def forward(x, w, b):
        return x * w + b

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _ = inputs
        ctx.save_for_backward(x, w)
        ctx.save_for_forward(x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w, (g * x).sum(0), g.sum(0)

    @classmethod
    def jvp(cls, ctx, tx, tw, tb):
        x, w = ctx.saved_tensors
        return tx * w + x * tw + (0 if cls.BUG else tb)


class ScaleShiftBug(ScaleShift):
    BUG = True


def test_a_wrong_jvp_of_one_of_several_inputs_is_named_by_that_input():
    args = (_x(), _x(shape=(5,)), _x(shape=(5,)))
    records = check(ScaleShift.apply, *args, modes="fwd")
    assert {r.tensor for r in records} == {"jvp (all tensors)", "<u, J v> (all tensors)"}
    assert {r.status for r in records} == {"pass"}
    with pytest.raises(CheckFailed) as info:
        check(ScaleShiftBug.apply, *args, modes="fwd")
    failed = {r.tensor for r in info.value.records if r.status == "fail"}
    assert failed == {"jvp along b", "<u, J v> along b"}


def test_fuzz_in_forward_mode_and_bad_modes():
    assert fuzz(SwishJ.apply, inputs={"x": ("N", "D")}, examples=8, modes=("rev", "fwd")) >= 8
    with pytest.raises(CheckFailed, match="jvp along"):
        fuzz(SwishJBug.apply, inputs={"x": ("N", "D")}, examples=8, modes=("fwd",))
    with pytest.raises(ValueError, match="modes must hold"):
        check(torch.tanh, _x(), modes=("reverse",))
    with pytest.raises(ValueError, match="checked at order 1"):
        check(torch.tanh, _x(), modes=("fwd",), order=2)


def test_batched_gradients_equal_the_backward_one_cotangent_at_a_time():
    """Note [Batched gradients]: the backward under vmap (is_grads_batched)."""
    for fn in (torch.tanh, F.gelu, SwishJ.apply, ScatterInto.apply):
        records = check(fn, _x(), modes=("rev", "batched"))
        assert any(r.tensor.startswith("batched grad of") for r in records)
        assert {r.status for r in records} == {"pass"}, fn
    assert {r.status for r in check(ScatterIntoInPlace.apply, _x())} == {"pass"}  # right one cotangent at a time
    with pytest.raises(CheckFailed, match="under vmap .* raised RuntimeError"):
        check(ScatterIntoInPlace.apply, _x(), modes=("rev", "batched"))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh()).double()
    records = check(net, _x().detach(), modes="batched")
    assert {r.tensor for r in records} == {"batched grad of 0.weight", "batched grad of 0.bias"}
    assert {r.status for r in records} == {"pass"}


def test_an_undefined_output_gradient_gives_the_zero_cotangents_gradient_and_no_crash():
    """Note [Undefined output gradients], run with every reverse check of a
    callable with two or more floating outputs."""
    records = check(SinCos.apply, _x())
    assert {r.tensor for r in records} >= {"x, output 0's gradient undefined", "x, output 1's gradient undefined"}
    assert {r.status for r in records} == {"pass"}
    with pytest.raises(CheckFailed, match="raised TypeError with output 0's gradient undefined"):
        check(SinCosBug.apply, _x())
    assert {r.tensor for r in check(torch.tanh, _x())} == {"(all tensors)"}  # one output: nothing to probe


def test_records_say_which_order_and_mode_they_check():
    from user_functions import SwishGateTwice

    x, w = _x(), _x(shape=(5,))
    assert {(r.order, r.ad_mode) for r in check(SwishGateTwice.apply, x, w, order=2)} == {(2, "rev")}
    def sin_cos(x):
        return torch.sin(x), torch.cos(x)

    modes = {(r.order, r.ad_mode) for r in check(sin_cos, x, modes=("rev", "fwd", "batched"))}
    assert modes == {(1, "rev"), (1, "fwd"), (1, "batched"), (1, "undefined")}
    frame = check(sin_cos, x, modes=("rev", "fwd")).to_frame()
    assert {"order", "ad_mode"} <= set(frame.columns)


def test_per_sample_gradients_under_vmap_equal_each_sample_alone():
    """Note [Per-sample gradients]."""
    from user_functions import Square, SquareMixingRule, SwishGate

    x, w = _x(), _x(shape=(5,))
    for fn, args in ((torch.tanh, (x,)), (lambda x, w: F.gelu(x) * w, (x, w)), (Square.apply, (x,))):
        records = check(fn, *args, modes=("rev", "per-sample"))
        assert "per-sample loss" in {r.tensor for r in records} and {r.status for r in records} == {"pass"}
    with pytest.raises(CheckFailed, match="tensor 'per-sample loss'"):
        check(SquareMixingRule.apply, x, modes="per-sample")
    with pytest.raises(CheckFailed, match="must override the setup_context"):
        check(SwishGate.apply, x, w, modes="per-sample")  # functorch cannot transform a ctx-style Function
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh()).double()
    records = check(net, x.detach(), modes="per-sample")
    assert {r.tensor for r in records} == {"per-sample loss", "per-sample grad of 0.weight",
                                           "per-sample grad of 0.bias"}
    assert {r.status for r in records} == {"pass"} and {r.ad_mode for r in records} == {"per-sample"}


def test_per_sample_gradients_slice_a_batch_and_its_targets_together():
    """``samples=`` names the inputs whose first axis is the sample: a model's loss
    on (x, target) per sample, the targets sliced with the inputs; a loss whose
    batching rule mixes samples fails, and a bad ``samples`` is a clear error."""
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3).double()
    x, target = _x(), torch.randint(0, 3, (4,))

    def loss(x, target):
        return F.cross_entropy(net(x), target, reduction="sum")

    records = check(loss, x, target, modes="per-sample", samples=("x", "target"))
    assert {r.status for r in records} == {"pass"}
    assert "along the first axis of x, target" in next(r for r in records if r.tensor == "per-sample loss").message
    with pytest.raises(CheckFailed, match="loss on one sample raised"):  # target left whole: 1 input, 4 targets
        check(loss, x, target, modes="per-sample")

    def mixed(x, target):  # a per-sample loss that reads the whole batch's mean
        return F.cross_entropy(net(x - x.mean(0)), target, reduction="sum")

    assert {r.status for r in check(mixed, x, target, modes="per-sample", samples=(0, 1))} == {"pass"}
    with pytest.raises(ValueError, match="no tensor input is called 'y'"):
        check(loss, x, target, modes="per-sample", samples=("x", "y"))
    with pytest.raises(ValueError, match="must share their first axis"):
        check(loss, x, torch.zeros(3, dtype=torch.long), modes="per-sample", samples=("x", "target"))
    with pytest.raises(ValueError, match="give modes with 'per-sample'"):
        check(loss, x, target, samples=("x", "target"))
