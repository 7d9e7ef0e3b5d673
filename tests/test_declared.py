"""Ops declared from a short spec and optimizers outside the reference's five,
through the public entry points (``pytest suites --candidate/--optimizer``,
``gradcheck run``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import Candidate
from gradcheck.catalogue import CATALOGUE, ShapeError, get_op
from gradcheck.report import read_records
from gradcheck.strategies import graphs

from user_functions import CausalAttention, SwishGate, UnfoldConv2d

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ROOT / "tests" / "user_layers"


@pytest.fixture
def restore_catalogue():
    ops = dict(CATALOGUE)
    yield
    CATALOGUE.clear()
    CATALOGUE.update(ops)


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_a_spec_gives_roles_shapes_samples_and_families(restore_catalogue):
    c = Candidate("spec")
    gate = c.new_op("gate_t", SwishGate, inputs={"x": ("N", "D"), "w": ("D",)})
    assert [(a.name, a.role) for a in gate.inputs] == [("x", "input"), ("w", "param")]
    assert gate.shape((4, 3), (3,)) == (4, 3)  # found by running the op
    assert gate.families == ("mlp",) and gate.family == "layer"
    assert [dict(s.shapes) for s in gate.samples] == [{"x": (2, 3), "w": (3,)}, {"x": (3, 2), "w": (2,)}]
    with pytest.raises(ShapeError, match="symbol 'D' is 3 and 4"):
        gate.shape((2, 3), (4,))
    with pytest.raises(ShapeError, match="rank 2"):
        gate.shape((2, 3, 1), (3,))

    conv = c.new_op("conv_t", UnfoldConv2d, inputs={"x": ("N", "C", "H", "W"), "w": ("O", "C", "K", "K"), "b": ("O",)},
                    hyper={"stride": [1, 2], "dilation": st.integers(1, 2)}, sizes={"K": 2})
    assert dict(conv.hyper) == {"stride": 1, "dilation": 1}  # a list's first choice, a strategy's simplest value
    assert conv.hyper_names == ("stride", "dilation")  # Function.apply takes them in this order
    assert conv.shape((1, 2, 6, 6), (3, 2, 2, 2), (3,), stride=2, dilation=2) == (1, 3, 2, 2)
    with pytest.raises(ShapeError, match="raised"):  # a kernel larger than the image: the op itself refuses
        conv.shape((1, 2, 1, 1), (3, 2, 2, 2), (3,), stride=1, dilation=1)

    attn = c.new_op("attn_t", CausalAttention, inputs={"q": ("N", "T", "D"), "k": ("N", "T", "D"),
                                                      "v": ("N", "T", "D")}, roles={"v": "param"})
    assert [a.role for a in attn.inputs] == ["input", "input", "param"] and attn.families == ("cnn", "sequence")

    def mse(p, t):
        return ((p - t) ** 2).mean()

    loss = c.new_op("mse_t", mse, inputs={"p": ("N", "D"), "t": ("N", "D")}, roles={"t": "const"})
    assert loss.family == "loss" and loss.placement.block == "head"


def test_bad_specs_are_clear_errors(restore_catalogue):
    c = Candidate("spec")
    with pytest.raises(TypeError, match="give inputs="):
        c.new_op("g", SwishGate)
    with pytest.raises(ValueError, match="needs a shape of symbols"):
        c.new_op("g", SwishGate, inputs={"x": "N D"})
    with pytest.raises(ValueError, match="roles names 'y'"):
        c.new_op("g", SwishGate, inputs={"x": ("N", "D"), "w": ("D",)}, roles={"y": "param"})
    with pytest.raises(ValueError, match="does not run at the sample shapes"):
        c.new_op("g", SwishGate, inputs={"x": ("N", "D"), "w": ("D", 2)})  # w is (D,)
    with pytest.raises(ValueError, match="built-in op"):
        c.new_op("relu", torch.relu, inputs={"x": ("N", "D")})


def test_spec_ops_are_placed_into_random_graphs(restore_catalogue):
    c = Candidate("spec")
    c.new_op("attn_t", CausalAttention, inputs={"q": ("N", "T", "D"), "k": ("N", "T", "D"), "v": ("N", "T", "D")})
    seen = []

    @settings(max_examples=15, database=None, deadline=None)
    @given(graphs(["sequence", "cnn"], include="attn_t", max_depth=3))
    def draw(graph):
        seen.append(graph)

    draw()
    assert seen and all("attn_t" in g.ops for g in seen)
    assert any(len(g.nodes) > 2 for g in seen)  # inside networks, not only alone


def test_spec_declared_candidate_through_suites_and_run(tmp_path):
    ok = run("-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q", "--gradcheck-profile", "dev",
             "--candidate", f"{LAYERS}/spec_declared.py:candidate")
    assert ok.returncode == 0, ok.stdout[-3000:]
    bad = run("-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q", "--gradcheck-profile", "dev",
              "--candidate", f"{LAYERS}/spec_declared.py:buggy")
    assert bad.returncode == 1 and "spec-declared-bug" in bad.stdout
    out = run("-m", "gradcheck.cli", "run", "--candidate", f"{LAYERS}/spec_declared.py:candidate", "--examples",
              "30", "--no-torch", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    (report,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    df = read_records(report)
    mine = df[df["source_a"].str.startswith("spec-declared")]
    in_networks = [g for g in mine["graph"].unique() if len(json.loads(g)["nodes"]) > 2]
    declared = {"swish_gate", "causal_attention", "scale", "pseudo_huber"}
    assert declared <= set(mine["op"]) | set(mine["consumer"])
    assert in_networks and set(mine["status"]) <= {"pass", "nondifferentiable", "skipped"}


def test_without_a_formula_analytic_cross_checks_are_not_run(restore_catalogue, tmp_path):
    spec = tmp_path / "cube.py"
    spec.write_text("import torch\nfrom gradcheck import Candidate\ncandidate = Candidate('cube')\n"
                    "candidate.new_op('cube_t', lambda x: x ** 3, inputs={'x': ('N', 'D')})\n")
    # a fixed seed: what is asserted is how checks without a formula are reported, not a fresh draw of the rest
    out = run("-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q", "-rs", "--gradcheck-profile",
              "dev", "--gradcheck-seed", "0", "--candidate", f"{spec}:candidate")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "compared nothing: reference: no torch formula for op 'cube_t'" in out.stdout  # said, not passed


@pytest.mark.parametrize("target,code,expect", [("candidate", 0, "passed"), ("buggy", 1, "failed"),
                                                ("no_reference", 0, "declared without a reference step")])
def test_a_declared_optimizer(target, code, expect):
    out = run("-m", "pytest", str(ROOT / "suites" / "test_optimizers.py"), "-p", "no:cacheprovider", "-q", "-rs",
              "--gradcheck-profile", "dev", "--optimizer", f"{LAYERS}/lion.py:{target}")
    assert out.returncode == code, out.stdout[-3000:]
    assert expect in out.stdout
    if target == "no_reference":
        assert "3 passed" in out.stdout  # the properties hold
