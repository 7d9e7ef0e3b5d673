"""Comparing two runs: ``gradcheck report --compare OLD NEW``.

Note [Comparing runs]
~~~~~~~~~~~~~~~~~~~~~
Two runs share checks only where they drew the same cases: the same seed and
ops give the same graphs, another seed almost none (each case id is a hash of
the graph).  So a comparison says three things, and how many checks it matched:

1. matched checks (same case, seed, kind of check, tensor, step, sources, dtype
   and device): regressions, a check that passed and fails or errs now, or
   whose error/tolerance grew more than ``growth`` (10x) times;
2. per (op, kind of check, source pair, dtype), whatever the cases: the fail
   rate, worst and median error/tolerance of each run.  A group's fail rate
   has shifted when NEW's failures are unlikely at OLD's rate: the binomial
   probability of at least that many failures in NEW's checks, at OLD's rate
   estimated as (failures + 1) / (checks + 2) (so a group that never failed is
   not taken to be unable to), is below ALPHA divided by the number of groups
   (Bonferroni: a 1% chance of one false shift in the whole comparison).  A
   group's median has shifted when it grew more than ``growth`` times with at
   least MIN_JUDGED judged checks on both sides: a correct implementation's
   median ratio moves by a factor of a few between seeds (it is rounding over a
   tolerance), a wrong gradient moves it by orders of magnitude;
3. every failure in NEW with no counterpart in OLD (no matched check), listed:
   new failures on cases OLD never drew are never dropped.

The command exits 1 when there are regressions or unmatched new failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .records import read_records

__all__ = ["Comparison", "comparison", "compare_runs", "write_comparison_page", "KEY", "ALPHA", "MIN_JUDGED"]

KEY = ["case_id", "seed", "check", "tensor", "step", "source_a", "source_b", "dtype", "device"]
SHIFT_GROUP = ["op", "check", "pair", "dtype"]
ALPHA = 0.01
MIN_JUDGED = 20


@dataclass
class Comparison:
    old: str
    new: str
    old_checks: int
    new_checks: int
    matched: int
    regressions: pd.DataFrame
    shifts: pd.DataFrame  # every group, with "shifted" saying which moved
    unmatched: pd.DataFrame  # failures in NEW with no counterpart in OLD

    @property
    def failed(self) -> bool:
        return bool(len(self.regressions) or len(self.unmatched))

    def lines(self) -> list:
        out = [f"matched {self.matched} of {self.new_checks} checks in {self.new} with {self.old} "
               f"({self.old_checks} checks)"]
        out.append(f"{len(self.regressions)} regression(s) among matched checks" if len(self.regressions)
                   else "no regressions among matched checks")
        for r in self.regressions.itertuples(index=False):
            out.append(f"  {r.why:28s} op {r.op}, tensor {r.tensor or '-'} ({r.source_a} vs {r.source_b}, "
                       f"{r.dtype}, {r.device}), case {r.case_id}: ratio {r.ratio_old:.3g} -> {r.ratio_new:.3g}")
            if r.replay:
                out.append(f"      replay: gradcheck repro {r.replay}")
        shifted = self.shifts[self.shifts["shifted"] != ""]
        out.append(f"{len(shifted)} of {len(self.shifts)} (op, check, pair, dtype) groups shifted")
        for r in shifted.itertuples(index=False):
            out.append(f"  {r.op} ({r.check}), {r.pair}, {r.dtype}: {r.shifted}")
        out.append(f"{len(self.unmatched)} failure(s) in the new run with no counterpart in the old one"
                   if len(self.unmatched) else "every failure of the new run has a counterpart in the old one")
        for r in self.unmatched.itertuples(index=False):
            out.append(f"  {r.status} op {r.op}, tensor {r.tensor or '-'} ({r.pair}, {r.dtype}, {r.device}), "
                       f"case {r.case_id}: ratio {r.ratio:.3g}")
            if r.replay:
                out.append(f"      replay: gradcheck repro {r.replay}")
        return out


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _groups(df: pd.DataFrame) -> pd.DataFrame:
    judged = df[df["status"].isin(["pass", "fail"])]
    out = df.groupby(SHIFT_GROUP).agg(checks=("status", "size"),
                                      failures=("status", lambda s: int(s.isin(["fail", "error"]).sum())))
    stats = judged.groupby(SHIFT_GROUP)["ratio"].agg(judged="size", worst="max", median="median")
    return out.join(stats, how="left").fillna({"judged": 0})


def _with_step(df):
    if "step" not in df:
        df["step"] = 0
    df["step"] = pd.to_numeric(df["step"], errors="coerce").fillna(0).astype(int)
    df["tensor"] = df["tensor"].fillna("")
    return df


def comparison(old, new, growth=10.0) -> Comparison:
    """Compare run folders ``old`` and ``new`` (Note [Comparing runs])."""
    a, b = read_records(old), read_records(new)
    for name, df in ((old, a), (new, b)):
        if df.empty:
            raise ValueError(f"{name}: the run has no records to compare")
    a, b = _with_step(a), _with_step(b)
    old_checks = len(a)
    a = a.drop_duplicates(KEY + ["op"], keep="last")
    merged = a[KEY + ["op", "status", "ratio"]].merge(b[KEY + ["op", "status", "ratio", "message", "replay"]],
                                                      on=KEY + ["op"], suffixes=("_old", "_new"))
    newly = merged["status_old"].eq("pass") & merged["status_new"].isin(["fail", "error"])
    grew = (merged["status_old"].isin(["pass", "fail"]) & merged["status_new"].isin(["pass", "fail"])
            & (merged["ratio_old"] > 0) & (merged["ratio_new"] > growth * merged["ratio_old"]))
    regressions = merged[newly | grew].copy()
    regressions["why"] = ["now fails" if n else f"error/tolerance grew {rn / ro:.3g}x"
                          for n, rn, ro in zip(newly[newly | grew], regressions["ratio_new"],
                                               regressions["ratio_old"])]
    known = set(map(tuple, a[KEY + ["op"]].astype(str).to_numpy()))
    bad_new = b[b["status"].isin(["fail", "error"])]
    has_match = np.array([tuple(row) in known for row in bad_new[KEY + ["op"]].astype(str).to_numpy()], dtype=bool)
    unmatched = bad_new.loc[~has_match].sort_values("ratio", ascending=False, na_position="first")
    shifts = _groups(a).merge(_groups(b), left_index=True, right_index=True, how="outer",
                              suffixes=("_old", "_new")).reset_index()
    limit = ALPHA / max(len(shifts), 1)
    reasons = []
    for r in shifts.itertuples(index=False):
        why = []
        n_old, k_old = (0 if pd.isna(r.checks_old) else int(r.checks_old)), (0 if pd.isna(r.failures_old) else int(r.failures_old))
        n_new, k_new = (0 if pd.isna(r.checks_new) else int(r.checks_new)), (0 if pd.isna(r.failures_new) else int(r.failures_new))
        if n_new and k_new:
            p = _binomial_tail(k_new, n_new, (k_old + 1) / (n_old + 2))
            if p < limit:
                why.append(f"fail rate {k_old}/{n_old} -> {k_new}/{n_new} (p = {p:.2g} < {limit:.2g})")
        if (r.judged_old >= MIN_JUDGED and r.judged_new >= MIN_JUDGED and r.median_old > 0
                and r.median_new > growth * r.median_old):
            why.append(f"median error/tolerance {r.median_old:.3g} -> {r.median_new:.3g}")
        reasons.append("; ".join(why))
    shifts["shifted"] = reasons
    return Comparison(str(old), str(new), old_checks, len(b), len(merged), regressions, shifts, unmatched)


def compare_runs(old, new, growth=10.0) -> pd.DataFrame:
    """Regressions from run ``old`` to run ``new`` among matched checks: checks
    that passed before and fail (or error) now, and judged checks whose
    error/tolerance grew more than ``growth`` times."""
    return comparison(old, new, growth).regressions


def write_comparison_page(result: Comparison, path) -> Path:
    """The comparison as one self-contained page in the report's style."""
    from .page import cell_text, environment, sort_value

    regressions = [{"why": r.why, "op": r.op, "tensor": r.tensor or "-", "pair": f"{r.source_a} vs {r.source_b}",
                    "dtype": r.dtype, "case_id": r.case_id, "old": cell_text(r.ratio_old), "old_v": sort_value(r.ratio_old),
                    "new": cell_text(r.ratio_new), "new_v": sort_value(r.ratio_new),
                    "replay": f"gradcheck repro {r.replay}" if r.replay else ""}
                   for r in result.regressions.itertuples(index=False)]
    unmatched = [{"status": r.status, "op": r.op, "tensor": r.tensor or "-", "pair": r.pair, "dtype": r.dtype,
                  "case_id": r.case_id, "ratio": cell_text(r.ratio), "ratio_v": sort_value(r.ratio),
                  "replay": f"gradcheck repro {r.replay}" if r.replay else ""}
                 for r in result.unmatched.itertuples(index=False)]
    columns = list(result.shifts.columns)
    shifts = [([(cell_text(v), sort_value(v)) for v in row], row[-1]) for row in result.shifts.itertuples(index=False)]
    html = environment().get_template("compare.html.j2").render(
        c=result, word="FAIL" if result.failed else "PASS", regressions=regressions, unmatched=unmatched,
        shifted=[s for s in shifts if s[1]], shifts=shifts, shift_columns=columns)
    path = Path(path)
    path.write_text(html)
    return path
