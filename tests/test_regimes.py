"""Value regimes: cases reach large magnitudes (scale 4) where thresholds and
overflows live, and a case outside the dtype's range is recorded as such
(Note [Out of range]), not as a failure of the code under test."""

import inspect

import numpy as np
import pytest

from gradcheck import Candidate
from gradcheck.case import Case
from gradcheck.graph import GraphBuilder
from gradcheck.judge import check_pair
from gradcheck.sources import FiniteDifferences, ReferenceSource
from gradcheck.sources.candidate import candidate_sources
from gradcheck.strategies import cases


def _head(op, x_values, **leaves):
    b = GraphBuilder()
    x = b.input("x", np.shape(x_values))
    others = [b.const(name, np.shape(v)) for name, v in leaves.items()]
    graph = b.build(b.op(op, x, *others, name="loss"))
    tensors = {"x": np.asarray(x_values, dtype=np.float32), **{k: np.asarray(v, np.float32) for k, v in leaves.items()}}
    return Case(graph, seed=0, dtype="float32"), tensors


# the repository's tests make the reference's RuntimeWarnings errors; overflowing is the point here
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_case_beyond_float32s_range_is_skipped_with_the_reason():
    # exp(100) is past float32's 3.4e38: poisson_nll (log_input) is not finite there, in any implementation
    case, tensors = _head("poisson_nll", [100.0, 1.0, 2.0], t=[1.0, 0.0, 2.0])
    ref = ReferenceSource()
    records = check_pair(case, ref, FiniteDifferences(ref, "central", "full"), tensors=tensors)
    assert {r.status for r in records} == {"skipped"}
    assert all("Note [Out of range]" in r.message for r in records)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_source_that_overflows_where_the_reference_stays_finite_keeps_its_error():
    naive = Candidate("naive-softplus")

    @naive.op("softplus")
    class NaiveSoftplus:  # log(1 + e^x): inf at x = 100 in float32, where softplus is 100
        @staticmethod
        def forward(x, beta=1.0, threshold=20.0):
            with np.errstate(over="ignore"):
                return np.log1p(np.exp(beta * x)) / beta, x

        @staticmethod
        def backward(x, g):
            return (g / (1 + np.exp(-x)),)

    b = GraphBuilder()
    y = b.op("softplus", b.input("x", (3,)))
    graph = b.build(b.op("weighted_sum", y, b.const("w", (3,)), name="loss"))
    tensors = {"x": np.array([100.0, 1.0, -2.0], np.float32), "w": np.ones(3, np.float32)}
    (src,) = candidate_sources(naive)
    records = check_pair(Case(graph, seed=0, dtype="float32"), src, ReferenceSource(), outputs=True, tensors=tensors)
    assert any(r.status == "error" and "non-finite" in r.message for r in records)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_candidate_overflowing_where_torchs_own_ops_overflow_too_is_skipped_saying_so():
    """Note [Out of range]: soft_margin_loss computes log1p(exp(-y x)), inf in
    float32 past y x = -88.  A layer calling torch's loss inherits that limit:
    skipped, naming torch; the naive softplus above (inf where torch's softplus is
    finite) still errs."""
    import torch

    built_on_torch = Candidate("torch-soft-margin")
    built_on_torch.op("soft_margin")(lambda x, y, reduction="mean": torch.nn.functional.soft_margin_loss(
        x, y, reduction=reduction))
    case, tensors = _head("soft_margin", [[100.0, 1.0], [-2.0, 3.0]], y=[[-1.0, 1.0], [1.0, -1.0]])
    (src,) = candidate_sources(built_on_torch, dtype="float32")
    records = check_pair(case, src, ReferenceSource(), outputs=True, tensors=tensors)
    assert {r.status for r in records} == {"skipped"}, [r.message for r in records]
    assert all("torch's own ops in float32 overflow on these values too" in r.message for r in records)


def test_cases_draw_scale_four_which_reaches_relu6s_upper_kink_after_a_linear_layer():
    """Without large magnitudes a backward wrong only above 6 is never exercised."""
    assert 4.0 in inspect.signature(cases).parameters["scales"].default
    b = GraphBuilder()
    h = b.op("relu6", b.op("linear", b.input("x", (8, 5)), b.param("w", (4, 5))))
    graph = b.build(b.op("weighted_sum", h, b.const("p", (8, 4)), name="loss"))

    def reached(scale):
        return sum(bool(np.max(ReferenceSource().run(graph, Case(graph, seed, scale=scale).tensors())
                                .outputs[graph.nodes[0].name]) > 6) for seed in range(20))

    assert reached(4.0) >= 10 and reached(1.0) <= 2


