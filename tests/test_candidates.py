"""Candidates: the plugs, the guards around them, loading, isolation."""

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import find, settings
from hypothesis.errors import NoSuchExample

import reference_impl
from reference_impl import activations, layers
from gradcheck import Candidate, load_candidate
from gradcheck.sources.candidate import EngineSource, candidate_sources
from zoo import _overwriting_engine as overwriting_engine, torch_bad_tanh
from gradcheck.case import Case, op_cases
from gradcheck.catalogue import CATALOGUE
from gradcheck.graph import single_op_graph
from gradcheck.judge import check_pair
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.strategies import cases, graphs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_catalogue():
    """Loading the example declares scale_norm; later tests see the built-in catalogue."""
    from gradcheck.catalogue import CATALOGUE

    ops = dict(CATALOGUE)
    yield
    CATALOGUE.clear()
    CATALOGUE.update(ops)
EXAMPLE = ROOT / "examples" / "my_layers" / "my_layers" / "layers.py"
REF = ReferenceSource()


def numpy_candidate(op, forward, backward, **kw):
    c = Candidate(f"cand-{op}", **kw)
    c.numpy_ops[op] = (forward, backward)
    return c


def run_one(candidate, op="tanh", sample=0, against=None):
    (source,) = candidate_sources(candidate)
    case = op_cases(op)[sample]
    return check_pair(case, source, against or FiniteDifferences(source))


def error_of(records):
    (r,) = records
    assert r.status == "error", r
    return r.message


# ---------------------------------------------------------------- guards: each misbehaviour is an error record


def test_an_exception_is_an_error_naming_the_op_and_phase():
    def backward(saved, g):
        raise ZeroDivisionError("oops")

    msg = error_of(run_one(numpy_candidate("tanh", activations.tanh_forward, backward)))
    assert "tanh.backward raised ZeroDivisionError: oops" in msg


def test_nan_in_a_gradient_is_an_error_with_its_position():
    def backward(y, g):
        out = g * (1 - y**2)
        out.flat[1] = np.nan
        return (out,)

    msg = error_of(run_one(numpy_candidate("tanh", activations.tanh_forward, backward)))
    assert "tanh.backward: gradient of 'x' has 1 non-finite value(s) (NaN or Inf), first at (1,)" in msg


def test_inf_in_a_forward_output_is_an_error():
    def forward(x):
        y, cache = activations.tanh_forward(x)
        return y / 0.0, cache

    with np.errstate(divide="ignore"):
        msg = error_of(run_one(numpy_candidate("tanh", forward, activations.tanh_backward)))
    assert "tanh.forward: forward output has" in msg and "non-finite" in msg


def test_a_wrong_output_shape_is_an_error():
    def forward(x, weight, bias=None):
        y, cache = layers.linear_forward(x, weight, bias)
        return y.T, cache

    msg = error_of(run_one(numpy_candidate("linear", forward, layers.linear_backward), "linear"))
    assert "linear.forward: forward output has shape (5, 4), expected (4, 5)" in msg


def test_a_wrong_gradient_dtype_is_an_error():
    def backward(y, g):
        return ((g * (1 - y**2)).astype(np.float32),)

    msg = error_of(run_one(numpy_candidate("tanh", activations.tanh_forward, backward)))
    assert "gradient of 'x' has dtype float32, expected float64" in msg


def test_the_wrong_number_of_gradients_is_an_error_naming_the_inputs():
    def backward(cache, g):
        return layers.linear_backward(cache, g)[:2]

    msg = error_of(run_one(numpy_candidate("linear", layers.linear_forward, backward), "linear"))
    assert "linear.backward returned 2 gradient(s) for 3 tensor input(s) (x, weight, bias)" in msg


def test_writing_into_an_input_is_an_error():
    def forward(x):
        np.tanh(x, out=x)
        return x, x

    msg = error_of(run_one(numpy_candidate("tanh", forward, activations.tanh_backward)))
    assert "tanh.forward wrote into its input 'x' in place (7 element(s) changed, first at (0,))" in msg


def test_a_backward_that_overwrites_its_saved_values_is_an_error_naming_them():
    from zoo import tanh_backward_reuses_saved

    msg = error_of(run_one(numpy_candidate("tanh", activations.tanh_forward, tanh_backward_reuses_saved)))
    assert "tanh.backward wrote into its saved values (saved) in place" in msg


