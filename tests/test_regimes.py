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
