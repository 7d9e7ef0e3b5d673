"""``FiniteDifferences``: numerical gradients of any source's forward, in full,
directional or per-tensor mode, with a predicted error per element and kink
detection (sources/numeric.py has the arithmetic)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..catalogue import get_op
from ..graph import Graph
from . import numeric
from .base import Source, SourceResult, Unsupported, dtype_of, rademacher, split
from .reference import ReferenceOrFormula

__all__ = ["FiniteDifferences", "frozen_elements", "hold_still", "frozen_results"]


MIXED_SCALE = 16.0  # a tensor this many times smaller than the largest steps at its own scale


# Note [Frozen elements]
# Some ops give an input no gradient by convention, not because the output does
# not depend on it: embedding's padding_idx row is looked up in the forward and
# never trained.  Finite differences would see the true derivative there, and
# every correct backward would fail.  An op declares such elements
# (``OpDef.frozen``); where they belong to a leaf fed straight into the op,
# differences hold them still: a direction has no component there, and an
# element-by-element derivative there is 0 with no error.  The analytic sides
# are compared with each other (torch, the reference, a candidate) as they are,
# so a backward that trains the padding row still fails against the reference.


def frozen_elements(graph: Graph) -> dict:
    """``{leaf name: boolean mask}`` of the elements finite differences hold still
    (Note [Frozen elements])."""
    leaves = {leaf.name for leaf in graph.differentiable_leaves}
    out = {}
    for node in graph.nodes:
        op = get_op(node.op)
        if op.frozen is None:
            continue
        args = op.bind(len(node.inputs))
        masks = op.frozen({a.name: graph.shapes[i] for a, i in zip(args, node.inputs)}, op.full_hyper(node.hyper))
        for a, i in zip(args, node.inputs):
            if a.name in masks and i in leaves:
                out[i] = out[i] | masks[a.name] if i in out else masks[a.name]
    return out


def hold_still(frozen: dict, directions: dict) -> dict:
    """``directions`` with no component on frozen elements."""
    if not any(n in frozen for n in directions):
        return directions
    out = dict(directions)
    for n, mask in frozen.items():
        if n in out:
            out[n] = np.where(mask, 0, out[n]).astype(np.asarray(out[n]).dtype)
    return out


def frozen_results(frozen: dict, results: dict, elements=None) -> dict:
    """Element-by-element ``{name: FDResult}`` with 0 (and no error) at frozen
    elements: their gradient is 0 by the op's convention."""
    for name, r in results.items():
        if name not in frozen:
            continue
        mask = np.ravel(frozen[name]) if elements is None else np.ravel(frozen[name])[elements]
        value, error = np.array(r.value, dtype=np.float64), np.array(r.error, dtype=np.float64)
        shape = value.shape
        value, error = value.reshape(-1, mask.size), error.reshape(-1, mask.size)
        value[:, mask], error[:, mask] = 0.0, 0.0
        results[name] = replace(r, value=value.reshape(shape), error=error.reshape(shape))
    return results


def _scaled_to_each_tensor(dirs, tensors, scales, xmax):
    """Directions whose elements of a tensor far smaller than the largest are
    shrunk to its scale.  One step moves every tensor of a joint direction, sized
    by the largest (an input offset by 1e3 beside unit weights): unscaled, the
    small tensors would move by a thousand times their own step, and truncation,
    not a bug, would decide the verdict.  Any direction is as good a test as any
    other (the analytic side is projected on the same one); tensors within
    MIXED_SCALE of the largest keep their int8 signs, so a model of ordinary
    scales pays no memory for this."""
    small = {n: s / xmax for n, s in scales.items() if s * MIXED_SCALE < xmax}
    if not small:
        return dirs
    out = []
    for d in dirs:
        d = dict(d)
        for n, f in small.items():
            x = np.asarray(tensors[n])
            dt = x.dtype if x.dtype.kind == "f" else np.float64
            d[n] = (d[n] * f).astype(dt)
        out.append(d)
    return out