def test_gradients_that_share_memory_are_an_error_naming_both():
    from zoo import add_backward_one_buffer
    from reference_impl import structure

    msg = error_of(run_one(numpy_candidate("add", structure.add_forward, add_backward_one_buffer), "add"))
    assert "add.backward returned gradients of 'a' and 'b' that share memory" in msg


def test_a_backward_writing_into_grad_out_is_an_error_naming_grad_out():
    from zoo import relu_backward_zeroes_grad_out

    msg = error_of(run_one(numpy_candidate("relu", activations.relu_forward, relu_backward_zeroes_grad_out),
                           "relu"))
    assert "relu.backward wrote into grad_out in place" in msg


def test_writing_through_the_base_of_an_input_is_caught_and_named():
    def forward(x):
        if x.base is not None:
            x.base[...] = 0  # around any read-only view
        else:
            x[...] = 0
        return activations.tanh_forward(x)

    msg = error_of(run_one(numpy_candidate("tanh", forward, activations.tanh_backward)))
    assert "tanh.forward wrote into its input 'x' in place" in msg


def test_a_gradient_that_is_a_view_of_grad_out_for_one_input_is_fine():
    from reference_impl import structure

    # reshape's backward returns grad_out reshaped: a view, for its only input
    (r,) = [r for r in run_one(numpy_candidate("reshape", structure.reshape_forward, structure.reshape_backward),
                               "reshape")]
    assert r.status == "pass", r.message


def test_a_forward_that_does_not_return_a_pair_is_an_error():
    msg = error_of(run_one(numpy_candidate("tanh", lambda x: np.tanh(x), activations.tanh_backward)))
    assert "tanh.forward must return (output, saved), got ndarray" in msg


def test_a_hang_is_cut_at_the_time_limit_and_the_next_check_goes_on():
    import time

    def backward(y, g):
        time.sleep(10)

    c = numpy_candidate("tanh", activations.tanh_forward, backward, time_limit=0.3)
    t0 = time.perf_counter()
    msg = error_of(run_one(c))
    assert time.perf_counter() - t0 < 5
    assert "tanh.backward did not finish within the time limit of 0.3 s" in msg
    # the same candidate on a graph without its op still runs
    assert {r.status for r in run_one(c, "sigmoid")} == {"pass"}


def test_the_reference_wrapped_as_a_candidate_passes_against_everything():
    c = Candidate("reference-as-candidate")
    for name, op in reference_impl.OPS.items():
        c.numpy_ops[name] = (op.forward, op.backward)
    (source,) = candidate_sources(c)
    for op in ("conv2d", "batch_norm", "attention", "cross_entropy", "embedding", "concat"):
        for case in op_cases(op):
            assert {r.status for r in check_pair(case, source, FiniteDifferences(source))} == {"pass"}
            assert {r.status for r in check_pair(case, source, REF, outputs=True)} == {"pass"}


# ---------------------------------------------------------------- torch plugs


torch = pytest.importorskip("torch")


def test_an_autograd_function_gets_hyperparameters_in_catalogue_order():
    c = load_candidate(f"{EXAMPLE}:candidate")
    src = [s for s in candidate_sources(c) if s.name.endswith("-torch")][0]
    for case in op_cases("gelu"):  # approximate="none" and "tanh"
        assert {r.status for r in check_pair(case, src, REF, outputs=True)} == {"pass"}


def test_an_nn_module_is_called_with_the_graphs_parameters_by_name():
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))  # replaced per call
            self.bias = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x @ self.weight.T + self.bias

    c = Candidate("module")
    c.op("linear")(Linear)
    (src,) = candidate_sources(c)
    assert {r.status for r in check_pair(op_cases("linear")[0], src, REF, outputs=True)} == {"pass"}


