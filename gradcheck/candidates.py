"""Candidates: the user's implementations under test.

    >>> import numpy as np
    >>> candidate = Candidate("my-layers")
    >>> @candidate.op("linear")
    ... class Linear:
    ...     @staticmethod
    ...     def forward(x, weight, bias=None):
    ...         y = x @ weight.T
    ...         return (y if bias is None else y + bias), (x, weight, bias is not None)
    ...     @staticmethod
    ...     def backward(saved, grad_out):
    ...         x, weight, has_bias = saved
    ...         g2 = grad_out.reshape(-1, grad_out.shape[-1])
    ...         gw = g2.T @ x.reshape(-1, x.shape[-1])
    ...         return (grad_out @ weight, gw) + ((g2.sum(0),) if has_bias else ())
    >>> candidate.ops
    ('linear',)

Four kinds of plug, any mix in one ``Candidate``:

* ``@candidate.op(name)`` on a class with NumPy ``forward(*tensors, **hyper) ->
  (output, saved)`` and ``backward(saved, grad_out) -> gradients`` (one per
  tensor input, ``None`` for non-differentiable ones);
* ``@candidate.op(name)`` on a ``torch.autograd.Function`` subclass (called as
  ``apply(*tensors, *hyper)`` in the catalogue's hyperparameter order), an
  ``nn.Module`` subclass (built as ``cls(**hyper)`` and called through
  ``torch.func.functional_call`` with the op's parameters by name), or a plain
  function of torch tensors: run through autograd on the chosen device;
* ``candidate.new_op("name", impl, inputs={"x": ("N", "D"), "w": ("D",)})``:
  an op the catalogue does not have, declared by a short spec (or by a full
  ``OpDef`` with ``numpy=``/``torch=``), which the strategies then place into
  random graphs and the suites check op by op;
* ``@candidate.engine``: a whole-model ``loss_and_grads(graph, tensors) ->
  (loss, grads)``.

Ops a candidate does not provide come from the reference (NumPy) or from
torch's own ops, so one new layer is checked inside whole random graphs.  Every
call into candidate code is guarded: an exception, NaN or Inf, a wrong shape or
dtype, the wrong number of gradients, writing into its inputs, or running past
the time limit becomes a ``CandidateError`` naming the op and what was wrong,
recorded with status ``error`` while the other checks go on.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ._guards import Breaker, CandidateError, is_subclass, torch_callable
from .catalogue import CATALOGUE, OpDef, declare_op, get_op
from .sources.candidate import candidate_sources

__all__ = ["Candidate", "CandidateError", "CandidateLoadError", "OpOptions", "load_candidate", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "gradcheck.candidates"


# ---------------------------------------------------------------- the Candidate


@dataclass(frozen=True)
class OpOptions:
    """What a candidate's op says about itself.

    supports: a predicate ``supports(hyper, shapes) -> bool`` on the full
    hyperparameters and the input shapes, or a dict ``{hyper name: allowed
    values}``; settings outside it are never drawn into random graphs, and a
    check that needs them is ``skipped`` (never ``error``).  dtypes: the float
    dtypes the op takes (``("float32",)`` for float32-only code: its finite
    differences then run in float32, judged by float32's error model).
    complex_step: True when the forward is complex-analytic (the complex-step
    check then runs), False when it is not; None (the default) has a probe
    decide (Note [Complex-step probe] in sources/finite_differences.py).
    order, modes: for a torch op, what the suites also check inside random
    graphs containing it: ``order=2`` its double backward, ``modes`` holding
    ``"fwd"`` its forward mode (a ``jvp``) and ``"batched"`` its backward under
    vmap; by default none of these (a Function need not be twice
    differentiable or have a jvp).
    """

    supports: object = None
    dtypes: tuple | None = None
    complex_step: bool | None = None
    order: int = 1
    modes: tuple = ("rev",)
    # The hyperparameters the implementation's signature takes; None: all of them
    # (Note [Settings a signature lacks]).
    takes: frozenset | None = None
    # How many of the op's inputs the signature takes, when it stops before an
    # optional one (cross_entropy's class weight); None: all of them.
    inputs_taken: int | None = None
    # How many inputs the signature needs (positions without a default), when that
    # is more than the op's required ones (layer_norm's weight and bias): a node
    # with fewer is refused.
    inputs_needed: int | None = None
    # The hyperparameters the signature defaults to a number: a node naming one
    # by a string (conv's padding="same") is refused (Note [Settings a signature lacks]).
    numeric: frozenset = frozenset()

    def refuses(self, op: str, hyper: dict, shapes) -> str:
        """Why this op would not take these settings, or ""."""
        if self.inputs_needed is not None and len(shapes) < self.inputs_needed:
            name = get_op(op).inputs[len(shapes)].name
            return (f"{op}'s implementation needs a {name!r} input, so only nodes with it are checked; this node has "
                    f"none")
        if self.inputs_taken is not None and len(shapes) > self.inputs_taken:
            name = get_op(op).inputs[self.inputs_taken].name
            return (f"{op}'s implementation takes no {name!r} input, so only nodes without it are checked; this node "
                    f"has one")
        if self.takes is not None:
            defaults = get_op(op).hyper
            lacking = {k: v for k, v in dict(hyper).items()
                       if k in defaults and k not in self.takes and _frozen(v) != _frozen(defaults[k])}
            if lacking:
                k, v = next(iter(lacking.items()))
                return (f"{op}'s implementation takes no {k!r} parameter, so only its default {defaults[k]!r} is "
                        f"checked; this node has {k}={v!r}")
        named = {k: v for k, v in dict(hyper).items() if k in self.numeric and isinstance(v, str)}
        if named:
            k, v = next(iter(named.items()))
            return (f"{op}'s implementation defaults {k!r} to a number, so only numbers are checked there; this node "
                    f"has {k}={v!r}")
        if self.supports is None:
            return ""
        if isinstance(self.supports, dict):
            bad = {k: hyper.get(k) for k, allowed in self.supports.items() if _frozen(hyper.get(k)) not in
                   {_frozen(v) for v in allowed}}
            if bad:
                return f"{op} is declared only for " + ", ".join(
                    f"{k} in {list(self.supports[k])}" for k in bad) + "; this node has " + ", ".join(
                    f"{k}={v!r}" for k, v in bad.items())
            return ""
        try:
            ok = self.supports(dict(hyper), tuple(tuple(s) for s in shapes))
        except Exception as e:  # a predicate that raises refuses, and says why
            return f"{op}'s supports predicate raised {type(e).__name__}: {e}"
        return "" if ok else f"{op} is declared not to support {_hyper_text(hyper) or 'its defaults'} on inputs " \
                             f"{', '.join(str(tuple(s)) for s in shapes)}"


# Note [Settings a signature lacks]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# A catalogue op gains hyperparameters (avg_pool2d's count_include_pad, say) that
# a user's implementation, written against an older catalogue or simply without
# that option, does not take.  Calling it with the new keyword would crash it, and
# a crash is not a finding about its gradients.  So the signature is read when
# the op is registered: a hyperparameter it has no parameter for (and no
# ``**kwargs`` / ``*args`` to catch it) is never passed, and a node setting it to
# anything but its default is refused like a ``supports=`` refusal: never drawn
# into the candidate's random graphs, ``skipped`` with this reason where a sample
# needs it.  For an autograd.Function the hyperparameters go positionally in the
# catalogue's order, so a forward taking fewer positions takes the leading ones.
# An optional tensor input the catalogue added (cross_entropy's class weight)
# goes positionally too: where the signature has a hyperparameter (or nothing)
# at its place, a node with that input is refused the same way.  And a setting
# the catalogue names by a string where torch also takes numbers (conv's
# padding="same" / "valid") is refused for an implementation whose signature
# defaults that parameter to a number: code written for numeric padding would
# crash on the name, which says nothing about its gradients.  A tensor input the
# catalogue made optional (layer_norm's weight and bias, absent in
# nn.LayerNorm(elementwise_affine=False)) that the signature needs is the same:
# a node without it is refused.


def _taken_inputs(impl, opdef) -> int | None:
    """How many of ``opdef``'s inputs ``impl`` takes, when that stops before an
    optional one (Note [Settings a signature lacks]); None for all."""
    optional = [i for i, a in enumerate(opdef.inputs) if a.optional]
    if not optional or any(a.variadic for a in opdef.inputs):
        return None
    if is_subclass(impl, "torch", "nn.Module"):
        return None  # parameters come by name (functional_call), inputs in order: nothing to read
    params = _parameters(*_hyper_signature(impl)[:2])
    if params is None or any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    hyper = set(opdef.hyper_names or ())
    for i in optional:
        if i >= len(positional) or positional[i] in hyper:
            return i
    return None


def _needed_inputs(impl, opdef) -> int | None:
    """How many of ``opdef``'s inputs ``impl``'s signature needs (leading
    positions without a default), when more than the op requires; None else."""
    required = sum(1 for a in opdef.inputs if not a.optional and not a.variadic)
    if required == len(opdef.inputs) or is_subclass(impl, "torch", "nn.Module"):
        return None
    params = _parameters(*_hyper_signature(impl)[:2])
    if params is None or any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:len(opdef.inputs)]
    needed = next((i for i, p in enumerate(positional) if p.default is not p.empty), len(positional))
    return needed if needed > required else None


def _hyper_signature(impl):
    """Where ``impl`` takes its hyperparameters: (the function, how many leading
    parameters to skip, whether they come by position after the inputs)."""
    if hasattr(impl, "forward") and hasattr(impl, "backward") and is_subclass(impl, "torch", "autograd.Function"):
        return impl.forward, 0 if _has_setup_context(impl) else 1, True  # ctx first, unless setup_context takes it
    if is_subclass(impl, "torch", "nn.Module"):
        return impl.__init__, 0, False
    if hasattr(impl, "forward") and hasattr(impl, "backward"):
        return impl.forward, 0, False
    return impl, 0, False


def _parameters(fn, skip):
    import inspect

    try:
        return list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None


def _taken_hyper(impl, opdef) -> frozenset | None:
    """The hyperparameters of ``opdef`` that ``impl``'s signature can take, or None for all."""
    names = tuple(opdef.hyper_names)
    if not names:
        return None
    fn, skip, by_position = _hyper_signature(impl)
    params = _parameters(fn, skip)
    if params is None:
        return None
    if by_position:
        if any(p.kind == p.VAR_POSITIONAL for p in params) or any(a.variadic for a in opdef.inputs):
            return None
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        n = len(positional) - len(opdef.inputs)
        return None if n >= len(names) else frozenset(names[:max(n, 0)])
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    taken = frozenset(n for n in names if n in {p.name for p in params if p.kind != p.POSITIONAL_ONLY})
    return None if taken == frozenset(names) else taken


def _numeric_defaults(impl, opdef) -> frozenset:
    """The hyperparameters whose default in ``impl``'s signature is a number or
    a tuple of numbers (Note [Settings a signature lacks])."""
    names = tuple(opdef.hyper_names)
    fn, skip, by_position = _hyper_signature(impl)
    params = _parameters(fn, skip) if names else None
    if params is None or any(a.variadic for a in opdef.inputs):
        return frozenset()
    if by_position:
        pairs = zip(names, [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                    [len(opdef.inputs):])
    else:
        by_name = {p.name: p for p in params}
        pairs = ((n, by_name[n]) for n in names if n in by_name)

    def numeric(v):
        if isinstance(v, (tuple, list)):
            return len(v) > 0 and all(numeric(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    return frozenset(n for n, p in pairs if numeric(p.default))


# Note [A loss's reduction "none"]
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Random graphs use a loss with reduction "none" as a body op: its per-element
# (or per-row) losses, probed in a random direction, check a backward that takes
# one cotangent an element.  Much correct user code takes ``reduction`` and
# implements only "mean" and "sum" (anything else summed, or refused with an
# error); that code never claimed per-element losses, and a verdict on them
# would be a false alarm.  So the first time a candidate's loss would get a
# node with reduction "none", its forward is run once on the op's first sample
# with it: where it gives the per-element shape torch gives, such nodes are
# checked (its backward among them); where it gives another shape or raises,
# they are refused like a ``supports=`` refusal (never drawn, ``skipped`` with
# what the forward gave where a sample needs one).


def _per_element_refusal(op, numpy_impl, torch_impl) -> str:
    """Why ``op``'s implementations do not give per-element losses for reduction
    "none", or "" when they do (Note [A loss's reduction "none"])."""
    import numpy as np

    from .case import Case
    from .graph import single_op_graph

    opdef = get_op(op)
    if not opdef.samples:
        return ""
    sample = opdef.samples[0]
    graph = single_op_graph(op, replace(sample, hyper={**sample.hyper, "reduction": "none"}))
    node, want = graph.node("out"), tuple(graph.shapes["out"])
    tensors = Case(graph).tensors()
    args, hyper = [tensors[i] for i in node.inputs], opdef.full_hyper(node.hyper)

    def via_torch(*arrays, **kw):
        import torch

        with torch.no_grad():
            return torch_impl(*(torch.as_tensor(a) for a in arrays), **kw)

    for kind, run in (("NumPy", numpy_impl and (lambda *a, **kw: numpy_impl[0](*a, **kw)[0])),
                      ("torch", torch_impl and via_torch)):
        if not run:
            continue
        try:
            got = f"shape {tuple(np.shape(run(*args, **hyper)))}"
        except Exception as e:  # noqa: BLE001 - the implementation's own answer, said in the reason
            got = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if got != f"shape {want}":
            return (f"{op}'s {kind} implementation gives {got} for reduction='none' on inputs "
                    f"{', '.join(str(tuple(np.shape(a))) for a in args)}, not the per-element losses {want}, so "
                    f"nodes with reduction='none' are not checked for it")
    return ""


def _has_setup_context(fn_class) -> bool:
    import torch

    return getattr(fn_class, "setup_context", None) is not getattr(torch.autograd.Function, "setup_context", None)


def _passing_only(fn, taken):
    """``fn`` called with only the hyperparameters in ``taken``."""
    import functools

    @functools.wraps(fn)
    def call(*args, **hyper):
        return fn(*args, **{k: v for k, v in hyper.items() if k in taken})

    return call


def _frozen(v):
    return tuple(_frozen(x) for x in v) if isinstance(v, (list, tuple)) else v


def _hyper_text(hyper):
    return ", ".join(f"{k}={v!r}" for k, v in sorted(dict(hyper).items()))


class Candidate:
    """A named set of implementations to check (see the module docstring).

    ``exclude``: ops never placed into the random graphs this candidate is
    checked on (an engine that does not implement them, say).  ``version``: said
    in replay files, so a replay against another version of the code says so.
    """

    def __init__(self, name: str, *, time_limit: float | None = 30.0, exclude=(), version: str = ""):
        self.name = name
        self.version = version
        self.time_limit = time_limit
        self.numpy_ops: dict = {}  # op name -> (forward, backward)
        self.torch_ops: dict = {}  # op name -> torch callable
        self.options: dict = {}  # op name -> OpOptions
        self.new_ops: list = []  # OpDefs this candidate declared
        self.exclude = frozenset(exclude)
        self.loss_and_grads = None
        self.optimizers: dict = {}  # optimizer name -> NumPy step function or torch.optim.Optimizer subclass
        self.target = ""  # how it was loaded ("module:attr", "path.py:attr", entry point name)
        self.breaker = Breaker()  # its ops that timed out in this run
        self._per_element: dict = {}  # loss -> why its reduction "none" is not checked, or "" (the probe's answer)

    @property
    def ops(self) -> tuple:
        return tuple(sorted(set(self.numpy_ops) | set(self.torch_ops)))

    def _register(self, name, impl, options):
        opdef = get_op(name)
        taken = _taken_hyper(impl, opdef)  # Note [Settings a signature lacks]
        if taken is not None:
            options = replace(options, takes=taken)
        inputs = _taken_inputs(impl, opdef)
        if inputs is not None:
            options = replace(options, inputs_taken=inputs)
        options = replace(options, numeric=_numeric_defaults(impl, opdef), inputs_needed=_needed_inputs(impl, opdef))
        if hasattr(impl, "forward") and hasattr(impl, "backward") and not (
                is_subclass(impl, "torch", "autograd.Function") or is_subclass(impl, "torch", "nn.Module")):
            forward = impl.forward if taken is None else _passing_only(impl.forward, taken)
            self.numpy_ops[name] = (forward, impl.backward)
            declared = getattr(impl, "complex_step", None)  # a class may say it on itself
            if options.complex_step is None and isinstance(declared, bool):
                options = replace(options, complex_step=declared)
        else:
            call = torch_callable(name, impl, opdef, taken)
            self.torch_ops[name] = call
        self.options[name] = options

    def op(self, name: str, *, supports=None, dtypes=None, complex_step=None, order=1, modes=("rev",)):
        """Decorator: the implementation of catalogue op ``name`` (see ``OpOptions``
        for what the keywords declare)."""
        get_op(name)  # an unknown name fails here, naming the catalogue
        options = _options(name, supports, dtypes, complex_step, order, modes)

        def register(impl):
            self._register(name, impl, options)
            return impl

        return register

    def new_op(self, opdef, impl=None, *, inputs=None, hyper=None, roles=None, families=None, sizes=None,
               loss=None, kinks=False, numpy=None, torch=None, formula=None, supports=None, dtypes=None,
               complex_step=None):
        """Declare an op the catalogue lacks, either from a short spec,

            candidate.new_op("swish_gate", SwishGate, inputs={"x": ("N", "D"), "w": ("D",)})

        (``impl``: an autograd.Function, nn.Module, torch function or a class with
        NumPy forward/backward; roles, output shape, samples, placement and
        families derived as catalogue/spec.py says; ``hyper``: ``{name: value,
        list of choices or strategy}``; ``roles``: overrides; ``sizes``: ``{symbol:
        size or (lo, hi)}``; ``loss``: whether it is a loss, default when it
        returns a scalar; ``kinks``: whether it has points of
        non-differentiability), or from a full ``OpDef`` with ``numpy=`` and/or
        ``torch=`` implementations.

        formula: a plain torch function of the same maths, differentiated by
        autograd, used as the independent side of analytic comparisons (the
        reference has no VJP for an op it does not know); without one those
        comparisons are reported as skipped, never as passed."""
        if isinstance(opdef, str):
            if inputs is None:
                raise TypeError(f"new_op({opdef!r}): give inputs={{name: shape}}, such as "
                                f"inputs={{'x': ('N', 'D'), 'w': ('D',)}}, or a full OpDef")
            if impl is None:
                raise TypeError(f"new_op({opdef!r}): give the implementation to check")
            return self._new_op_from_spec(opdef, impl, inputs, hyper=hyper, roles=roles, families=families,
                                          sizes=sizes, loss=loss, kinks=kinks, formula=formula, supports=supports,
                                          dtypes=dtypes, complex_step=complex_step)
        if not isinstance(opdef, OpDef):
            raise TypeError(f"new_op: expected an op name with inputs=, or an OpDef; got {type(opdef).__name__}")
        if formula is not None:
            opdef = replace(opdef, torch=formula)  # the formula is part of the op's one record
        # A declared op may be declared again (the module loaded a second time): the
        # newest declaration wins.
        declare_op(opdef)
        self.new_ops.append(opdef)
        options = _options(opdef.name, supports, dtypes, complex_step)
        if numpy is not None:
            self._register(opdef.name, numpy, options)
        if torch is not None:
            self.torch_ops[opdef.name] = torch_callable(opdef.name, torch, opdef)
            self.options[opdef.name] = options
        return opdef

    def _new_op_from_spec(self, name, impl, inputs, *, formula, supports, dtypes, complex_step, **spec):
        from .catalogue.spec import spec_opdef

        is_numpy = hasattr(impl, "forward") and hasattr(impl, "backward") and not (
            is_subclass(impl, "torch", "autograd.Function") or is_subclass(impl, "torch", "nn.Module"))
        if not is_numpy and not callable(impl):
            raise TypeError(f"new_op({name!r}): expected an autograd.Function or nn.Module subclass, a function, "
                            f"or a class with NumPy forward/backward; got {impl!r}")

        def run(draft, *arrays, **hyper):  # the op's own forward, to find output shapes
            if is_numpy:
                return impl.forward(*arrays, **hyper)[0]
            import torch

            with torch.no_grad():
                return torch_callable(name, impl, draft)(*(torch.as_tensor(a) for a in arrays), **hyper)

        opdef = spec_opdef(name, run, inputs, formula=formula, **spec)
        declare_op(opdef)
        self.new_ops.append(opdef)
        options = _options(name, supports, dtypes, complex_step)
        if is_numpy:
            self._register(name, impl, options)
        else:
            self.torch_ops[name] = torch_callable(name, impl, opdef)
            self.options[name] = options
        return opdef

    def optimizer(self, name: str, *, reference=None, hyper=None):
        """Decorator: an implementation of optimizer ``name``: a NumPy ``step(params,
        grads, state, **hyper) -> (params, state)`` or a ``torch.optim.Optimizer``
        subclass taking torch's arguments.  For the reference's five (sgd, adam,
        adamw, rmsprop, adagrad) the harness knows the maths and the
        hyperparameters.  Any other name is declared here: ``reference``, the step
        to compare its trajectories with (either kind; without one only the
        properties are checked, and the comparisons say so), and ``hyper``, its
        hyperparameters as ``{name: value, list of choices or strategy}`` or a
        strategy of dicts (give ``lr`` so the descent property can take a small
        step)."""
        from reference_impl.optimizers import OPTIMIZERS

        from .optim import declare_optimizer

        if name in OPTIMIZERS:
            if reference is not None or hyper is not None:
                raise ValueError(f"optimizer {name!r} is one of the reference's: reference= and hyper= are its own")
        elif not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"optimizer name must be an identifier, got {name!r}")
        else:
            declare_optimizer(name, reference, hyper)

        def register(impl):
            self.optimizers[name] = impl
            return impl

        return register

    def engine(self, fn):
        """Decorator: a whole-model ``loss_and_grads(graph, tensors) -> (loss, grads)``."""
        self.loss_and_grads = fn
        return fn

    def options_of(self, op: str) -> OpOptions:
        return self.options.get(op, _NO_OPTIONS)

    def refuses_node(self, op: str, hyper, shapes) -> str:
        """Why a node of ``op`` with these settings is not this candidate's to check, or ""."""
        if op in self.exclude:
            return f"{self.name} excludes {op} from its graphs"
        why = self.options_of(op).refuses(op, hyper, shapes)
        if not why and dict(hyper).get("reduction") == "none" and op in self.ops and get_op(op).is_loss:
            if op not in self._per_element:
                self._per_element[op] = _per_element_refusal(op, self.numpy_ops.get(op), self.torch_ops.get(op))
            why = self._per_element[op]
        return why

    def refuses(self, graph, dtype: str, ops=None) -> str:
        """Why this candidate does not claim ``graph`` in ``dtype`` (considering the
        nodes of ``ops``, default its own), or "": such a check is ``skipped``."""
        mine = set(self.ops) if ops is None else set(ops)
        for name, op, inputs, hyper in graph.plan():
            why = self.refuses_node(op, hyper, [graph.shapes[i] for i in inputs]) if (
                op in mine or op in self.exclude) else ""
            if why:
                return f"{why} ({name})"
            dtypes = self.options_of(op).dtypes if op in mine else None
            if dtypes and dtype not in dtypes:
                return f"{self.name}'s {op} is declared for {', '.join(dtypes)} only, not {dtype}"
        return ""

    def float_dtypes(self, default=("float64", "float32")) -> tuple:
        """The case dtypes to check this candidate's ops in."""
        declared = [self.options_of(o).dtypes for o in self.ops if self.options_of(o).dtypes]
        if not declared:
            return tuple(default)
        return tuple(d for d in ("float64", "float32", "float16", "bfloat16") if any(d in ds for ds in declared))

    def sources(self, device: str = "cpu", dtype: str = "float64") -> list:
        """The sources that run this candidate's code."""
        return candidate_sources(self, device, dtype)

    @property
    def identity(self) -> dict:
        """What a replay file says about the candidate it was written for."""
        return {"name": self.name, "version": self.version, "target": _portable_target(self.target),
                "ops": list(self.ops), "new_ops": [o.name for o in self.new_ops]}

    def __repr__(self):
        kinds = [f"numpy ops {sorted(self.numpy_ops)}" if self.numpy_ops else "",
                 f"torch ops {sorted(self.torch_ops)}" if self.torch_ops else "",
                 "an engine" if self.loss_and_grads else "",
                 f"optimizers {sorted(self.optimizers)}" if self.optimizers else ""]
        return f"Candidate({self.name!r}: {', '.join(k for k in kinds if k) or 'empty'})"


_NO_OPTIONS = OpOptions()


def _options(name, supports, dtypes, complex_step, order=1, modes=("rev",)):
    if supports is not None and not (callable(supports) or isinstance(supports, dict)):
        raise TypeError(f"candidate op {name!r}: supports must be a predicate (hyper, shapes) -> bool or a dict "
                        f"of allowed values, got {type(supports).__name__}")
    if isinstance(supports, dict):
        opdef = get_op(name)
        unknown = sorted(set(supports) - set(opdef.hyper))
        if unknown:
            raise ValueError(f"candidate op {name!r}: supports names {unknown[0]!r}, which is not a hyperparameter "
                             f"of {name} (it takes {sorted(opdef.hyper) or 'none'})")
    if dtypes is not None:
        dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
        bad = [d for d in dtypes if d not in ("float64", "float32", "float16", "bfloat16")]
        if bad or not dtypes:
            raise ValueError(f"candidate op {name!r}: dtypes {list(dtypes)!r}: choose among float64, float32, "
                             f"float16, bfloat16")
    if complex_step not in (None, True, False):
        raise TypeError(f"candidate op {name!r}: complex_step must be True, False or None")
    if order not in (1, 2):
        raise ValueError(f"candidate op {name!r}: order must be 1 or 2 (also check its double backward), got {order!r}")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or any(m not in ("rev", "fwd", "batched") for m in modes):
        raise ValueError(f"candidate op {name!r}: modes must hold 'rev', 'fwd' and/or 'batched', got {modes!r}")
    return OpOptions(supports, dtypes, complex_step, order, modes)


def _portable_target(target: str) -> str:
    """A target that loads from any folder: a file path made absolute."""
    module_part, sep, attr = target.rpartition(":")
    if sep and (module_part.endswith(".py") or "/" in module_part):
        return f"{Path(module_part).resolve()}:{attr}"
    return target


# ---------------------------------------------------------------- loading


class CandidateLoadError(LookupError):
    """A candidate target that does not load: what was wrong, in one line."""


def load_candidate(target: str) -> Candidate:
    """A Candidate from ``module:attr``, ``path/to/file.py:attr`` or the name of an
    entry point in the ``gradcheck.candidates`` group.  What is found there must
    be a ``Candidate``: nothing found by name is ever called.  Any way the target
    fails to load (no such file, a syntax error, an exception while importing,
    another kind of object) is a ``CandidateLoadError`` saying which."""
    if not isinstance(target, str) or not target.strip():
        raise CandidateLoadError("give a candidate as module:attr, path/to/file.py:attr or an entry point name")
    module_part, _, attr = target.rpartition(":") if ":" in target else ("", "", "")
    try:
        if module_part and (module_part.endswith(".py") or "/" in module_part):
            path = Path(module_part)
            if not path.is_file():
                raise CandidateLoadError(f"candidate file {module_part!r} does not exist")
            spec = importlib.util.spec_from_file_location(f"gradcheck_candidate_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            obj = getattr(module, attr)
        elif module_part:
            obj = getattr(importlib.import_module(module_part), attr)
        else:
            from importlib.metadata import entry_points

            found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
            if not found:
                names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
                raise CandidateLoadError(f"no candidate {target!r}: not module:attr, not file.py:attr, and not an "
                                         f"entry point in {ENTRY_POINT_GROUP!r} (installed: {names or 'none'})")
            obj = found[0].load()
    except CandidateLoadError:
        raise
    except AttributeError as e:
        raise CandidateLoadError(f"candidate {target!r}: {e}") from None
    except SyntaxError as e:
        raise CandidateLoadError(f"candidate {target!r}: syntax error in {e.filename}, line {e.lineno}: "
                                 f"{e.msg}") from None
    except ImportError as e:
        raise CandidateLoadError(f"candidate {target!r}: cannot import: {e}") from None
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # noqa: BLE001 - the module raised while importing
        raise CandidateLoadError(f"candidate {target!r}: importing it raised {type(e).__name__}: {e}") from None
    if not isinstance(obj, Candidate):
        raise CandidateLoadError(f"candidate {target!r} is a {type(obj).__name__}, not a gradcheck.Candidate")
    obj.target = target
    return obj
