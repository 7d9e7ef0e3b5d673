"""Second derivatives through the front door: ``check(..., order=2)`` and
``fuzz(..., order=2)`` (Note [Second order] in gradcheck/front.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcheck import CheckFailed, check, fuzz

from user_functions import CASES, SwishGate, SwishGateTwice, SwishGateTwiceBug, callable_of


def _inputs(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 5, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(),
            torch.randn(5, generator=gen, dtype=torch.float64).to(dtype).requires_grad_())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("fn", [SwishGateTwice.apply, lambda x, w: F.gelu(x) * w, lambda x, w: F.softplus(x * w),
                                lambda x, w: torch.tanh(x) @ torch.diag(w)], ids=["function", "gelu", "softplus",
                                                                                   "tanh-matmul"])
def test_twice_differentiable_functions_pass(fn, dtype):
    records = check(fn, *_inputs(dtype), order=2)
    assert records and {r.status for r in records} == {"pass"}
    full = check(fn, *_inputs(dtype), order=2, mode="full")
    assert {r.tensor for r in full} == {"x", "w"} and {r.status for r in full} == {"pass"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("bug", [SwishGate, SwishGateTwiceBug], ids=["saved-outside-the-graph", "detached-factor"])
def test_a_wrong_second_derivative_fails_while_the_first_passes(bug, dtype):
    x, w = _inputs(dtype)
    assert {r.status for r in check(bug.apply, x, w)} == {"pass"}
    with pytest.raises(CheckFailed) as info:
        check(bug.apply, x, w, order=2)
    text = str(info.value)
    assert text.startswith(f"second order: the double backward of {bug.__name__}")
    assert f"op {bug.__name__}.backward, tensor '" in text and "at index" in text and "allowed" in text


def test_the_reference_second_derivative_is_compared_analytically():
    x, w = _inputs(torch.float64)
    records = check(SwishGateTwice.apply, x, w, order=2, reference=lambda x, w: x * torch.sigmoid(x) * w)
    assert {(r.source_b, r.tensor) for r in records if r.source_b == "torch-formula"} >= {("torch-formula", "x"),
                                                                                         ("torch-formula", "w")}
    assert {r.status for r in records} == {"pass"}


def test_kinks_of_the_first_derivative_are_nondifferentiable_not_failures():
    x = torch.tensor([[-1.0, 0.0, 0.5], [0.0, 2.0, -0.3]], dtype=torch.float64)
    for fn in (torch.relu, F.leaky_relu, torch.abs):  # abs: autograd's second derivative is a ZeroTensor
        statuses = {r.status for r in check(fn, x, order=2)}
        assert statuses == {"nondifferentiable"}, (fn, statuses)
        assert {r.status for r in check(fn, x + 3.0, order=2)} == {"pass"}


def test_modules_and_a_model_with_its_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    records = check(net, x, order=2, mode="full")
    assert {r.tensor for r in records} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert {r.status for r in records} == {"pass"}
    assert {r.status for r in check(net, x, loss=lambda out: (out ** 2).sum(), order=2)} == {"pass"}


FUNCTIONS = [c for c in CASES if c.kind == "function"]


@pytest.mark.parametrize("which", ["correct", "buggy"])
@pytest.mark.parametrize("case", FUNCTIONS, ids=[c.name for c in FUNCTIONS])
def test_the_verdict_is_torch_gradgradchecks(case, which):
    """On the user-style Functions (some first-order right and second-order wrong,
    because their backwards use values saved outside autograd's graph)."""
    fn, inputs = callable_of(case, which), case.inputs(torch.float64)
    tensors = [i for i in inputs if torch.is_tensor(i)]
    rest = inputs[len(tensors):]
    theirs = torch.autograd.gradgradcheck(lambda *t: fn(*t, *rest), tuple(tensors), raise_exception=False)
    try:
        check(fn, *inputs, order=2)
        ours = True
    except CheckFailed:
        ours = False
    assert ours == theirs


def test_fuzz_checks_second_derivatives_on_drawn_regimes():
    assert fuzz(SwishGateTwice.apply, inputs={"x": ("N", "D"), "w": ("D",)}, examples=10, order=2) >= 10
    with pytest.raises(CheckFailed, match="second order"):
        fuzz(SwishGateTwiceBug.apply, inputs={"x": ("N", "D"), "w": ("D",)}, examples=10, order=2)


def test_bad_order_is_a_clear_error():
    x, w = _inputs(torch.float64)
    with pytest.raises(ValueError, match="order must be 1 .* or 2"):
        check(SwishGateTwice.apply, x, w, order=3)
    with pytest.raises(ValueError, match="order must be 1 .* or 2"):
        fuzz(SwishGateTwice.apply, inputs={"x": ("N", "D"), "w": ("D",)}, order=0)


class TanhSavedOutside(torch.autograd.Function):
    """tanh whose backward uses the output saved from the forward: right to first
    order, and autograd sees no second derivative through the saved output."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y.detach() ** 2)


def _tanh_graph():
    from gradcheck import Case, GraphBuilder

    b = GraphBuilder()
    h = b.op("tanh", b.op("linear", b.input("x", (4, 3)), b.param("w", (5, 3)), b.param("b", (5,))))
    return Case(b.build(b.op("weighted_sum", h, b.const("probe", (4, 5)), name="loss")), seed=3)


def test_torch_hessian_vector_products_agree_with_differences_of_the_references_backward():
    """gradcheck.sources.hessian: torch's double backward against Richardson
    differences of the NumPy reference's hand-written VJPs."""
    from reference_impl import Op
    from reference_impl.activations import tanh_forward

    from gradcheck import ReferenceSource, check_pair
    from gradcheck.sources.hessian import HessianVector
    from gradcheck.sources.torch_autograd import TorchSource

    case = _tanh_graph()
    records = check_pair(case, HessianVector(TorchSource(), seed=1),
                         HessianVector(ReferenceSource(), seed=1, differences=True))
    assert {r.tensor for r in records} == {"x", "w", "b"} and {r.status for r in records} == {"pass"}
    # torch's second derivative wrong: caught against the reference's
    detached = TorchSource(ops={"tanh": TanhSavedOutside.apply}, name="torch-detached")
    records = check_pair(case, HessianVector(detached, seed=1), HessianVector(ReferenceSource(), seed=1,
                                                                              differences=True))
    assert "fail" in {r.status for r in records}
    # the reference's backward wrong: its differences disagree with torch's
    bad = ReferenceSource({"tanh": Op(tanh_forward, lambda y, g: (g * (1 - y),))}, name="bad")
    records = check_pair(case, HessianVector(TorchSource(), seed=1), HessianVector(bad, seed=1, differences=True))
    assert "fail" in {r.status for r in records}


def test_a_hessian_vector_cross_check_replays_from_another_folder(tmp_path):
    """A Hessian-vector source has a spec (its inner source and the direction's
    seed), so a second-order case file replays with ``gradcheck repro``; a spec
    it cannot read is a clear error."""
    import subprocess
    import sys

    from gradcheck.replay import write_gradient_case
    from gradcheck.sources.hessian import HessianVector
    from gradcheck.sources.specs import parse_source
    from gradcheck.sources.torch_autograd import TorchSource
    from gradcheck import ReferenceSource

    a, b = HessianVector(TorchSource(), seed=5), HessianVector(ReferenceSource(), seed=5, differences=True)
    assert (a.spec, b.spec) == ("hvp:seed=5(torch:cpu:float64)", "hvp-fd:seed=5(reference)")
    again = parse_source(b.spec)
    assert isinstance(again, HessianVector) and again.differences and again.seed == 5 and again.spec == b.spec
    with pytest.raises(ValueError, match="hvp:seed=N"):
        parse_source("hvp:n=5(reference)")
    path = write_gradient_case(tmp_path / "hvp.json", _tanh_graph(), a, b)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-m", "gradcheck.cli", "repro", str(path)], cwd=elsewhere,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "hvp:seed=5(torch:cpu:float64) against hvp-fd:seed=5(reference)" in out.stdout
    assert {"x", "w", "b"} <= {line.split()[2] for line in out.stdout.splitlines() if line.strip().startswith("pass")}


def test_a_million_parameter_mlp_passes_without_element_by_element_localisation(monkeypatch):
    """Its second-order direction sums a million terms: with one thread the central
    stencil missed by rounding (error/tolerance 1.06), and localising element by
    element ran a first backward of the whole model per element (minutes).  A
    failing joint check is judged again along the same directions with Richardson
    extrapolation first, and passes there."""
    from gradcheck.case import Case
    from gradcheck.graph import GraphBuilder
    from gradcheck.judge import second_opinions
    from gradcheck.sources.torch_autograd import TorchSource

    b = GraphBuilder()
    h = b.op("tanh", b.op("linear", b.input("x", (8, 16)), b.param("w1", (1000, 16)), b.param("b1", (1000,))))
    h = b.op("tanh", b.op("linear", h, b.param("w2", (1000, 1000)), b.param("b2", (1000,))))
    h = b.op("linear", h, b.param("w3", (10, 1000)), b.param("b3", (10,)))
    graph = b.build(b.op("cross_entropy", h, b.const("y", (8,), dtype="int", init={"kind": "randint", "high": 10}),
                         name="loss"))
    fn, leaves, names = TorchSource().loss_function(graph, Case(graph, seed=0).tensors())
    params = [t.detach().clone().requires_grad_() for t in leaves]
    localised = []
    original = second_opinions.localise_directional
    monkeypatch.setattr(second_opinions, "localise_directional", lambda *a, **k: localised.append(1) or original(*a, **k))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        records = check(fn, *params, order=2, names=names)
    finally:
        torch.set_num_threads(threads)
    assert {r.status for r in records} == {"pass"} and not localised
