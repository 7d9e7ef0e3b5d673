"""The hand-written NumPy backprop of ``reference_impl`` as a gradient source, and
``ReferenceOrFormula``: the reference, or a declared op's torch formula, as the
independent side of a comparison for any op."""

from __future__ import annotations

import time

import numpy as np

import reference_impl
from reference_impl import executor

from ..catalogue import CATALOGUE, get_op
from ..graph import Graph
from .base import ANALYTIC, Source, SourceResult, Unsupported, branch_signature, dtype_of
from .batching import forward_copies, slices

__all__ = ["ReferenceSource", "ReferenceOrFormula"]


class ReferenceSource(Source):
    """The hand-written NumPy backprop of ``reference_impl``.

    ``ops`` overrides entries of the op table (``{name: Op(forward, backward)}``):
    the way a NumPy candidate, or a planted bug, is run inside whole graphs.
    ``compute_dtype`` casts float inputs first (a float64 reference for a float32
    case); by default the reference computes in the dtype it is given.
    """

    steps_along = batches_copies = shows_branches = True

    def __init__(self, ops=None, name="reference", compute_dtype=None):
        self.name = name
        self.ops = {**reference_impl.OPS, **(ops or {})}
        self.compute_dtype = compute_dtype
        self.provides = frozenset(self.ops)  # the ops whose VJP is this source's own

    def with_dtype(self, dtype):
        """The same ops computing in ``dtype``: for re-running a case as the check did."""
        return ReferenceSource(self.ops, self.name, compute_dtype=dtype)

    def local_op(self, op):
        """The ``Op(forward, backward)`` this source runs for ``op``."""
        try:
            return self.ops[op]
        except KeyError:
            raise Unsupported(f"{self.name} has no implementation of {op}") from None

    def complex_claim(self, graph) -> bool | None:
        """Whether every forward of ``graph`` takes complex input (Note [Complex step])."""
        return all(get_op(n.op).supports_complex_step(n.hyper) for n in graph.nodes)

    @property
    def spec(self) -> str:
        """How ``parse_source`` rebuilds this source (a replay file names it)."""
        if set(self.ops) != set(reference_impl.OPS) or any(self.ops[k] is not v for k, v in reference_impl.OPS.items()):
            return ""  # ops swapped in code cannot be named in a file
        return "reference" + (f":{self.compute_dtype}" if self.compute_dtype else "")

    def _cast(self, tensors):
        if self.compute_dtype is None:
            return tensors
        return {k: v.astype(self.compute_dtype) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
                for k, v in tensors.items()}

    def _require(self, graph: Graph, tensors=None):
        missing = sorted(set(graph.ops) - set(self.ops))
        if missing:
            raise Unsupported(f"{self.name} has no implementation of {', '.join(missing)}")

    def forward(self, graph: Graph, tensors: dict):
        self._require(graph, tensors)
        values, _ = executor.forward(graph.plan(), self._cast(tensors), self.ops)
        return values[graph.output]

    def forward_with_branches(self, graph: Graph, tensors: dict):
        """The loss and the branch signature of every kink op (Note [Kinks])."""
        self._require(graph, tensors)
        values, _ = executor.forward(graph.plan(), self._cast(tensors), self.ops)
        return values[graph.output], branch_signature(graph, values)

    def forward_along(self, graph: Graph, tensors: dict, directions: dict, steps, memo=None) -> list:
        """The loss at x + t * directions for each t in ``steps``, the moved point
        written into buffers kept in ``memo`` (one set for every direction of a
        check) rather than into fresh arrays the size of the model a step."""
        self._require(graph, tensors)
        memo = {} if memo is None else memo
        moved = memo.setdefault("moved", {})
        out = []
        for t in steps:
            for n, d in directions.items():
                x = np.asarray(tensors[n])
                buf = moved.get(n)
                if not isinstance(buf, np.ndarray) or buf.shape != x.shape or buf.dtype != x.dtype:
                    buf = moved[n] = np.empty_like(x)
                np.multiply(d, t, out=buf, casting="same_kind")
                buf += x
            values, _ = executor.forward(graph.plan(), self._cast({**tensors, **{n: moved[n] for n in directions}}),
                                         self.ops)
            out.append(float(np.real(values[graph.output])))
        return out

    def batched_forward(self, graph: Graph, tensors: dict, name: str, index, steps, memo=None) -> np.ndarray:
        """The loss at copies of leaf ``name`` with flat element ``index[j]`` moved by
        ``steps[j]`` (in the tensor's own dtype, before any cast).  Only the nodes
        downstream of ``name`` run, on the whole stack of copies at once
        (``gradcheck.batching``); the rest come from one unperturbed forward, made
        once a graph when the caller keeps ``memo``.

        Returns the losses, and when a kink op lies downstream also whether each
        copy left the branch of the unperturbed point (Note [Kinks])."""
        self._require(graph, tensors)
        memo = {} if memo is None else memo
        if "unperturbed" not in memo:
            memo["unperturbed"] = executor.forward(graph.plan(), self._cast(tensors), self.ops)[0]
        unperturbed = memo["unperturbed"]
        downstream = graph.downstream(name)
        steps_down = [s for s in graph.plan() if s[0] in downstream]
        x = np.asarray(tensors[name])
        index = np.asarray(index)
        copies = np.repeat(x.reshape(1, -1), len(index), axis=0)
        copies[np.arange(len(index)), index] += np.asarray(steps, dtype=x.dtype)
        copies = self._cast({name: copies.reshape((len(index),) + x.shape)})[name]
        fixed = {k: v for k, v in unperturbed.items() if k not in downstream}
        kinky = [s for s in steps_down if get_op(s[1]).branch is not None]
        base = [get_op(op).branch(*(unperturbed[i] for i in inputs), **hyper).tobytes()
                for _, op, inputs, hyper in kinky]
        per_copy = sum(np.asarray(unperturbed[k]).nbytes for k in downstream)
        out, crossed = np.empty(len(index)), np.zeros(len(index), dtype=bool)
        for part in slices(len(index), per_copy):
            values, stacked = forward_copies(steps_down, fixed, name, copies[part], self.ops)
            out[part] = np.real(values[graph.output])
            for j in range(part.stop - part.start) if kinky else ():
                crossed[part.start + j] = base != [
                    get_op(op).branch(*(values[i][j] if i in stacked else values[i] for i in inputs),
                                      **hyper).tobytes() for _, op, inputs, hyper in kinky]
        return (out, crossed) if kinky else out

    def run(self, graph: Graph, tensors: dict) -> SourceResult:
        self._require(graph, tensors)
        t0 = time.perf_counter()
        tensors = self._cast(tensors)
        steps = graph.plan()
        loss, values, grads = executor.loss_and_grads(steps, tensors, graph.output, self.ops)
        leaf_grads = {}
        for leaf in graph.differentiable_leaves:
            g = grads.get(leaf.name)
            # A leaf the loss does not depend on has gradient zero.
            leaf_grads[leaf.name] = np.zeros_like(tensors[leaf.name]) if g is None else g
        outputs = {n.name: values[n.name] for n in graph.nodes}
        return SourceResult(self.name, ANALYTIC, float(np.real(loss)), leaf_grads, outputs,
                            dtype=dtype_of(graph, tensors), seconds=time.perf_counter() - t0)


