"""Gradient sources: anything that gives a graph's loss and the gradient of every
differentiable leaf.  Analytic sources (the NumPy reference, torch autograd, a
candidate) also give every node's forward output; ``FiniteDifferences`` wraps any
source's forward and differentiates it numerically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

import reference_impl
from reference_impl import executor

from . import numeric
from .graph import Graph
from .ops import CATALOGUE, get_op

__all__ = ["Source", "SourceResult", "ReferenceSource", "FiniteDifferences", "ANALYTIC", "Unsupported",
           "parse_source"]

ANALYTIC = "analytic"


class Unsupported(NotImplementedError):
    """A source cannot run this graph in this configuration (dtype, device, complex
    input): the check is recorded as ``skipped``, not as an error."""


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


class Source(Protocol):
    name: str

    def run(self, graph: Graph, tensors: dict) -> SourceResult: ...

    def forward(self, graph: Graph, tensors: dict): ...


def _rademacher(rng, shape):
    """Random signs, +1 or -1, as int8: one random bit an element, and an eighth of
    the memory of float64 directions (a million-element model's two directions
    cost 2 MB, not 16).  Sources step along them and dot them with gradients as
    they are; rng.choice would be ten times slower."""
    n = math.prod(shape)
    signs = np.unpackbits(np.frombuffer(rng.bytes((n + 7) // 8), np.uint8), count=n).view(np.int8)
    np.multiply(signs, -2, out=signs)  # 0 or -2 ...
    signs += 1  # ... +1 or -1
    return signs.reshape(shape)


BISECT_LEAF = 32  # bisection stops at a block of this many elements, then differentiates each


def _position(flat, shape) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def _split(flat, tensors, names) -> dict:
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
    for name, op_name, inputs, hyper in graph.steps():
        op = get_op(op_name)
        if op.branch is not None:
            parts.append(np.ascontiguousarray(op.branch(*(values[i] for i in inputs), **hyper)).tobytes())
    return b"".join(parts)


def _dtype_of(graph, tensors):
    for leaf in graph.differentiable_leaves:
        return str(np.asarray(tensors[leaf.name]).dtype)
    return "float64"


class ReferenceSource:
    """The hand-written NumPy backprop of ``reference_impl``.

    ``ops`` overrides entries of the op table (``{name: Op(forward, backward)}``):
    the way a NumPy candidate, or a planted bug, is run inside whole graphs.
    ``compute_dtype`` casts float inputs first (a float64 reference for a float32
    case); by default the reference computes in the dtype it is given.
    """

    accepts = None  # every setting of every op it has

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
        from .batching import forward_copies, slices

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
                            dtype=_dtype_of(graph, tensors), seconds=time.perf_counter() - t0)


class FiniteDifferences:
    """Numerical gradients of another source's forward.

    mode ``full`` differentiates every element (in batches of perturbed copies
    when the source has ``batched_forward``); ``directional`` takes
    ``n_directions`` random Rademacher directions over every tensor at once (two
    forwards a direction, whatever the size; a failure is then localised to the
    tensor and its elements by ``localise``); ``per-tensor`` takes them tensor by
    tensor; ``auto`` is ``full`` up to ``full_limit`` differentiable scalars and
    ``directional`` above.  Directions are seeded by ``seed``.  A failing tensor
    larger than ``bisect_above`` is localised by bisection (``localise``).
    """

    MODES = ("full", "directional", "per-tensor", "auto")

    def __init__(self, of: Source, method: str = "central", mode: str = "full",
                 n_directions: int = 4, seed: int = 0, full_limit: int = 2000, bisect_above: int = 4096):
        if method not in numeric.METHODS:
            raise ValueError(f"method must be one of {numeric.METHODS}, got {method!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.of, self.method, self.mode = of, method, mode
        self.n_directions, self.seed, self.full_limit = n_directions, seed, full_limit
        self.bisect_above = bisect_above
        self.name = f"{method}-fd({of.name})"
        # Scratch buffers for the moved point, kept from one run to the next: a
        # fresh array the size of the model each check costs page faults, on a
        # million parameters more than the additions written into it.
        self._scratch = {}

    @property
    def spec(self) -> str:
        """Every setting, so a replay runs the same differences (``parse_source``)."""
        inner = self.of.spec
        if not inner:
            return ""
        return (f"fd:{self.method}:{self.mode}:n={self.n_directions},seed={self.seed},full={self.full_limit},"
                f"bisect={self.bisect_above}({inner})")

    def cannot_run(self, graph: Graph, tensors: dict) -> str:
        """Why these differences do not apply to this case, or "" (then they do).

        Note [Complex-step probe]
        Im f(x + ih v) / h is the derivative along v only when the forward is
        complex-analytic.  Ordinary code is not: it casts back to a real dtype,
        accumulates into a real buffer, or calls abs, logaddexp or erf, and then
        gives 0 or raises.  So the complex step runs only for a source that
        declares its forwards complex-analytic (the reference, op by op), or,
        when a source says nothing, after a probe: the complex-step derivative
        along two random sign directions must match central differences of the
        real forward along them.  A source that fails the probe, or declares no
        complex support, has its complex-step checks ``skipped`` with the reason.
        """
        if self.method != "complex":
            return ""
        claim = self.of.complex_claim(graph)
        if claim is False:
            return f"{self.of.name}'s forward of this graph does not take complex input (declared)"
        if claim is None:
            return self._complex_probe(graph, tensors)
        return ""

    def _complex_probe(self, graph, tensors) -> str:
        import warnings

        rng = np.random.default_rng(self.seed + 1)
        f = (lambda t: self.of.forward(graph, t))
        # one direction a tensor: a forward may keep the imaginary part of one input
        # and drop another's (a cast to the dtype of x)
        for leaf in graph.differentiable_leaves:
            d = {leaf.name: _rademacher(rng, np.shape(tensors[leaf.name])).astype(np.float64)}
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    cs = numeric.directional(f, tensors, d, "complex")
            except Unsupported as e:  # the source does not take this graph at all
                return f"{self.of.name}: {e}"
            except Exception as e:  # noqa: BLE001 - a forward that refuses complex input says so here
                return (f"{self.of.name}'s forward does not take complex input, so the complex step does not "
                        f"apply (probe: {type(e).__name__}: {str(e)[:200]})")
            c = numeric.directional(f, tensors, d, "richardson")
            cs_v, c_v = float(np.real(cs.value)), float(c.value)
            if not abs(cs_v - c_v) <= 1e-6 * max(abs(c_v), 1.0) + 4 * float(c.error):
                return (f"{self.of.name}'s forward is not complex-analytic in {leaf.name!r}, so the complex step "
                        f"does not apply; declare complex_step=True on an op whose forward is (probe along a random "
                        f"direction: complex step {cs_v:.6g}, differences of the real forward {c_v:.6g})")
        return ""

    def forward(self, graph, tensors):
        return self.of.forward(graph, tensors)

    def refine(self, graph: Graph, tensors: dict, result: SourceResult, names) -> SourceResult:
        """``result`` with the tensors ``names`` recomputed by Richardson extrapolation,
        whose stencils bound the truncation error that a central difference cannot
        see (a high-curvature loss), with elements that did not converge marked
        like kinks.  Used when a check against central differences fails, before
        calling it a failure."""
        f, kinky = self._objective(graph)
        grads, errors, kinks = dict(result.grads), dict(result.grad_errors), dict(result.grad_kinks)
        for name, r in numeric.refine(f, tensors, list(names), kinky).items():
            grads[name], errors[name] = r.value, r.error
            kinks[name] = r.kink | kinks.get(name, False)
        return replace(result, grads=grads, grad_errors=errors, grad_kinks=kinks,
                       source=result.source, kind="richardson")

    def localise(self, graph: Graph, tensors: dict, a_result, tolerance=None):
        """After a failing directional check: directions tensor by tensor find the
        failing tensors.  A failing tensor of up to ``bisect_above`` elements is then
        differentiated element by element; a larger one is bisected (``_bisect``)
        down to a block of ``BISECT_LEAF`` elements, which alone are differentiated.
        Either way the records name the element and its two values.

        Returns the per-tensor records, a result holding the full Jacobians (or
        None), and ``{tensor: record}`` for the bisected tensors."""
        from .compare import coarser_dtype, compare, tolerance_for

        per_tensor = FiniteDifferences(self.of, self.method, "per-tensor", self.n_directions, self.seed)
        coarse = compare(graph, a_result, per_tensor.run(graph, tensors), tolerance=tolerance)
        failing = [r.tensor for r in coarse if r.status == "fail"]
        if not failing:
            return coarse, None, {}
        f, kinky = self._objective(graph)
        small = [n for n in failing if np.size(tensors[n]) <= self.bisect_above]
        full = SourceResult(self.name, self.method, a_result.loss, {}, dtype=a_result.dtype)
        for name, r in numeric.jacobian(f, tensors, small, self.method, kinky).items():
            full.grads[name], full.grad_errors[name] = r.value, r.error
            if r.kink is not None:
                full.grad_kinks[name] = r.kink
        tol = tolerance or tolerance_for(a_result.kind, self.method, coarser_dtype(a_result.dtype, _dtype_of(
            graph, tensors)))
        bisected = {name: self._bisect(graph, tensors, name, a_result, tol, f, kinky)
                    for name in failing if name not in small}
        return coarse, (full if small else None), bisected

    def _bisect(self, graph, tensors, name, a_result, tol, f, kinky):
        """The record of tensor ``name`` from bisection: its elements are halved, and
        the half whose own directional check (random signs on that half, zero
        elsewhere) fails is halved again, until BISECT_LEAF elements are left; those
        are differentiated one by one (Richardson where central differences
        disagree) and compared.  About 2 log2(n) directional checks, not n
        derivatives: a million-element tensor is localised in a few dozen forwards."""
        from .compare import _judge, record_for_elements

        t0 = time.perf_counter()
        x = np.asarray(tensors[name])
        g = np.ravel(np.asarray(a_result.grads[name], dtype=np.float64))
        rng = np.random.default_rng(self.seed)
        step_along = getattr(self.of, "forward_along", None)
        memo = {"moved": self._scratch}
        xmax = numeric.largest_magnitude([x])
        lo, hi, probes, stuck = 0, x.size, 0, False
        while hi - lo > BISECT_LEAF and not stuck:
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                d = np.zeros(x.size, dtype=np.int8)
                d[a:b] = _rademacher(rng, (b - a,))
                d = d.reshape(x.shape)
                fd = numeric.directional(
                    lambda t: self.of.forward(graph, t), tensors, {name: d}, self.method, xmax=xmax,
                    vnorm=math.sqrt(b - a),
                    along=(lambda steps: step_along(graph, tensors, {name: d}, steps, memo)) if step_along else None)
                probes += 1
                proj = numeric.dot(g[a:b], np.ravel(d)[a:b])
                if _judge(np.array([proj]), np.array([fd.value]), np.array([fd.error]), tol)["ratio"] > 1:
                    lo, hi = a, b
                    break
            else:
                stuck = True  # neither half fails on its own: the block is differentiated whole
        elements = np.arange(lo, hi)
        fd = numeric.jacobian(f, tensors, [name], self.method, kinky, elements=elements)[name]
        record = record_for_elements(graph, a_result, self.name, self.method, name, x.shape, elements,
                                     g[elements], fd, tol, time.perf_counter() - t0)
        if record.status == "fail" and self.method == "central":
            # as check_pair does for full Jacobians: a failure must survive Richardson
            fd = numeric.refine(f, tensors, [name], kinky, elements=elements)[name]
            record = record_for_elements(graph, a_result, self.name, "richardson", name, x.shape, elements,
                                         g[elements], fd, tol, time.perf_counter() - t0)
        how = (f"bisected over its {x.size:,} elements ({probes} directional checks"
               + ("; neither half of the last block failed alone" if stuck else "")
               + f"), then elements {_position(lo, x.shape)} to {_position(hi - 1, x.shape)} "
               f"({hi - lo}) differentiated one by one")
        return replace(record, message=(record.message + "\n" + how).strip())

    def _objective(self, graph):
        """f for the engine, returning branch signatures too when the graph has kinks."""
        if not any(get_op(op).branch is not None for op in graph.ops):
            return (lambda t: self.of.forward(graph, t)), False
        if hasattr(self.of, "forward_with_branches"):
            return (lambda t: self.of.forward_with_branches(graph, t)), True
        # A source that shows no intermediate values (an engine, a worker process):
        # where a kink lies is a property of the math, so the reference (or a
        # declared op's formula) says which branch.
        branches = ReferenceOrFormula()
        if not branches.can_run(graph):
            return (lambda t: self.of.forward(graph, t)), False
        return (lambda t: (self.of.forward(graph, t), branches.forward_with_branches(graph, t)[1])), True

    def run(self, graph: Graph, tensors: dict) -> SourceResult:
        why = self.cannot_run(graph, tensors)
        if why:
            raise Unsupported(why)
        t0 = time.perf_counter()
        # The loss itself is not compared (the analytic side's is); no forward spent on it.
        loss = math.nan
        names = [leaf.name for leaf in graph.differentiable_leaves]
        result = SourceResult(self.name, self.method, loss, {}, dtype=_dtype_of(graph, tensors))
        mode = self.mode
        if mode == "auto":
            mode = "full" if graph.size <= self.full_limit else "directional"
        batched = getattr(self.of, "batched_forward", None)
        if mode == "full" and batched is not None and self.method != "complex":
            # Perturbed copies run in batches; kinks are looked for only where a
            # check fails (check_pair refines those tensors with branch signatures).
            memo = {}  # the unperturbed forward, made once for every batch
            for name, r in numeric.jacobian_batched(lambda n, idx, steps: batched(graph, tensors, n, idx, steps, memo),
                                                    tensors, names, self.method).items():
                result.grads[name], result.grad_errors[name] = r.value, r.error
                if r.kink is not None:
                    result.grad_kinks[name] = r.kink
        elif mode == "full":
            f, kinky = self._objective(graph)
            for name, r in numeric.jacobian(f, tensors, names, self.method, kinky).items():
                result.grads[name], result.grad_errors[name] = r.value, r.error
                if r.kink is not None:
                    result.grad_kinks[name] = r.kink
        elif mode == "directional":
            # Near the cost floor: two forwards a direction, no branch signatures (kinks
            # are looked for by localise, and only when the check fails).
            rng = np.random.default_rng(self.seed)
            dirs = [_split(_rademacher(rng, (sum(np.size(tensors[n]) for n in names),)), tensors, names)
                    for _ in range(self.n_directions)]
            plain = (lambda t: self.of.forward(graph, t))
            step_along = getattr(self.of, "forward_along", None)
            xmax = numeric.largest_magnitude(tensors[n] for n in names)
            vnorm = math.sqrt(sum(np.size(tensors[n]) for n in names))  # every element is +1 or -1
            for key in [k for k in self._scratch if k not in names and k != ("flat",)]:
                del self._scratch[key]  # buffers of another graph's leaves
            memo = {"moved": self._scratch}  # + the tensors in the source's own form
            vals = [numeric.directional(plain, tensors, d, self.method, xmax=xmax, vnorm=vnorm,
                                        along=(lambda steps, d=d: step_along(graph, tensors, d, steps, memo))
                                        if step_along else None) for d in dirs]
            result.joint = (dirs, numeric.FDResult(np.array([v.value for v in vals]),
                                                   np.array([v.error for v in vals]), None))
        else:
            f, kinky = self._objective(graph)
            rng = np.random.default_rng(self.seed)
            for name in names:
                shape = np.shape(tensors[name])
                dirs = _rademacher(rng, (self.n_directions, *shape))
                vals = [numeric.directional(f, tensors, {name: d}, self.method, kinky) for d in dirs]
                result.directional[name] = (dirs, numeric.FDResult(
                    np.array([v.value for v in vals]), np.array([v.error for v in vals]),
                    np.array([v.kink for v in vals]) if kinky else None))
        result.seconds = time.perf_counter() - t0
        return result


class ReferenceOrFormula:
    """The float64 reference, or torch in float64 for graphs holding ops the
    reference does not implement but that have a torch formula (ops a user
    declared with one): the independent side of a comparison for any op."""

    accepts = None

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
            from .backends.torch_autograd import TorchSource

            self._torch = TorchSource("cpu", self.dtype, name="torch-formula")
        return self._torch

    def _pick(self, graph):
        if set(graph.ops) <= set(self.reference.ops):
            return self.reference
        return self._formula()

    def can_run(self, graph) -> bool:
        """Whether every op of ``graph`` has a reference VJP or a torch formula."""
        if set(graph.ops) <= set(self.reference.ops):
            return True
        from .backends.torch_autograd import TORCH_OPS

        return all(op in self.reference.ops or op in TORCH_OPS for op in graph.ops)

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


def parse_source(spec: str, candidate=None):
    """The source a spec names: ``reference``, ``reference:float64``,
    ``reference-or-formula``, ``torch:cpu:float32``,
    ``fd:central:auto:n=4,seed=0,full=2000,bisect=4096(<spec>)``, or one of
    ``candidate``'s: ``candidate:numpy``, ``candidate:torch:cpu:float32``,
    ``candidate:engine``.  A spec never names code to load: a candidate's
    source needs the ``Candidate`` itself, given by the caller."""
    spec = spec.strip()
    if spec == "reference-or-formula" or spec.startswith("reference-or-formula:"):
        _, _, dtype = spec.partition(":")
        return ReferenceOrFormula(dtype or "float64")
    if spec == "reference" or spec.startswith("reference:"):
        _, _, dtype = spec.partition(":")
        return ReferenceSource(compute_dtype=dtype or None)
    if spec.startswith("torch:"):
        from .backends.torch_autograd import TorchSource

        parts = spec.split(":")
        device = ":".join(parts[1:-1]) or "cpu"
        return TorchSource(device=device, dtype=parts[-1])
    if spec.startswith("fd:") and spec.endswith(")") and "(" in spec:
        head, inner = spec[3:-1].split("(", 1)
        method, _, rest = head.partition(":")
        mode, _, settings = rest.partition(":")
        kw = {}
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            names = {"n": "n_directions", "seed": "seed", "full": "full_limit", "bisect": "bisect_above"}
            if key not in names:
                raise ValueError(f"cannot read source spec {spec!r}: unknown setting {key!r}")
            kw[names[key]] = int(value)
        return FiniteDifferences(parse_source(inner, candidate), method, mode or "full", **kw)
    if spec.startswith("candidate:"):
        if candidate is None:
            raise ValueError(f"source {spec!r} runs a candidate's code: give the candidate (--candidate TARGET)")
        from .candidates import candidate_source

        return candidate_source(spec, candidate)
    raise ValueError(f"cannot read source spec {spec!r}")
