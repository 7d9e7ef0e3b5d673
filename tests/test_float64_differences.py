"""Note [Float64 differences]: a float32 case that float32 differences cannot
resolve is judged against differences of the float64 twin at the same values,
at the same tolerance; a wrong float32 gradient still fails."""

from reference_impl import Op, normalization
from zoo import layer_norm_missing_term
from gradcheck.case import Case
from gradcheck.graph import Graph
from gradcheck.judge import check_pair
from gradcheck.sources import FiniteDifferences, ReferenceSource


# batch norm, then a layer norm over two features, at scale 4 in float32: found by
# ``gradcheck run --dtype float32`` (case 5a9703a3a62a33de, seed 1686), where central
# and Richardson float32 differences of the reference both missed by 3.5%
GRAPH = (
    '{"leaves": [{"name": "x1", "shape": [3, 2], "role": "input", "dtype": "float", "init": {"kind": "nor'
    'mal", "std": 1.0}}, {"name": "p2", "shape": [2], "role": "param", "dtype": "float", "init": {"kind":'
    ' "normal", "mean": 1.0, "std": 0.3}}, {"name": "p3", "shape": [2], "role": "param", "dtype": "float"'
    ', "init": {"kind": "normal", "std": 0.5}}, {"name": "p5", "shape": [2], "role": "param", "dtype": "f'
    'loat", "init": {"kind": "normal", "mean": 1.0, "std": 0.3}}, {"name": "p6", "shape": [2], "role": "p'
    'aram", "dtype": "float", "init": {"kind": "normal", "std": 0.5}}, {"name": "p8", "shape": [2, 3], "r'
    'ole": "param", "dtype": "float", "init": {"kind": "normal", "std": 0.5}}, {"name": "p10", "shape": ['
    '2, 3], "role": "param", "dtype": "float", "init": {"kind": "normal", "std": 0.5}}, {"name": "target1'
    '2", "shape": [3, 2], "role": "input", "dtype": "float", "init": {"kind": "normal", "std": 1.0}}], "n'
    'odes": [{"name": "batc_4", "op": "batch_norm", "inputs": ["x1", "p2", "p3"], "hyper": {}}, {"name": '
    '"laye_7", "op": "layer_norm", "inputs": ["batc_4", "p5", "p6"], "hyper": {}}, {"name": "matm_9", "op'
    '": "matmul", "inputs": ["laye_7", "p8"], "hyper": {}}, {"name": "line_11", "op": "linear", "inputs":'
    ' ["matm_9", "p10"], "hyper": {}}, {"name": "loss", "op": "smooth_l1", "inputs": ["line_11", "target1'
    '2"], "hyper": {"beta": 0.5}}], "output": "loss"}'
)


def _ill_conditioned():
    case = Case(Graph.from_json(GRAPH), seed=1686, dtype="float32", scale=4.0, quantize=0.5)
    assert case.graph.case_id == "5a9703a3a62a33de"
    return case


def test_a_float32_case_beyond_float32_differences_passes_on_float64_differences():
    case = _ill_conditioned()
    ref = ReferenceSource()
    records = check_pair(case, ref, FiniteDifferences(ref, "central", "full"))
    assert {r.status for r in records} == {"pass"}, [r.message for r in records if r.status != "pass"]
    rejudged = [r for r in records if "float64-differences" in r.opinions]
    # the case reaches the opinion: float32 differences alone call it a failure
    assert rejudged and all("Note [Float64 differences]" in r.message for r in rejudged)


def test_a_wrong_float32_gradient_still_fails_against_float64_differences():
    case = _ill_conditioned()
    wrong = ReferenceSource({"layer_norm": Op(normalization.layer_norm_forward, layer_norm_missing_term)},
                            name="wrong-layer-norm")
    records = check_pair(case, wrong, FiniteDifferences(wrong, "central", "full"))
    failing = [r for r in records if r.status == "fail"]
    assert failing and any(r.op == "layer_norm" for r in failing)
