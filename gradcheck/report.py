"""Gradient-error reports: records streamed to disk, aggregated with pandas.

A run writes ``reports/<run-id>/``:

* ``records.jsonl``: one ``CheckRecord`` a line, appended as checks finish (a run
  killed half-way keeps what it checked; a half-written last line is skipped on
  read);
* ``records.parquet`` (and ``records.csv`` on request): the same rows as a table;
* ``summary.md``: counts of each status by op, source pair, dtype and device, and
  the worst cases with the command that replays each;
* ``report.html``: one self-contained page: the tables, and per op a plot of
  error/tolerance ratios per source pair and dtype with the tolerance line drawn.

    >>> import tempfile
    >>> from gradcheck.case import op_cases
    >>> from gradcheck.judge import check_pair
    >>> from gradcheck.sources import FiniteDifferences, ReferenceSource
    >>> ref = ReferenceSource()
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with RecordSink(d) as sink:
    ...         sink.add(check_pair(op_cases("tanh")[0], ref, FiniteDifferences(ref)))
    ...     int(read_records(d)["status"].eq("pass").sum())
    1
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

__all__ = ["RecordSink", "read_records", "build_report", "summarize", "compare_runs", "new_run_dir"]

RECORDS = "records.jsonl"
STATUSES = ("pass", "fail", "error", "nondifferentiable", "skipped")
GROUP = ["op", "pair", "dtype", "device"]


def new_run_dir(root="reports") -> Path:
    """``root/<UTC time>-<pid>``: a fresh folder for one run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=False)
    return path


