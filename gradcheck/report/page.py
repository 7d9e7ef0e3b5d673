"""report.html and summary.md of a run, from its records and run.json.

The page reads top to bottom: the verdict (PASS or FAIL with counts, and what
was run: Note [Run information]), one card per distinct failure (Note
[Findings]) with its graph drawn, the worst element, the replay command and
the second opinions, a heatmap of the worst error/tolerance by op and source
pair per dtype, the summary table and every failing check (sortable, filtered
by status, op, pair, dtype and device in a few lines of inline JavaScript),
then a section per op with its strip plot and one per optimizer.  Rendered by
Jinja2 with autoescaping from templates/; one file, nothing fetched.

Note [Report cost]
~~~~~~~~~~~~~~~~~~
Building the report is overhead on every run, so it is kept to what a reader
uses.  A matplotlib figure costs 30 to 60 ms however few its points (most of it
ticks and text), so a page drawing all 130-odd ops would cost more than the
checks of a default run (52 figures of passing ops near their tolerance cost
6.7 s of a 35 s run).  So every op is drawn in one overview figure, a strip
each, worst first; by default (plots="notable") an op's or optimizer's own plot
is drawn only when something of it failed or erred, and its section says where
its strip is; ``gradcheck report RUN --plots all`` draws every one.  Each plot is one savefig
of a few artists (one per status, not one per point) at 80 dpi; graphs are
parsed only for failing records; at most MAX_ROWS failing checks are written
into the page (the Parquet files hold all of them).  ``benchmarks/bench_report.py`` measures
the share of a default run and the size and load time of a 1,000-graph page.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd

from . import plots as draw
from .diagram import graph_svg
from .findings import findings as find
from .records import STATUSES, read_records, read_run_info
from .tables import SEVERITY, group_columns, summarize, worst_status, write_tables

__all__ = ["build_report", "render_page", "summary_markdown", "verdict", "environment", "cell_text", "sort_value",
           "MAX_ROWS"]

MAX_ROWS = 500  # failing checks listed in the page (the worst); all of them are in records.parquet
MAX_CASES = 50  # cases listed under one finding
_ENV = None


def environment():
    """The Jinja2 environment of the report's templates (autoescaping)."""
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(loader=jinja2.PackageLoader("gradcheck.report", "templates"),
                                  autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                                  undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return _ENV


def cell_text(v) -> str:
    """A value as a table shows it: 3 significant digits, NaN blank."""
    if isinstance(v, float):
        return "" if math.isnan(v) else "inf" if math.isinf(v) else f"{v:.3g}"
    return str(v)


def sort_value(v):
    """A value as a table sorts it (data-v): inf and NaN placed at the ends."""
    if isinstance(v, float):
        return "" if math.isnan(v) else ("1e308" if v > 0 else "-1e308") if math.isinf(v) else repr(v)
    return v


def anchor(text) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)) or "case"


def verdict(df: pd.DataFrame, info: dict) -> dict:
    counts = df["status"].value_counts()
    bad = int(counts.get("fail", 0) + counts.get("error", 0))
    word = "FAIL" if bad else "INCOMPLETE" if info.get("interrupted") else "PASS"
    parts = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
    text = f"{len(df)} checks on {df['case_id'].nunique()} cases: {parts}"
    if info.get("interrupted"):
        text += " (interrupted: the report holds the checks made before it stopped)"
    return {"word": word, "text": text, "bad": bad}


def _info_rows(info: dict, directory: Path) -> list:
    versions = info.get("versions") or {}
    candidates = "; ".join(f"{c.get('name', '')}" + (f" {c['version']}" if c.get("version") else "")
                           + (f" ({c['target']})" if c.get("target") else "") for c in info.get("candidates") or ())
    duration = info.get("duration")
    rows = [("command", info.get("command", "")), ("run", info.get("run_id") or directory.name),
            ("started", info.get("started", "")), ("duration", f"{duration:.1f} s" if duration else ""),
            ("seed", info.get("seed")), ("profile", info.get("profile", "")),
            ("candidate", candidates or "none (the built-in sources)"), ("device", info.get("device", "")),
            ("dtype", info.get("dtype", "")), ("git", info.get("git", "")), ("host", info.get("host", ""))]
    rows += [(name, versions[name]) for name in ("gradcheck", "torch", "numpy", "hypothesis", "python")
             if versions.get(name)]
    return [(k, "" if v is None else str(v)) for k, v in rows if v not in (None, "")]


