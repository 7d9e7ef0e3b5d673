"""Graph: validation, JSON round trip, stable hash, seeded values."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gradcheck.graph import Graph, GraphBuilder, GraphError, single_op_graph
from gradcheck.case import materialize
from gradcheck.catalogue import CATALOGUE


def small_graph():
    b = GraphBuilder()
    x = b.input("x", (4, 3))
    h = b.op("linear", x, b.param("w", (5, 3)), b.param("b", (5,)))
    h = b.op("relu", h)
    y = b.const("y", (4,), dtype="int", init={"kind": "randint", "high": 5})
    return b.build(b.op("cross_entropy", h, y, name="loss"))


def test_json_round_trip_gives_an_equal_graph_for_every_op_sample():
    for op in CATALOGUE.values():
        for s in op.samples:
            g = single_op_graph(op.name, s)
            back = Graph.from_json(g.to_json())
            assert back == g
            assert back.case_id == g.case_id
            assert back.shapes == g.shapes


CANONICAL = (
    '{"leaves":[{"dtype":"float","init":{"kind":"normal","std":1.0},"name":"x","role":"input","shape":[4,3]},'
    '{"dtype":"float","init":{"kind":"normal","std":0.5},"name":"w","role":"param","shape":[5,3]},'
    '{"dtype":"float","init":{"kind":"normal","std":0.5},"name":"b","role":"param","shape":[5]},'
    '{"dtype":"int","init":{"high":5,"kind":"randint"},"name":"y","role":"const","shape":[4]}],'
    '"nodes":[{"hyper":{},"inputs":["x","w","b"],"name":"linear0","op":"linear"},'
    '{"hyper":{},"inputs":["linear0"],"name":"relu0","op":"relu"},'
    '{"hyper":{},"inputs":["relu0","y"],"name":"loss","op":"cross_entropy"}],"output":"loss"}'
)


def test_case_id_is_sha256_of_the_canonical_json():
    # A case id names a case in reports and replay files: it is defined by the
    # canonical JSON (sorted keys, no spaces), not by anything in the process.
    g = small_graph()
    assert g.to_json() == CANONICAL
    assert g.case_id == hashlib.sha256(CANONICAL.encode()).hexdigest()[:16]


def test_case_id_is_the_same_in_another_process_with_another_hash_seed():
    code = ("import sys; sys.path.insert(0, 'tests'); from test_graph import small_graph; "
            "print(small_graph().case_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, cwd=pathlib.Path(__file__).parent.parent)
    assert out.stdout.strip() == small_graph().case_id


def test_hash_ignores_tuple_or_list_spelling_but_not_content():
    b1, b2 = GraphBuilder(), GraphBuilder()
    for b, shape in ((b1, (6, 4)), (b2, [6, 4])):
        x = b.input("x", (2, 3, 4))
        r = b.op("reshape", x, shape=shape)
        b.op("weighted_sum", r, b.const("p", (6, 4)), name="loss")
    assert b1.build().case_id == b2.build().case_id
    b3 = GraphBuilder()
    x = b3.input("x", (2, 3, 4))
    b3.op("weighted_sum", b3.op("reshape", x, shape=(4, 6)), b3.const("p", (4, 6)), name="loss")
    assert b3.build().case_id != b1.build().case_id


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["nodes"][0].update(op="lineer"), "unknown op 'lineer'"),
    (lambda d: d["nodes"][0].update(inputs=["x", "nope"]), "'nope' is not defined before it"),
    (lambda d: d["leaves"][1].update(shape=[5, 4]), "x has 3 features but weight"),
    (lambda d: d.update(output="relu0"), "must be a scalar loss"),
    (lambda d: d["nodes"][1].update(hyper={"alpha": 2}), "has no hyperparameter 'alpha'"),
    (lambda d: d["leaves"].append(dict(d["leaves"][0])), "'x' is used twice"),
])
def test_invalid_graphs_are_refused_with_a_message_naming_the_problem(mutate, message):
    d = json.loads(small_graph().to_json())
    mutate(d)
    with pytest.raises(GraphError, match=message):
        Graph.from_dict(d)


def test_describe_shows_every_node_with_its_shape():
    text = small_graph().describe()
    assert "linear0 = linear(x, w, b)  -> [4, 5]" in text
    assert "loss = cross_entropy(relu0, y)  -> []" in text


def test_materialize_is_seeded_and_leaves_draw_independently():
    g = small_graph()
    a, b = materialize(g, 3), materialize(g, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(materialize(g, 4)["x"], a["x"])
    assert a["y"].dtype == np.int64 and a["y"].min() >= 0 and a["y"].max() < 5
    # Removing a leaf's neighbour does not change the leaf's values (shrinking relies on it).
    b2 = GraphBuilder()
    b2.op("weighted_sum", b2.input("x", (4, 3)), b2.const("p", (4, 3)), name="loss")
    np.testing.assert_array_equal(materialize(b2.build(), 3)["x"], a["x"])


def test_float32_case_is_the_float64_case_rounded():
    g = small_graph()
    np.testing.assert_array_equal(materialize(g, 1, "float32")["w"], materialize(g, 1)["w"].astype(np.float32))
    bf = materialize(g, 1, "bfloat16")["w"]
    assert bf.dtype == np.float32
    assert np.all((bf.view(np.uint32) & 0xFFFF) == 0)  # only bfloat16's 16 bits are set
    np.testing.assert_allclose(bf, materialize(g, 1)["w"], rtol=2**-8)
    with pytest.raises(ValueError, match="dtype must be one of"):
        materialize(g, 1, "float8")
