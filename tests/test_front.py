"""The one-call door: ``gradcheck.check``, ``check_numpy`` and ``fuzz`` on
user-style Functions and Modules (tests/user_functions.py), correct and buggy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcheck import CheckFailed, check, check_numpy, fuzz

from user_functions import CASES, SmallModel, SwishGate, callable_of, model_loss


DTYPES = [torch.float64, torch.float32]
BY_NAME = {c.name: c for c in CASES}


def _ids(cases):
    return [c.name for c in cases]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_correct_passes(case, dtype):
    records = check(callable_of(case, "correct", dtype), *case.inputs(dtype), loss=case.loss)
    assert records and {r.status for r in records} == {"pass"}
    assert {r.dtype for r in records} == {str(dtype).replace("torch.", "")}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if c.reached], ids=_ids([c for c in CASES if c.reached]))
def test_reached_bug_is_caught(case, dtype):
    with pytest.raises(CheckFailed) as info:
        check(callable_of(case, "buggy", dtype), *case.inputs(dtype), loss=case.loss)
    text = str(info.value)
    assert "[fail]" in text and "tensor '" in text and "at index" in text and "allowed" in text
    assert any(r.status == "fail" for r in info.value.records)


@pytest.mark.parametrize("case", [c for c in CASES if not c.reached], ids=_ids([c for c in CASES if not c.reached]))
def test_regime_bug_hides_from_the_given_input(case):
    """What torch's gradcheck sees too: the given input does not reach the trigger..."""
    assert {r.status for r in check(callable_of(case, "buggy"), *case.inputs(torch.float64))} == {"pass"}


