"""What every gradient source is: the ``Source`` base class, whose optional parts
are declared here (with their defaults) rather than found by probing, and the
``SourceResult`` each run returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..catalogue import get_op
from ..graph import Graph

__all__ = ["Source", "SourceResult", "Unsupported", "ANALYTIC", "branch_signature", "dtype_of", "candidate_of",
           "rademacher", "split"]

ANALYTIC = "analytic"


class Unsupported(NotImplementedError):
    """A source cannot run this graph in this configuration (dtype, device, complex
    input, a setting a candidate declared it does not take): the check is recorded
    as ``skipped``, not as an error."""


@dataclass
class SourceResult:
    source: str
    kind: str  # "analytic", or the finite-difference method
    loss: float
    grads: dict  # leaf name -> array (full mode)
    outputs: dict = field(default_factory=dict)  # node name -> forward output
    grad_errors: dict = field(default_factory=dict)  # leaf name -> predicted abs error (finite differences)
    grad_kinks: dict = field(default_factory=dict)  # leaf name -> bool mask: stencil crossed a kink
    output_errors: dict = field(default_factory=dict)  # node name -> predicted abs error of the output
    directional: dict = field(default_factory=dict)  # leaf name -> (directions (k, *shape), FDResult (k,))
    joint: tuple | None = None  # ([{leaf: direction}] * k, FDResult (k,)): every tensor perturbed at once
    dtype: str = "float64"
    device: str = "cpu"
    seconds: float = 0.0
    nondeterminism: float | None = None  # largest difference between two backward passes
    direction_seed: int | None = None  # finite differences: the seed their random directions were drawn from


class Source:
    """A gradient source: ``run`` gives a graph's loss, the gradient of every
    differentiable leaf and (analytic sources) every node's output; ``forward``
    the loss alone.  The rest is optional, declared here with its default:

    * ``spec``: how ``parse_source`` rebuilds it ("" for one built in code);
    * ``provides``: the ops whose VJP is its own (a candidate's ops; every op for
      the reference); ``candidate``: the Candidate whose code it runs, if any;
    * ``accepts(op, hyper, shapes)``: the settings it takes (None: any);
    * ``dtype``: the dtype it computes in whatever the case's (None: the case's);
    * ``steps_along``: it has ``forward_along`` (steps along a direction itself);
      ``batches_copies``: it has ``batched_forward``; ``shows_branches``: it has
      ``forward_with_branches`` (branch signatures from its own values);
    * ``complex_claim``, ``local_op``, ``with_dtype``, ``close``.
    """

    name = "source"
    spec = ""
    device = "cpu"
    dtype = None
    provides = frozenset()
    candidate = None
    of = None  # the source whose forward this one differentiates (finite differences)
    accepts = None
    steps_along = False
    batches_copies = False
    shows_branches = False

    def run(self, graph: Graph, tensors: dict) -> SourceResult:
        raise NotImplementedError

    def forward(self, graph: Graph, tensors: dict):
        raise NotImplementedError

    def forward_along(self, graph: Graph, tensors: dict, directions: dict, steps, memo=None) -> list:
        """The loss at x + t * directions for each t in ``steps`` (``steps_along``)."""
        raise NotImplementedError

    def batched_forward(self, graph: Graph, tensors: dict, name: str, index, steps, memo=None):
        """The loss at copies of leaf ``name`` with flat element ``index[j]`` moved by
        ``steps[j]`` (``batches_copies``)."""
        raise NotImplementedError

    def forward_with_branches(self, graph: Graph, tensors: dict):
        """The loss and the branch signature of every kink op (``shows_branches``)."""
        raise NotImplementedError

    def complex_claim(self, graph: Graph) -> bool | None:
        """True when every forward of ``graph`` is complex-analytic, False when one is
        not, None when it does not say (a probe decides: Note [Complex-step probe])."""
        return None

    def local_op(self, op: str):
        """``op`` as this source runs it, as a NumPy ``Op(forward, backward)``: for
        judging one node at a time."""
        raise Unsupported(f"{self.name} runs whole graphs only")

    def with_dtype(self, dtype: str) -> "Source":
        """The same implementations computing in ``dtype``."""
        raise Unsupported(f"{self.name} cannot be re-run in another dtype")

    def close(self):
        """Release what it holds (a worker process)."""


def candidate_of(source):
    """The ``Candidate`` whose code ``source`` runs (through finite differences and
    isolation too), or None."""
    while source is not None:
        if source.candidate is not None:
            return source.candidate
        source = source.of
    return None


def rademacher(rng, shape):
    """Random signs, +1 or -1, as int8: one random bit an element, and an eighth of
    the memory of float64 directions (a million-element model's two directions
    cost 2 MB, not 16).  Sources step along them and dot them with gradients as
    they are; rng.choice would be ten times slower."""
    n = math.prod(shape)
    signs = np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), np.uint8), count=n).view(np.int8)
    np.multiply(signs, -2, out=signs)  # 0 or -2 ...
    signs += 1  # ... +1 or -1
    return signs.reshape(shape)


def split(flat, tensors, names) -> dict:
    """Views of ``flat`` shaped like ``tensors[name]``, one after another: one draw
    of random signs for every tensor of a direction, not one a tensor."""
    out, start = {}, 0
    for n in names:
        shape = np.shape(tensors[n])
        size = math.prod(shape)
        out[n] = flat[start:start + size].reshape(shape)
        start += size
    return out


def branch_signature(graph: Graph, values: dict) -> bytes:
    """Which side of its kinks every kink op is on, given all forward values."""
    parts = []
    for name, op_name, inputs, hyper in graph.plan():
        op = get_op(op_name)
        if op.branch is not None:
            parts.append(np.ascontiguousarray(op.branch(*(values[i] for i in inputs), **hyper)).tobytes())
    return b"".join(parts)


def dtype_of(graph, tensors) -> str:
    """The dtype of a case's differentiable leaves."""
    for leaf in graph.differentiable_leaves:
        return str(np.asarray(tensors[leaf.name]).dtype)
    return "float64"