def _card(f) -> dict:
    """A finding's card: its representative (the smallest graph) shown whole,
    the worst ratio over all its records said beside it."""
    rep = f.representative
    element = []
    if rep["status"] == "fail":
        element = [("tensor", rep.get("tensor") or "-"), ("element", rep.get("index") or "-"),
                   (rep["source_a"], cell_text(rep.get("value_a", math.nan))),
                   (rep["source_b"], cell_text(rep.get("value_b", math.nan))),
                   ("allowed", cell_text(rep.get("allowed", math.nan))), ("error / tolerance", cell_text(rep["ratio"]))]
        if rep.get("step"):
            element.insert(0, ("step", str(int(rep["step"]))))
    graph = f.graphs.get(rep["case_id"], {})
    replay = f"gradcheck repro {rep['replay']}" if rep.get("replay") else ""
    others = [{"case_id": r.case_id, "tensor": r.tensor or "-", "dtype": r.dtype, "ratio": cell_text(r.ratio),
               "ratio_v": sort_value(r.ratio), "replay": f"gradcheck repro {r.replay}" if r.replay else ""}
              for r in f.records.drop_duplicates(["case_id", "tensor"]).head(MAX_CASES).itertuples(index=False)]
    return {"anchor": f.anchor, "status": f.status, "title": f.title, "pair": f.pair, "cases": f.cases,
            "count": len(f.records), "dtypes": ", ".join(sorted(f.records["dtype"].astype(str).unique())),
            "worst": cell_text(f.worst["ratio"]), "op_anchor": anchor(f.op), "worst_element": element,
            "message": str(rep.get("message", "")).strip(), "opinions": str(rep.get("opinions", "") or ""),
            "replay": replay, "svg": graph_svg(graph, str(rep.get("tensor") or ""), f.op), "case_id": rep["case_id"],
            "nodes": len(graph.get("nodes", ())), "others": others if len(others) > 1 else [],
            "more": len(f.records) > len(others)}


def _heatmaps(df: pd.DataFrame) -> list:
    out = []
    judged = df[df["status"].isin(["pass", "fail"])]
    for dtype, d in df.groupby("dtype", sort=True):
        pairs = sorted(d["pair"].unique())
        worst = judged[judged["dtype"] == dtype].groupby(["op", "pair"])["ratio"].max()
        errors = d[d["status"] == "error"].groupby(["op", "pair"]).size()
        rows = []
        for op in sorted(d["op"].fillna("").unique()):
            cells = []
            for pair in pairs:
                r, e = worst.get((op, pair)), int(errors.get((op, pair), 0))
                if e:
                    cells.append({"cls": "err", "text": "error", "title": f"{op}, {pair}: {e} error(s)"})
                elif r is None or (isinstance(r, float) and math.isnan(r)):
                    cells.append({"cls": "blank", "text": "", "title": f"{op}, {pair}: nothing judged"})
                else:
                    cls = "bad" if r > 1 else "near" if r >= 0.1 else "good"
                    cells.append({"cls": cls, "text": cell_text(float(r)), "title": f"{op}, {pair}: worst {r:.3g}"})
            rows.append({"op": op or "(case)", "anchor": anchor(op), "cells": cells})
        out.append({"dtype": dtype, "pairs": pairs, "rows": rows})
    return out


def _table_rows(table: pd.DataFrame) -> list:
    return [[(cell_text(v), sort_value(v)) for v in row] for row in table.itertuples(index=False)]


def _notable(d: pd.DataFrame) -> bool:
    """Whether an op's section draws its own plot under plots="notable":
    something of it failed or erred (Note [Report cost])."""
    return bool(d["status"].isin(["fail", "error"]).any())


