"""Reports: streaming, aggregation, the files, comparing runs, the main job."""

import math
import signal
import subprocess
import sys
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from gradcheck.cli import main
from gradcheck.judge import CheckRecord
from gradcheck.report import RecordSink, build_report, compare_runs, read_records, read_tables, summarize

ROOT = Path(__file__).resolve().parent.parent


def rec(op, status, ratio, tensor="x", pair=("reference", "central-fd(reference)"), dtype="float64", case="c1"):
    return CheckRecord(case_id=case, graph="{}", seed=0, op=op, tensor=tensor, source_a=pair[0], source_b=pair[1],
                       dtype=dtype, device="cpu", max_abs_err=ratio * 1e-9, max_rel_err=ratio * 1e-9, cosine=1.0,
                       rtol=1e-8, atol=0.0, ratio=ratio, status=status, seconds=0.01,
                       message="" if status == "pass" else f"{op} {status}")


HAND_MADE = [
    rec("linear", "pass", 0.01), rec("linear", "pass", 0.2, tensor="w"), rec("linear", "fail", 30.0, tensor="b"),
    rec("relu", "nondifferentiable", 0.0), rec("relu", "pass", 0.5, tensor="y"),
    rec("linear", "pass", 0.3, dtype="float32"),
    rec("conv2d", "error", math.inf, tensor=""),
    rec("conv2d", "skipped", math.nan, tensor="", pair=("reference", "complex-fd(reference)")),
]


def write_run(path, records, **extra):
    with RecordSink(path) as sink:
        sink.add(records, **extra)
    return path


def test_aggregating_hand_made_records_gives_the_expected_counts(tmp_path):
    df = read_records(write_run(tmp_path, HAND_MADE))
    s = summarize(df).set_index(["op", "pair", "dtype"])
    row = s.loc[("linear", "reference vs central-fd(reference)", "float64")]
    assert (row["pass"], row["fail"], row["error"]) == (2, 1, 0)
    assert row["worst ratio"] == 30.0
    assert s.loc[("linear", "reference vs central-fd(reference)", "float32")]["pass"] == 1
    relu = s.loc[("relu", "reference vs central-fd(reference)", "float64")]
    assert (relu["pass"], relu["nondifferentiable"], relu["worst ratio"]) == (1, 1, 0.5)
    assert s.loc[("conv2d", "reference vs central-fd(reference)", "float64")]["error"] == 1
    assert s.loc[("conv2d", "reference vs complex-fd(reference)", "float64")]["skipped"] == 1
    # failures sort first
    assert summarize(df).iloc[0]["op"] == "linear"


def test_report_files_are_valid(tmp_path):
    write_run(tmp_path, HAND_MADE, replay="")
    paths = build_report(tmp_path, csv=True)
    df = read_records(tmp_path)
    runs, cases, records = read_tables(tmp_path)
    assert len(runs) == 1 and runs.loc[0, "checks"] == len(df) and runs.loc[0, "fail"] == 1
    assert len(records) == len(df) and "graph" not in records and set(records["run_id"]) == {runs.loc[0, "run_id"]}
    assert sorted(cases["case_id"]) == sorted(df["case_id"].unique())  # each graph once
    assert len(pd.read_csv(paths["csv"])) == len(df)

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.sections, self.images, self.errors = [], [], 0, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag not in ("meta", "img", "br", "link", "input"):
                self.stack.append(tag)
            if tag == "section" and attrs.get("id", "").startswith("op-"):
                self.sections.append(attrs.get("id"))
            if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
                self.images += 1

        def handle_endtag(self, tag):
            if not self.stack or self.stack.pop() != tag:
                self.errors.append(tag)

    parser = Collect()
    parser.feed(paths["html"].read_text())
    assert not parser.errors and not parser.stack, "unbalanced HTML"
    assert sorted(parser.sections) == ["op-conv2d", "op-linear", "op-relu"]
    assert parser.images == 2  # linear failed, relu crossed a kink: drawn, embedded; conv2d judged nothing
    assert "http" not in paths["html"].read_text().replace("http-equiv", "")
    summary = paths["summary"].read_text()
    assert summary.startswith("# FAIL: ")
    assert "| linear | reference vs central-fd(reference) | float64 | cpu | 2 | 1 | 0 | 0 | 0 | 30 |" in summary
    assert "### fail: op linear, tensor, reference vs central-fd(reference): mismatch" in summary


