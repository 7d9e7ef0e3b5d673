"""Complex inputs through the front door (Note [Complex inputs] in
gradcheck/front.py): checked as their real and imaginary parts, in torch's
conjugate Wirtinger convention."""

from __future__ import annotations

import pytest
import torch

from gradcheck import CheckFailed, check, fuzz

from user_functions import CMul, CMulBug


def _inputs(dtype=torch.complex128):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, generator=gen, dtype=torch.complex128).to(dtype).requires_grad_()
    w = torch.randn(4, generator=gen, dtype=torch.complex128).to(dtype).requires_grad_()
    return z, w


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64], ids=str)
@pytest.mark.parametrize("mode", ["auto", "full"])
def test_a_correct_complex_backward_passes(dtype, mode):
    records = check(CMul.apply, *_inputs(dtype), mode=mode, reference=lambda z, w: z * w)
    assert {r.status for r in records} == {"pass"}
    if mode == "full":
        assert {r.tensor for r in records if r.source_b.startswith("central")} == {"z.real", "z.imag", "w.real",
                                                                                    "w.imag"}


@pytest.mark.parametrize("fn", [torch.exp, torch.tanh, torch.sigmoid, lambda z: z @ z.mT,
                                lambda z: (z.abs() ** 2).sum(), lambda z: torch.view_as_real(z).sum(-1)],
                         ids=["exp", "tanh", "sigmoid", "matmul", "abs2", "view_as_real"])
def test_torch_complex_ops_pass(fn):
    z, _ = _inputs()
    assert {r.status for r in check(fn, z)} == {"pass"}


def test_a_complex_vjp_missing_its_conjugate_fails_naming_the_part_and_the_element():
    with pytest.raises(CheckFailed) as info:
        check(CMulBug.apply, *_inputs())
    text = str(info.value)
    assert "tensor 'z.imag'" in text or "tensor 'z.real'" in text
    assert "at index (" in text and "allowed" in text
    assert {r.tensor for r in info.value.records if r.status == "fail"} <= {"z.real", "z.imag"}


def test_fuzz_draws_complex_inputs():
    assert fuzz(CMul.apply, inputs={"z": ("N", "D"), "w": ("D",)}, examples=10, dtype="complex128") >= 10
    with pytest.raises(CheckFailed, match="tensor 'z.(real|imag)'"):
        fuzz(CMulBug.apply, inputs={"z": ("N", "D"), "w": ("D",)}, examples=10, dtype="complex64")
