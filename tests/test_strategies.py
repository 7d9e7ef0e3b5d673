"""The graph strategies: validity, reach, argument checks, and shrinking a planted bug."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings, strategies as st
from hypothesis.errors import InvalidArgument

import reference_impl
from reference_impl import Op, activations
from gradcheck.cli import main
from gradcheck.graph import Graph
from gradcheck.case import materialize
from gradcheck.catalogue import CATALOGUE
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.strategies import FAMILY_OPS, LOSSES, cases, graphs, single_op_graphs
from gradcheck.testing import GradientMismatch, assert_gradients_agree

QUICK = settings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@QUICK
@given(graphs())
def test_drawn_graphs_are_valid_run_and_round_trip(g):
    assert Graph.from_json(g.to_json()) == g
    assert Graph.from_json(g.to_json()).case_id == g.case_id
    values, _ = reference_impl.forward(g.steps(), materialize(g, 0))
    for node in g.nodes:  # the declared shape rule matches what the op computes
        assert np.shape(values[node.name]) == g.shapes[node.name], node
    assert g.shapes[g.output] == ()


@pytest.mark.parametrize("op", sorted(CATALOGUE))
def test_every_catalogue_op_is_reachable_from_the_default_strategy(op):
    # derandomized: the same search every run, so an op's reachability is a fact, not a draw
    found = find(graphs(), lambda g: op in g.ops,
                 settings=settings(max_examples=6000, database=None, deadline=None, derandomize=True,
                                   suppress_health_check=list(HealthCheck)))
    assert op in found.ops


@pytest.mark.parametrize("op", sorted(set(o for ops in FAMILY_OPS.values() for o in ops) | set(LOSSES)))
def test_include_puts_the_op_in_every_graph_and_shrinks_to_it_alone(op):
    # derandomized: the same search every run (a random one can stop in a local minimum, a flatten short)
    smallest = find(graphs(include=op), lambda g: True, settings=settings(database=None, deadline=None, derandomize=True))
    assert op in smallest.ops
    body = [n for n in smallest.nodes if n.name != smallest.output]
    # At most one op besides it: flatten on an MLP needs a reshape to 3-d first; a
    # volume pool, the reshape of an image to a volume.  binary_cross_entropy takes
    # probabilities away from 0 and 1: sigmoid(tanh(x)) before it; cosine_embedding
    # two features at least (the cosine of one is its sign), which the smallest
    # input reaches by one concat.  affine_grid's theta is a linear map of the
    # features reshaped to (N, 2, 3): two ops.  ctc's log_probs are a log_softmax of
    # (T, N, C) logits, from features by a linear layer, a reshape and a transpose.
    allowed = {"binary_cross_entropy": 2, "cosine_embedding": 1, "ctc": 4}.get(op, 0) if op in LOSSES else (
        3 if op == "affine_grid" else 2)
    assert len(body) <= allowed, smallest.describe()


@pytest.mark.parametrize("kwargs,message", [
    ({"families": ["rnn"]}, "families contains 'rnn'"),
    ({"max_depth": -1}, "max_depth=-1 must be at least 0"),
    ({"min_depth": 3, "max_depth": 2}, "min_depth=3 is larger than max_depth=2"),
    ({"max_dim": 1}, "max_dim=1 must be at least 2"),
    ({"ops": ["conv_transpose4d"]}, "unknown op 'conv_transpose4d'"),
    ({"families": ["mlp"], "ops": ["conv2d"]}, "no family among"),
    ({"losses": ["hinge"]}, "losses=\\['hinge'\\]"),
    ({"include": "attention", "families": ["cnn"]}, "include='attention' belongs to no family"),
    ({"max_batch": True}, "max_batch=True must be an int"),
])
def test_bad_arguments_are_refused_before_drawing_and_named(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        graphs(**kwargs)


def test_cases_draw_seed_dtype_and_scale_and_check_their_arguments():
    case = find(cases(graphs(max_depth=1), dtypes=("float32",)), lambda c: True)
    assert case.dtype == "float32" and case.seed == 0 and case.scale == 1.0 and case.quantize == 0.0
    with pytest.raises(InvalidArgument, match="dtypes contains 'float8'"):
        cases(dtypes=("float8",))


@QUICK
@given(st.sampled_from(sorted(CATALOGUE)).flatmap(lambda op: st.tuples(st.just(op), single_op_graphs(op))))
def test_single_op_graphs_hold_the_op_in_one_block_and_a_head(op_and_graph):
    op, g = op_and_graph
    assert op in g.ops
    body = [n.op for n in g.nodes if n.name != g.output]
    # One block: the op, plus what its placement needs (a side branch, q/k/v projections,
    # the 1 x 1 convolution before a pixel or channel shuffle, the pad that evens a pixel unshuffle's input,
    # the unfold before a fold, the reshape of an image to a volume, the sum with a pooled embedding bag,
    # the flatten of a tensor to the (N, D) rows a triplet or cosine-embedding loss takes,
    # the softplus that makes log's or sqrt's input positive, the log_softmax of a
    # (T, N, C) transpose of projected features before ctc).
    assert len(body) <= 4 and set(body) <= {op, "tanh", "sigmoid", "linear", "conv1d", "conv2d", "pad", "unfold", "reshape", "flatten",
                                            "add", "softplus", *(("transpose", "log_softmax") if op == "ctc" else ())}, g.describe()


# ---------------------------------------------------------------- a planted bug in a rare setting

def softplus_forward(x, beta=1.0, threshold=20.0):
    y, (linear, z) = activations.softplus_forward(x, beta, threshold)
    return y, (linear, z, beta)


def softplus_backward_ignoring_beta(cache, g):
    linear, z, beta = cache
    # sigmoid(x) where it should be sigmoid(beta * x): wrong only when beta != 1
    return (np.where(linear, g, g * activations._sigmoid(z / beta)),)


def test_a_bug_in_a_rare_setting_is_found_by_the_ci_profile_and_shrinks_to_one_node(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADCHECK_REPORT_DIR", str(tmp_path))
    bad = ReferenceSource({"softplus": Op(softplus_forward, softplus_backward_ignoring_beta)}, name="bad")
    failing = []

    # softplus is one of eight activations in a CNN, and beta=2 is half its settings.
    @settings(settings.get_profile("gradcheck-ci"), database=None)
    @given(data=st.data())
    def suite_test(data):
        case = data.draw(cases(graphs(["cnn"], include="softplus")))
        try:
            assert_gradients_agree(case, bad, FiniteDifferences(bad, "central"))
        except GradientMismatch as e:
            failing.append((case, str(e)))
            raise

    with pytest.raises(GradientMismatch):
        suite_test()
    smallest, message = failing[-1]  # Hypothesis replays the shrunk example last
    body = [n for n in smallest.graph.nodes if n.name != smallest.graph.output]
    assert len(body) <= 3, smallest.graph.describe()
    assert any(n.op == "softplus" and n.hyper.get("beta") == 2.0 for n in body)
    assert "op softplus" in message and "Mismatched elements" in message
    assert "softplus(x1, beta=2.0" in message  # the shrunk graph, as text (its threshold beside)
    written = list(tmp_path.glob("cases/*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["case_id"] == smallest.graph.case_id


def test_a_failing_case_file_replays_with_gradcheck_repro(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRADCHECK_REPORT_DIR", str(tmp_path))
    case = find(cases(graphs(["mlp"], include="tanh", max_depth=1)), lambda c: True)

    def tanh_backward_wrong(y, g):
        return (g * (1 - y),)

    monkeypatch.setitem(reference_impl.OPS, "tanh", Op(activations.tanh_forward, tanh_backward_wrong))
    bad = ReferenceSource()
    with pytest.raises(GradientMismatch) as e:
        assert_gradients_agree(case, bad, FiniteDifferences(bad))
    path = str(e.value).split("replay: gradcheck repro ")[1].strip()
    assert main(["repro", path]) == 1
    out = capsys.readouterr().out
    assert "fail" in out and "Mismatched elements" in out
    monkeypatch.setitem(reference_impl.OPS, "tanh", Op(activations.tanh_forward, activations.tanh_backward))
    assert main(["repro", path]) == 0
    assert "every check passes" in capsys.readouterr().out


def test_repro_refuses_a_file_that_is_not_a_case(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text('{"format": "something-else"}')
    assert main(["repro", str(p)]) == 2
    assert "not a gradcheck case file" in capsys.readouterr().err