def test_an_offset_shifts_only_the_data_drawn_around_zero_and_survives_a_replay_file(tmp_path):
    """Note [Value regimes]: the offset moves data inputs to a large mean beside
    their spread; parameters, constants and inputs drawn in a range keep theirs,
    and a replay file brings the same values back."""
    from gradcheck.replay import read_replay, write_gradient_case

    b = GraphBuilder()
    x = b.input("x", (4, 6))
    p = b.input("p", (4, 6), init={"kind": "uniform", "low": 0.05, "high": 0.95})
    w, bias = b.param("w", (6,)), b.param("b", (6,))
    h = b.op("layer_norm", x, w, bias)
    graph = b.build(b.op("binary_cross_entropy", b.op("sigmoid", b.op("mul", h, p)), b.const("t", (4, 6)), name="loss"))
    plain, shifted = Case(graph, seed=3).tensors(), Case(graph, seed=3, offset=100.0).tensors()
    np.testing.assert_allclose(shifted["x"] - plain["x"], 100.0)
    for name in ("p", "w", "b", "t"):
        np.testing.assert_array_equal(shifted[name], plain[name])
    case = Case(graph, seed=3, dtype="float32", offset=100.0)
    path = write_gradient_case(tmp_path / "case.json", case, ReferenceSource(), ReferenceSource())
    again = read_replay(path).case()
    assert again.offset == 100.0 and again == case
    with pytest.raises(ValueError, match="offset must be a finite number"):
        Case(graph, offset=float("nan"))


def test_a_loss_cancelling_inside_itself_is_differenced_at_the_rounding_of_its_terms():
    """Note [Loss rounding]: with one feature, cosine_embedding's 1 - cos is 4e-8
    here, the difference of two numbers near 1; its differences carry the rounding
    of those, not of 4e-8.  The correct reference passes; a wrong backward still
    fails."""
    from reference_impl import Op, losses

    b = GraphBuilder()
    flat = b.op("flatten", b.input("x1", (1, 1, 1)))
    loss = b.op("cosine_embedding", flat, b.input("x2", (1, 1)), b.const("y", (1,)), name="loss")
    case = Case(b.build(loss), seed=1, scale=0.5)
    tensors = {"x1": np.array([[[-0.6219105334588304]]]), "x2": np.array([[-0.003395926025750581]]),
               "y": np.array([1.0])}
    from gradcheck.candidates import load_candidate

    here = __import__("pathlib").Path(__file__).parent
    (ordinary,) = candidate_sources(load_candidate(f"{here}/user_layers/ordinary.py:candidate"))
    for src in (ReferenceSource(), ordinary):  # the ordinary layer's rounding is what crossed the cheap bound
        assert {r.status for r in check_pair(case, src, FiniteDifferences(src, "central", "full"),
                                             tensors=tensors)} == {"pass"}

    def doubled(cache, g):
        g1, g2, _ = losses.cosine_embedding_backward(cache, g)
        return g1, 2 * g2, None

    wrong = ReferenceSource({"cosine_embedding": Op(losses.cosine_embedding_forward, doubled)}, name="doubled")
    records = check_pair(case, wrong, FiniteDifferences(wrong, "central", "full"), tensors=tensors)
    assert [r.tensor for r in records if r.status == "fail"] == ["x2"]


