"""Gradient-error reports: records streamed to disk, aggregated with pandas.

A run writes ``reports/<run-id>/``:

* ``records.jsonl``: one ``CheckRecord`` a line, appended as checks finish, and
  ``run.json``, what the run was (records.py, Note [Run information]);
* ``runs.parquet``, ``cases.parquet`` and ``records.parquet`` (and
  ``records.csv`` on request): the run, its cases and its checks as tables
  (tables.py, Note [Report tables]);
* ``summary.md`` and ``report.html``: the verdict, the distinct failures
  (findings.py, Note [Findings]), the tables and the plots (page.py);

and ``gradcheck report --compare OLD NEW`` compares two runs (compare.py).

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

from .compare import Comparison, compare_runs, comparison, write_comparison_page
from .findings import Finding, findings
from .page import build_report, render_page, summary_markdown
from .records import (RECORDS, RUN_INFO, STATUSES, RecordSink, finish_run_info, new_run_dir, read_records,
                      read_run_info, write_run_info)
from .tables import read_tables, summarize

__all__ = ["RecordSink", "read_records", "build_report", "summarize", "compare_runs", "comparison", "Comparison", "write_comparison_page",
           "new_run_dir", "findings", "Finding", "render_page", "summary_markdown", "write_run_info",
           "finish_run_info", "read_run_info", "read_tables", "RECORDS", "RUN_INFO", "STATUSES"]
