"""Replay files: one self-contained JSON file per failing check, which
``gradcheck repro FILE`` replays from any folder.

A file holds the case (graph, seed, dtype, value scale, quantisation), the two
sources as specs that round-trip every setting, the records that failed, and,
when a candidate's code was checked, who that candidate is (name, version,
where it was loaded from).  It never chooses code to run: the candidate is
given on the command line (``--candidate TARGET``) and only checked against the
name the file expects.  Gradient checks and optimizer trajectories are replayed
alike; every failing check of ``gradcheck run`` and of the pytest suites lands
in the same folder, ``<report dir>/cases/``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .case import Case
from .graph import Graph, GraphError
from .optim.trajectory import Trajectory
from .sources.base import candidate_of

__all__ = ["CASE_FORMAT", "ReplayFile", "ReplayError", "cases_dir", "write_gradient_case", "write_optimizer_case",
           "read_replay", "replay_command", "candidate_of"]

CASE_FORMAT = "gradcheck-case/2"
KINDS = ("gradients", "optimizer")


class ReplayError(ValueError):
    """A replay file that cannot be read or replayed as it is (a usage error)."""


def cases_dir() -> Path:
    """Where failing checks write their replay files: ``$GRADCHECK_REPORT_DIR/cases``
    (a run's report folder) or ``reports/cases``."""
    return Path(os.environ.get("GRADCHECK_REPORT_DIR") or "reports") / "cases"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150] or "case"


def _write(path, doc) -> Path:
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)
    return path


def _common(kind, a, b, records, candidate):
    return {"format": CASE_FORMAT, "kind": kind, "source_a": a, "source_b": b,
            "candidate": candidate.identity if candidate is not None else None,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0],
            "records": [{k: v for k, v in r.to_dict().items() if k != "graph"} for r in records]}


def write_gradient_case(path, case, a, b, records=(), outputs=False) -> Path:
    """Write the replay file of a gradient check of source ``a`` against ``b``."""
    candidate = candidate_of(a) or candidate_of(b)
    doc = _common("gradients", a.spec, b.spec, records, candidate)
    doc.update({"case_id": case.graph.case_id, "graph": case.graph.to_dict(), "seed": case.seed, "dtype": case.dtype,
                "scale": case.scale, "quantize": case.quantize, "offset": case.offset, "outputs": outputs})
    return _write(path, doc)


def write_optimizer_case(path, trajectory, a, b, records=()) -> Path:
    """Write the replay file of an optimizer trajectory of runner ``a`` against ``b``."""
    candidate = a.candidate or b.candidate
    doc = _common("optimizer", a.spec, b.spec, records, candidate)
    doc.update({"case_id": trajectory.case_id, "trajectory": json.loads(trajectory.to_json())})
    return _write(path, doc)


@dataclass
class ReplayFile:
    path: Path
    doc: dict

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def candidate(self) -> dict | None:
        return self.doc.get("candidate")

    @property
    def specs(self) -> tuple:
        return self.doc.get("source_a") or "", self.doc.get("source_b") or ""

    def case(self):
        """The ``Case`` (gradient checks); build it after loading any candidate, whose
        declared ops the graph may use."""
        def _number(v, what):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{what} must be a number, got {v!r}")
            return float(v)

        d = self.doc
        for key in ("graph", "seed", "dtype", "scale"):
            if key not in d:
                raise ReplayError(f"{self.path}: the case has no {key!r}")
        try:
            seed = d["seed"]
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
            return Case(Graph.from_dict(d["graph"]), seed, str(d["dtype"]), _number(d["scale"], "scale"),
                        _number(d.get("quantize", 0.0), "quantize"), _number(d.get("offset", 0.0), "offset"))
        except GraphError as e:
            raise ReplayError(f"{self.path}: not a valid graph: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ReplayError(f"{self.path}: not a valid case: {e}") from None

    def trajectory(self):
        try:
            return Trajectory.from_dict(self.doc["trajectory"])
        except (KeyError, TypeError, ValueError) as e:
            raise ReplayError(f"{self.path}: not a valid trajectory: {e}") from None


def read_replay(path) -> ReplayFile:
    """Read and check the outer form of a replay file; nothing in it is run."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ReplayError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReplayError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ReplayError(f"{path}: not a gradcheck case file (a JSON {type(doc).__name__}, expected an object)")
    if doc.get("format") != CASE_FORMAT:
        raise ReplayError(f"{path}: not a gradcheck case file (format {doc.get('format')!r}, expected "
                          f"{CASE_FORMAT!r})")
    if doc.get("kind") not in KINDS:
        raise ReplayError(f"{path}: unknown kind {doc.get('kind')!r}; expected one of {KINDS}")
    cand = doc.get("candidate")
    if cand is not None and not (isinstance(cand, dict) and isinstance(cand.get("name"), str)):
        raise ReplayError(f"{path}: the candidate entry must be an object with a name")
    for key in ("source_a", "source_b"):
        if not isinstance(doc.get(key, ""), str):
            raise ReplayError(f"{path}: {key} must be a source spec string")
    return ReplayFile(path, doc)


def replay_command(path, source_a=None, source_b=None) -> str:
    """The one command that replays ``path`` from any folder."""
    path = Path(path).resolve()
    candidate = candidate_of(source_a) or candidate_of(source_b)
    cmd = f"gradcheck repro {_quote(str(path))}"
    if candidate is not None:
        target = candidate.identity["target"] or "TARGET"
        cmd += f" --candidate {_quote(target)}"
    return cmd


def _quote(text):
    import shlex

    return shlex.quote(text)