def test_a_float32_layer_norm_of_equal_values_is_skipped_as_degenerate_and_judged_in_float64():
    """Note [Degenerate normalisation]: a layer norm of two equal values near
    200 is exact in the reference's two-pass float32 (x - mean = 0) and off by
    one rounding of x * rstd in torch's fused kernel, which 1 / sqrt(eps)
    amplifies to 1e-3 in the gradient of x1, a cancellation of terms near 6.
    In float32 that record is skipped naming the op; the tensors that are
    judged pass; in float64 the same graph is judged, and a backward that drops
    the mean of the gradient fails there."""
    from gradcheck.sources.torch_autograd import TorchSource
    from reference_impl import Op, normalization

    b = GraphBuilder()
    x = b.input("x1", (1, 1, 2))
    h = b.op("sum", b.op("concat", x, x), dim=2)
    out = b.op("layer_norm", h, b.param("p4", (2,)), b.param("p5", (2,)))
    graph = b.build(b.op("weighted_sum", out, b.const("probe7", (1, 2)), name="loss"))
    case = Case(graph, seed=0, dtype="float32", offset=100.0)
    tensors = case.tensors()
    records = check_pair(case, TorchSource(dtype="float32"), ReferenceSource(compute_dtype="float64"),
                         outputs=True, tensors=tensors)
    assert {r.status for r in records} == {"pass", "skipped"}, [r.message for r in records]
    skipped = [r for r in records if r.status == "skipped"]
    assert all("Note [Degenerate normalisation]" in r.message and "layer_norm" in r.message for r in skipped)

    def no_mean(cache, g):  # drops the "- mean(g w)" term of the input gradient
        gx, gw, gb = normalization.layer_norm_backward(cache, g)
        xhat, rstd, weight, axes, _ = cache
        return gx + rstd * np.mean(g * weight, axis=axes, keepdims=True), gw, gb

    wrong = ReferenceSource({"layer_norm": Op(normalization.layer_norm_forward, no_mean)}, name="no-mean")
    case64 = Case(graph, seed=0)
    records = check_pair(case64, wrong, ReferenceSource(), tensors=case64.tensors())
    assert "x1" in {r.tensor for r in records if r.status == "fail"}
    assert check_pair(case64, TorchSource(), ReferenceSource(), tensors=case64.tensors())[0].status == "pass"


def test_a_float32_group_norm_at_a_large_mean_whose_exact_gradient_is_zero_passes_and_a_dropped_term_fails():
    """Note [Rounded run]: the gradient of a smooth_l1 loss in its linear part
    is constant over the group, which a group norm's backward cancels to an
    exact 0.  torch's float32 backward sums g * x and g over values near 1,000
    with a std near 1 and keeps about 1e-3 u of them (4.9e-4 here), far above
    ROUNDING_SAFETY times a rounding at op boundaries only; the rounded run
    counts u / spread of the typical gradient through the op, so torch passes,
    while a backward that drops the mean of the gradient is off by 0.2 and
    still fails in float32."""
    from gradcheck.sources.torch_autograd import TorchSource
    from reference_impl import Op, normalization

    b = GraphBuilder()
    x = b.input("x1", (2, 1, 3))
    h = b.op("group_norm", x, b.param("p2", (1,)), b.param("p3", (1,)))
    graph = b.build(b.op("smooth_l1", h, b.input("target5", (2, 1, 3)), name="loss"))
    tensors = {k: np.asarray(v, np.float32) for k, v in {
        "x1": [[[1000.2025756835938, 1000.96826171875, 1002.0501708984375]],
               [[999.9110107421875, 1000.3259887695312, 1000.0603637695312]]],
        "p2": [1.1690409183502197], "p3": [-0.24740871787071228],
        "target5": [[[999.7634887695312, 999.3280639648438, 1001.499267578125]],
                    [[999.13818359375, 1001.47607421875, 999.2703857421875]]]}.items()}
    case = Case(graph, seed=0, dtype="float32", offset=1000.0)
    records = check_pair(case, TorchSource(dtype="float32"), ReferenceSource(compute_dtype="float64"),
                         outputs=True, tensors=tensors)
    assert {r.status for r in records} == {"pass"}, [r.message for r in records if r.status != "pass"]

    def no_mean(cache, g):  # drops the "- mean(g w)" term of the input gradient
        gx, gw, gb = normalization.group_norm_backward(cache, g)
        xhat, rstd, weight, _ = cache
        return gx + rstd.reshape(-1, 1, 1) * np.mean(g * weight.reshape(1, -1, 1), axis=(1, 2), keepdims=True), gw, gb

    wrong = ReferenceSource({"group_norm": Op(normalization.group_norm_forward, no_mean)}, name="no-mean",
                            compute_dtype="float32")
    records = check_pair(case, wrong, ReferenceSource(compute_dtype="float64"), outputs=True, tensors=tensors)
    assert {r.tensor for r in records if r.status == "fail"} == {"x1"}, [r.message for r in records]


