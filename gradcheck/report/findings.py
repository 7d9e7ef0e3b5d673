"""Findings: the failing records of a run grouped into distinct failures.

Note [Findings]
~~~~~~~~~~~~~~~
One bug fails many checks: every random graph holding the op, every tensor
upstream of it, every step of an optimizer's trajectory after the first wrong
one.  A report that lists the worst fifteen records shows one bug fifteen
times and hides the second.  A finding is one (op under test, kind of check,
tensor role, source pair, kind of disagreement): the role is what the tensor
is in its graph (an input, a parameter, a constant, an op's output, the whole
case, every tensor at once; for an optimizer, a parameter or one of its state
buffers), and the kind of disagreement is "mismatch" for a judged failure and
the first line of the message, its numbers blanked, for an error.  Each finding
keeps every record it groups (the drill-down), the worst of them (the element
the card shows), and a representative: the record on the smallest graph, which
is the shrunk one when the run shrank, and otherwise the easiest to read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Finding", "findings", "role_of", "disagreement"]

BAD = ("fail", "error")
_NUMBER = re.compile(r"[-+]?\d[\d.,eE+-]*")


@dataclass
class Finding:
    op: str
    check: str
    role: str
    pair: str
    kind: str
    records: pd.DataFrame  # every record of the finding, worst first
    representative: pd.Series
    graphs: dict = field(default_factory=dict)  # case_id -> parsed graph JSON

    @property
    def worst(self) -> pd.Series:
        return self.records.iloc[0]

    @property
    def cases(self) -> int:
        return int(self.records["case_id"].nunique())

    @property
    def status(self) -> str:
        return "fail" if self.records["status"].eq("fail").any() else "error"

    @property
    def title(self) -> str:
        check = "" if self.check == "rev" else f" ({self.check})"
        role = f", {self.role}" if self.role else ""
        return f"{self.op or 'whole case'}{check}{role}: {self.kind}"

    @property
    def anchor(self) -> str:
        return "finding-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.op}-{self.check}-{self.role}-{self.pair}-{self.kind}")


def _graph(text) -> dict:
    try:
        g = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return g if isinstance(g, dict) else {}


def role_of(graph: dict, tensor: str, step: int = 0) -> str:
    """What ``tensor`` is in its graph (Note [Findings])."""
    if step:
        return "buffer " + tensor.split(".", 1)[1] if "." in tensor else ("parameter" if tensor else "step")
    if not tensor:
        return "whole case"
    if tensor == "(all tensors)":
        return "all tensors"
    for leaf in graph.get("leaves", ()):
        if leaf.get("name") == tensor:
            return {"param": "parameter", "const": "constant"}.get(leaf.get("role"), leaf.get("role", "leaf"))
    if any(n.get("name") == tensor for n in graph.get("nodes", ())):
        return "output"
    return "tensor"


def disagreement(status: str, message: str) -> str:
    """The kind of disagreement of a bad record (Note [Findings])."""
    if status == "fail":
        return "mismatch"
    first = str(message or "").strip().split("\n", 1)[0]
    first = re.sub(r"^step # of #[:,] ", "", _NUMBER.sub("#", first))
    return first[:90] or "error"


def _size(graph: dict) -> int:
    return len(graph.get("nodes", ())) or len(graph.get("leaves", ())) or 10**6


def findings(df: pd.DataFrame) -> list:
    """The distinct failures of a run, most cases first (Note [Findings])."""
    bad = df[df["status"].isin(BAD)].copy()
    if bad.empty:
        return []
    graphs = {cid: _graph(text) for cid, text in bad.groupby("case_id")["graph"].first().items()} \
        if "graph" in bad else {}
    steps = bad["step"].fillna(0).astype(int) if "step" in bad else pd.Series(0, bad.index)
    bad["role"] = [role_of(graphs.get(c, {}), str(t or ""), s) for c, t, s in zip(bad["case_id"], bad["tensor"], steps)]
    bad["kind"] = [disagreement(s, m) for s, m in zip(bad["status"], bad["message"])]
    bad["size"] = [_size(graphs.get(c, {})) for c in bad["case_id"]]
    bad["order_key"] = bad["ratio"].fillna(math.inf)
    out = []
    for (op, check, role, pair, kind), g in bad.groupby([bad["op"].fillna(""), "check", "role", "pair", "kind"],
                                                        sort=False):
        g = g.sort_values("order_key", ascending=False, kind="stable")
        rep = g.sort_values(["size", "order_key"], ascending=[True, False], kind="stable").iloc[0]
        out.append(Finding(op, check, role, pair, kind, g.drop(columns=["order_key"]), rep,
                           {c: graphs.get(c, {}) for c in g["case_id"].unique()}))
    return sorted(out, key=lambda f: (-f.cases, -_ratio(f.worst["ratio"]), f.op, f.pair))


def _ratio(v) -> float:
    v = float(v)
    return math.inf if math.isnan(v) else v