def test_a_string_setting_for_a_parameter_the_implementation_defaults_to_a_number_is_refused():
    """Note [Settings a signature lacks]: a conv written for numeric padding
    (padding=0) is not called with padding="same"; one whose default is a
    string, or that takes **kwargs, is."""
    numeric = Candidate("numeric")
    numeric.op("conv2d")(lambda x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros":
                         None)
    why = numeric.refuses_node("conv2d", {"padding": "same"}, [(1, 2, 5, 5), (2, 2, 3, 3)])
    assert "defaults 'padding' to a number" in why and "padding='same'" in why, why
    assert numeric.refuses_node("conv2d", {"padding": (1, 0), "padding_mode": "reflect"}, [(1, 2, 5, 5), (2, 2, 3, 3)]) == ""
    named = Candidate("named")
    named.op("conv2d")(lambda x, weight, bias=None, stride=1, padding="valid", dilation=1, groups=1,
                       padding_mode="zeros": None)
    assert named.refuses_node("conv2d", {"padding": "same"}, [(1, 2, 5, 5), (2, 2, 3, 3)]) == ""
    anything = Candidate("anything")
    anything.op("conv2d")(lambda x, weight, bias=None, **hyper: None)
    assert anything.refuses_node("conv2d", {"padding": "same"}, [(1, 2, 5, 5), (2, 2, 3, 3)]) == ""


def test_a_node_without_an_optional_input_the_implementation_needs_is_refused():
    """Note [Settings a signature lacks]: a layer norm written with weight and
    bias required is checked only on nodes with both; the reference's own,
    whose weight and bias default to None, takes every node."""
    c = load_candidate(f"{ROOT}/tests/user_layers/ordinary.py:candidate")
    assert "needs a 'bias' input" in c.refuses_node("layer_norm", {}, [(3, 5), (5,)])
    assert "needs a 'weight' input" in c.refuses_node("layer_norm", {"normalized_shape": (5,)}, [(3, 5)])
    assert c.refuses_node("layer_norm", {}, [(3, 5), (5,), (5,)]) == ""
    ref = Candidate("ref")
    ref.op("layer_norm")(reference_impl.OPS["layer_norm"])
    assert ref.refuses_node("layer_norm", {"normalized_shape": (5,)}, [(3, 5)]) == ""
    for case in op_cases("layer_norm"):
        (src,) = [s for s in candidate_sources(c) if not s.name.endswith("-torch")]
        statuses = {r.status for r in check_pair(case, src, REF, outputs=True)}
        assert statuses == ({"pass"} if len(case.graph.nodes[0].inputs) == 3 else {"skipped"}), statuses


def test_a_setting_the_implementation_has_no_parameter_for_is_skipped_with_the_reason_and_never_passed():
    """Note [Settings a signature lacks]: layers written before avg_pool took
    count_include_pad (a NumPy class and an autograd.Function taking fewer
    positions) are checked on its default, never called with it, and a sample
    needing another value is skipped, saying which parameter is missing."""
    c = load_candidate(f"{ROOT}/tests/user_layers/old_signature.py:candidate")
    assert "takes no 'count_include_pad' parameter" in c.refuses_node("avg_pool2d", {"count_include_pad": False}, [(1, 2, 5, 5)])
    assert c.refuses_node("avg_pool2d", {"count_include_pad": True, "padding": 1}, [(1, 2, 5, 5)]) == ""
    assert c.refuses_node("avg_pool1d", {"count_include_pad": False}, [(1, 2, 7)]) != ""
    assert "takes no 'weight' input" in c.refuses_node("cross_entropy", {}, [(4, 3), (4,), (3,)])
    assert c.refuses_node("cross_entropy", {"label_smoothing": 0.1}, [(4, 3), (4,)]) == ""
    for case in op_cases("cross_entropy"):
        (src,) = [s for s in candidate_sources(c) if not s.name.endswith("-torch")]
        weighted = len(case.graph.nodes[0].inputs) == 3
        statuses = {r.status for r in check_pair(case, src, REF, outputs=True)}
        assert statuses == ({"skipped"} if weighted else {"pass"}), (case.graph.nodes[0], statuses)
    for op in ("avg_pool2d", "avg_pool1d"):
        statuses = {}
        for case in op_cases(op):
            for src in (s for s in candidate_sources(c) if s.name.endswith("-torch") == (op in c.torch_ops)):
                hyper = case.graph.nodes[0].hyper
                if hyper.get("divisor_override") is not None or hyper.get("ceil_mode"):  # later settings it lacks too
                    assert {r.status for r in check_pair(case, src, REF, outputs=True)} == {"skipped"}
                    continue
                for r in check_pair(case, src, REF, outputs=True):
                    statuses.setdefault(hyper.get("count_include_pad", True), set()).add(
                        (r.status, "takes no 'count_include_pad'" in r.message))
        assert statuses[True] == {("pass", False)}, statuses
        assert statuses[False] == {("skipped", True)}, statuses
    # drawn for the reference, never into this candidate's random graphs
    excluding = lambda g: any(n.op == "avg_pool2d" and n.hyper.get("count_include_pad") is False  # noqa: E731
                              for n in g.nodes)
    quick = settings(max_examples=300, database=None, deadline=None)
    assert excluding(find(graphs(include="avg_pool2d"), excluding, settings=quick))
    with pytest.raises(NoSuchExample):
        find(graphs(include="avg_pool2d", accept=lambda op, hyper, shapes: not c.refuses_node(op, hyper, shapes)),
             excluding, settings=quick)


