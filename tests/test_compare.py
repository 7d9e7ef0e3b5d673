"""Comparison records: statuses, kinks, non-finite values, tolerances, messages."""

import math

import numpy as np
import pytest

from reference_impl import Op, activations
from gradcheck.judge import TOLERANCES, Tolerance, coarser_dtype, compare, tolerance_for
from gradcheck.graph import GraphBuilder
from gradcheck.sources import FiniteDifferences, ReferenceSource, SourceResult


def relu_graph(n=4):
    b = GraphBuilder()
    r = b.op("relu", b.input("x", (n,)))
    return b.build(b.op("weighted_sum", r, b.const("p", (n,)), name="loss"))


def relu_passes_negative_gradient(pos, g):
    return (g,)


BUGGY_RELU = ReferenceSource({"relu": Op(activations.relu_forward, relu_passes_negative_gradient)}, name="bad-relu")
TENSORS = {"x": np.array([1e-7, -0.5, 0.8, -1.2]), "p": np.array([0.3, -1.0, 2.0, 0.7])}


def test_a_stencil_across_relu_zero_is_nondifferentiable_not_failed():
    g, ref = relu_graph(), ReferenceSource()
    (r,) = compare(g, ref.run(g, TENSORS), FiniteDifferences(ref).run(g, TENSORS))
    assert r.status == "nondifferentiable"
    assert r.nondifferentiable == 1
    assert "crossed a kink" in r.message


def test_a_relu_that_passes_gradient_through_negative_inputs_still_fails():
    g = relu_graph()
    (r,) = compare(g, BUGGY_RELU.run(g, TENSORS), FiniteDifferences(BUGGY_RELU).run(g, TENSORS))
    assert r.status == "fail"
    assert r.index in ("(1,)", "(3,)")
    assert r.mismatched == 2


def test_directional_mode_catches_the_same_bug_and_passes_the_reference():
    g = relu_graph(6)
    t = {"x": np.array([0.4, -0.5, 0.8, -1.2, 0.3, -2.0]), "p": np.ones(6)}
    ref = ReferenceSource()
    fd = FiniteDifferences(ref, mode="directional", n_directions=4, seed=1)
    assert all(r.status == "pass" for r in compare(g, ref.run(g, t), fd.run(g, t)))
    fd_bad = FiniteDifferences(BUGGY_RELU, mode="directional", n_directions=4, seed=1)
    (r,) = compare(g, BUGGY_RELU.run(g, t), fd_bad.run(g, t))
    assert r.status == "fail"


def _result(grads, dtype="float64", kind="analytic", name="a", **kw):
    return SourceResult(name, kind, 0.0, grads, dtype=dtype, **kw)


def test_non_finite_gradients_are_errors_naming_the_source_and_element():
    g = relu_graph()
    a = _result({"x": np.array([1.0, np.nan, 0.0, 2.0])}, name="cand")
    (r,) = compare(g, a, _result({"x": np.ones(4)}, name="ref"))
    assert r.status == "error" and r.index == "(1,)"
    assert "cand gave non-finite values for 'x'" in r.message


def test_a_wrong_shape_is_an_error_not_a_crash():
    g = relu_graph()
    (r,) = compare(g, _result({"x": np.ones((2, 2))}), _result({"x": np.ones(4)}))
    assert r.status == "error" and "shape (2, 2) against (4,)" in r.message


def test_ratio_is_error_over_allowed_at_the_worst_element():
    g = relu_graph()
    b = np.array([1.0, -2.0, 0.5, 4.0])
    a = b + np.array([0, 0, 0, 1e-9])
    (r,) = compare(g, _result({"x": a}), _result({"x": b}), tolerance=Tolerance(1e-10))
    # allowed at index 3: 1e-10 * (|4| + max|b| = 4) = 8e-10
    assert r.status == "fail" and r.index == "(3,)"
    assert r.ratio == pytest.approx(1e-9 / 8e-10, rel=1e-6)
    assert r.max_rel_err == pytest.approx(1e-9 / 4, rel=1e-6)
    (ok,) = compare(g, _result({"x": a}), _result({"x": b}), tolerance=Tolerance(2e-10))
    assert ok.status == "pass" and ok.ratio == pytest.approx(1e-9 / 16e-10, rel=1e-6)


def test_nondeterminism_is_allowed_and_shown():
    g = relu_graph()
    b = np.ones(4)
    a = b + 1e-7
    (strict,) = compare(g, _result({"x": a}), _result({"x": b}))
    assert strict.status == "fail"
    (r,) = compare(g, _result({"x": a}, nondeterminism=2e-7), _result({"x": b}))
    assert r.status == "pass" and r.nondeterminism == 2e-7
    assert "not deterministic" in r.message


def test_tolerance_table_is_keyed_by_kind_and_the_coarser_dtype():
    assert tolerance_for("analytic", "central", "float64") is TOLERANCES[("central", "float64")]
    assert tolerance_for("analytic", "analytic", "float32").rtol == 2e-4
    assert coarser_dtype("float32", "float64") == "float32"
    assert coarser_dtype("float64", "bfloat16") == "bfloat16"
    with pytest.raises(KeyError, match="no tolerance for \\('complex', 'float16'\\)"):
        tolerance_for("analytic", "complex", "float16")


def test_records_carry_every_field_a_report_needs():
    g = relu_graph()
    (r,) = compare(g, _result({"x": np.ones(4)}), _result({"x": np.ones(4)}), seed=5)
    d = r.to_dict()
    for field in ("case_id", "graph", "op", "tensor", "source_a", "source_b", "dtype", "device", "max_abs_err",
                  "max_rel_err", "cosine", "rtol", "atol", "ratio", "status", "seconds"):
        assert field in d
    assert d["seed"] == 5 and d["op"] == "relu" and d["status"] == "pass" and math.isclose(d["cosine"], 1.0)
