"""PyTorch autograd as a gradient source.

Each op runs as its catalogue record's torch formula (``OpDef.torch``, written
with ``torch.nn.functional``); there is no hand-written backward here, autograd
differentiates everything.  Runs on any
device torch sees (``cpu``, ``cuda``, ``cuda:N``) in float64, float32, float16 or
bfloat16.  torch is imported when a source is made, not when gradcheck is.
"""

from __future__ import annotations

import re
import time
import warnings

import numpy as np

from ..case import DTYPES
from ..catalogue import CATALOGUE, get_op
from ..graph import Graph
from .base import ANALYTIC, Source, SourceResult, Unsupported, branch_signature
from .batching import slices

__all__ = ["TorchSource", "check_device", "DeviceError"]

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class DeviceError(ValueError):
    """A device torch cannot run on here; the message says what can."""


def check_device(device: str) -> str:
    """``device`` when torch can run there, else DeviceError naming what can
    (checked before any work starts)."""
    if not _DEVICE.match(device):
        raise DeviceError(f"--device {device}: not a device; give cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        try:
            torch = _torch()
        except ImportError:
            raise DeviceError(f"--device {device}: torch is not installed") from None
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: torch sees no CUDA device here; give cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device
FUSE_LIMIT = 1 << 16  # up to this many scalars, a directional step moves every tensor in one flat add


def _torch():
    import torch

    return torch


class TorchSource(Source):
    """Builds a graph from ``torch.nn.functional`` on ``device`` in ``dtype`` and
    differentiates it with autograd.

    ``check_determinism`` runs the backward pass twice and records the largest
    difference between the two gradients (nondeterministic CUDA kernels such as
    atomic adds); the comparison then allows that much, and the record shows it.

        >>> from gradcheck.case import op_cases
        >>> case = op_cases("tanh")[0]
        >>> r = TorchSource().run(case.graph, case.tensors())
        >>> sorted(r.grads)
        ['x']
    """

    steps_along = batches_copies = shows_branches = True

    def __init__(self, device: str = "cpu", dtype: str = "float64", check_determinism: bool = False,
                 ops: dict | None = None, name: str | None = None, candidate=None):
        torch = _torch()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.device = str(torch.device(device))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise Unsupported(f"device {device!r} requested but torch sees no CUDA device")
        self.dtype = dtype
        self.torch_dtype = getattr(torch, dtype)
        self.check_determinism = check_determinism
        self.ops = ops  # overrides: op name -> torch function (a candidate's layers)
        self.candidate = candidate  # whose ops these are, when they are a candidate's
        # the ops whose VJP is this source's own: a candidate's, or every op with a torch formula
        self.provides = frozenset(ops) if ops else frozenset(n for n, o in CATALOGUE.items() if o.torch)
        self.name = name or f"torch-{self.device.split(':')[0]}"
        self._vmap_ok = {}

    @property
    def spec(self) -> str:
        if self.candidate is not None:
            return f"candidate:torch:{self.device}:{self.dtype}"
        if self.ops:
            return ""  # ops swapped in code cannot be named in a file
        return f"torch:{self.device}:{self.dtype}"

    @property
    def accepts(self):
        """A candidate's declared settings; None (any) for torch's own ops."""
        if self.candidate is None:
            return None
        return lambda op, hyper, shapes: (op in self.provides or get_op(op).torch is not None) and not (
            self.candidate.refuses_node(op, hyper, shapes))

    def complex_claim(self, graph):
        return False  # this source takes no complex input

    def _require(self, graph):
        if self.candidate is not None:
            why = self.candidate.refuses(graph, self.dtype, self.provides)
            if why:
                raise Unsupported(why)

    def local_op(self, op):
        """``op`` of this source as a NumPy ``Op(forward, backward)`` (float64 in and
        out), differentiated by autograd: for re-judging one node at a time."""
        torch = _torch()
        fn = self._fn(op)

        def forward(*args, **hyper):
            ts = []
            for a in args:
                a = np.asarray(a)
                if a.dtype.kind in "iu":
                    ts.append(torch.as_tensor(a, dtype=torch.long, device=self.device))
                else:
                    ts.append(torch.as_tensor(a, device=self.device).to(self.torch_dtype).requires_grad_(True))
            with torch.enable_grad():
                out = fn(*ts, **hyper)
            return out.detach().to(torch.float64).cpu().numpy(), (ts, out)

        def backward(saved, g):
            ts, out = saved
            wrt = [t for t in ts if t.requires_grad]
            grads = torch.autograd.grad(out, wrt, torch.as_tensor(np.asarray(g), device=self.device).to(out.dtype),
                                        allow_unused=True, retain_graph=True)
            it = iter(grads)
            res = []
            for t in ts:
                if not t.requires_grad:
                    res.append(None)
                    continue
                gi = next(it)
                res.append(np.zeros(tuple(t.shape)) if gi is None or gi._is_zerotensor()
                           else gi.to(torch.float64).cpu().numpy())
            return tuple(res)

        from reference_impl import Op

        return Op(forward, backward)

    def _fn(self, op):
        if self.ops and op in self.ops:
            return self.ops[op]
        formula = get_op(op).torch
        if formula is None:
            raise Unsupported(f"no torch formula for op {op!r}")
        return formula

    def _leaves(self, graph: Graph, tensors: dict, requires_grad: bool):
        torch = _torch()
        out = {}
        for leaf in graph.leaves:
            v = np.asarray(tensors[leaf.name])
            if leaf.dtype == "int":
                out[leaf.name] = torch.as_tensor(v, dtype=torch.long, device=self.device)
            else:
                t = torch.as_tensor(v, device=self.device).to(self.torch_dtype)
                out[leaf.name] = t.requires_grad_(requires_grad and leaf.differentiable)
        return out

    def _forward(self, graph, values, only=None):
        self._require(graph)
        for name, op, inputs, hyper in graph.plan():
            if only is not None and name not in only:
                continue
            try:
                values[name] = self._fn(op)(*(values[i] for i in inputs), **hyper)
            except RuntimeError as e:
                if any(w in str(e) for w in ("not implemented for", "Unsupported", "unsupported")):
                    raise Unsupported(f"{op} in {self.dtype} on {self.device}: {e}") from None
                raise
        return values

    def loss_function(self, graph: Graph, tensors: dict, also=()):
        """The graph's loss as a torch function of its differentiable leaves, in
        ``graph.differentiable_leaves`` order, then of the leaves named in
        ``also`` (constants a caller slices, such as targets), the other leaves
        held at their values; with those leaves as tensors (the differentiable
        ones requiring grad) and their names.  For checks of this source's
        higher derivatives (second order, forward mode, per-sample gradients)
        by ``gradcheck.check``."""
        fixed = self._leaves(graph, tensors, False)
        differentiable = [leaf.name for leaf in graph.differentiable_leaves]
        names = differentiable + [n for n in also if n not in differentiable]

        def loss(*leaves):
            return self._forward(graph, {**fixed, **dict(zip(names, leaves))})[graph.output]

        if len(names) == len(differentiable):  # every one differentiated (check's rule when none requires grad)
            return loss, [fixed[n] for n in names], names
        return loss, [fixed[n].detach().requires_grad_(n in differentiable) for n in names], names

    def forward(self, graph: Graph, tensors: dict):
        torch = _torch()
        if any(np.iscomplexobj(v) for v in tensors.values()):
            raise Unsupported("the torch source takes no complex input")
        with torch.no_grad():
            values = self._forward(graph, self._leaves(graph, tensors, False))
        return values[graph.output].double().cpu().numpy()

    def forward_along(self, graph: Graph, tensors: dict, directions: dict, steps, memo=None) -> list:
        """The loss at x + t * directions for each t in ``steps``: the tensors and the
        direction go to torch once, and each step is taken there.  ``memo``: a dict
        the caller keeps for one graph and one set of tensors, so that the tensors
        are converted, and buffers for the moved point allocated, once for all
        directions."""
        torch = _torch()
        memo = {} if memo is None else memo
        with torch.no_grad():
            if "base" not in memo:
                memo["base"] = self._leaves(graph, tensors, False)
            base = memo["base"]
            names = list(directions)
            moved = memo.setdefault("moved", {})
            if sum(base[n].numel() for n in names) <= FUSE_LIMIT and len({base[n].dtype for n in names}) == 1:
                # A small model: every tensor moved by one add over one flat buffer,
                # of which the tensors are views (per-call overhead, not arithmetic,
                # is the cost here).  The same sums element by element as below.
                if "flat" not in memo:
                    # the buffers and their views are scratch kept across runs for the
                    # latest layout only (one layout after another would otherwise pile up)
                    layout = (tuple((n, tuple(base[n].shape)) for n in names), base[names[0]].dtype,
                              base[names[0]].device)
                    if moved.get(("flat",), (None,))[0] != layout:
                        size = sum(base[n].numel() for n in names)
                        flat, buf = (torch.empty(size, dtype=layout[1], device=layout[2]) for _ in range(2))
                        views, start = {}, 0
                        for n in names:
                            views[n] = buf[start:start + base[n].numel()].view(base[n].shape)
                            start += base[n].numel()
                        moved[("flat",)] = (layout, flat, buf, views)
                    _, flat, buf, views = moved[("flat",)]
                    torch.cat([base[n].reshape(-1) for n in names], out=flat)
                    memo["flat"] = (flat, buf, views)
                flat, buf, views = memo["flat"]
                d = torch.as_tensor(np.concatenate([np.ravel(directions[n]) for n in names]), device=self.device)
                out = []
                for t in steps:
                    torch.add(flat, d, alpha=t, out=buf)
                    out.append(float(self._forward(graph, {**base, **views})[graph.output]))
                return out
            # int8 signs go as they are (an eighth of the bytes to a GPU); the add below
            # promotes them to the tensor's dtype inside its one kernel
            dirs = {n: torch.as_tensor(np.asarray(v), device=self.device) for n, v in directions.items()}
            # One buffer a tensor, rewritten at each step in one fused kernel: no fresh
            # allocation (and page faults) the size of the model a forward.
            for n in dirs:
                old = moved.get(n)
                if not (isinstance(old, torch.Tensor) and old.shape == base[n].shape and old.dtype == base[n].dtype
                        and old.device == base[n].device):
                    moved[n] = torch.empty_like(base[n])
            out = []
            for t in steps:
                for n, v in dirs.items():
                    torch.add(base[n], v, alpha=t, out=moved[n])
                out.append(float(self._forward(graph, {**base, **{n: moved[n] for n in dirs}})[graph.output]))
        return out

    def forward_with_branches(self, graph: Graph, tensors: dict):
        """The loss and the branch signature of every kink op, from this source's own
        forward values (Note [Kinks] in sources/numeric.py)."""
        torch = _torch()
        if any(np.iscomplexobj(v) for v in tensors.values()):
            raise Unsupported("the torch source takes no complex input")
        with torch.no_grad():
            values = self._forward(graph, self._leaves(graph, tensors, False))
        host = {k: v.double().cpu().numpy() if v.dtype.is_floating_point else v.cpu().numpy()
                for k, v in values.items()}
        return host[graph.output], branch_signature(graph, host)

    def batched_forward(self, graph: Graph, tensors: dict, name: str, index, steps, memo=None) -> np.ndarray:
        """The loss at copies of leaf ``name`` with element ``index[j]`` moved by
        ``steps[j]``, all copies in one ``torch.func.vmap`` call (built by one scatter
        in torch, never as NumPy copies); a graph with an op vmap cannot batch is
        run copy by copy instead.  ``memo``: a dict the caller keeps for one graph
        and one set of tensors, so the unperturbed forward is made once."""
        torch = _torch()
        with torch.no_grad():
            base = self._leaves(graph, tensors, False)
            x = base[name]
            n = len(index)
            rows = torch.arange(n, device=self.device)
            flat = x.reshape(1, -1).repeat(n, 1)
            flat[rows, torch.as_tensor(np.asarray(index), device=self.device)] += torch.as_tensor(
                np.asarray(steps), device=self.device, dtype=self.torch_dtype)
            xs = flat.reshape((n,) + tuple(x.shape))
            # Only nodes downstream of the perturbed leaf change: the rest come from one
            # forward at the unperturbed point, made once for every batch of this case.
            if memo is None or "unperturbed" not in memo:
                values = self._forward(graph, dict(base))
                if memo is not None:
                    memo["unperturbed"] = values
            values = memo["unperturbed"] if memo is not None else values
            downstream = graph.downstream(name)
            fixed = {k: v for k, v in values.items() if k not in downstream}

            def loss_at(xi):
                return self._forward(graph, {**fixed, name: xi}, only=downstream)[graph.output]

            if self._vmap_ok.get(graph.case_id, True):
                try:
                    per_copy = sum(v.element_size() * v.numel() for k, v in values.items() if k in downstream)
                    with warnings.catch_warnings():
                        # torch's note that an op without a batching rule runs its slower
                        # fallback (kl_div, soft_margin_loss): right, only slower
                        warnings.filterwarnings("ignore", message="There is a performance drop")
                        return np.concatenate([torch.func.vmap(loss_at)(xs[part]).double().cpu().numpy()
                                               for part in slices(n, per_copy)])
                except Exception:
                    # Anything vmap cannot batch (an autograd.Function without
                    # setup_context, say) runs copy by copy; a real error recurs there.
                    self._vmap_ok[graph.case_id] = False
            return np.array([float(loss_at(xi)) for xi in xs])

    def _backward(self, graph, values, loss, wrt):
        """``autograd.grad`` of the loss; with a candidate's ops, guarded like any call
        into its code (Note [Guarded calls]), the op whose backward was running named
        by a hook on each candidate op's output."""
        torch = _torch()

        def grad():
            return torch.autograd.grad(loss, wrt, allow_unused=True, retain_graph=self.check_determinism)

        if self.candidate is None:
            return grad()
        from .._guards import CandidateError, guarded_call

        breaker = self.candidate.breaker
        flight = {"op": ""}
        for name, op, _, _ in graph.plan():
            if op in self.provides:
                breaker.check(op, "backward")
                if isinstance(values[name], torch.Tensor) and values[name].requires_grad:
                    values[name].register_hook(lambda g, op=op: flight.__setitem__("op", op))
        try:
            return guarded_call(grad, "", "backward", self.candidate.time_limit, None)
        except CandidateError as e:
            op = flight["op"]
            text = f"{op}.{e}" if op and str(e).startswith("backward") else str(e)
            if op and "did not finish within the time limit" in text:
                breaker.trip(op, "backward", text)
            raise CandidateError(text, op=op, phase="backward") from e

    def run(self, graph: Graph, tensors: dict) -> SourceResult:
        torch = _torch()
        t0 = time.perf_counter()
        values = self._forward(graph, self._leaves(graph, tensors, True))
        loss = values[graph.output]
        diff_leaves = [leaf.name for leaf in graph.differentiable_leaves]
        wrt = [values[n] for n in diff_leaves]
        grads = self._backward(graph, values, loss, wrt)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]
        nondeterminism = None
        if self.check_determinism:
            again = torch.autograd.grad(loss, wrt, allow_unused=True)
            again = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, again)]
            nondeterminism = max((float((g1 - g2).abs().max()) for g1, g2 in zip(grads, again) if g1.numel()),
                                 default=0.0)

        def host(t):
            if t._is_zerotensor():  # autograd's zeros that hold no memory (abs's second derivative)
                return np.zeros(tuple(t.shape))
            return t.detach().to(torch.float64).cpu().numpy()

        return SourceResult(
            self.name, ANALYTIC, float(loss.detach().double().cpu()),
            {n: host(g) for n, g in zip(diff_leaves, grads)},
            {node.name: host(values[node.name]) for node in graph.nodes},
            dtype=self.dtype, device=self.device, seconds=time.perf_counter() - t0,
            nondeterminism=nondeterminism,
        )