def _op_sections(df: pd.DataFrame, optimizer_ops: set, plots_for, summary: pd.DataFrame) -> list:
    sections = []
    by_op = dict(list(summary.groupby(summary["op"].fillna(""), sort=False)))
    for op, d in df.groupby(df["op"].fillna(""), sort=True):
        if op in optimizer_ops:
            continue
        table = by_op[op]
        status = max(d["status"], key=SEVERITY.get)
        counts = d["status"].value_counts()
        judged = d.loc[d["status"].isin(["pass", "fail"]), "ratio"]
        text = ", ".join(f"{int(counts[s])} {s}" for s in STATUSES if counts.get(s, 0))
        if len(judged):
            text += f"; worst error/tolerance {float(judged.max()):.3g}"
        png = draw.op_strip(d, op) if plots_for(d) else ""
        if not png and len(judged):
            text += " (nothing failed: its strip is in the overview; gradcheck report RUN --plots all draws its own)"
        sections.append({"op": op or "(whole case)", "anchor": anchor(op), "status": status, "text": text,
                         "png": png, "columns": list(table.columns), "rows": _table_rows(table)})
    return sections


def _optimizer_sections(df: pd.DataFrame, plots_for) -> list:
    out = []
    steps = df[df["step"] > 0] if "step" in df else df.iloc[0:0]
    for op, d in steps.groupby("op", sort=True):
        counts = d["status"].value_counts()
        out.append({"op": op, "anchor": anchor(op), "status": max(d["status"], key=SEVERITY.get),
                    "text": f"{d['case_id'].nunique()} trajectories, {len(d)} step checks: "
                            + ", ".join(f"{int(counts[s])} {s}" for s in STATUSES if counts.get(s, 0)),
                    "png": draw.optimizer_steps(d, op) if plots_for(d) else ""})
    return out


PLOTS = {"all": lambda d: True, "notable": _notable, "none": lambda d: False}


def _filter_options(df: pd.DataFrame) -> list:
    return [(key, sorted(df[key].fillna("").astype(str).unique())) for key in ("status", "op", "pair", "dtype", "device")]