FUZZED = [c for c in CASES if c.kind == "function"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", FUZZED, ids=_ids(FUZZED))
def test_fuzz_passes_correct(case, dtype):
    n = fuzz(callable_of(case, "correct"), inputs=case.fuzz_inputs, hyper=case.fuzz_hyper, examples=12, dtype=dtype)
    assert n >= 12


@pytest.mark.parametrize("case", FUZZED, ids=_ids(FUZZED))
def test_fuzz_catches_every_bug(case):
    """...and fuzz's regimes (large values, exact zeros, drawn hyperparameters) do."""
    with pytest.raises(CheckFailed) as info:
        fuzz(callable_of(case, "buggy"), inputs=case.fuzz_inputs, hyper=case.fuzz_hyper, examples=60)
    text = str(info.value)
    assert text.startswith("fuzz draw: ")
    first = next(iter(case.fuzz_inputs))
    assert f"{first}: " in text.splitlines()[0]  # the draw names each input with its regime and shape


def test_fuzz_shrinks_to_the_trigger():
    with pytest.raises(CheckFailed) as info:
        fuzz(callable_of(BY_NAME["cumprod"], "buggy"), inputs={"x": ("N", "T")}, examples=60)
    assert info.value.args[0].splitlines()[0] == "fuzz draw: x: zeros-and-ties[1, 1]"
    with pytest.raises(CheckFailed) as info:
        case = BY_NAME["unfold_conv2d"]
        fuzz(callable_of(case, "buggy"), inputs=case.fuzz_inputs, hyper=case.fuzz_hyper, examples=60)
    assert "'dilation': 2" in info.value.args[0].splitlines()[0]


def test_reference_catches_a_bug_the_backward_agrees_with():
    """A forward wrong in the same way as its backward passes against finite
    differences of itself; the independent formula catches it."""

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return 1.01 * x * torch.sigmoid(x) * w  # wrong, and the backward agrees with it

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            s = torch.sigmoid(x)
            return 1.01 * g * w * (s + x * s * (1 - s)), 1.01 * (g * x * s).sum(0)

    x, w = BY_NAME["swish_gate"].inputs(torch.float64)
    assert {r.status for r in check(Scaled.apply, x, w)} == {"pass"}
    with pytest.raises(CheckFailed, match="formula"):
        check(Scaled.apply, x, w, reference=lambda x, w: x * torch.sigmoid(x) * w)
    records = check(SwishGate.apply, x, w, reference=lambda x, w: x * torch.sigmoid(x) * w)
    against = {(r.source_b, r.tensor): r.status for r in records}
    assert against[("torch-formula", "x")] == against[("torch-formula", "output")] == "pass"
    assert against[("central-fd(SwishGate)", "(all tensors)")] == "pass"  # 25 scalars: along directions


def test_module_parameters_buffers_and_dropout():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(5, 2)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 4, dtype=torch.float64)
    records = check(net, x, mode="full")
    assert {r.tensor for r in records} == {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"}
    assert {r.status for r in records} == {"pass"}
    # 47 scalars: by default one joint check along random directions over all of them
    (joint,) = check(net, x)
    assert joint.tensor == "(all tensors)" and joint.status == "pass"
    for k, v in net.state_dict().items():  # running statistics as they were
        assert torch.equal(v, before[k]), k


def test_whole_model_with_a_loss():
    model = SmallModel()
    records = check(model, *BY_NAME["small_model"].inputs(torch.float64), loss=model_loss, mode="full")
    assert {r.tensor for r in records} >= {"l1.weight", "l1.bias", "norm_w", "l2.weight"}
    assert records.to_frame().shape[0] == len(records)


def test_inputs_without_requires_grad_are_all_differentiated():
    x = torch.randn(3, 2, dtype=torch.float64)
    assert [r.tensor for r in check(torch.sin, x)] == ["input0"]
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    records = check(lambda x, y: x * y, x, y)  # y asks for it, so x is held constant
    assert [r.tensor for r in records] == ["y"]


def test_outputs_tuple_with_integer_part():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    records = check(lambda x: torch.max(x, dim=1), x)  # (values, indices)
    assert {r.status for r in records} == {"pass"}


def test_function_named_like_a_catalogue_op():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    records = check(torch.relu, x)
    assert records[0].op == "torch.relu"


def test_kinks_of_a_user_function():
    """An input exactly at a kink nobody declared: any element of the
    subdifferential is right, and one outside it is caught."""
    x = torch.tensor([0.0, 1.0, -1.0, 0.5, -0.5], dtype=torch.float64, requires_grad=True)
    for f in (torch.relu, lambda x: x.clamp(-0.5, 0.5), lambda x: torch.where(x >= 0, x, 0.1 * x)):
        assert {r.status for r in check(f, x)} <= {"pass", "nondifferentiable"}

    class ReluAtZeroTwo(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp_min(0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.where(x > 0, 1.0, torch.where(x == 0, 2.0, 0.0)).to(g.dtype)

    with pytest.raises(CheckFailed, match="one-sided slopes"):
        check(ReluAtZeroTwo.apply, x)


def test_float32_where_torch_defaults_give_a_false_alarm():
    case = BY_NAME["layer_norm"]
    inputs = case.inputs(torch.float32)
    with pytest.raises(Exception):
        torch.autograd.gradcheck(case.correct.apply, inputs)
    assert {r.status for r in check(case.correct.apply, *inputs)} == {"pass"}


def test_large_offset_is_not_a_false_alarm():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(4, 5, 2, dtype=torch.float64, generator=g).requires_grad_() for _ in range(2))
    v = (1000 + torch.randn(4, 5, 2, dtype=torch.float64, generator=g)).requires_grad_()
    case = BY_NAME["causal_attention"]
    assert {r.status for r in check(case.correct.apply, q, k, v, seed=294)} == {"pass"}


def test_check_numpy():
    def forward(x, w):
        y = np.tanh(x @ w)
        return y, (x, w, y)

    def backward(saved, g):
        x, w, y = saved
        d = g * (1 - y ** 2)
        return d @ w.T, x.T @ d

    def backward_bug(saved, g):
        x, w, y = saved
        d = g * (1 - y)  # bug
        return d @ w.T, x.T @ d

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    assert {r.status for r in check_numpy(forward, backward, x, w)} == {"pass"}
    with pytest.raises(CheckFailed, match="tensor 'x'"):
        check_numpy(forward, backward_bug, x, w)


def test_bad_input_is_a_clear_error():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        check(torch.sin, x, mode="fast")
    with pytest.raises(TypeError, match="must be callable"):
        check(3, x)
    with pytest.raises(TypeError, match="no floating-point input"):
        check(lambda i: i * 2, torch.arange(3))
    with pytest.raises(TypeError, match="not a floating tensor"):
        check(lambda x: "text", x)
    with pytest.raises(ValueError, match="unknown regime"):
        fuzz(torch.sin, inputs={"x": ("N",)}, regimes=["huge"])


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_tensors_of_very_different_scales_in_float32(mode):
    """Large queries, keys offset by 1e3 and a value tensor of tiny variance (a
    draw fuzz found): the joint directional step, sized by the keys, is far too
    coarse for the others.  Note [Joint directions]: no false alarm, and the bug
    is still caught."""
    from gradcheck.front import _regime
    from user_functions import CausalAttention, CausalAttentionBug

    rng = np.random.default_rng(0)
    q, k, v = (torch.as_tensor(_regime(r, rng, (1, 2, 2)), dtype=torch.float32).requires_grad_()
               for r in ("large", "offset", "tiny-variance"))
    records = check(CausalAttention.apply, q, k, v, mode=mode)
    assert {r.status for r in records} == {"pass"}
    if mode == "directional":
        assert "slices pass" in records[0].opinions
    with pytest.raises(CheckFailed, match="tensor '[qkv]'"):
        check(CausalAttentionBug.apply, q, k, v, mode=mode)


def _offset_layer_norm_inputs(seed, d, weight_scale=1.0):
    rng = np.random.default_rng(seed)
    return (torch.as_tensor(1e3 + rng.standard_normal((3, d)), dtype=torch.float32).requires_grad_(),
            torch.as_tensor(weight_scale * rng.standard_normal(d), dtype=torch.float32).requires_grad_(),
            torch.as_tensor(rng.standard_normal(d), dtype=torch.float32).requires_grad_())


@pytest.mark.parametrize("d", [3, 4, 6])
def test_float32_layer_norm_of_inputs_offset_by_1e3(d):
    """Notes [Step descent] and [Float64 tie-break]: float32 differences of a
    forward whose inputs sit 1e3 from their spread are poor; the correct layer
    norm passes and the buggy one still fails."""
    from user_functions import LayerNormFn, LayerNormFnBug

    for seed in range(6):
        records = check(LayerNormFn.apply, *_offset_layer_norm_inputs(seed, d), mode="full")
        assert {r.status for r in records} <= {"pass", "nondifferentiable"}, [r.message for r in records]
        with pytest.raises(CheckFailed):
            check(LayerNormFnBug.apply, *_offset_layer_norm_inputs(seed, d), mode="full")


def test_a_float32_failure_against_differences_is_judged_again_against_float64():
    """Note [Float64 tie-break], on a draw fuzz found: float32 differences of this
    offset layer norm miss one element of x's gradient even after Richardson; the
    same function passes in float64, and its float32 gradient agrees with the
    float64 one.  The buggy layer norm still fails there."""
    from user_functions import LayerNormFn, LayerNormFnBug

    x = [[998.5341796875, 999.6318969726562, 999.6055908203125], [1000.3004760742188, 997.4541015625, 1000.2650756835938],
         [1000.5866088867188, 998.8806762695312, 1000.188232421875], [999.67041015625, 1000.58740234375, 998.7098388671875]]
    w = [1.8656049966812134, 0.2144174426794052, 2.4176971912384033]
    b = [0.29865920543670654, -0.33082324266433716, 0.33716097474098206]

    def inputs():
        return [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in (x, w, b)]

    records = check(LayerNormFn.apply, *inputs(), seed=29)
    assert {r.status for r in records} == {"pass"}
    (tied,) = [r for r in records if "float64-tie-break: pass" in r.opinions]
    assert tied.tensor == "x" and "judged again against the same function in float64" in tied.message
    with pytest.raises(CheckFailed, match="tensor 'x'"):
        check(LayerNormFnBug.apply, *inputs(), seed=29)
