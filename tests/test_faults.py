"""The fault zoo (tests/faults.py) through the public entry points: every fault a
candidate can commit becomes error records naming the op, the phase and the
fault, and the run still finishes with its summary and report."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import faults
from gradcheck.sources.candidate import candidate_sources
from gradcheck.judge import check_pair
from gradcheck.case import op_cases
from gradcheck.report import read_records
from gradcheck.sources import ReferenceOrFormula

ROOT = Path(__file__).resolve().parent.parent
FAULTS_FILE = ROOT / "tests" / "faults.py"


def targets(names):
    out = []
    for name in names:
        out += ["--candidate", f"{FAULTS_FILE}:{name.replace('-', '_')}"]
    return out


def records_of(report_root):
    (run,) = [p for p in Path(report_root).iterdir() if p.is_dir()]
    return run, read_records(run)


def assert_each_fault_is_named(df, names):
    for name in names:
        candidate, expect = faults.FAULTS[name]
        mine = df[df["source_a"].str.startswith(candidate.name)]
        assert len(mine), name
        errors = mine[mine["status"] == "error"]
        if not expect:  # a correct candidate among them: it passes
            assert not len(errors) and (mine["status"] == "pass").any(), (name, mine["message"].tolist()[:2])
            continue
        assert len(errors), (name, mine["status"].unique())
        assert (errors["op"] == "tanh").all(), (name, errors["op"].unique())
        for word in expect:
            assert errors["message"].str.contains(word, regex=False).any(), (name, word, errors["message"].iloc[0])


def test_every_fault_python_can_catch_is_an_error_record_in_process(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
                          "--gradcheck-profile", "dev", "--check-timeout", "1", "-k", "tanh and not complex",
                          "--gradcheck-report", str(tmp_path), *targets(faults.IN_PROCESS)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "INTERNALERROR" not in out.stdout + out.stderr
    run, df = records_of(tmp_path)
    assert (run / "report.html").exists() and (run / "summary.md").exists()
    assert_each_fault_is_named(df, faults.IN_PROCESS)
    # a hang costs one time limit per source, then the op is not called again
    timeouts = df[df["message"].str.contains("did not finish within the time limit", regex=False)]
    first = timeouts[~timeouts["message"].str.contains("circuit breaker", regex=False)]
    assert len(first) <= 4, len(first)
    assert "gradcheck: circuit breaker (fault-python-hang): tanh.backward timed out once" in out.stdout


def test_every_fault_is_an_error_record_under_isolation_and_the_run_completes(tmp_path):
    names = faults.NEED_ISOLATION + ("raise", "keyboard-interrupt", "system-exit", "chatty", "torch-python-hang")
    out = subprocess.run([*[sys.executable, "-m", "gradcheck.cli"], "run", "--isolate", "--check-timeout", "2",
                          "--ops", "tanh", "--examples", "6", "--no-torch", "--out", str(tmp_path), *targets(names)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    run, df = records_of(tmp_path)
    assert (run / "report.html").exists() and (run / "summary.md").exists()
    assert_each_fault_is_named(df, names)
    assert "x" * 1000 not in out.stdout + out.stderr  # the chatty candidate's output stayed in its worker's log
    assert "circuit breaker (fault-c-hang)" in out.stdout


def test_pytest_isolate_survives_crashes_and_c_hangs_and_keeps_a_chatty_candidate_quiet(tmp_path):
    names = faults.NEED_ISOLATION + ("chatty",)
    out = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
                          "--gradcheck-profile", "dev", "--isolate", "--check-timeout", "2", "-k", "tanh",
                          "--gradcheck-report", str(tmp_path), *targets(names)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "x" * 1000 not in out.stdout + out.stderr
    _, df = records_of(tmp_path)
    assert_each_fault_is_named(df, names)


def test_a_users_ctrl_c_inside_candidate_code_still_stops_the_run():
    from gradcheck import Candidate
    from reference_impl import activations

    def backward(y, g):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while the candidate runs
        time.sleep(1)
        return activations.tanh_backward(y, g)

    c = Candidate("interrupted")
    c.numpy_ops["tanh"] = (activations.tanh_forward, backward)
    (src,) = candidate_sources(c)
    with pytest.raises(KeyboardInterrupt):
        check_pair(op_cases("tanh")[0], src, ReferenceOrFormula())


SLOW = """
import time
from gradcheck import Candidate
from reference_impl import activations

candidate = Candidate("slow")

@candidate.op("tanh")
class Tanh:
    forward = staticmethod(activations.tanh_forward)

    @staticmethod
    def backward(y, g):
        time.sleep(0.05)
        return activations.tanh_backward(y, g)
"""


def test_ctrl_c_during_a_run_writes_the_summary_and_report_and_exits_130(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck.cli", "run", "--candidate", str(tmp_path / "slow.py")
                             + ":candidate", "--ops", "tanh", "--examples", "5000", "--no-torch", "--out",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = list((tmp_path / "out").glob("*/records.jsonl"))
        if runs and runs[0].stat().st_size > 20_000:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    run, df = records_of(tmp_path / "out")
    assert len(df) and (run / "summary.md").exists() and (run / "report.html").exists()


def test_a_nondeterministic_forward_is_named_as_such():
    c, _ = faults.FAULTS["nondeterministic-forward"]
    (src,) = candidate_sources(c)
    records = check_pair(op_cases("tanh")[1], src, ReferenceOrFormula(), outputs=True)
    bad = [r for r in records if r.status == "error"]
    assert bad and all(r.message.startswith("nondeterministic: two calls of") for r in bad)
    assert np.isfinite([r.ratio for r in records if r.status == "pass"]).all()