def render_page(df: pd.DataFrame, info: dict, directory: Path, title: str, found=None, plots="notable") -> str:
    found = find(df) if found is None else found
    if plots not in PLOTS:
        raise ValueError(f"plots={plots!r}: choose one of {', '.join(PLOTS)}")
    plots_for = PLOTS[plots]
    table = summarize(df)
    group = group_columns(df)
    columns = group + [c for c in table.columns if c not in group]
    summary = table[columns].assign(status=worst_status(table))
    summary_rows = [{"status": row["status"], **{k: row[k] for k in ("op", "pair", "dtype", "device")},
                     "cells": [(cell_text(row[c]), sort_value(row[c])) for c in columns]} for row in summary.to_dict("records")]
    bad = df[df["status"].isin(["fail", "error"])].copy()
    bad["_k"] = bad["ratio"].fillna(math.inf)
    bad = bad.sort_values("_k", ascending=False, kind="stable")
    failing = [{"status": r.status, "op": r.op or "", "check": r.check, "tensor": r.tensor or "-", "pair": r.pair,
                "dtype": r.dtype, "device": r.device, "ratio": cell_text(r.ratio), "ratio_v": sort_value(r.ratio),
                "case_id": r.case_id, "replay": f"gradcheck repro {r.replay}" if r.replay else ""}
               for r in bad.head(MAX_ROWS).itertuples(index=False)]
    optimizers = _optimizer_sections(df, plots_for)
    judged = df[df["status"].isin(["pass", "fail"])]
    order = judged.groupby(judged["op"].fillna(""))["ratio"].max().sort_values(ascending=False, kind="stable")
    overview = draw.overview(df[~df["op"].isin({o["op"] for o in optimizers})], list(order.index)) \
        if plots != "none" else ""
    opt_ops = {o["op"] for o in optimizers}
    v = verdict(df, info)
    if found:
        v["text"] += f"; {len(found)} distinct failure{'s' if len(found) != 1 else ''}"
    return environment().get_template("report.html.j2").render(
        title=title, verdict=v, info=_info_rows(info, directory), findings=[_card(f) for f in found],
        heatmaps=_heatmaps(df), summary_columns=columns, summary_rows=summary_rows,
        summary_filters=_filter_options(summary), failing_rows=failing, failing_total=len(bad),
        failing_filters=_filter_options(bad) if len(bad) else [], ops=_op_sections(df, opt_ops, plots_for, table),
        optimizers=optimizers, overview=overview, skipped_lines=df.attrs.get("skipped_lines", 0),
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _md(text) -> str:
    """``text`` as literal Markdown inline text: every mark that could start markup,
    a link or raw HTML is backslash-escaped (CommonMark), newlines joined."""
    return re.sub(r"([\\`*_\[\]|<>&$~])", r"\\\1", str(text)).replace("\n", " ")


def _fenced(text) -> list:
    """``text`` in a code fence longer than any run of backticks inside it, so
    nothing in it can end the block (CommonMark)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else _md(v) for v in row) + " |")
    return "\n".join(lines)


def summary_markdown(df: pd.DataFrame, info: dict, title: str, found=None) -> str:
    """summary.md: the verdict, the findings grouped as on the page, the tables."""
    found = find(df) if found is None else found
    v = verdict(df, info)
    parts = [f"# {v['word']}: {_md(title)}", "", f"{v['text']}.", ""]
    if info.get("command"):
        parts += [f"command: `{info['command']}`" if "`" not in info["command"] else "command:",
                  *([] if "`" not in info["command"] else _fenced(info["command"])), ""]
    parts += ["## Findings", ""]
    if not found:
        parts.append("No check failed.")
    for f in found:
        rep, worst = f.representative, f.worst
        check = "" if f.check == "rev" else f" ({_md(f.check)})"
        parts.append(f"### {_md(f.status)}: op {_md(f.op or 'whole case')}{check}, {_md(f.role)}, {_md(f.pair)}: "
                     f"{_md(f.kind)}")
        parts.append("")
        parts.append(f"{f.cases} case(s), {len(f.records)} check(s); worst: tensor {_md(worst.get('tensor') or '-')}, "
                     f"error/tolerance {cell_text(worst['ratio'])}, case {_md(worst['case_id'])}")
        parts.append("")
        parts.extend(_fenced(str(rep.get("message", "")).strip()))
        if rep.get("replay"):
            parts.append("replay:")
            parts.extend(_fenced(f"gradcheck repro {rep['replay']}"))
        parts.append("")
    parts += ["## By op, source pair, dtype and device", "", _markdown_table(summarize(df)), ""]
    kinds = df.groupby("check")["status"].value_counts().unstack(fill_value=0).reindex(columns=list(STATUSES),
                                                                                       fill_value=0)
    if len(kinds) > 1:  # a section per order and mode when the run checked more than first-order reverse mode
        parts += ["## By order and mode", "", _markdown_table(kinds.reset_index()), ""]
    return "\n".join(parts) + "\n"


def build_report(directory, csv=False, title=None, plots="notable", records=None) -> dict:
    """(Re)build the Parquet tables, summary.md and report.html of a run folder
    from its records and run.json; returns the paths written.  ``plots``:
    "notable" draws the overview and the plots of ops and optimizers with
    a failure (Note [Report cost]), "all" every one, "none" none.
    ``records``: the run's records when the caller has read them already."""
    directory = Path(directory)
    df = read_records(directory) if records is None else records.copy()
    if df.empty:
        raise ValueError(f"{directory}: no records")
    info = read_run_info(directory)
    if "step" not in df:
        df["step"] = 0
    df["step"] = pd.to_numeric(df["step"], errors="coerce").fillna(0).astype(int)
    skipped = df.attrs.get("skipped_lines", 0)
    title = title or f"gradcheck report: {directory.name}"
    paths = write_tables(directory, df, info, csv=csv)
    found = find(df)
    paths["summary"] = directory / "summary.md"
    paths["summary"].write_text(summary_markdown(df, info, title, found))
    paths["html"] = directory / "report.html"
    paths["html"].write_text(render_page(df, info, directory, title, found, plots))
    if skipped:
        paths["skipped_lines"] = skipped
    return paths
