"""Sources that run a candidate's code: its NumPy ops inside the reference
executor, its torch ops inside the torch source, or its whole-model engine;
every call guarded (``gradcheck._guards``)."""

from __future__ import annotations

import time

import numpy as np

from .._guards import CandidateError, check_array, guard_numpy_op, guard_torch_op, guarded_call, readonly
from ..catalogue import BUILTIN_OPS, get_op
from .base import ANALYTIC, Source, SourceResult, Unsupported, dtype_of
from .reference import ReferenceSource

__all__ = ["NumpyCandidateSource", "EngineSource", "candidate_sources", "torch_candidate_source", "candidate_source"]


class NumpyCandidateSource(ReferenceSource):
    """The reference executor with the candidate's NumPy ops swapped in, guarded."""

    def __init__(self, candidate, compute_dtype=None):
        ops = {name: guard_numpy_op(name, f, b, get_op(name), candidate.time_limit, candidate.breaker)
               for name, (f, b) in candidate.numpy_ops.items()}
        super().__init__(ops, name=candidate.name, compute_dtype=compute_dtype)
        self.candidate = candidate
        self.provides = frozenset(candidate.numpy_ops)

    @property
    def spec(self) -> str:
        return "candidate:numpy" + (f":{self.compute_dtype}" if self.compute_dtype else "")

    def with_dtype(self, dtype):
        """The candidate's ops computing in ``dtype``, still guarded and still
        refusing a graph with an op declared for other dtypes only (Unsupported)."""
        return NumpyCandidateSource(self.candidate, compute_dtype=dtype)

    def accepts(self, op, hyper, shapes) -> bool:
        return op in self.ops and not self.candidate.refuses_node(op, hyper, shapes)

    def _require(self, graph, tensors=None):
        super()._require(graph)
        dtype = dtype_of(graph, tensors) if tensors is not None else "float64"
        why = self.candidate.refuses(graph, self.compute_dtype or dtype, self.provides)
        if why:
            raise Unsupported(why)

    def complex_claim(self, graph) -> bool | None:
        """True when every op of ``graph`` says its forward is complex-analytic, False
        when one says it is not, None when a candidate op says nothing (a probe decides)."""
        claims = []
        for node in graph.nodes:
            if node.op in self.provides:
                claims.append(self.candidate.options_of(node.op).complex_step)
            else:
                claims.append(get_op(node.op).supports_complex_step(node.hyper))
        if False in claims:
            return False
        return None if None in claims else True


class EngineSource(Source):
    """A whole-model engine: ``loss_and_grads(graph, tensors) -> (loss, grads)``."""

    def __init__(self, candidate):
        self.candidate = candidate
        self.name = f"{candidate.name}-engine"
        self.fn = candidate.loss_and_grads
        # an engine runs every op itself: the built-in ones and its own declared ones
        own = BUILTIN_OPS | {o.name for o in candidate.new_ops}
        self.provides = frozenset(own) - candidate.exclude
        self.accepts = (lambda op, hyper, shapes: op in self.provides)

    spec = "candidate:engine"

    def _call(self, graph, tensors):
        why = self.candidate.refuses(graph, dtype_of(graph, tensors), ())
        others = sorted(set(graph.ops) - self.provides - self.candidate.exclude)
        if why or others:
            raise Unsupported(why or f"{self.name} does not run {', '.join(others)}, declared by another candidate")
        return guarded_call(self.fn, "", "engine.loss_and_grads", self.candidate.time_limit, self.candidate.breaker,
                            graph, {k: readonly(np.asarray(v)) for k, v in tensors.items()})

    def forward(self, graph, tensors):
        return self._call(graph, tensors)[0]

    def run(self, graph, tensors) -> SourceResult:
        t0 = time.perf_counter()
        result = self._call(graph, tensors)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CandidateError("engine: loss_and_grads must return (loss, grads)", phase="loss_and_grads")
        loss, grads = result
        if not np.isfinite(loss):
            raise CandidateError(f"engine: loss is {loss} (a non-finite value)", phase="loss_and_grads")
        dtype = dtype_of(graph, tensors)
        checked = {}
        for leaf in graph.differentiable_leaves:
            if leaf.name not in grads:
                raise CandidateError(f"engine: no gradient for {leaf.name!r}", phase="loss_and_grads")
            checked[leaf.name] = check_array("engine", f"gradient of {leaf.name!r}", grads[leaf.name],
                                              leaf.shape, None, "loss_and_grads")
        return SourceResult(self.name, ANALYTIC, float(loss), checked, dtype=dtype,
                            seconds=time.perf_counter() - t0)


def candidate_sources(candidate, device: str = "cpu", dtype: str = "float64") -> list:
    """Sources for every kind of plug the candidate has: NumPy ops (on the CPU, in
    ``dtype`` when it is float64 or float32), torch ops (on ``device`` in ``dtype``)
    and an engine."""
    out = []
    if candidate.numpy_ops:
        out.append(NumpyCandidateSource(candidate, compute_dtype=None))
    if candidate.torch_ops:
        out.append(torch_candidate_source(candidate, device, dtype))
    if candidate.loss_and_grads:
        out.append(EngineSource(candidate))
    if not out and not candidate.optimizers:
        raise ValueError(f"{candidate!r} provides nothing to check")
    return out


def torch_candidate_source(candidate, device="cpu", dtype="float64"):
    from .torch_autograd import TorchSource  # torch is imported only for a torch candidate

    ops = {name: guard_torch_op(name, fn, get_op(name), candidate.time_limit, candidate.breaker)
           for name, fn in candidate.torch_ops.items()}
    return TorchSource(device, dtype, ops=ops, name=f"{candidate.name}-torch", candidate=candidate)


def candidate_source(spec: str, candidate):
    """The source of ``candidate`` that a spec names: ``candidate:numpy[:dtype]``,
    ``candidate:torch:<device>:<dtype>`` or ``candidate:engine``."""
    kind, _, rest = spec[len("candidate:"):].partition(":")
    if kind == "numpy":
        return NumpyCandidateSource(candidate, compute_dtype=rest or None)
    if kind == "engine":
        return EngineSource(candidate)
    if kind == "torch":
        device, _, dtype = rest.rpartition(":")
        return torch_candidate_source(candidate, device or "cpu", dtype or "float64")
    raise ValueError(f"cannot read candidate source spec {spec!r}: expected candidate:numpy[:DTYPE], "
                     f"candidate:torch:DEVICE:DTYPE or candidate:engine")
