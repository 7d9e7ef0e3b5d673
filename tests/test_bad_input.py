"""Bad input of every kind: one line naming the bad thing and what would be
accepted, exit 2, before any work starts, and nothing written; a replay file
that names code runs none of it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck.case import op_cases
from gradcheck.replay import write_gradient_case
from gradcheck.sources import FiniteDifferences, ReferenceSource

ROOT = Path(__file__).resolve().parent.parent


def gradcheck(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gradcheck.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def one_line_exit_2(out, *words):
    assert out.returncode == 2, (out.returncode, out.stdout[-1000:], out.stderr[-1000:])
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_case(tmp_path_factory):
    ref = ReferenceSource()
    path = tmp_path_factory.mktemp("case") / "good.json"
    write_gradient_case(path, op_cases("linear")[0], ref, FiniteDifferences(ref))
    return json.loads(path.read_text())


def _leaf(doc, **changes):
    doc["graph"]["leaves"][0].update(changes)


def _many_nodes(doc):
    doc["graph"]["nodes"] = [{"name": f"t{i}", "op": "tanh", "inputs": ["x"], "hyper": {}} for i in range(10_001)]


BAD_CASES = [
    ("a JSON list", lambda d: [d], "a JSON list"),
    ("a negative shape", lambda d: _leaf(d, shape=[-4, 3]), "shape must be a list of sizes >= 0"),
    ("a 1e12-element shape", lambda d: _leaf(d, shape=[1_000_000, 1_000_000]), "more than the 50,000,000"),
    ("dtype float7", lambda d: d.update(dtype="float7"), "dtype must be one of"),
    ("an unknown init kind", lambda d: _leaf(d, init={"kind": "gamma"}), "unknown init kind 'gamma'"),
    ("no seed", lambda d: d.pop("seed"), "the case has no 'seed'"),
    ("scale nan", lambda d: d.update(scale="nan"), "scale must be a number"),
    ("an unknown op", lambda d: d["graph"]["nodes"][0].update(op="linaer"), "unknown op 'linaer'"),
    ("10,001 nodes", _many_nodes, "more than the 10,000"),
    ("a wrong format", lambda d: d.update(format="gradcheck-case/1"), "not a gradcheck case file"),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_repro_refuses_a_bad_case_file_in_one_line(tmp_path, good_case, edit, words):
    doc = json.loads(json.dumps(good_case))
    result = edit(doc)  # edits in place; a wrapping edit returns the new document
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(result if isinstance(result, list) else doc))
    one_line_exit_2(gradcheck("repro", str(path), cwd=tmp_path), words)


def test_repro_refuses_a_full_difference_replay_too_large_to_finish(tmp_path, good_case):
    doc = json.loads(json.dumps(good_case))
    for leaf in doc["graph"]["leaves"]:  # a million-row input (and its probe): 3e6 full differences
        if leaf["name"] in ("x", "probe"):
            leaf["shape"][0] = 1_000_000
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    one_line_exit_2(gradcheck("repro", str(path), cwd=tmp_path), "full differences would run", "--b")


def test_repro_of_something_that_is_not_json_or_not_there(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    one_line_exit_2(gradcheck("repro", str(tmp_path / "x.json"), cwd=tmp_path), "not JSON")
    one_line_exit_2(gradcheck("repro", str(tmp_path / "missing.json"), cwd=tmp_path), "cannot read")


SYNTAX_ERROR = "from gradcheck import Candidate\ncandidate = Candidate('x'\n"
RAISES = "raise RuntimeError('the module refuses to import')\n"


@pytest.mark.parametrize("argv,words", [
    (["--device", "frob"], ["--device frob", "give cpu, cuda or cuda:N"]),
    (["--examples", "-5"], ["--examples", "give a number >= 0"]),
    (["--check-timeout", "-1"], ["--check-timeout", "positive"]),
    (["--ops", "softmx"], ["unknown op 'softmx'"]),
    (["--candidate", "CAND_SYNTAX"], ["syntax error", "line 2"]),
    (["--candidate", "CAND_RAISES"], ["importing it raised RuntimeError: the module refuses to import"]),
    (["--candidate", "no/such/file.py:candidate"], ["does not exist"]),
    (["--out", "A_FILE"], ["is a file"]),
], ids=["device", "examples", "timeout", "ops", "syntax-error", "raises-at-import", "missing-file", "out-is-a-file"])
def test_run_refuses_bad_input_before_any_work_and_writes_nothing(tmp_path, argv, words):
    (tmp_path / "syntax.py").write_text(SYNTAX_ERROR)
    (tmp_path / "raises.py").write_text(RAISES)
    (tmp_path / "a_file").write_text("")
    argv = [a.replace("CAND_SYNTAX", f"{tmp_path}/syntax.py:candidate").replace(
        "CAND_RAISES", f"{tmp_path}/raises.py:candidate").replace("A_FILE", str(tmp_path / "a_file")) for a in argv]
    out_dir = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out_dir)]
    one_line_exit_2(gradcheck("run", *argv, cwd=tmp_path), *words)
    assert not out_dir.exists()


def test_report_compare_refuses_an_empty_run(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "records.jsonl").write_text("")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "records.jsonl").write_text("")
    one_line_exit_2(gradcheck("report", "--compare", "old", "new", cwd=tmp_path), "has no records")


@pytest.mark.parametrize("argv,words", [
    (["--candidate", "CAND_SYNTAX"], ["syntax error"]),
    (["--device", "cuda", "--candidate", "CAND_OK"], ["--device cuda", "no CUDA device"]),
    (["--check-timeout", "-1", "--candidate", "CAND_OK"], ["--check-timeout -1"]),
], ids=["syntax-error", "cuda-without-gpu", "negative-timeout"])
def test_pytest_refuses_bad_options_as_a_usage_error_not_an_internal_error(tmp_path, argv, words):
    pytest.importorskip("torch")
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "syntax.py").write_text(SYNTAX_ERROR)
    argv = [a.replace("CAND_SYNTAX", f"{tmp_path}/syntax.py:candidate").replace(
        "CAND_OK", f"{ROOT}/tests/user_layers/ordinary.py:candidate") for a in argv]
    out = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites" / "test_ops.py"), "-p",
                          "no:cacheprovider", "-q", *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]  # pytest's exit code for usage errors
    assert "INTERNALERROR" not in out.stdout + out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


EVIL = """
from pathlib import Path
Path(__file__).with_name("RAN").write_text("the replay file ran this")
from gradcheck import Candidate
candidate = Candidate("evil")
"""


@pytest.mark.parametrize("spec", ["candidate:EVIL:candidate:numpy", "candidate:os:abort",
                                  "candidate:gradcheck_candidate_evil:candidate"])
def test_a_replay_file_that_names_code_runs_none_of_it(tmp_path, good_case, spec):
    (tmp_path / "evil.py").write_text(EVIL)
    doc = json.loads(json.dumps(good_case))
    doc["source_a"] = spec.replace("EVIL", str(tmp_path / "evil.py"))
    doc["candidate"] = {"name": "evil", "version": "", "target": f"{tmp_path}/evil.py:candidate"}
    path = tmp_path / "case.json"
    path.write_text(json.dumps(doc))
    out = gradcheck("repro", str(path), cwd=tmp_path)
    one_line_exit_2(out, "give --candidate TARGET")
    doc["candidate"] = None  # no candidate named: the spec alone cannot load anything either
    path.write_text(json.dumps(doc))
    one_line_exit_2(gradcheck("repro", str(path), cwd=tmp_path), "candidate")
    assert not (tmp_path / "RAN").exists()