def test_a_float32_variance_of_a_conv_at_a_large_mean_passes_and_a_variance_that_ignores_its_correction_fails():
    """Note [Rounded run]: var's backward, 2 (c - mean) / (n - 1), is a
    normalisation's: over values near 1,000 with a std near 1 torch's float32
    keeps about 1e-3 u of them, and the conv's weight gradient sums it against
    inputs near 1,000 (0.012 off an exact 0.009 on seed 1, 80 times what
    rounding at op boundaries allowed).  var has a spread, so torch passes; a
    backward dividing by n instead of n - 1 is 25% off and still fails on x1
    (p2's exact gradient there is below what float32 can resolve, and only
    float64 judges it)."""
    from gradcheck.sources.torch_autograd import TorchSource
    from reference_impl import Op, tensor_math

    b = GraphBuilder()
    c = b.op("conv1d", b.input("x1", (1, 3, 5)), b.param("p2", (1, 3, 2)), b.param("p3", (1,)))
    v = b.op("var", c, correction=1, dim=2)
    graph = b.build(b.op("weighted_sum", v, b.const("probe6", (1, 1)), name="loss"))
    for seed in (1, 2, 11):  # each failed before var had a spread
        case = Case(graph, seed=seed, dtype="float32", offset=1000.0)
        records = check_pair(case, TorchSource(dtype="float32"), ReferenceSource(compute_dtype="float64"), outputs=True)
        assert {r.status for r in records} == {"pass"}, [r.message for r in records if r.status != "pass"]

    def by_n(cache, g):
        d, dim, correction, keepdim = cache
        n = d.shape[dim]
        return tuple(gx * (n - correction) / n for gx in tensor_math.var_backward(cache, g))

    wrong = ReferenceSource({"var": Op(tensor_math.var_forward, by_n)}, name="by-n", compute_dtype="float32")
    records = check_pair(Case(graph, seed=1, dtype="float32", offset=1000.0), wrong,
                         ReferenceSource(compute_dtype="float64"), outputs=True)
    assert "x1" in {r.tensor for r in records if r.status == "fail"}, [r.message for r in records]


def test_torchs_cosine_similarity_below_eps_is_skipped_naming_the_deviation_and_the_reference_matches_differences():
    """Note [Torch's own deviations]: for a vector whose norm (1e-10) is below
    eps, torch's backward of cosine_similarity differentiates the norm its
    forward clamped, 0.8% off differences of its own forward; against torch
    that case is skipped with the reason, while the reference, which treats the
    clamped norm as the constant eps, agrees with central differences."""
    from gradcheck.sources.torch_autograd import TorchSource

    b = GraphBuilder()
    h = b.op("cosine_similarity", b.input("x1", (2, 3)), b.input("x2", (2, 3)))
    graph = b.build(b.op("weighted_sum", h, b.const("w", (2,)), name="loss"))
    rng = np.random.default_rng(0)
    tensors = {"x1": rng.standard_normal((2, 3)), "x2": rng.standard_normal((2, 3)) * np.array([[1.0], [1e-10]]),
               "w": np.array([0.7, -1.3])}
    case = Case(graph, seed=0)
    records = check_pair(case, TorchSource(), ReferenceSource(), tensors=tensors)
    skipped = [r for r in records if r.status == "skipped"]
    assert skipped and {r.status for r in records} <= {"pass", "skipped"}, [r.message for r in records]
    assert all("below eps=1e-08" in r.message and "Torch's own deviations" in r.message for r in skipped)
    # x2's stencil crosses the norm's kink at eps (its step is above 1e-10): nondifferentiable, not a failure
    records = {r.tensor: r.status for r in check_pair(case, ReferenceSource(), FiniteDifferences(ReferenceSource()),
                                                       tensors=tensors)}
    assert records["x1"] == "pass" and records["x2"] in ("pass", "nondifferentiable"), records


def test_a_reference_whose_floating_warnings_are_errors_leaves_a_case_out_of_range_skipped():
    """Note [Out of range]: softplus of -2000 underflows to 0 in float64, and
    log of it is -inf; this repository's tests turn that divide-by-zero warning
    into an exception.  The whole-case record says the case leaves the range."""
    from gradcheck.sources.torch_autograd import TorchSource

    b = GraphBuilder()
    h = b.op("tanh", b.op("log", b.op("softplus", b.input("x", (3,)))))
    graph = b.build(b.op("weighted_sum", h, b.const("w", (3,)), name="loss"))
    tensors = {"x": np.array([-2000.0, 1.0, 2.0], np.float32), "w": np.ones(3, np.float32)}
    records = check_pair(Case(graph, seed=0, dtype="float32"), TorchSource(dtype="float32"),
                         ReferenceSource(compute_dtype="float64"), tensors=tensors)
    assert [r.status for r in records] == ["skipped"], [r.message for r in records]
    assert "divide by zero" in records[0].message and "Note [Out of range]" in records[0].message
