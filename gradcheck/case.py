"""A case: a graph with the values it runs on (seed, dtype, value scale,
quantisation), and the one table of dtypes the harness knows.

Float values are drawn in float64 and rounded, so the float32 case is the
float64 case rounded to float32 and the two can be compared directly.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from .catalogue import CONST, INPUT, get_op
from .graph import Graph, GraphError, Leaf, single_op_graph

__all__ = ["Case", "DType", "DTYPES", "DIFFERENTIABLE_DTYPES", "materialize", "round_to", "op_cases", "eps_of"]


@dataclass(frozen=True)
class DType:
    """What the harness needs of a float dtype: its unit roundoff, and whether
    finite differences are taken in it (in float16 and bfloat16 a difference
    quotient is all rounding: those are compared with the float64 reference only)."""

    eps: float
    differences: bool
    complex: str | None = None  # the complex dtype of the complex step


DTYPES = {
    "float64": DType(float(np.finfo(np.float64).eps), True, "complex128"),
    "float32": DType(float(np.finfo(np.float32).eps), True, "complex64"),
    "float16": DType(float(np.finfo(np.float16).eps), False),
    "bfloat16": DType(2.0**-7, False),
}
DIFFERENTIABLE_DTYPES = tuple(d for d, info in DTYPES.items() if info.differences)


def eps_of(dtype) -> float:
    """The machine epsilon of ``dtype`` (a name or a NumPy dtype): twice its unit roundoff."""
    name = dtype if isinstance(dtype, str) else str(np.dtype(dtype))
    try:
        return DTYPES[name].eps
    except KeyError:
        raise ValueError(f"no such dtype {name!r}; use one of {sorted(DTYPES)}") from None


@dataclass(frozen=True)
class Case:
    """A graph with the values to run it on."""

    graph: Graph
    seed: int = 0
    dtype: str = "float64"
    scale: float = 1.0
    quantize: float = 0.0  # > 0: data inputs rounded to multiples of it (ties, exact zeros)
    offset: float = 0.0  # added to data inputs: a large mean beside the spread (Note [Value regimes])

    def __post_init__(self):
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        if not (isinstance(self.quantize, (int, float)) and math.isfinite(self.quantize) and self.quantize >= 0):
            raise ValueError(f"quantize must be a finite number >= 0, got {self.quantize!r}")
        if not (isinstance(self.offset, (int, float)) and math.isfinite(self.offset)):
            raise ValueError(f"offset must be a finite number, got {self.offset!r}")

    def tensors(self):
        return materialize(self.graph, self.seed, self.dtype, self.scale, self.quantize, self.offset)


_DATA_INIT = {"kind": "normal", "std": 1.0}  # the default init of an input leaf: what an offset moves


def _leaf_rng(seed: int, name: str):
    # Each leaf draws from its own stream, so adding or removing one leaf does not
    # change the values of the others (shrinking relies on this).
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def _draw(leaf: Leaf, rng, scale: float):
    init, shape = leaf.init, leaf.shape
    kind = init.get("kind", "normal")
    if kind == "normal":
        s = scale if leaf.role != CONST else 1.0
        return init.get("mean", 0.0) + s * init.get("std", 1.0) * rng.standard_normal(shape)
    if kind == "uniform":
        return rng.uniform(init.get("low", 0.0), init.get("high", 1.0), shape)
    if kind == "randint":
        ids = rng.integers(init.get("low", 0), init["high"], shape)
        if "some" in init and ids.size > 1 and not np.any(ids == init["some"]):
            ids.flat[-1] = init["some"]  # an ignore_index some row uses: else the setting checks nothing
        if "not_all" in init and ids.size and np.all(ids == init["not_all"]):
            # some id other than this one (an ignore_index that would leave nothing to average)
            ids.flat[0] = (init["not_all"] + 1 - init.get("low", 0)) % (init["high"] - init.get("low", 0)) + init.get("low", 0)
        return ids
    if kind == "mask":
        return (rng.random(shape) >= init["p"]).astype(np.float64)
    if kind == "sign":  # -1 or 1: the labels of margin losses
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    if kind == "label_lists":  # each row: distinct class ids, then -1 (multilabel_margin's targets)
        rows = np.full(shape, -1, dtype=np.int64)
        for row in rows.reshape(-1, shape[-1]):
            k = rng.integers(1, shape[-1] + 1)
            row[:k] = rng.permutation(shape[-1])[:k]
        return rows
    if kind == "distinct":  # ids distinct within each plane (N, C, ...): a max pool's indices, for max_unpool
        planes = np.empty(shape, dtype=np.int64).reshape(int(np.prod(shape[:2])), -1)
        for plane in planes:
            plane[:] = rng.choice(int(init["high"]), plane.size, replace=False)
        return planes.reshape(shape)
    raise GraphError(f"leaf {leaf.name!r}: unknown init kind {kind!r}")


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype``; float16 and bfloat16 values come back as float32
    arrays holding exactly the representable values."""
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        # Round to nearest even on the upper 16 bits of the float32 pattern.
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.astype(np.uint32).view(np.float32)
    return x.astype(dtype)


