"""The catalogue sweep: every op alone, on each of its samples, against every
source pair: the reference VJP against finite differences of its own forward
(central, Richardson, complex step), torch autograd against the reference, and
torch against finite differences of its own forward."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .check import check_pair, op_cases
from .ops import CATALOGUE
from .sources import FiniteDifferences, ReferenceSource

__all__ = ["Pair", "default_pairs", "worst", "ops_to_run"]


@dataclass(frozen=True)
class Pair:
    label: str  # column name in the table
    a: object
    b: object
    outputs: bool = False
    dtype: str | None = None  # the case dtype this pair runs in (default: the run's)


def default_pairs(dtype="float64", device="cpu", torch=True, methods=("central", "richardson", "complex")):
    """The source pairs of the sweep.  Finite differences run in the case dtype;
    torch is compared with a float64 reference on the same (rounded) values."""
    ref = ReferenceSource()
    pairs = [Pair(f"ref~{m}", ref, FiniteDifferences(ref, m)) for m in methods if dtype in ("float64", "float32")]
    if torch:
        from .backends.torch_autograd import TorchSource

        t = TorchSource(device=device, dtype=dtype)
        pairs.append(Pair(f"{t.name}~ref", t, ReferenceSource(compute_dtype="float64"), outputs=True))
        if dtype in ("float64", "float32"):
            pairs.append(Pair(f"{t.name}~central", t, FiniteDifferences(t, "central")))
    return pairs


def worst(records) -> tuple:
    """(worst relative error, status) of a group of records for a table cell."""
    judged = [r for r in records if r.status in ("pass", "fail", "nondifferentiable")]
    rel = max((r.max_rel_err for r in judged), default=math.nan)
    for status in ("error", "fail", "nondifferentiable", "pass", "skipped"):
        if any(r.status == status for r in records):
            return rel, status
    return rel, "skipped"


def ops_to_run(names=None):
    if not names:
        return list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise KeyError(f"unknown op {unknown[0]!r}; the catalogue has {sorted(CATALOGUE)}")
    return list(names)
