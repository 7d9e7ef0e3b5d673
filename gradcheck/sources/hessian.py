"""Second derivatives as a source: Hessian-vector products of a graph's loss.

``HessianVector(source)`` gives, as the "gradient" of every differentiable
leaf, the Hessian-vector product H v along a seeded random sign direction v
over every leaf: by double backward for a source that has one (torch, through
``loss_function``), or, with ``differences=True``, by Richardson differences of
the source's own first-order gradients along v, (g(x + h v) - g(x - h v)) / 2h,
for any source at all (the NumPy reference's hand-written VJPs).  Compared
with ``compare`` like any two sources, each leaf's H v element by element:
torch's double backward against differences of the reference's backward is a
cross-check of two independent implementations of the second derivative.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..catalogue import get_op
from ..graph import Graph
from . import numeric
from .base import ANALYTIC, Source, SourceResult, Unsupported, rademacher

__all__ = ["HessianVector"]


class HessianVector(Source):
    def __init__(self, of: Source, seed: int = 0, differences: bool = False):
        self.of, self.seed, self.differences = of, seed, differences
        self.name = f"hvp-fd({of.name})" if differences else f"hvp({of.name})"
        self.kind = "richardson" if differences else ANALYTIC
        self.dtype, self.device, self.accepts = of.dtype, of.device, of.accepts
        if not differences and not hasattr(of, "loss_function"):
            raise Unsupported(f"{of.name} has no double backward; give differences=True")

    @property
    def spec(self) -> str:
        """``hvp:seed=S(<spec>)`` or ``hvp-fd:seed=S(<spec>)``: how ``parse_source``
        rebuilds it, the direction's seed included ("" when the inner source
        has no spec)."""
        inner = self.of.spec
        return f"{'hvp-fd' if self.differences else 'hvp'}:seed={self.seed}({inner})" if inner else ""

    def directions(self, graph: Graph, tensors: dict) -> dict:
        rng = np.random.default_rng(self.seed)
        return {leaf.name: rademacher(rng, np.shape(tensors[leaf.name])).astype(np.asarray(tensors[leaf.name]).dtype)
                for leaf in graph.differentiable_leaves}

    def forward(self, graph: Graph, tensors: dict):
        return self.of.forward(graph, tensors)

    def run(self, graph: Graph, tensors: dict) -> SourceResult:
        t0 = time.perf_counter()
        v = self.directions(graph, tensors)
        names = list(v)
        if not self.differences:
            import torch

            fn, leaves, order = self.of.loss_function(graph, tensors)
            leaves = [t.detach().requires_grad_() for t in leaves]
            with torch.enable_grad():
                grads = torch.autograd.grad(fn(*leaves), leaves, create_graph=True, allow_unused=True)
                pairs = [(g, torch.as_tensor(v[n], device=leaves[0].device).to(leaves[0].dtype))
                         for g, n in zip(grads, order) if g is not None and g.requires_grad]
                hv = (torch.autograd.grad(sum((g * d).sum() for g, d in pairs), leaves, allow_unused=True)
                      if pairs else [None] * len(leaves))
            out = {n: np.zeros(np.shape(tensors[n])) if h is None or h._is_zerotensor()
                   else h.detach().double().cpu().numpy() for n, h in zip(order, hv)}
            return SourceResult(self.name, ANALYTIC, math.nan, out, dtype=self.of.dtype or "float64",
                                device=self.device, seconds=time.perf_counter() - t0)

        def gradients(values):
            r = self.of.run(graph, values)
            return np.concatenate([np.ravel(np.asarray(r.grads[n], dtype=np.float64)) for n in names])

        # A stencil on which an op changes branch (relu's 0, smooth_l1's |d| = beta)
        # differences a first derivative with a kink (or a jump) in it: every
        # element of it is nondifferentiable, as for first-order differences.
        kinky = self.of.shows_branches and any(get_op(op).branch is not None for op in graph.ops)
        f = ((lambda values: (gradients(values), self.of.forward_with_branches(graph, values)[1])) if kinky
             else gradients)
        fd = numeric.directional(f, tensors, v, "richardson", kinky)
        kinks = {n: np.full(np.shape(tensors[n]), bool(fd.kink)) for n in names} if kinky else {}
        out, errors, start = {}, {}, 0
        for n in names:
            size = int(np.size(tensors[n]))
            shape = np.shape(tensors[n])
            out[n] = np.asarray(fd.value[start:start + size]).reshape(shape)
            errors[n] = np.broadcast_to(fd.error, np.shape(fd.value))[start:start + size].reshape(shape)
            start += size
        return SourceResult(self.name, "richardson", math.nan, out, grad_errors=errors, grad_kinks=kinks,
                            dtype=self.of.dtype or "float64", device=self.device, seconds=time.perf_counter() - t0)