def test_the_parquet_tables_round_trip_and_join(tmp_path):
    """Note [Report tables]: each graph once in cases.parquet, records referring to
    it and to the run; the index a list of ints; an optimizer record's step apart
    from its tensor."""
    graph = '{"leaves": [{"name": "x", "role": "input", "shape": [2]}], "nodes": [{"name": "y", "op": "tanh", "inputs": ["x"]}], "output": "y"}'
    grads = [replace(rec("tanh", "fail", 5.0, tensor="x", case="g1"), graph=graph, index="(0, 1)"),
             replace(rec("tanh", "pass", 0.5, tensor="x", case="g1"), graph=graph, source_b="torch", index="(1,)")]
    steps = [replace(rec("sgd", "fail", 9.0, tensor="w.momentum_buffer", pair=("mine-sgd", "reference-sgd"),
                         case="t1"), graph='{"optimizer": "sgd"}', step=3)]
    write_run(tmp_path, grads + steps)
    build_report(tmp_path)
    runs, cases, records = read_tables(tmp_path)
    assert sorted(cases["case_id"]) == ["g1", "t1"] and cases.set_index("case_id").loc["g1", "graph"] == graph
    joined = records.merge(cases, on=["case_id", "seed"]).merge(runs[["run_id", "command"]], on="run_id")
    assert len(joined) == 3
    assert [list(v) for v in records["index"]] == [[0, 1], [1], []]
    sgd = records[records["op"] == "sgd"].iloc[0]
    assert (sgd["step"], sgd["tensor"], sgd["consumer"]) == (3, "w.momentum_buffer", "sgd")
    assert set(records.loc[records["op"] == "tanh", "step"]) == {0}


def test_one_card_per_distinct_failure_and_the_verdict_says_so(tmp_path):
    """Note [Findings]: twelve records of one bug (several cases, several steps)
    are one finding; a second bug elsewhere is a second.  The page's verdict is
    FAIL with both counted; a run without failures says PASS."""
    from gradcheck.report import findings

    gelu = [replace(rec("gelu", "fail", 10.0 + i, tensor="x", case=f"c{i}"), graph="{}") for i in range(4)]
    sgd = [replace(rec("sgd", "fail", 100.0 + k, tensor="w", pair=("mine-sgd", "reference-sgd"), case=f"t{k % 2}"),
                   step=k) for k in range(1, 9)]
    df = read_records(write_run(tmp_path / "bad", [*gelu, *sgd, rec("tanh", "pass", 0.1)]))
    found = findings(df)
    assert [(f.op, f.role, f.cases, len(f.records)) for f in found] == [("gelu", "tensor", 4, 4), ("sgd", "parameter", 2, 8)]
    page = build_report(tmp_path / "bad")["html"].read_text()
    assert "<div class=\"word\">FAIL</div>" in page.replace("'", '"') and "2 distinct failures" in page
    assert page.count("<article class=\"card") == 2
    good = build_report(write_run(tmp_path / "good", [rec("tanh", "pass", 0.1)]))["html"].read_text()
    assert "<div class=\"word\">PASS</div>" in good and "No check failed" in good