class FiniteDifferences(Source):
    """Numerical gradients of another source's forward.

    mode ``full`` differentiates every element (in batches of perturbed copies
    when the source has ``batched_forward``); ``directional`` takes
    ``n_directions`` random Rademacher directions over every tensor at once (two
    forwards a direction, whatever the size; a failure is then localised to the
    tensor and its elements by ``localise``); ``per-tensor`` takes them tensor by
    tensor; ``auto`` is ``full`` up to ``full_limit`` differentiable scalars and
    ``directional`` above.  Directions are seeded by ``seed``, or, when it is
    None, by the seed the caller passes to ``run`` (``check_pair`` derives one from
    the case seed, and the record says which).  A failing tensor larger than
    ``bisect_above`` is localised by bisection (``judge.second_opinions``).
    """

    MODES = ("full", "directional", "per-tensor", "auto")

    def __init__(self, of: Source, method: str = "central", mode: str = "full",
                 n_directions: int = 4, seed: int | None = None, full_limit: int = 2000, bisect_above: int = 4096):
        if method not in numeric.METHODS:
            raise ValueError(f"method must be one of {numeric.METHODS}, got {method!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.of, self.method, self.mode = of, method, mode
        self.n_directions, self.seed, self.full_limit = n_directions, seed, full_limit
        self.bisect_above = bisect_above
        self.name = f"{method}-fd({of.name})"
        self.device, self.candidate = of.device, None
        # Scratch buffers for the moved point, kept from one run to the next: a
        # fresh array the size of the model each check costs page faults, on a
        # million parameters more than the additions written into it.
        self.scratch = {}

    @property
    def spec(self) -> str:
        """Every setting, so a replay runs the same differences (``parse_source``)."""
        inner = self.of.spec
        if not inner:
            return ""
        seed = "case" if self.seed is None else self.seed
        return (f"fd:{self.method}:{self.mode}:n={self.n_directions},seed={seed},full={self.full_limit},"
                f"bisect={self.bisect_above}({inner})")

    def seed_for(self, seed: int | None) -> int:
        """The seed directions are drawn from: its own, else the one given, else 0."""
        return self.seed if self.seed is not None else (0 if seed is None else int(seed))

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

        rng = np.random.default_rng(self.seed_for(None) + 1)
        f = (lambda t: self.of.forward(graph, t))
        # one direction a tensor: a forward may keep the imaginary part of one input
        # and drop another's (a cast to the dtype of x)
        for leaf in graph.differentiable_leaves:
            d = {leaf.name: rademacher(rng, np.shape(tensors[leaf.name])).astype(np.float64)}
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

    def refine(self, graph: Graph, tensors: dict, result: SourceResult, names, noise: float = 0.0) -> SourceResult:
        """``result`` with the tensors ``names`` recomputed by Richardson extrapolation,
        whose stencils bound the truncation error that a central difference cannot
        see (a high-curvature loss), with elements that did not converge marked
        like kinks.  Used when a check against central differences fails, before
        calling it a failure.  ``names``: tensor names, or ``{name: flat indices}``
        to refine only those elements (None: all); ``noise``: the size of the
        loss's terms (Note [Loss rounding] in numeric.py)."""
        f, kinky = self.objective(graph)
        frozen = frozen_elements(graph)
        grads, errors, kinks = dict(result.grads), dict(result.grad_errors), dict(result.grad_kinks)
        wanted = names if isinstance(names, dict) else dict.fromkeys(names)
        for name, elements in wanted.items():
            if elements is None:
                r = frozen_results(frozen, numeric.refine(f, tensors, [name], kinky, noise=noise))[name]
                grads[name], errors[name] = r.value, r.error
                kinks[name] = r.kink | kinks.get(name, False)
                continue
            # only these elements: the others passed against central differences already
            r = frozen_results(frozen, numeric.refine(f, tensors, [name], kinky, elements=elements, noise=noise),
                               elements)[name]
            shape = np.shape(result.grads[name])
            value = np.array(result.grads[name], dtype=np.float64, copy=True).reshape(-1)
            error = np.array(np.broadcast_to(result.grad_errors.get(name, 0.0), shape), dtype=np.float64).reshape(-1)
            kink = np.array(np.broadcast_to(kinks.get(name, False), shape), dtype=bool).reshape(-1)
            value[elements], error[elements], kink[elements] = r.value, r.error, r.kink | kink[elements]
            grads[name], errors[name], kinks[name] = value.reshape(shape), error.reshape(shape), kink.reshape(shape)
        return replace(result, grads=grads, grad_errors=errors, grad_kinks=kinks,
                       source=result.source, kind="richardson")

    def objective(self, graph):
        """f for the engine, returning branch signatures too when the graph has kinks."""
        if not any(get_op(op).branch is not None for op in graph.ops):
            return (lambda t: self.of.forward(graph, t)), False
        if self.of.shows_branches:
            return (lambda t: self.of.forward_with_branches(graph, t)), True
        # A source that shows no intermediate values (an engine, a worker process):
        # where a kink lies is a property of the math, so the reference (or a
        # declared op's formula) says which branch.
        branches = ReferenceOrFormula()
        if not branches.can_run(graph):
            return (lambda t: self.of.forward(graph, t)), False
        return (lambda t: (self.of.forward(graph, t), branches.forward_with_branches(graph, t)[1])), True

    def run(self, graph: Graph, tensors: dict, seed: int | None = None) -> SourceResult:
        why = self.cannot_run(graph, tensors)
        if why:
            raise Unsupported(why)
        t0 = time.perf_counter()
        # The loss itself is not compared (the analytic side's is); no forward spent on it.
        loss = math.nan
        names = [leaf.name for leaf in graph.differentiable_leaves]
        seed = self.seed_for(seed)
        result = SourceResult(self.name, self.method, loss, {}, dtype=dtype_of(graph, tensors), device=self.device,
                              direction_seed=seed)
        mode = self.mode
        if mode == "auto":
            mode = "full" if graph.size <= self.full_limit else "directional"
        frozen = frozen_elements(graph)
        batched = self.of.batched_forward if self.of.batches_copies else None
        if mode == "full" and batched is not None and self.method != "complex":
            # Perturbed copies run in batches; kinks are looked for only where a
            # check fails (check_pair refines those tensors with branch signatures).
            memo = {}  # the unperturbed forward, made once for every batch
            for name, r in frozen_results(frozen, numeric.jacobian_batched(
                    lambda n, idx, steps: batched(graph, tensors, n, idx, steps, memo), tensors, names,
                    self.method)).items():
                result.grads[name], result.grad_errors[name] = r.value, r.error
                if r.kink is not None:
                    result.grad_kinks[name] = r.kink
        elif mode == "full":
            f, kinky = self.objective(graph)
            for name, r in frozen_results(frozen, numeric.jacobian(f, tensors, names, self.method, kinky)).items():
                result.grads[name], result.grad_errors[name] = r.value, r.error
                if r.kink is not None:
                    result.grad_kinks[name] = r.kink
        elif mode == "directional":
            # Near the cost floor: two forwards a direction, no branch signatures (kinks
            # are looked for by localise, and only when the check fails).
            rng = np.random.default_rng(seed)
            dirs = [hold_still(frozen, split(rademacher(rng, (sum(np.size(tensors[n]) for n in names),)), tensors,
                                             names)) for _ in range(self.n_directions)]
            plain = (lambda t: self.of.forward(graph, t))
            step_along = self.of.forward_along if self.of.steps_along else None
            scales = {n: max(1.0, numeric.largest_magnitude([tensors[n]])) for n in names}
            xmax = max(scales.values(), default=1.0)
            dirs = _scaled_to_each_tensor(dirs, tensors, scales, xmax)
            # every element is +1 or -1 (but frozen ones, 0)
            vnorm = math.sqrt(sum(np.size(tensors[n]) for n in names) - sum(int(m.sum()) for m in frozen.values()))
            for key in [k for k in self.scratch if k not in names and k != ("flat",)]:
                del self.scratch[key]  # buffers of another graph's leaves
            memo = {"moved": self.scratch}  # + the tensors in the source's own form
            vals = [numeric.directional(plain, tensors, d, self.method, xmax=xmax, vnorm=vnorm,
                                        along=(lambda steps, d=d: step_along(graph, tensors, d, steps, memo))
                                        if step_along else None) for d in dirs]
            result.joint = (dirs, numeric.FDResult(np.array([v.value for v in vals]),
                                                   np.array([v.error for v in vals]), None))
        else:
            f, kinky = self.objective(graph)
            rng = np.random.default_rng(seed)
            for name in names:
                shape = np.shape(tensors[name])
                dirs = rademacher(rng, (self.n_directions, *shape))
                if name in frozen:
                    dirs = np.where(frozen[name], 0, dirs).astype(dirs.dtype)
                vals = [numeric.directional(f, tensors, {name: d}, self.method, kinky) for d in dirs]
                result.directional[name] = (dirs, numeric.FDResult(
                    np.array([v.value for v in vals]), np.array([v.error for v in vals]),
                    np.array([v.kink for v in vals]) if kinky else None))
        result.seconds = time.perf_counter() - t0
        return result
