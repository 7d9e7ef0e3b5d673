"""Verdicts on code written outside this project, through the public entry points:
`pytest suites/ --candidate`, `gradcheck run`, `gradcheck repro` from another
folder.  The candidates are in tests/user_layers/: correct layers in other
styles (no complex support, the other subgradient at a kink, float32 only,
settings left out), declared ops, and layers with bugs that show in a regime."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradcheck import GraphBuilder
from gradcheck.sources.candidate import candidate_sources
from gradcheck.candidates import load_candidate
from gradcheck.case import Case
from gradcheck.catalogue import CATALOGUE
from gradcheck.judge import check_pair
from gradcheck.report import read_records
from gradcheck.sources import FiniteDifferences, ReferenceOrFormula, ReferenceSource, parse_source

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ROOT / "tests" / "user_layers"
GRADCHECK = [sys.executable, "-m", "gradcheck.cli"]


def suites(*args, cwd=ROOT, timeout=900):
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
                           "-rs", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def gradcheck(*args, cwd):
    return subprocess.run([*GRADCHECK, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def records_of(report_root) -> pd.DataFrame:
    (run,) = [p for p in Path(report_root).iterdir() if p.is_dir()]
    return read_records(run)


@pytest.fixture
def restore_catalogue():
    from gradcheck.catalogue import CATALOGUE

    ops = dict(CATALOGUE)
    yield
    CATALOGUE.clear()
    CATALOGUE.update(ops)


# ---------------------------------------------------------------- correct code in other styles passes


CORRECT = {  # correct layers in other styles, each set under the ci profile in a session of its own
    "every-op-in-the-ordinary-style": ["ordinary.py:candidate"],
    "the-other-subgradient-at-kinks": ["other_subgradient.py:candidate", "other_subgradient.py:midpoint"],
    "float32-only": ["float32_only.py:candidate"],
}


# A whole suite session over every op of a candidate, in a subprocess beside the
# other tests on two cores: its time is the machine's, so its limit is wide.
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("layers", list(CORRECT.values()), ids=list(CORRECT))
def test_correct_layers_in_other_styles_pass_every_suite_under_the_ci_profile(tmp_path, layers):
    """Every catalogue op written the ordinary way (no complex support), the other
    subgradient at a kink (right slope at 0, the last maximum of a tie, the midpoint),
    and float32-only layers: all green under ci, with quantised data reaching the kinks."""
    targets = [arg for target in layers for arg in ("--candidate", f"{LAYERS}/{target}")]
    out = suites("--gradcheck-profile", "ci", "--gradcheck-report", str(tmp_path), *targets, timeout=1400)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    df = records_of(tmp_path)
    assert not df["status"].isin(["fail", "error"]).any()
    names = {load_candidate(f"{LAYERS}/{t}").name for t in layers}
    if "ordinary-layers" in names:  # the complex step was skipped, with the reason, for non-analytic forwards
        assert "compared nothing: ordinary-layers's forward" in out.stdout
    if "other-subgradient" in names:  # exact kinks were reached and judged by the subgradient rule
        exact = df[df["message"].str.contains("Note \\[Exact kinks\\]", na=False)]
        assert set(exact["source_a"]) >= {"other-subgradient", "midpoint-relu"}, exact["source_a"].unique()
        assert set(exact["status"]) == {"nondifferentiable"}
    if "float32-layers" in names:  # differentiated in float32, by float32's error model
        own = df[(df["source_a"] == "float32-layers") & df["source_b"].str.startswith("central-fd")]
        assert len(own) and set(own["dtype"]) == {"float32"} and set(own["rtol"].dropna()) == {5e-3}


def test_the_complex_step_runs_only_where_a_forward_says_or_is_proven_complex_analytic():
    ordinary = load_candidate(f"{LAYERS}/ordinary.py:candidate")
    (src,) = candidate_sources(ordinary)
    b = GraphBuilder()
    y = b.op("linear", b.input("x", (4, 3)), b.param("w", (5, 3)), b.param("b", (5,)))
    g = b.build(b.op("weighted_sum", y, b.const("p", (4, 5)), name="loss"))
    case = Case(g, seed=1)
    (r,) = check_pair(case, src, FiniteDifferences(src, "complex"))
    assert r.status == "skipped" and "not complex-analytic in 'w'" in r.message  # casts to x's dtype
    ref = ReferenceSource()
    assert {r.status for r in check_pair(case, ref, FiniteDifferences(ref, "complex"))} == {"pass"}
    # a layer that declares complex support gets the complex step, no probe
    from gradcheck import Candidate
    from reference_impl import layers

    declared = Candidate("declared-complex")
    declared.op("linear", complex_step=True)(type("L", (), {"forward": staticmethod(layers.linear_forward),
                                                            "backward": staticmethod(layers.linear_backward)}))
    (dsrc,) = candidate_sources(declared)
    assert {r.status for r in check_pair(case, dsrc, FiniteDifferences(dsrc, "complex"))} == {"pass"}


def test_settings_a_candidate_leaves_out_are_never_drawn_and_say_what_was_left_unchecked(tmp_path):
    out = suites("--gradcheck-profile", "dev", "--gradcheck-report", str(tmp_path),
                 "--candidate", f"{LAYERS}/restricted.py:candidate",
                 "--candidate", f"{LAYERS}/restricted.py:partial_engine")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    df = records_of(tmp_path)
    assert not df["status"].isin(["fail", "error"]).any()
    assert "left unchecked" in out.stdout and "conv2d is declared only for stride" in out.stdout
    judged = df[df["status"] != "skipped"]
    for graph in judged[judged["source_a"] == "restricted-layers"]["graph"].unique():
        for node in json.loads(graph)["nodes"]:
            if node["op"] == "conv2d":
                assert node["hyper"].get("stride", 1) in (1, [1, 1]), node
    engine_graphs = judged[judged["source_a"] == "partial-engine-engine"]["graph"]
    assert not any('"op":"attention"' in g for g in engine_graphs)


def test_a_declared_loss_is_a_loss_head_and_a_declared_op_with_a_formula_is_cross_checked(tmp_path):
    out = suites("--gradcheck-profile", "dev", "--gradcheck-report", str(tmp_path),
                 "--candidate", f"{LAYERS}/declared.py:candidate")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    df = records_of(tmp_path)
    graphs = [json.loads(g) for g in df["graph"].unique()]
    heads = [g["nodes"][-1]["op"] for g in graphs if "nodes" in g]  # optimizer records hold trajectories
    assert "log_cosh" in heads
    assert (df[df["op"] == "swish_gate"]["status"] == "pass").any()


def test_a_torch_op_without_a_formula_compares_nothing_against_the_reference_and_says_so(tmp_path):
    out = suites("--gradcheck-profile", "dev", "--candidate", f"{LAYERS}/declared.py:no_formula",
                 "-k", "agree_with_the_reference and cube")
    assert out.returncode == 0, out.stdout[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert "passed" not in last and "4 skipped" in last, out.stdout[-2000:]
    assert "compared nothing" in out.stdout and "no torch formula for op 'cube'" in out.stdout


# ---------------------------------------------------------------- bugs in a regime are caught and named


def test_bugs_that_show_only_in_a_regime_are_caught_and_named_by_their_op(tmp_path):
    out = suites("--gradcheck-profile", "ci", "--gradcheck-report", str(tmp_path),
                 "--candidate", f"{LAYERS}/buggy.py:candidate", "--candidate", f"{LAYERS}/buggy.py:float32_bug",
                 "-k", "relu or mul or layer_norm")
    assert out.returncode == 1
    df = records_of(tmp_path)
    failing = df[df["status"].isin(["fail", "error"])]
    assert set(failing["op"]) == {"relu", "mul", "layer_norm"}, failing["op"].unique()
    relu = failing[failing["op"] == "relu"]
    # 2 x grad_out at exactly 0 is no subgradient of relu: not explained away as a kink
    assert relu["message"].str.contains("outside the subdifferential").any()
    assert (failing[failing["op"] == "layer_norm"]["dtype"] == "float32").all()
    assert "KeyError" not in out.stdout


def test_a_bug_in_an_op_is_named_by_that_op_not_by_the_first_consumer_of_the_leaf():
    buggy = load_candidate(f"{LAYERS}/buggy.py:candidate")
    (src,) = candidate_sources(buggy)
    b = GraphBuilder()
    h = b.op("tanh", b.input("x", (3, 4)))
    h = b.op("mul", h, b.param("scale", (4,)))
    g = b.build(b.op("weighted_sum", h, b.const("p", (3, 4)), name="loss"))
    records = check_pair(Case(g, seed=2), src, ReferenceOrFormula())
    failed = {r.tensor: r for r in records if r.status == "fail"}
    assert set(failed) == {"scale"}
    assert failed["scale"].op == "mul" and failed["scale"].consumer == "mul"
    # the reference with a planted flatten bug: its records say flatten, not the reshape that consumes x
    from reference_impl import Op, structure

    bad = ReferenceSource({"flatten": Op(structure.flatten_forward, lambda shape, g: (-g.reshape(shape),))},
                          name="bad-flatten")
    b = GraphBuilder()
    h = b.op("reshape", b.input("x", (2, 12)), shape=(2, 3, 4))
    h = b.op("flatten", b.op("tanh", h))
    g = b.build(b.op("weighted_sum", h, b.const("p", (2, 12)), name="loss"))
    (r,) = [r for r in check_pair(Case(g, seed=0), bad, FiniteDifferences(bad)) if r.tensor == "x"]
    assert r.status == "fail" and r.op == "flatten" and r.consumer == "reshape"


# ---------------------------------------------------------------- declared ops survive run, repro and kinks


def test_a_declared_op_with_a_bug_fails_the_run_with_a_report_and_replays_from_another_folder(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    out = gradcheck("run", "--candidate", f"{LAYERS}/declared.py:buggy", "--examples", "40", "--no-torch",
                    "--out", "out", cwd=work)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    assert "KeyError" not in out.stdout + out.stderr
    df = records_of(work / "out")
    failing = df[df["status"].isin(["fail", "error"])]
    assert len(failing) and set(failing["op"]) == {"swish_gate"}
    (run,) = (work / "out").iterdir()
    assert (run / "report.html").exists() and (run / "summary.md").exists()
    # graphs with kink ops failed too, and were explained with the candidate's own implementations
    kinked = [f'"{name}"' for name, opdef in CATALOGUE.items() if opdef.branch is not None]
    assert any(o in g for g in failing["graph"] for o in kinked)
    case_file = sorted((run / "cases").glob("*-vs-ref.json"))[0]
    refused = gradcheck("repro", str(case_file), cwd=elsewhere)
    assert refused.returncode == 2
    assert "checks candidate 'declared-bug': give --candidate TARGET" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    replayed = gradcheck("repro", str(case_file), "--candidate", f"{LAYERS}/declared.py:buggy", cwd=elsewhere)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "op swish_gate" in replayed.stdout and "Mismatched elements" in replayed.stdout
    wrong = gradcheck("repro", str(case_file), "--candidate", f"{LAYERS}/declared.py:candidate", cwd=elsewhere)
    assert wrong.returncode == 2 and "was written for candidate 'declared-bug'" in wrong.stderr


def test_an_optimizer_failure_fails_the_run_and_replays(tmp_path):
    out = gradcheck("run", "--optimizer", f"{LAYERS}/buggy.py:candidate", "--ops", "tanh", "--examples", "0",
                    "--no-torch", "--out", "out", cwd=tmp_path)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "0 failing checks" not in out.stdout
    (case_file,) = sorted((tmp_path / "out").glob("*/cases/*-sgd.json"))[:1]
    assert json.loads(case_file.read_text())["kind"] == "optimizer"
    replayed = gradcheck("repro", str(case_file), "--candidate", f"{LAYERS}/buggy.py:candidate", cwd=ROOT)
    assert replayed.returncode == 1 and "momentum_buffer" in replayed.stdout


def test_run_with_a_candidate_honours_ops(tmp_path):
    out = gradcheck("run", "--candidate", f"{LAYERS}/ordinary.py:candidate", "--ops", "tanh,softmax",
                    "--examples", "10", "--no-torch", "--out", "out", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    df = records_of(tmp_path / "out")
    mine = df[df["source_a"] == "ordinary-layers"]
    ops_in = [{n["op"] for n in json.loads(g)["nodes"]} for g in mine["graph"].unique()]
    assert len(ops_in) >= 10 and all(ops & {"tanh", "softmax"} for ops in ops_in)
    bad = gradcheck("run", "--candidate", f"{LAYERS}/restricted.py:candidate", "--ops", "tanh", cwd=tmp_path)
    assert bad.returncode == 2 and "no candidate implements 'tanh'" in bad.stderr


def test_every_finite_difference_setting_survives_a_replay_spec():
    ref = ReferenceSource()
    for mode in FiniteDifferences.MODES:
        fd = FiniteDifferences(ref, "richardson", mode, n_directions=3, seed=5, full_limit=77, bisect_above=99)
        again = parse_source(fd.spec)
        assert again.spec == fd.spec
        assert (again.method, again.mode, again.n_directions, again.seed, again.full_limit, again.bisect_above) == (
            "richardson", mode, 3, 5, 77, 99)
    with pytest.raises(ValueError, match="give the candidate"):
        parse_source("candidate:numpy")


def test_a_replay_file_written_by_pytest_replays_from_another_folder(tmp_path):
    out = suites("--gradcheck-profile", "dev", "--gradcheck-report", str(tmp_path / "out"),
                 "--candidate", f"{LAYERS}/buggy.py:candidate", "-k", "sample_agrees and mul", "-x")
    assert out.returncode == 1
    (case_file,) = list((tmp_path / "out").glob("*/cases/*.json"))[:1]
    command = [line for line in out.stdout.splitlines() if line.strip().startswith("E       replay: ")][0]
    assert f"--candidate {LAYERS}/buggy.py:candidate" in command
    (tmp_path / "elsewhere").mkdir()
    replayed = gradcheck("repro", str(case_file), "--candidate", f"{LAYERS}/buggy.py:candidate",
                         cwd=tmp_path / "elsewhere")
    assert replayed.returncode == 1 and "op mul" in replayed.stdout


@pytest.mark.xdist_group("higher")
def test_a_torch_op_declaring_order_2_and_forward_mode_is_checked_so_in_random_graphs():
    """OpOptions(order=2, modes=("rev", "fwd")): a correct GELU Function passes
    the suites; one whose backward uses a value saved outside autograd's graph
    fails the second-order check, one with a wrong jvp the forward-mode check,
    both named by the op."""
    args = ("--gradcheck-profile", "dev", "-k", "declares")
    ok = suites(*args, "--candidate", f"{LAYERS}/higher.py:candidate")
    assert ok.returncode == 0 and "passed" in ok.stdout, ok.stdout[-3000:]
    saved = suites(*args, "--candidate", f"{LAYERS}/higher.py:saved_outside")
    assert saved.returncode == 1 and "second order: the double backward of gelu in graph" in saved.stdout
    jvp = suites(*args, "--candidate", f"{LAYERS}/higher.py:wrong_jvp")
    assert jvp.returncode == 1 and "tensor 'jvp along" in jvp.stdout and "op gelu in graph" in jvp.stdout


def test_a_tie_the_candidates_own_rounding_breaks_is_judged_on_the_candidates_values():
    """Note [Exact kinks]: two overlapping adaptive averages are both -0.5 in the
    reference, one ulp apart in a layer that averages by matrix products, so the
    max pool after them picks the other cell.  Both are subgradients: the case is
    nondifferentiable, not a failure."""
    ordinary = load_candidate(f"{LAYERS}/ordinary.py:candidate")
    (src,) = candidate_sources(ordinary)
    b = GraphBuilder()
    avg = b.op("adaptive_avg_pool2d", b.input("x", (1, 1, 3, 5)), output_size=(2, 2))
    top = b.op("adaptive_max_pool2d", avg, output_size=(1, 2))
    g = b.build(b.op("weighted_sum", b.op("tanh", top), b.const("p", (1, 1, 1, 2)), name="loss"))
    case = Case(g, seed=235252)
    tensors = case.tensors()
    tensors["x"] = np.array([[[[-2.0, 1.5, 1.0, -1.0, -2.0], [0.0, 0.5, 0.0, 0.0, -1.0],
                               [1.0, -1.0, -1.5, -0.5, 0.0]]]])
    records = check_pair(case, src, ReferenceSource(), tensors=tensors)
    (x,) = [r for r in records if r.tensor == "x"]
    assert x.status == "nondifferentiable" and "holds exact ties in its cells" in x.message + x.opinions
    assert {r.status for r in records} <= {"pass", "nondifferentiable"}