def test_damaged_lines_anywhere_are_skipped_counted_and_the_rest_rebuilt(tmp_path, capsys):
    from gradcheck.cli import main

    write_run(tmp_path, HAND_MADE[:3])
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"case_id": "c9", "op": "lin')  # killed mid-write
    assert len(read_records(tmp_path)) == 3
    lines = (tmp_path / "records.jsonl").read_text().split("\n")
    (tmp_path / "records.jsonl").write_text("\n".join([lines[0], "garbage", "[1, 2]", *lines[1:]]))
    df = read_records(tmp_path)
    assert len(df) == 3 and df.attrs["skipped_lines"] == 3
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "skipped 3 unreadable line(s)" in captured.err and "html:" in captured.out


def test_compare_lists_new_failures_and_tenfold_growth_and_exits_nonzero(tmp_path, capsys):
    old = write_run(tmp_path / "old", HAND_MADE)
    worse = [replace(HAND_MADE[0], status="fail", ratio=3.0, message="now wrong"),  # passed, fails now
             replace(HAND_MADE[1], ratio=2.5 * 10),  # 0.2 -> 25: grew 125x (and fails)
             replace(HAND_MADE[4], ratio=0.9),  # 0.5 -> 0.9: fine
             *HAND_MADE[2:4], *HAND_MADE[5:]]
    new = write_run(tmp_path / "new", worse)
    reg = compare_runs(old, new)
    assert sorted(reg["tensor"]) == ["w", "x"]
    assert main(["report", "--compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "matched 8 of 8 checks" in out and "2 regression(s)" in out and "now fails" in out
    assert main(["report", "--compare", str(old), str(old)]) == 0
    assert "no regressions" in capsys.readouterr().out


def test_compare_across_seeds_reports_the_overlap_lists_every_new_failure_and_shifts(tmp_path, capsys):
    """Note [Comparing runs]: runs of two seeds share no case; the comparison says
    it matched nothing, lists each new failure (none dropped), flags the op
    whose fail rate moved and exits 1; --html writes the page."""
    old = write_run(tmp_path / "old", [rec("gelu", "pass", 0.1, case=f"a{i}") for i in range(40)]
                    + [rec("tanh", "pass", 0.2, case=f"a{i}") for i in range(40)])
    new = write_run(tmp_path / "new", [rec("gelu", "fail", 30.0, case=f"b{i}") for i in range(12)]
                    + [rec("gelu", "pass", 0.1, case=f"b{i}") for i in range(12, 40)]
                    + [rec("tanh", "pass", 0.3, case=f"b{i}") for i in range(40)])
    page = tmp_path / "compare.html"
    assert main(["report", "--compare", str(old), str(new), "--html", str(page)]) == 1
    out = capsys.readouterr().out
    assert "matched 0 of 80 checks" in out and "12 failure(s) in the new run with no counterpart" in out
    assert out.count("fail op gelu") == 12
    assert "1 of 2 (op, check, pair, dtype) groups shifted" in out and "fail rate 0/40 -> 12/40" in out
    text = page.read_text()
    assert "FAIL" in text and text.count("<td><span class=\"badge fail\">fail</span></td>") == 12


def test_gradcheck_report_rebuilds_the_files(tmp_path, capsys):
    write_run(tmp_path, HAND_MADE)
    assert main(["report", str(tmp_path), "--csv"]) == 0
    for name in ("records.parquet", "records.csv", "summary.md", "report.html"):
        assert (tmp_path / name).exists()
    assert main(["report", str(tmp_path / "nope")]) == 2


def _records_in(out):
    runs = list(Path(out).glob("*/records.jsonl"))
    return runs[0] if runs else None


def test_a_run_killed_mid_way_leaves_readable_records(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gradcheck.cli", "run", "--examples", "5000", "--out", str(tmp_path),
                             "--no-torch"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    path = None
    while time.time() < deadline:
        path = _records_in(tmp_path)
        if path and path.stat().st_size > 200_000:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path is not None, "the run wrote no records before it was killed"
    df = read_records(path.parent)
    assert len(df) > 100 and set(df["status"]) <= {"pass", "nondifferentiable", "skipped"}


def test_the_main_job_writes_a_report_and_checks_random_graphs(tmp_path, capsys):
    assert main(["run", "--examples", "40", "--out", str(tmp_path), "--ops", "conv2d,tanh,attention"]) == 0
    out = capsys.readouterr().out
    (run,) = list(tmp_path.iterdir())
    df = read_records(run)
    assert df["case_id"].nunique() > 40  # the sweep's cases and the random graphs
    assert {"ref~central", "torch~ref", "torch~central"} <= set(df["pair_label"])
    assert "report (built in" in out and str(run / "report.html") in out
    assert "summary by op" in out and "0 failing checks" in out


def test_the_main_job_exits_one_and_writes_replayable_cases_when_a_check_fails(tmp_path, monkeypatch, capsys):
    import reference_impl
    from reference_impl import Op, activations

    monkeypatch.setitem(reference_impl.OPS, "tanh", Op(activations.tanh_forward, lambda y, g: (g * (1 - y),)))
    assert main(["run", "--examples", "6", "--out", str(tmp_path), "--ops", "tanh", "--no-torch"]) == 1
    (run,) = list(tmp_path.iterdir())
    df = read_records(run)
    failing = df[df["status"] == "fail"]
    assert len(failing) and all(Path(p).exists() for p in failing["replay"])
    assert "gradcheck repro" in (run / "summary.md").read_text()


def test_messages_and_names_cannot_break_out_of_the_report_files(tmp_path):
    hostile = "```\n</pre><img src=x onerror=alert(1)>\n**bold** [link](http://x) $\\alpha$"
    bad = replace(rec("linear", "fail", 30.0, tensor="b", pair=("$\\alpha$ {broken", "reference")),
                  message=hostile, op="lin$ear<b>")
    paths = build_report(write_run(tmp_path, [*HAND_MADE, bad]))  # mathtext would raise on "$\alpha$ {broken"
    summary = paths["summary"].read_text()
    assert "````\n" + hostile + "\n````" in summary  # a fence longer than any run of backticks inside
    assert "### fail: op lin\\$ear\\<b\\>, tensor, \\$\\\\alpha\\$ {broken vs reference: mismatch" in summary
    assert "<b>" not in summary
    page = paths["html"].read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_each_order_and_mode_is_its_own_row_and_section_and_compares_only_with_itself(tmp_path):
    # the same case, tensor and sources, checked at first order, second order and in
    # forward mode: three checks, not one
    first = rec("gelu", "pass", 0.1)
    second = replace(rec("gelu", "fail", 40.0), order=2, message="second order: the double backward of gelu ...")
    forward = replace(rec("gelu", "pass", 0.2), ad_mode="fwd")
    df = read_records(write_run(tmp_path / "run", [first, second, forward], replay=""))
    s = summarize(df).set_index(["op", "check"])
    assert (s.loc[("gelu", "rev")]["pass"], s.loc[("gelu", "rev")]["fail"]) == (1, 0)
    assert (s.loc[("gelu", "order 2")]["fail"], s.loc[("gelu", "order 2")]["worst ratio"]) == (1, 40.0)
    assert s.loc[("gelu", "fwd")]["pass"] == 1
    build_report(tmp_path / "run")
    summary = (tmp_path / "run" / "summary.md").read_text()
    by_kind = summary.split("## By order and mode")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in by_kind.splitlines() if line.startswith("| ") and "check" not in line}
    assert rows["order 2"][:2] == ["0", "1"] and rows["rev"][:2] == ["1", "0"] and rows["fwd"][:2] == ["1", "0"]
    assert "fail: op gelu (order 2)" in summary
    # a run that fixed the double backward: compared with the second-order record, not the first
    fixed = write_run(tmp_path / "fixed", [first, replace(second, status="pass", ratio=0.3), forward])
    assert compare_runs(tmp_path / "fixed", tmp_path / "run")["check"].tolist() == ["order 2"]
    assert compare_runs(tmp_path / "run", fixed).empty
