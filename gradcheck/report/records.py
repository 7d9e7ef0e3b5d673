"""Records streamed to disk as checks finish, and read back as a DataFrame.

``records.jsonl`` holds one ``CheckRecord`` a line, appended as checks finish (a
run killed half-way keeps what it checked; a half-written last line is skipped
on read); ``run.json`` says what the run was (Note [Run information]).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

__all__ = ["RecordSink", "LineSink", "record_line", "read_records", "new_run_dir", "check_kind", "write_run_info", "finish_run_info",
           "read_run_info", "RECORDS", "RUN_INFO", "STATUSES", "GROUP"]

RECORDS = "records.jsonl"
RUN_INFO = "run.json"
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

    def __init__(self, directory, name=RECORDS):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / name
        self._file = open(self.path, "a", encoding="utf-8")
        self.count = 0

    def add_lines(self, lines) -> int:
        """Append records already written as JSON lines (by a worker process);
        returns how many."""
        n = 0
        for line in lines:
            self._file.write(line if line.endswith("\n") else line + "\n")
            n += 1
        self._file.flush()
        self.count += n
        return n

    def merge(self, path) -> int:
        """Append another records file (a pytest-xdist worker's) and remove it;
        returns how many records it held.  A half-written last line is kept as
        it is: reading skips and counts it."""
        path = Path(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            n = self.add_lines(line for line in f if line.strip())
        path.unlink()
        return n

    def add(self, records, **extra):
        """Write records (``CheckRecord``s or dicts); ``extra`` adds columns to each."""
        for r in records:
            self._file.write(record_line(r, **extra))
            self.count += 1
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def record_line(record, **extra) -> str:
    """One record (a ``CheckRecord`` or a dict) as a line of records.jsonl."""
    row = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    row.update(extra)
    return json.dumps(row, default=_jsonable) + "\n"


class LineSink:
    """A sink that keeps the lines it is given (a worker's shard, sent home as text)."""

    def __init__(self):
        self.lines, self.count = [], 0

    def add(self, records, **extra):
        for r in records:
            self.lines.append(record_line(r, **extra))
            self.count += 1


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




# Note [Run information]
# ~~~~~~~~~~~~~~~~~~~~~~
# A report says what was run before what it found: ``run.json``, written when a
# run starts and completed when it ends, holds the command line, seed, profile,
# candidates (name, version, how they were loaded), the versions of the harness,
# torch, numpy, Hypothesis and Python, the git commit of the project checked
# (the working folder's repository, when there is one, "+dirty" when it holds
# uncommitted changes), device, dtype and, at the end, the duration and whether
# the run was interrupted.  A records file without it (an older run, a folder
# of records written by hand) gives a report with what the records say.


def _git_sha(folder) -> str:
    """The commit of the git repository holding ``folder``, "" when there is none."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("gradcheck", "torch", "numpy", "hypothesis", "pandas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def write_run_info(directory, *, seed=None, profile="", candidates=(), device="cpu", dtype="", argv=None,
                   **extra) -> dict:
    """Write ``run.json`` for a run starting now (Note [Run information])."""
    argv = sys.argv if argv is None else argv
    prog = Path(argv[0]).name if argv else "gradcheck"
    info = {"run_id": Path(directory).name,
            "command": shlex.join(["gradcheck" if prog in ("cli.py", "__main__.py", "gradcheck") else prog,
                                   *argv[1:]]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed, "profile": profile,
            "candidates": [dict(c) for c in candidates], "device": device, "dtype": dtype,
            "host": platform.node(), "git": _git_sha(os.getcwd()), "versions": _versions(),
            "duration": None, "interrupted": False, "_t0": time.time(), **extra}
    Path(directory, RUN_INFO).write_text(json.dumps(info, indent=1, default=str))
    return info


def finish_run_info(directory, *, interrupted=False, **extra) -> None:
    """Add the duration (and anything in ``extra``) to ``run.json`` at the end of a run."""
    path = Path(directory, RUN_INFO)
    info = read_run_info(directory)
    if not path.is_file():
        return
    info["duration"] = round(time.time() - info.get("_t0", time.time()), 3)
    info["interrupted"] = bool(interrupted)
    info.update(extra)
    path.write_text(json.dumps(info, indent=1, default=str))


def read_run_info(directory) -> dict:
    """``run.json`` of a run folder, or {} when it has none (or it does not parse)."""
    path = Path(directory, RUN_INFO)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