def test_a_torch_function_with_a_wrong_backward_fails_against_the_reference():
    BadTanh = torch_bad_tanh()
    c = Candidate("bad")
    c.op("tanh")(BadTanh)
    (src,) = candidate_sources(c)
    assert {r.status for r in check_pair(op_cases("tanh")[0], src, REF)} == {"fail"}


def test_a_torch_op_writing_into_its_input_is_an_error():
    c = Candidate("inplace")
    c.op("tanh")(lambda x: x.tanh_() if not x.requires_grad else x.detach().tanh_())
    (src,) = candidate_sources(c)
    msg = error_of(check_pair(op_cases("tanh")[0], src, REF))
    assert "tanh.forward wrote into its input 'x' in place" in msg


@pytest.mark.parametrize("size", [64, 400_000])
@pytest.mark.parametrize("how", ["in place", "through .data", "through .numpy()"])
def test_a_torch_function_writing_into_its_input_is_caught_small_or_large(how, size):
    """Note [Writes into a torch op's inputs]: an in-place torch op is seen by the
    version counter at any size; a write around it (.data, .numpy()) by the copy,
    which only small inputs get."""
    import torch

    from gradcheck import check
    from gradcheck.front import CheckFailed

    def writes(x):
        if how == "in place":
            x.detach().mul_(1.5)
        elif how == "through .data":
            x.data.mul_(1.5)
        else:
            x.detach().numpy()[...] *= 1.5
        return torch.tanh(x)

    from gradcheck._guards import TORCH_COPY_BUDGET

    x = torch.randn(size, dtype=torch.float64, requires_grad=True)
    # above the budget a write around the version counter is not named, but what
    # it did (every evaluation at another x) still fails the check, as nondeterminism
    named = how == "in place" or size * 8 <= TORCH_COPY_BUDGET
    with pytest.raises(CheckFailed, match="wrote into its input 'x' in place" if named else "nondeterministic"):
        check(writes, x)

# ---------------------------------------------------------------- new ops and engines


def test_a_declared_op_is_placed_into_random_graphs_and_checked():
    c = load_candidate(f"{EXAMPLE}:candidate")
    g = find(graphs(include="scale_norm", families=["sequence"]), lambda g: len(g.nodes) >= 3,
             settings=settings(database=None, deadline=None))
    assert "scale_norm" in g.ops
    (numpy_src,) = [s for s in candidate_sources(c) if s.name == "my-layers"]
    case = Case(g, seed=3)
    assert {r.status for r in check_pair(case, numpy_src, FiniteDifferences(numpy_src))} == {"pass"}


def test_an_engine_that_overwrites_at_fan_out_fails_and_a_correct_one_passes():
    def correct(graph, tensors):
        loss, _, grads = reference_impl.loss_and_grads(graph.steps(), tensors, graph.output)
        return float(loss), {l.name: grads.get(l.name, np.zeros(l.shape)) for l in graph.differentiable_leaves}

    residual = find(cases(graphs(["mlp"], include="add")),
                    lambda c: any(n.op == "add" and n.inputs[0] in c.graph.node(n.inputs[1]).inputs
                                  for n in c.graph.nodes if n.op == "add" and n.inputs[1] in
                                  [m.name for m in c.graph.nodes]),
                    settings=settings(database=None, deadline=None, max_examples=500))
    right = Candidate("engine")
    right.engine(correct)
    for c, expected in ((right, {"pass"}), (overwriting_engine(), {"fail"})):
        src = EngineSource(c)
        statuses = {r.status for r in check_pair(residual, src, REF)}
        assert expected <= statuses, (c.name, statuses)