class ReferenceOrFormula(Source):
    """The float64 reference, or torch in float64 for graphs holding ops the
    reference does not implement but that have a torch formula (ops a user
    declared with one): the independent side of a comparison for any op."""

    shows_branches = True

    def __init__(self, dtype: str = "float64"):
        self.dtype = dtype
        self.reference = ReferenceSource(compute_dtype=dtype)
        self.name = "reference"
        self.spec = "reference-or-formula" + ("" if dtype == "float64" else f":{dtype}")
        self.provides = frozenset(CATALOGUE)
        self._torch = None

    def with_dtype(self, dtype):
        return ReferenceOrFormula(dtype)

    def _formula(self):
        if self._torch is None:
            from .torch_autograd import TorchSource  # torch is imported only when a formula is needed

            self._torch = TorchSource("cpu", self.dtype, name="torch-formula")
        return self._torch

    def _pick(self, graph):
        if set(graph.ops) <= set(self.reference.ops):
            return self.reference
        return self._formula()

    def can_run(self, graph) -> bool:
        """Whether every op of ``graph`` has a reference VJP or a torch formula."""
        return all(op in self.reference.ops or get_op(op).torch is not None for op in graph.ops)

    def local_op(self, op):
        if op in self.reference.ops:
            return self.reference.ops[op]
        return self._formula().local_op(op)

    def complex_claim(self, graph):
        return self.reference.complex_claim(graph) if self._pick(graph) is self.reference else False

    def run(self, graph, tensors):
        return self._pick(graph).run(graph, tensors)

    def forward(self, graph, tensors):
        return self._pick(graph).forward(graph, tensors)

    def forward_with_branches(self, graph, tensors):
        return self._pick(graph).forward_with_branches(graph, tensors)
