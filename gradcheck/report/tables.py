"""The run as tables: the summary by op, source pair, dtype and device, and the
three Parquet files pandas reads back.

Note [Report tables]
~~~~~~~~~~~~~~~~~~~~
``runs.parquet`` has one row: the run's information (Note [Run information])
and its counts.  ``cases.parquet`` has one row a case: its id, seed and graph
JSON (or an optimizer trajectory's JSON), written once, where every record
used to carry it.  ``records.parquet`` has one row a check, referring to both
by ``run_id`` and ``case_id``; its ``index`` is the worst element as a list of
ints, ``step`` the step of an optimizer record (0 elsewhere), ``op`` the op under
test and ``consumer`` the op that consumes the tensor, apart.  Join them with
``records.merge(cases, on="case_id")``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .records import GROUP, STATUSES

__all__ = ["summarize", "group_columns", "worst_status", "write_tables", "read_tables", "parse_index"]

SEVERITY = {"fail": 4, "error": 3, "nondifferentiable": 2, "skipped": 1, "pass": 0}


def group_columns(df) -> list:
    """GROUP, with the kind of check after the op when there is more than one."""
    return GROUP[:1] + ["check"] + GROUP[1:] if "check" in df and df["check"].nunique() > 1 else GROUP


def worst_status(counts: pd.DataFrame) -> pd.Series:
    """The most severe status with a nonzero count, row by row."""
    order = sorted(STATUSES, key=SEVERITY.get, reverse=True)
    return counts[order].gt(0).idxmax(axis=1).where(counts[order].gt(0).any(axis=1), "pass")


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Counts of each status by op, source pair, dtype and device (and the kind
    of check, when a run holds more than first-order reverse mode), with the
    worst error/tolerance ratio among judged checks."""
    group = group_columns(df)
    counts = (df.groupby(group + ["status"]).size().unstack("status", fill_value=0)
              .reindex(columns=list(STATUSES), fill_value=0))
    judged = df[df["status"].isin(["pass", "fail"])]
    worst = judged.groupby(group)["ratio"].max().rename("worst ratio")
    out = counts.join(worst, how="left").reset_index()
    return out.sort_values(["fail", "error", "worst ratio"], ascending=False, kind="stable")


_INT = re.compile(r"-?\d+")


def parse_index(text) -> list:
    """A record's worst element, "(0, 1)", as [0, 1]; [] for none."""
    if isinstance(text, (list, tuple)):
        return [int(i) for i in text]
    return [int(i) for i in _INT.findall(str(text))] if text not in (None, "") else []


def _run_row(info: dict, df: pd.DataFrame, run_id: str) -> dict:
    counts = df["status"].value_counts()
    versions = info.get("versions") or {}
    row = {"run_id": run_id, "command": info.get("command", ""), "started": info.get("started", ""),
           "duration": info.get("duration"), "seed": info.get("seed"), "profile": info.get("profile", ""),
           "device": info.get("device", ""), "dtype": info.get("dtype", ""), "git": info.get("git", ""),
           "host": info.get("host", ""), "interrupted": bool(info.get("interrupted", False)),
           "candidates": json.dumps(info.get("candidates") or []), "checks": len(df),
           "cases": int(df["case_id"].nunique()), **{s: int(counts.get(s, 0)) for s in STATUSES}}
    row.update({f"{k}_version": v for k, v in versions.items()})
    return row


def write_tables(directory, df: pd.DataFrame, info: dict, csv: bool = False) -> dict:
    """runs.parquet, cases.parquet and records.parquet (Note [Report tables])."""
    directory = Path(directory)
    run_id = info.get("run_id") or directory.name
    cases = (df[["case_id", "seed", "graph"]].drop_duplicates("case_id") if "graph" in df
             else df[["case_id", "seed"]].drop_duplicates("case_id"))
    records = df.drop(columns=[c for c in ("graph", "pair", "check") if c in df]).copy()
    records.insert(0, "run_id", run_id)
    records["index"] = [parse_index(v) for v in records.get("index", pd.Series("", records.index))]
    records["step"] = pd.to_numeric(records["step"], errors="coerce").fillna(0).astype(int) \
        if "step" in records else 0
    consumer = records["consumer"].fillna("") if "consumer" in records else pd.Series("", records.index)
    records["consumer"] = consumer.where(consumer != "", records["op"])
    paths = {"runs": directory / "runs.parquet", "cases": directory / "cases.parquet",
             "parquet": directory / "records.parquet"}
    pd.DataFrame([_run_row(info, df, run_id)]).to_parquet(paths["runs"], index=False)
    cases.to_parquet(paths["cases"], index=False)
    records.to_parquet(paths["parquet"], index=False)
    if csv:
        paths["csv"] = directory / "records.csv"
        records.to_csv(paths["csv"], index=False)
    return paths


def read_tables(directory) -> tuple:
    """(runs, cases, records) of a run folder's Parquet files."""
    directory = Path(directory)
    return tuple(pd.read_parquet(directory / f"{name}.parquet") for name in ("runs", "cases", "records"))