class RecordSink:
    """Appends records to ``<dir>/records.jsonl`` as they come, flushing each batch."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dir / RECORDS, "a", encoding="utf-8")
        self.count = 0

    def add(self, records, **extra):
        """Write records (``CheckRecord``s or dicts); ``extra`` adds columns to each."""
        for r in records:
            row = r.to_dict() if hasattr(r, "to_dict") else dict(r)
            row.update(extra)
            self._file.write(json.dumps(row, default=_jsonable) + "\n")
            self.count += 1
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def read_records(directory) -> pd.DataFrame:
    """The records of a run folder (or a records.jsonl path) as a DataFrame.  A line
    that does not parse (a run killed mid-write, a damaged file) is skipped; how
    many were is in ``df.attrs["skipped_lines"]``."""
    path = Path(directory)
    path = path / RECORDS if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"{path}: no such records file (is {directory} a run folder?)")
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    df = pd.DataFrame(rows)
    df.attrs["skipped_lines"] = bad
    if df.empty:
        return df
    for col in ("max_abs_err", "max_rel_err", "cosine", "rtol", "atol", "ratio", "seconds", "value_a", "value_b"):
        if col in df:
            df[col] = pd.to_numeric(df[col].replace({"inf": math.inf, "nan": math.nan, "-inf": -math.inf}),
                                    errors="coerce")
    df["pair"] = df["source_a"] + " vs " + df["source_b"]
    df["check"] = check_kind(df)
    if "replay" not in df:
        df["replay"] = ""
    df["replay"] = df["replay"].fillna("")
    return df


def check_kind(df: pd.DataFrame) -> pd.Series:
    """Which derivative each record checks: "rev" (first-order reverse mode),
    "order 2" (the double backward), "fwd", "batched", "per-sample" or
    "undefined" (Note [Forward mode] and its neighbours in front.py).  Records
    written before these fields existed are first-order reverse mode."""
    order = pd.to_numeric(df["order"], errors="coerce").fillna(1) if "order" in df else pd.Series(1, df.index)
    mode = df["ad_mode"].fillna("rev").astype(str) if "ad_mode" in df else pd.Series("rev", df.index)
    return mode.where(order < 2, "order " + order.astype(int).astype(str))


def _group(df) -> list:
    """GROUP, with the kind of check after the op when there is more than one."""
    return GROUP[:1] + ["check"] + GROUP[1:] if "check" in df and df["check"].nunique() > 1 else GROUP


def _kind(r) -> str:
    """" (order 2)" for a record's heading, nothing for first-order reverse mode."""
    return "" if r.check == "rev" else f" ({r.check})"


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Counts of each status by op, source pair, dtype and device (and the kind
    of check, when a run holds more than first-order reverse mode), with the
    worst error/tolerance ratio among judged checks."""
    group = _group(df)
    counts = (df.groupby(group + ["status"]).size().unstack("status", fill_value=0)
              .reindex(columns=list(STATUSES), fill_value=0))
    judged = df[df["status"].isin(["pass", "fail"])]
    worst = judged.groupby(group)["ratio"].max().rename("worst ratio")
    out = counts.join(worst, how="left").reset_index()
    return out.sort_values(["fail", "error", "worst ratio"], ascending=False, kind="stable")


def worst_cases(df: pd.DataFrame, n=15) -> pd.DataFrame:
    bad = df[df["status"].isin(["fail", "error"])].copy()
    bad["ratio_sort"] = bad["ratio"].fillna(math.inf)
    return bad.sort_values("ratio_sort", ascending=False).head(n)


def _markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:.3g}" if isinstance(v, float) else _md(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# what can start inline markup, a link, raw HTML, a table cell or math, mid-line
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|<>&$~])")


def _md(text) -> str:
    """``text`` as literal Markdown inline text: every mark that could start markup,
    a link or raw HTML is backslash-escaped (CommonMark), newlines joined."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _fenced(text) -> list:
    """``text`` in a code fence longer than any run of backticks inside it, so
    nothing in it can end the block (CommonMark)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _summary_md(df, title) -> str:
    total = len(df)
    counts = df["status"].value_counts()
    head = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    parts = [f"# {title}", "", f"{total} checks on {df['case_id'].nunique()} graphs: {head}.", "",
             "## By op, source pair, dtype and device", "", _markdown_table(summarize(df)), ""]
    kinds = df.groupby("check")["status"].value_counts().unstack(fill_value=0).reindex(columns=list(STATUSES),
                                                                                       fill_value=0)
    if len(kinds) > 1:  # a section per order and mode when the run checked more than first-order reverse mode
        parts[4:4] = ["## By order and mode", "", _markdown_table(kinds.reset_index()), ""]
    worst = worst_cases(df)
    parts += ["## Worst cases", ""]
    if worst.empty:
        parts.append("No check failed.")
    for r in worst.itertuples(index=False):
        parts.append(f"### {_md(r.status)}: op {_md(r.op)}{_md(_kind(r))}, tensor {_md(r.tensor or '-')} "
                     f"({_md(r.pair)}, {_md(r.dtype)}, {_md(r.device)}), case {_md(r.case_id)}")
        parts.append("")
        parts.extend(_fenced(str(r.message).strip()))
        if r.replay:
            parts.append("replay:")
            parts.extend(_fenced(f"gradcheck repro {r.replay}"))
        parts.append("")
    return "\n".join(parts) + "\n"


def _plot_op(df_op, op) -> str:
    """A PNG (base64) of log10(error/tolerance) per source pair and dtype, with the
    tolerance line at ratio 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judged = df_op[df_op["status"].isin(["pass", "fail", "nondifferentiable"]) & df_op["ratio"].notna()]
    groups = list(judged.groupby(["pair", "dtype"]))
    with plt.rc_context({"text.parse_math": False}):  # names are text: a "$" in one is no formula
        return _draw_op(plt, groups, op)


def _draw_op(plt, groups, op) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * max(len(groups), 1)), dpi=90)
    for y, ((pair, dtype), g) in enumerate(groups):
        ratio = g["ratio"].clip(lower=1e-12).astype(float)
        colors = ["#c0392b" if s == "fail" else "#7f8c8d" if s == "nondifferentiable" else "#2e86c1"
                  for s in g["status"]]
        jitter = [(hash((i, y)) % 100) / 400 - 0.125 for i in range(len(ratio))]
        ax.scatter([math.log10(v) for v in ratio], [y + j for j in jitter], s=9, c=colors, alpha=0.7)
    ax.axvline(0.0, color="#c0392b", linewidth=1.2, linestyle="--")
    ax.text(0.02, -0.6, "tolerance", color="#c0392b", fontsize=8)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{pair} [{dtype}]" for (pair, dtype), _ in groups], fontsize=7)
    ax.set_xlabel("log10(error / tolerance)  (right of the dashed line fails)", fontsize=8)
    ax.set_title(f"{op}: error/tolerance per check", fontsize=9)
    ax.set_ylim(-0.8, max(len(groups), 1) - 0.2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:0.6em;font-size:12px;overflow:auto}
