"""torch autograd as a source: against the reference on CPU (and CUDA where present)."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from gradcheck.sources.torch_autograd import TorchSource
from gradcheck.case import Case, op_cases
from gradcheck.judge import check_pair
from gradcheck.graph import single_op_graph
from gradcheck.catalogue import CATALOGUE
from gradcheck.sources import FiniteDifferences, ReferenceSource, Unsupported

torch = pytest.importorskip("torch")

SAMPLES = [(op.name, i) for op in CATALOGUE.values() for i in range(len(op.samples))]
IDS = [f"{op}-{i}" for op, i in SAMPLES]
REF64 = ReferenceSource(compute_dtype="float64")


def _case(op_name, i, dtype="float64", seed=0):
    return Case(single_op_graph(op_name, CATALOGUE[op_name].samples[i]), seed=seed, dtype=dtype)


def test_every_catalogue_op_has_a_torch_formula():
    assert all(op.torch is not None for op in CATALOGUE.values())


@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_torch_and_reference_agree_in_float64_to_1e_10(op_name, i):
    for seed in (0, 1):
        records = check_pair(_case(op_name, i, seed=seed), TorchSource(), REF64, outputs=True)
        graph = _case(op_name, i).graph
        assert {r.tensor for r in records} == {l.name for l in graph.differentiable_leaves} | {n.name for n in graph.nodes}
        for r in records:
            assert r.status == "pass", r.message
            assert r.max_rel_err <= 1e-10, (r.tensor, r.max_rel_err)


@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_torch_float32_against_float64_reference_has_no_false_alarm(op_name, i):
    for seed in range(3):
        for r in check_pair(_case(op_name, i, "float32", seed), TorchSource(dtype="float32"), REF64, outputs=True):
            assert r.status == "pass", r.message
            assert r.dtype == "float32" and r.rtol == 2e-4


LOSSES = sorted(op.name for op in CATALOGUE.values() if op.is_loss and "reduction" in op.hyper)


def _per_element(op_name, i):
    """Sample i of a loss with reduction "none": a body op, probed by weighted_sum."""
    sample = CATALOGUE[op_name].samples[i]
    return single_op_graph(op_name, replace(sample, hyper={**sample.hyper, "reduction": "none"}))


@pytest.mark.parametrize("op_name", LOSSES)
def test_every_loss_with_reduction_none_agrees_with_torch_and_with_differences(op_name):
    for i in range(len(CATALOGUE[op_name].samples)):
        graph = _per_element(op_name, i)
        per = graph.shapes["out"]
        assert graph.output == "loss" and graph.node("out").op == op_name and len(per) >= 1
        for seed in (0, 1):
            case = Case(graph, seed=seed)
            for r in check_pair(case, TorchSource(), REF64, outputs=True):
                assert r.status == "pass" and r.max_rel_err <= 1e-10, (i, r.tensor, r.message)
            for r in check_pair(case, REF64, FiniteDifferences(REF64, "central")):
                assert r.status == "pass", (i, r.message)
            for r in check_pair(Case(graph, seed=seed, dtype="float32"), TorchSource(dtype="float32"), REF64):
                assert r.status == "pass", (i, r.message)


def test_a_loss_whose_backward_ignores_the_per_element_cotangent_fails_only_with_reduction_none():
    # a backward that takes the cotangent as one scalar: right for mean and sum, wrong row by row
    class Mse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, p, t, reduction="mean"):
            ctx.save_for_backward(p, t)
            ctx.reduction = reduction
            d = (p - t) ** 2
            return d.mean() if reduction == "mean" else d.sum() if reduction == "sum" else d

        @staticmethod
        def backward(ctx, g):
            p, t = ctx.saved_tensors
            scale = 2.0 / p.numel() if ctx.reduction == "mean" else 2.0
            return g.sum() * scale * (p - t), -g.sum() * scale * (p - t), None

    bad = TorchSource(ops={"mse": lambda p, t, reduction: Mse.apply(p, t, reduction)}, name="torch-bad")
    reduced = [r.status for i in range(2) for case in [Case(single_op_graph("mse", CATALOGUE["mse"].samples[i]))]
               for r in check_pair(case, bad, REF64)]
    assert set(reduced) == {"pass"}
    records = check_pair(Case(_per_element("mse", 0)), bad, REF64)
    assert {r.status for r in records} == {"fail"} and {r.tensor for r in records} == {"pred", "target"}


@pytest.mark.parametrize("op_name", ["linear", "conv2d", "layer_norm", "softmax", "attention", "cross_entropy"])
def test_torch_backward_matches_differences_of_its_own_forward(op_name):
    t = TorchSource()
    for case in op_cases(op_name):
        for r in check_pair(case, t, FiniteDifferences(t, "central")):
            assert r.status == "pass", r.message


def test_torch_catches_a_planted_bug_in_a_custom_formula():
    class BadSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = torch.sigmoid(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y  # missing (1 - y)

    bad = TorchSource(ops={"sigmoid": BadSigmoid.apply}, name="torch-bad")
    statuses = {r.status for case in op_cases("sigmoid") for r in check_pair(case, bad, REF64)}
    assert statuses == {"fail"}


def test_determinism_is_measured_when_asked():
    case = op_cases("conv2d")[0]
    r = TorchSource(check_determinism=True).run(case.graph, case.tensors())
    assert r.nondeterminism == 0.0  # CPU kernels are deterministic
    assert TorchSource().run(case.graph, case.tensors()).nondeterminism is None


def test_int_leaves_become_long_and_results_come_back_as_float64_numpy():
    case = op_cases("embedding")[0]
    r = TorchSource(dtype="float32").run(case.graph, case.tensors())
    assert r.grads["table"].dtype == np.float64 and r.dtype == "float32"
    assert set(r.outputs) == {"out", "loss"}


def test_bad_configurations_are_refused_by_name():
    with pytest.raises(ValueError, match="dtype must be one of"):
        TorchSource(dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(Unsupported, match="no CUDA device"):
            TorchSource(device="cuda")
    case = op_cases("tanh")[0]
    with pytest.raises(Unsupported, match="no complex input"):
        TorchSource().forward(case.graph, {k: v.astype(complex) for k, v in case.tensors().items()})
    assert "does not take complex input" in FiniteDifferences(TorchSource(), "complex").cannot_run(
        case.graph, case.tensors())


def test_importing_gradcheck_and_the_reference_does_not_import_torch():
    code = ("import sys, gradcheck, gradcheck.graph, gradcheck.judge, gradcheck.sources, gradcheck.strategies, "
            "gradcheck.catalogue, reference_impl;"
            "from gradcheck.sources import torch_autograd;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op_name", ["linear", "conv2d", "gelu", "layer_norm", "softmax", "attention", "mse"])
def test_low_precision_gradients_on_identical_inputs_stay_within_their_tolerance(op_name, dtype):
    for case in op_cases(op_name, dtype):
        for r in check_pair(case, TorchSource(dtype=dtype), REF64):
            assert r.status in ("pass", "skipped"), r.message


# ---------------------------------------------------------------- CUDA (skipped without a GPU)

CUDA_OPS = ["linear", "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "attention",
            "embedding", "softmax", "cross_entropy", "gelu"]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op_name", CUDA_OPS)
def test_cuda_and_cpu_agree_on_the_same_graphs(op_name, dtype):
    cuda, cpu = TorchSource("cuda", dtype, check_determinism=True), TorchSource("cpu", "float64")
    for case in op_cases(op_name, dtype):
        for r in check_pair(case, cuda, cpu, outputs=True):
            assert r.status == "pass", r.message
            assert r.device.startswith("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("op_name", CUDA_OPS)
def test_cuda_float64_agrees_with_the_reference(op_name):
    for case in op_cases(op_name):
        for r in check_pair(case, TorchSource("cuda"), REF64, outputs=True):
            assert r.status == "pass", r.message