def materialize(graph: Graph, seed: int, dtype: str = "float64", scale: float = 1.0, quantize: float = 0.0,
                offset: float = 0.0) -> dict:
    """Arrays for every leaf, drawn from ``seed``; float leaves in ``dtype``.

    Float values are drawn in float64 and rounded, so the float32 case is the
    float64 case rounded to float32 and the two can be compared directly.  For
    float16 and bfloat16 the rounded values are held in float32 arrays: every
    source then starts from identical inputs, and a comparison measures only the
    arithmetic, not the rounding of the inputs.  ``quantize`` > 0 rounds input
    leaves (data, not parameters) to multiples of it, as integer-valued data
    (pixels) would be: exact ties and exact zeros then occur.

    Note [Value regimes]
    ~~~~~~~~~~~~~~~~~~~~
    Backward passes break in regimes unit normals never reach, so cases vary
    the values three ways: ``scale`` (up to 4: large logits, saturated
    activations, losses near their range), ``quantize`` (ties and exact zeros at
    kinks) and ``offset``, added to the data inputs drawn around 0: a mean of
    1,000 beside a spread of 1 is where a variance computed as E[x^2] - E[x]^2
    loses most of float32's digits (a layer norm or batch norm written that
    way), while a two-pass variance keeps them.  At a mean of 100 such a layer
    norm was wrong by one to six times its tolerance, and whether a draw showed
    it depended on how float32's pairwise sums happened to round (NumPy's vary
    with the alignment of the arrays); at 1,000 it is wrong by 20 to 700 times.
    A normalisation draws three values a group at least (two normalise to
    +-1 whatever they are, their gradient a cancellation through eps that
    float32 cannot resolve at such a mean).  ``cases()`` draws the offset
    for low-precision cases only: in float64 it costs finite differences more
    digits (about 2 of them, amplified by every cancellation x - mean) than any
    one-pass variance loses there.  A regime that leaves the
    dtype's range is recorded as such (Note [Out of range]), one across a kink
    as nondifferentiable, never as a failure of a correct implementation.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = {}
    for leaf in graph.leaves:
        value = _draw(leaf, _leaf_rng(seed, leaf.name), scale)
        if offset and leaf.role == INPUT and leaf.dtype == "float" and dict(leaf.init) == _DATA_INIT:
            value = value + offset  # data, drawn around 0: not probabilities, variances or a recurrent state
        if quantize and leaf.role == INPUT and leaf.dtype == "float":
            value = np.round(value / quantize) * quantize
        out[leaf.name] = value.astype(np.int64) if leaf.dtype == "int" else round_to(value, dtype)
    return out


def op_cases(op_name: str, dtype: str = "float64", seed: int = 0):
    """A ``Case`` per catalogue sample of the op: the op alone, probed by a random cotangent."""
    op = get_op(op_name)
    return [Case(single_op_graph(op_name, s), seed + i, dtype) for i, s in enumerate(op.samples)]