# ---------------------------------------------------------------- loading


def test_loading_by_module_attr_file_path_and_entry_point(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent.parent))
    assert load_candidate("my_layers.layers:candidate").name == "my-layers"
    assert load_candidate(f"{EXAMPLE}:candidate").ops == ("gelu", "layer_norm", "scale_norm")
    ep = load_candidate("my-layers")  # installed by make's set-up: the example's entry point
    assert ep.name == "my-layers" and ep.target == "my-layers"


@pytest.mark.parametrize("target,message", [
    ("no/such/file.py:candidate", "does not exist"),
    ("gradcheck.catalogue:candidate", "has no attribute 'candidate'"),
    ("gradcheck.catalogue:CATALOGUE", "is a dict, not a gradcheck.Candidate"),
    ("no-such-candidate", "not an entry point in 'gradcheck.candidates'"),
])
def test_a_bad_target_is_refused_with_what_was_wrong(target, message):
    with pytest.raises((LookupError, TypeError, FileNotFoundError), match=message):
        load_candidate(target)


# ---------------------------------------------------------------- isolation


CRASHING = """
import os
from reference_impl import activations
from gradcheck import Candidate

candidate = Candidate("crashing")

@candidate.op("tanh")
class Tanh:
    forward = staticmethod(activations.tanh_forward)

    @staticmethod
    def backward(y, g):
        os.abort()
"""


def test_a_crashing_candidate_in_isolation_is_one_error_record_and_the_run_goes_on(tmp_path):
    from gradcheck.sources.isolation import IsolatedSource

    path = tmp_path / "crashing.py"
    path.write_text(textwrap.dedent(CRASHING))
    src = IsolatedSource("candidate:numpy", f"{path}:candidate", timeout=60)
    try:
        msg = error_of(check_pair(op_cases("tanh")[0], src, REF))
        assert "crashed" in msg and "SIGABRT" in msg
        # The worker restarts: a graph without the crashing op checks normally.
        assert {r.status for r in check_pair(op_cases("sigmoid")[0], src, REF)} == {"pass"}
    finally:
        src.close()


