"""gradcheck.compat: torch.autograd's signatures, the harness's verdicts."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError

from gradcheck.compat import GradcheckError, gradcheck, gradgradcheck

from user_functions import CASES

FUNCTIONS = [c for c in CASES if c.kind == "function"]


def _ids(cases):
    return [c.name for c in cases]


@pytest.mark.parametrize("case", FUNCTIONS, ids=_ids(FUNCTIONS))
def test_float32_correct_passes_where_torch_defaults_may_not(case):
    inputs = case.inputs(torch.float32)
    assert gradcheck(case.correct.apply, inputs) is True
    assert gradcheck(case.correct.apply, inputs, fast_mode=True) is True


@pytest.mark.parametrize("case", [c for c in FUNCTIONS if c.reached], ids=_ids([c for c in FUNCTIONS if c.reached]))
def test_bug_raises_torch_compatible_error(case):
    inputs = case.inputs(torch.float64)
    assert torch.autograd.gradcheck(case.buggy.apply, inputs, raise_exception=False) is False
    with pytest.raises(TorchGradcheckError) as info:  # an except clause written for torch's still works
        gradcheck(case.buggy.apply, inputs)
    assert isinstance(info.value, (GradcheckError, AssertionError))
    text = str(info.value)
    assert "tensor '" in text and "at index" in text and "allowed" in text  # which input, which element
    assert gradcheck(case.buggy.apply, inputs, raise_exception=False) is False
    assert gradcheck(case.buggy.apply, inputs, fast_mode=True, raise_exception=False) is False


class SlightlyOff(torch.autograd.Function):
    """sin with a backward off by a relative 1e-4."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.cos(x) * (1 + 1e-4)


def test_explicit_tolerances_are_honoured():
    x = torch.linspace(-2, 2, 7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(SlightlyOff.apply, (x,), raise_exception=False) is False  # the error model: 1e-4 is a bug
    assert gradcheck(SlightlyOff.apply, (x,), atol=1e-5, rtol=1e-3) is True  # the caller said 1e-3 is fine
    assert gradcheck(SlightlyOff.apply, (x,), rtol=1e-5, raise_exception=False) is False


def test_single_tensor_input_and_tuple_outputs():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(torch.tanh, x) is True
    assert gradcheck(lambda x: (x.sin(), x.argmax()), (x,)) is True


def test_torch_only_checks_are_handed_to_torch():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(torch.tanh, (x,), check_forward_ad=True, check_batched_grad=True) is True


@pytest.mark.parametrize("case", FUNCTIONS, ids=_ids(FUNCTIONS))
def test_gradgradcheck_agrees_with_torch(case):
    """Functions whose backward uses values saved without a graph (sigmoid(x)
    saved by forward) have wrong second derivatives: both say so; the others
    pass both."""
    inputs = case.inputs(torch.float64)
    theirs = torch.autograd.gradgradcheck(case.correct.apply, inputs, raise_exception=False)
    assert gradgradcheck(case.correct.apply, inputs, raise_exception=False) is theirs


class CubeWrongSecond(torch.autograd.Function):
    """x^3 with a correct first derivative whose own backward is wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _ThreeXSquared.apply(x, g)


class _ThreeXSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g):
        ctx.save_for_backward(x, g)
        return 3 * x ** 2 * g

    @staticmethod
    def backward(ctx, gg):
        x, g = ctx.saved_tensors
        return 3 * x * g * gg, 3 * x ** 2 * gg  # bug: d/dx of 3x^2 g is 6 x g


def test_gradgradcheck_catches_a_wrong_second_derivative():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(CubeWrongSecond.apply, (x,)) is True
    with pytest.raises(GradcheckError, match="tensor 'x'"):
        gradgradcheck(CubeWrongSecond.apply, (x,))
    assert gradgradcheck(lambda x: x ** 3, (x,)) is True