.fail{color:#c0392b;font-weight:bold}nav a{margin-right:0.6em;font-size:13px}"""


def _report_html(df, title) -> str:
    esc = html.escape
    counts = df["status"].value_counts()
    head = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    ops = sorted(df["op"].fillna("").unique())
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1><p>{len(df)} checks on {df['case_id'].nunique()} graphs: {esc(head)}.</p>",
           "<nav>" + "".join(f"<a href='#op-{esc(op)}'>{esc(op or '(case)')}</a>" for op in ops) + "</nav>",
           "<h2>Summary by op, source pair, dtype and device</h2>",
           summarize(df).to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)]
    worst = worst_cases(df)
    out.append("<h2>Worst cases</h2>")
    if worst.empty:
        out.append("<p>No check failed.</p>")
    for r in worst.itertuples(index=False):
        out.append(f"<h3 class='fail'>{esc(r.status)}: op {esc(str(r.op))}{esc(_kind(r))}, tensor {esc(str(r.tensor) or '-')} "
                   f"({esc(r.pair)}, {esc(r.dtype)})</h3><pre>{esc(str(r.message))}</pre>")
        if r.replay:
            out.append(f"<p>replay: <code>gradcheck repro {esc(r.replay)}</code></p>")
    for op in ops:
        d = df[df["op"].fillna("") == op]
        out.append(f"<section id='op-{esc(op)}'><h2>{esc(op or '(whole case)')}</h2>")
        out.append(f"<img alt='error/tolerance for {esc(op)}' src='data:image/png;base64,{_plot_op(d, op)}'>")
        out.append(summarize(d).to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def build_report(directory, csv=False, title=None) -> dict:
    """(Re)build records.parquet, summary.md and report.html of a run folder from
    its records; returns the paths written."""
    directory = Path(directory)
    df = read_records(directory)
    if df.empty:
        raise ValueError(f"{directory}: no records")
    skipped = df.attrs.get("skipped_lines", 0)
    title = title or f"gradcheck report: {directory.name}"
    paths = {}
    table = df.drop(columns=["pair", "check"])
    paths["parquet"] = directory / "records.parquet"
    table.to_parquet(paths["parquet"], index=False)
    if csv:
        paths["csv"] = directory / "records.csv"
        table.to_csv(paths["csv"], index=False)
    paths["summary"] = directory / "summary.md"
    paths["summary"].write_text(_summary_md(df, title))
    paths["html"] = directory / "report.html"
    paths["html"].write_text(_report_html(df, title))
    if skipped:
        paths["skipped_lines"] = skipped
    return paths


KEY = ["case_id", "seed", "check", "tensor", "source_a", "source_b", "dtype", "device"]


def compare_runs(old, new, growth=10.0) -> pd.DataFrame:
    """Regressions from run ``old`` to run ``new``: checks that passed before and
    fail (or error) now, and judged checks whose error/tolerance grew more than
    ``growth`` times."""
    a, b = read_records(old), read_records(new)
    for name, df in ((old, a), (new, b)):
        if df.empty:
            raise ValueError(f"{name}: the run has no records to compare")
    merged = a[KEY + ["op", "status", "ratio"]].merge(b[KEY + ["op", "status", "ratio", "message", "replay"]],
                                                      on=KEY + ["op"], suffixes=("_old", "_new"))
    newly = merged["status_old"].eq("pass") & merged["status_new"].isin(["fail", "error"])
    grew = (merged["status_old"].isin(["pass", "fail"]) & merged["status_new"].isin(["pass", "fail"])
            & (merged["ratio_old"] > 0) & (merged["ratio_new"] > growth * merged["ratio_old"]))
    out = merged[newly | grew].copy()
    out["why"] = ["now fails" if n else f"error/tolerance grew {rn / ro:.3g}x"
                  for n, rn, ro in zip(newly[newly | grew], out["ratio_new"], out["ratio_old"])]
    return out