def test_pytest_suites_with_the_example_candidate_passes(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "--gradcheck-profile", "dev",
         "--candidate", f"{EXAMPLE}:candidate", "-k", "scale_norm or gelu", "--gradcheck-report", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "gradcheck: candidate" in out.stdout and " passed" in out.stdout


def test_pytest_isolate_runs_the_candidate_in_a_worker(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_ops.py", "-p", "no:cacheprovider", "--gradcheck-profile", "dev",
         "--candidate", f"{EXAMPLE}:candidate", "--isolate", "-k", "sample and layer_norm", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout


@pytest.mark.parametrize("mode", ["full", "directional", "per-tensor"])
def test_the_padding_row_is_held_still_by_differences_and_a_backward_training_it_fails(mode):
    """Note [Frozen elements]: embedding's padding_idx row has no gradient by
    convention; differences hold it still, in every mode, so torch and the
    reference pass; a backward that trains the row fails against the reference."""
    from gradcheck import GraphBuilder
    from gradcheck.sources.torch_autograd import TorchSource
    from zoo import embedding_trains_the_padding_row

    b = GraphBuilder()
    ids = b.leaf("ids", (4, 6), "const", "int", {"kind": "randint", "high": 3})
    y = b.op("embedding", ids, b.param("table", (3, 5)), padding_idx=0)
    g = b.build(b.op("weighted_sum", b.op("tanh", y), b.const("p", (4, 6, 5)), name="loss"))
    case = Case(g, seed=3)
    assert (case.tensors()["ids"] == 0).any()
    for src in (REF, TorchSource()):
        records = check_pair(case, src, FiniteDifferences(src, "central", mode))
        assert {r.status for r in records} == {"pass"}, [r.message for r in records]
    bad = numpy_candidate("embedding", layers.embedding_forward, embedding_trains_the_padding_row)
    (src,) = candidate_sources(bad)
    (table,) = [r for r in check_pair(case, src, REF) if r.tensor == "table"]
    assert table.status == "fail" and table.index.startswith("(0,")


def _per_element(op, i=0):
    sample = CATALOGUE[op].samples[i]
    return Case(single_op_graph(op, replace(sample, hyper={**sample.hyper, "reduction": "none"})))


def test_a_loss_is_checked_with_reduction_none_only_where_its_forward_gives_per_element_losses():
    """Note [A loss's reduction "none"]: an MSE that knows only mean and sum is
    refused reduction="none" (saying what its forward gave) and passes the rest;
    an L1 and a torch huber that give per-element losses are checked on them;
    an L1 whose backward sums its per-element cotangent passes mean and sum and
    fails there."""
    c = load_candidate(f"{ROOT}/tests/user_layers/reductions.py:candidate")
    why = c.refuses_node("mse", {"reduction": "none"}, [(4, 3), (4, 3)])
    assert "NumPy implementation gives shape ()" in why and "per-element losses (4, 3)" in why, why
    assert c.refuses_node("mse", {"reduction": "sum"}, [(4, 3), (4, 3)]) == ""
    assert c.refuses_node("l1", {"reduction": "none"}, [(4, 3), (4, 3)]) == ""
    assert c.refuses_node("huber", {"reduction": "none"}, [(4, 3), (4, 3)]) == ""
    numpy_src, torch_src = sorted(candidate_sources(c), key=lambda s: s.name.endswith("-torch"))
    assert {r.status for r in check_pair(_per_element("mse"), numpy_src, REF)} == {"skipped"}
    for op, src in (("mse", numpy_src), ("l1", numpy_src), ("huber", torch_src)):
        for case in op_cases(op):
            assert {r.status for r in check_pair(case, src, REF, outputs=True)} == {"pass"}, op
    for op, src in (("l1", numpy_src), ("huber", torch_src)):
        assert {r.status for r in check_pair(_per_element(op), src, REF, outputs=True)} == {"pass"}, op
    bug = load_candidate(f"{ROOT}/tests/user_layers/reductions.py:buggy")
    (src,) = candidate_sources(bug)
    assert {r.status for case in op_cases("l1") for r in check_pair(case, src, REF)} == {"pass"}
    records = check_pair(_per_element("l1"), src, REF)
    assert {r.status for r in records} == {"fail"} and {r.op for r in records} == {"l1"}
    # drawn into the random graphs of the L1s, never into the MSE's
    per_element = lambda op: lambda g: any(n.op == op and n.hyper.get("reduction") == "none"  # noqa: E731
                                           for n in g.nodes)
    accept = lambda op, hyper, shapes: not c.refuses_node(op, hyper, shapes)  # noqa: E731
    quick = settings(max_examples=400, database=None, deadline=None)
    assert per_element("l1")(find(graphs(include="l1", accept=accept), per_element("l1"), settings=quick))
    with pytest.raises(NoSuchExample):
        find(graphs(include="mse", accept=accept), per_element("mse"), settings=quick)


def test_a_loss_a_user_declares_keeps_its_own_reductions():
    """Only catalogue losses are drawn with reduction "none": a declared loss with a
    reduction setting of its own gets what its strategy draws."""
    from hypothesis import strategies as st

    from gradcheck import OpDef, Sample, TensorArg

    def shape(p, t, reduction="mean"):
        return ()

    class Sq:
        @staticmethod
        def forward(p, t, reduction="mean"):
            d = p - t
            return np.asarray(np.sum(d * d) / (d.size if reduction == "mean" else 1)), (d, reduction)

        @staticmethod
        def backward(saved, g):
            d, reduction = saved
            gp = 2 * g * d / (d.size if reduction == "mean" else 1)
            return gp, -gp

    c = Candidate("declared-loss")
    c.new_op(OpDef("sq_loss", (TensorArg("pred"), TensorArg("target")), shape, {"reduction": "mean"}, family="loss",
                   samples=(Sample({"pred": (3, 2), "target": (3, 2)}),),
                   hyper_strategy=lambda s: st.sampled_from([{}, {"reduction": "sum"}])), numpy=Sq)
    quick = settings(max_examples=600, database=None, deadline=None)
    drawn = lambda g: any(n.op == "sq_loss" for n in g.nodes)  # noqa: E731
    assert drawn(find(graphs(["mlp"], losses=["sq_loss"]), drawn, settings=quick))
    with pytest.raises(NoSuchExample):
        find(graphs(["mlp"], losses=["sq_loss"]), lambda g: any(n.op == "sq_loss" and n.hyper.get("reduction") == "none"
                                            for n in g.nodes), settings=quick)
