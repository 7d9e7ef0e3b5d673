"""The one-call door: check any differentiable function, module or model.

    >>> import torch
    >>> from gradcheck import check
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    >>> records = check(lambda x, w: torch.tanh(x * w), x.requires_grad_(), w)
    >>> {r.status for r in records}
    {'pass'}

``check(fn, *inputs)`` runs a torch callable (a function, ``MyFunction.apply``,
an ``nn.Module`` whose parameters are checked too, or a whole model with its
loss) and checks its backward against finite differences of its own forward,
judged by the harness's error model (a dtype-aware step and predicted error, a
Richardson re-judgement, float32 judged as float32), full up to 8 scalars
and along random directions above (a failure localised to the tensor and the
element, so its message is the same as a full check's), with every
call guarded (in-place writes, NaN, shapes, dtypes, the time limit).  With
``reference=``, an independent implementation of the same maths (built-in ops,
differentiated by autograd), it also compares the two analytically, which
catches a forward that is wrong in the same way as its backward.
``check_numpy(forward, backward, *arrays)`` does the same for the NumPy
forward/backward contract.  A failure raises ``CheckFailed`` (an
AssertionError) with the record's message; a pass returns the records.

``fuzz(fn, inputs={"x": ("N", "D"), "w": ("D",)})`` draws shapes from the
symbolic spec, hyperparameters from strategies and values from the regimes
where backward passes break, checks each draw with ``check``, and shrinks a
failure to the smallest shapes and simplest values.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from .candidates import Candidate
from .case import Case
from .catalogue import CATALOGUE, CONST, INPUT, PARAM, OpDef, TensorArg, declare_op
from .graph import GraphBuilder
from .judge import JOINT, Tolerance, check_pair, with_opinion
from .sources import FiniteDifferences, ReferenceOrFormula
from .sources.candidate import NumpyCandidateSource, torch_candidate_source
from .testing import describe_failure

__all__ = ["check", "check_numpy", "fuzz", "CheckFailed", "Records", "REGIMES"]


class CheckFailed(AssertionError):
    """A check of a function failed; the message names the input, the element,
    both values and the tolerance.  ``records`` holds every record."""

    def __init__(self, message, records):
        super().__init__(message)
        self.records = records


class Records(list):
    """The records of a check that passed."""

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self])


# ---------------------------------------------------------------- inputs


def _torch():
    import torch

    return torch


def _function_class(fn):
    """The autograd.Function subclass whose ``apply`` ``fn`` is, or None."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and owner.__name__ != "type" and hasattr(owner, "forward") and hasattr(
            owner, "backward") and getattr(fn, "__name__", "") == "apply":
        return owner
    return None


def _separate_context(owner) -> bool:
    """A Function in the style whose forward takes no ctx (setup_context instead)."""
    import torch

    return getattr(owner, "setup_context", None) is not getattr(torch.autograd.Function, "setup_context", None)


def _arg_names(fn, n):
    """Names for the positional inputs: the function's own parameter names where
    it has them (``x``, ``weight``; a Function's forward without ``ctx``), else
    ``input0``, ``input1``..."""
    owner = _function_class(fn)
    try:
        params = [p for p in inspect.signature(owner.forward if owner else fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if owner is not None and not _separate_context(owner):
        params = params[1:]  # ctx
    names = [p.name for p in params[:n]]
    if len(names) < n or len(set(names)) < len(names) or "ctx" in names:
        names = [f"input{i}" for i in range(n)]
    return names


class _Plan:
    """What a call of ``fn`` takes: the tensors to check, the constants beside them,
    and how to call ``fn`` with them again."""

    def __init__(self, fn, inputs, dtype, numpy_style, names=None, loss=None, seed=0):
        torch = None if numpy_style else _torch()
        self.fn, self.numpy_style, self.loss, self.seed = fn, numpy_style, loss, seed
        self.module = fn if torch is not None and isinstance(fn, torch.nn.Module) else None
        names = list(names) if names else _arg_names(fn.forward if self.module is not None else fn, len(inputs))
        arrays = [self._array(v) for v in inputs]
        # torch's convention: tensors with requires_grad are differentiated; when none
        # has it (and no module parameter), every floating tensor is
        params = [] if self.module is None else [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        wanted = any(d for _, d in arrays) or params
        self.slots, self.values, self.args = [], {}, []  # slots: per positional input, a leaf name or a constant
        for name, value, (array, differentiable) in zip(names, inputs, arrays):
            if array is None:  # a non-tensor argument passes through as it is
                self.slots.append(("const", value))
                continue
            if not wanted:
                differentiable = array.dtype.kind == "f"
            self.slots.append(("leaf", name))
            self.args.append(TensorArg(name, INPUT if differentiable else CONST,
                                       "float" if array.dtype.kind == "f" else "int"))
            self.values[name] = array
        for pname, p in params:
            self.args.append(TensorArg(pname, PARAM))
            self.values[pname] = p.detach().cpu().numpy()
        if not any(a.differentiable for a in self.args):
            raise TypeError("check: no floating-point input or parameter to differentiate"
                            + (f" (inputs: {', '.join(type(v).__name__ for v in inputs)})" if inputs else ""))
        floats = [self.values[a.name] for a in self.args if a.differentiable]
        self.dtype = _dtype_name(dtype) if dtype is not None else str(floats[0].dtype)
        self.values = {k: v.astype(self.dtype) if v.dtype.kind == "f" else v for k, v in self.values.items()}

    def _array(self, value):
        torch = None if self.numpy_style else _torch()
        if torch is not None and isinstance(value, torch.Tensor):
            array = value.detach().cpu()
            if array.dtype == torch.bfloat16:
                array = array.float()
            return array.numpy(), bool(value.requires_grad) and value.dtype.is_floating_point
        if isinstance(value, np.ndarray):
            return value, value.dtype.kind == "f"
        return None, False

    def call(self, *tensors, fn=None):
        """``fn`` (default the callable under check; ``reference=`` is called the
        same way) on the leaves in order, its random numbers drawn from the same
        seed every call, so a dropout layer keeps its mask while finite
        differences move the inputs."""
        fn = self.fn if fn is None else fn
        by_name = dict(zip([a.name for a in self.args], tensors))
        positional = [by_name[v] if kind == "leaf" else v for kind, v in self.slots]
        if self.numpy_style:
            return fn(*positional)
        torch = _torch()
        with _seeded_rng(torch, tensors, self.seed):
            if self.module is not None:
                from torch.func import functional_call

                params = {a.name: by_name[a.name] for a in self.args if a.role == PARAM}
                out = functional_call(fn, params, tuple(positional))
            else:
                out = fn(*positional)
            return self.loss(out) if self.loss is not None else out

    def output(self):
        """The callable's output at the check's values (no grad), computed once."""
        if not hasattr(self, "_output"):
            torch = _torch()
            with torch.no_grad():
                self._output = self.call(*(torch.as_tensor(self.values[a.name]) for a in self.args))
        return self._output

    @contextmanager
    def kept(self):
        """The module's buffers (batch norm's running statistics) as they were
        before the check, however many forwards it ran."""
        if self.module is None:
            yield
            return
        buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        try:
            yield
        finally:
            torch = _torch()
            with torch.no_grad():
                for n, b in self.module.named_buffers():
                    if n in buffers:
                        b.copy_(buffers[n])


@contextmanager
def _seeded_rng(torch, tensors, seed):
    """torch's generators (CPU, and the CUDA devices of ``tensors``) seeded with
    ``seed`` inside, and as they were outside (cheaper than torch.manual_seed,
    which records a stack trace each call)."""
    generators = [torch.default_generator]
    if torch.cuda.is_available():
        devices = {t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.device.type == "cuda"}
        generators += [torch.cuda.default_generators[i] for i in sorted(devices)]
    states = [g.get_state() for g in generators]
    for g in generators:
        g.manual_seed(seed)
    try:
        yield
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)


def _dtype_name(dtype) -> str:
    """"float32" for torch.float32, np.float32 or "float32"."""
    text = str(dtype).replace("torch.", "")
    try:
        return str(np.dtype(text)) if text != "bfloat16" else text
    except TypeError:
        raise TypeError(f"check: dtype must name a floating dtype (float64, float32...), got {dtype!r}") from None


def _flat(out):
    """One output tensor: the floating tensors of a tuple, list or dict of outputs
    concatenated, flattened (integer outputs, such as argmax indices, are not
    differentiable and are left out)."""
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        parts = [_flat(o) for o in out]
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.concatenate([np.ravel(p) for p in parts])
        return _torch().cat([p.reshape(-1) for p in parts])
    if isinstance(out, np.ndarray):
        return out if out.dtype.kind in "fc" else None
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out if (out.dtype.is_floating_point or out.dtype.is_complex) else None
    return None


def _free_name(label: str) -> str:
    """``label``, or ``label#2``... when the catalogue has that name already (a
    function called ``relu`` is not the built-in op)."""
    name, n = label, 1
    while name in CATALOGUE:
        n += 1
        name = f"{label}#{n}"
    return name


@contextmanager
def _declared(opdef):
    """``opdef`` in the catalogue for the length of one check."""
    declare_op(opdef)
    try:
        yield opdef
    finally:
        CATALOGUE.pop(opdef.name, None)


def _graph(plan, op_name, out_shape, seed):
    b = GraphBuilder()
    names = []
    for arg in plan.args:
        init = ({"kind": "randint", "high": int(plan.values[arg.name].max(initial=0)) + 1}
                if arg.dtype == "int" else None)
        names.append(b.leaf(arg.name, plan.values[arg.name].shape, arg.role, arg.dtype, init))
    out = b.op(op_name, *names, name="output")
    probe = b.const("cotangent", out_shape)
    graph = b.build(b.op("weighted_sum", out, probe, name="loss"))
    rng = np.random.default_rng(seed)
    tensors = dict(plan.values)
    tensors["cotangent"] = rng.standard_normal(out_shape).astype(plan.dtype)
    return graph, tensors


def _out_shape(plan):
    if plan.numpy_style:
        return None
    torch = _torch()
    raw = plan.output()
    out = _flat(raw)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"check: the function returned {type(raw).__name__}, not a floating tensor (or a tuple, "
                        f"list or dict holding one)")
    return tuple(out.shape)


def _opdef(plan, name, out_shape, formula=None):
    return OpDef(name, tuple(plan.args), lambda *shapes, **_: out_shape, torch=formula, samples=(),
                 doc=f"the function under check: {name}")


def _judge_all(case, tensors, a, others, tolerance):
    records = []
    for b in others:
        records += check_pair(case, a, b, tensors=tensors, tolerance=tolerance,
                              outputs=not isinstance(b, FiniteDifferences))
    return _judge_records(case, records, a.name)


def _describe(forward):
    case, records, a_name = forward
    bad = [r for r in records if r.status in ("fail", "error")]
    return "\n\n".join(describe_failure(case, [r for r in records if r.source_b == name], a_name, name)
                       for name in dict.fromkeys(r.source_b for r in bad))


def _judge_records(case, records, a_name):
    bad = [r for r in records if r.status in ("fail", "error")]
    if bad:
        against = list(dict.fromkeys(r.source_b for r in bad))
        text = "\n\n".join(describe_failure(case, [r for r in records if r.source_b == name], a_name, name)
                           for name in against)
        raise CheckFailed(text + "\n\n" + _REPLAY_CHECK, records)
    return Records(records)


# Note [Float64 tie-break]
# Differences of a float32 forward are only as good as that forward.  Where an
# input sits far from its spread (fuzz's offset regime: x = 1e3 + noise into a
# layer norm) the forward's float32 result carries an error that a central
# difference divides by its step.  When a float32 check fails against
# differences, the same function is checked in float64 at the same inputs
# (their float32 values).  If that passes, the gradient is right in exact
# arithmetic, and the float32 gradient is judged again against the float64
# one, a far better estimate of the truth than float32 differences, allowing
# the float32 tolerance plus twice what rounding the inputs to float32 alone
# moves the exact gradient by (the float64 gradient at inputs moved by a
# relative eps, three draws): no float32 computation can do better than that.
# A backward that loses more (variance as E[x^2] - E[x]^2, a cancelling sum)
# still fails, named as float32 precision loss, and so does a function that is
# wrong in float64 too; a comparison with a reference= is never re-judged.


def _float64_tie_break(plan, fn, inputs, cotangent, records, *, device, mode, seed, name, names):
    """The records of a failing float32 check with its failures against
    differences re-judged against float64 (Note [Float64 tie-break]), or None
    when that does not apply."""
    torch = _torch()
    fd_failures = [r for r in records if r.status == "fail" and r.source_b.startswith(("central-fd", "richardson-fd"))]
    if not fd_failures or any(r.status == "error" for r in records):
        return None
    up = [t.detach().to(torch.float64).requires_grad_(t.requires_grad)
          if isinstance(t, torch.Tensor) and t.dtype.is_floating_point else t for t in inputs]
    try:
        _check(fn, up, loss=plan.loss, dtype="float64", device=device, mode=mode, seed=seed, name=name,
               names=names)
    except CheckFailed:
        return None  # wrong in float64 as well: the float32 failure stands
    except Exception:  # a function that takes float32 only
        return None
    low = torch.float32 if plan.dtype == "float32" else getattr(torch, plan.dtype)
    g32 = _gradients(plan, low, cotangent)
    g64 = _gradients(plan, torch.float64, cotangent)
    # what rounding the inputs to the low dtype alone moves the exact gradient by
    eps = float(torch.finfo(low).eps)
    rng = np.random.default_rng(seed)
    spread = {n: np.zeros(np.shape(g)) for n, g in g64.items()}
    for _ in range(3):
        moved = _gradients(plan, torch.float64, cotangent, jitter=(rng, eps))
        for n in spread:
            spread[n] = np.maximum(spread[n], np.abs(moved[n] - g64[n]))
    out = []
    for r in records:
        if r not in fd_failures:
            out.append(r)
            continue
        names_ = list(g64) if r.tensor == JOINT else [r.tensor]
        if not all(n in g64 for n in names_):
            out.append(r)
            continue
        worst = 0.0
        for n in names_:
            allowed = r.atol + r.rtol * float(np.max(np.abs(g64[n]), initial=0.0)) + 2 * spread[n]
            worst = max(worst, float(np.max(np.abs(g32[n] - g64[n]) / allowed, initial=0.0)))
        if worst > 1:
            out.append(with_opinion(r, "float64-tie-break", "fail",
                                    f"the same function in float64 passes at these inputs, but its {plan.dtype} "
                                    f"gradient is off from the float64 one by {worst:.3g} times what {plan.dtype} "
                                    f"allows, rounding its inputs included: precision lost in {plan.dtype} "
                                    f"(Note [Float64 tie-break])"))
            continue
        out.append(with_opinion(r, "float64-tie-break", "pass",
                                f"judged again against the same function in float64, which passes at these inputs: "
                                f"the {plan.dtype} gradient agrees with the float64 one (worst {worst:.2g} of what "
                                f"is allowed, rounding the inputs to {plan.dtype} included); the differences were "
                                f"off, not the gradient (Note [Float64 tie-break])", status="pass", ratio=worst))
    return out


def _gradients(plan, dtype, cotangent, jitter=None):
    """{differentiable leaf: gradient of <cotangent, fn(...)>} in ``dtype``; with
    ``jitter=(rng, eps)`` at the float inputs moved by a relative eps each."""
    torch = _torch()
    leaves = []
    for a in plan.args:
        v = plan.values[a.name]
        if v.dtype.kind == "f":
            v = v.astype(np.float64)
            if jitter is not None:
                v = v * (1 + jitter[1] * jitter[0].uniform(-1, 1, v.shape))
            leaves.append(torch.as_tensor(v).to(dtype).requires_grad_(a.differentiable))
        else:
            leaves.append(torch.as_tensor(v))
    wrt = [(a.name, t) for a, t in zip(plan.args, leaves) if a.differentiable]
    with plan.kept(), torch.enable_grad():
        y = _flat(plan.call(*leaves))
        grads = torch.autograd.grad((y * torch.as_tensor(cotangent).to(y.dtype)).sum(), [t for _, t in wrt],
                                    allow_unused=True)
    return {n: np.zeros(t.shape) if g is None else g.detach().double().numpy() for (n, t), g in zip(wrt, grads)}


_REPLAY_CHECK = "(the inputs are the ones given to the check: call it again to replay)"
_REPLAY_FUZZ = "(the draws are the same every call: call fuzz again to replay, shrunk to this draw)"


def _label(fn):
    """What messages call ``fn``: a Function's or Module's class name, else its name."""
    owner = _function_class(fn)
    if owner is not None:
        return owner.__name__
    torch = _torch()
    if isinstance(fn, torch.nn.Module):
        return type(fn).__name__
    name = getattr(fn, "__name__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None) or ""
    if module.startswith("torch"):  # torch.relu, F.gelu: say whose
        return ("F." if module == "torch.nn.functional" else "torch.") + name
    return name


MODES = ("auto", "full", "directional")
# Above this many differentiable scalars ``auto`` checks along random directions:
# one backward and two forwards for each of 4 directions, like torch's fast_mode,
# where a full check costs two forwards an element, so it is the cheaper one
# only up to about 4 elements (measured in benchmarks/bench_check.py: full was 2
# to 25 times torch's fast_mode from 25 scalars up).  A failing directional
# check is differentiated element by element on the failing tensor, so the
# verdict and its message do not depend on the mode.
CHECK_FULL_LIMIT = 8


def check(fn, *inputs, reference=None, loss=None, dtype=None, device: str = "cpu", mode: str = "auto",
          seed: int = 0, tolerance: Tolerance | None = None, name: str | None = None, order: int = 1,
          modes=("rev",), names=None, samples=None) -> Records:
    """Check the backward of torch callable ``fn`` at ``inputs`` (see the module
    docstring).  Tensors with ``requires_grad`` are differentiated (every floating
    tensor when none has it), other tensors held constant, anything else passed
    through as it is; an ``nn.Module``'s parameters are differentiated too (its
    buffers are restored afterwards, and its random numbers, dropout's mask, are
    the same in every forward of the check).

    reference: the same maths written independently (built-in torch ops, or for a
    module a module with the same parameter names), compared analytically, so a
    forward wrong in the same way as its backward is caught; loss: a function of
    ``fn``'s output giving what to differentiate (a whole model with its loss);
    dtype: to check in (default the inputs'); device; mode: ``full`` (every
    element), ``directional`` (random directions, localised to the element on
    failure) or ``auto`` (full up to 8 scalars); seed: of the cotangent and
    the directions; tolerance: an explicit ``Tolerance`` instead of the error
    model's; name: what messages call ``fn``; order: 2 checks the second
    derivative instead (Note [Second order]); modes: ``"rev"`` (the backward),
    ``"fwd"`` (forward mode, Note [Forward mode]), ``"batched"`` (the backward
    under vmap, Note [Batched gradients]) and/or ``"per-sample"`` (vmap over the
    first input's samples, Note [Per-sample gradients]); names: what messages
    call the inputs (default: ``fn``'s parameter names); samples: for
    per-sample gradients, the inputs (names or positions) whose first axis is
    the sample, sliced together (inputs and their targets; default: the first
    tensor input).  Returns the records; raises ``CheckFailed`` on any
    failure."""
    return _check(fn, inputs, reference=reference, loss=loss, dtype=dtype, device=device, mode=mode, seed=seed,
                  tolerance=tolerance, name=name, order=order, modes=modes, names=names, samples=samples)


def _check(fn, inputs, *, reference=None, loss=None, dtype=None, device="cpu", mode="auto", seed=0, tolerance=None,
           name=None, names=None, order=1, modes=("rev",), undefined_check=True, output=None, n_directions=4,
           samples=None):
    fn, reference = _as_callable(fn), _as_callable(reference)
    if not callable(fn):
        raise TypeError(f"check: fn must be callable, got {type(fn).__name__}")
    if mode not in MODES:
        raise ValueError(f"check: mode must be one of {MODES}, got {mode!r}")
    if order not in (1, 2):
        raise ValueError(f"check: order must be 1 (first derivatives) or 2 (second derivatives), got {order!r}")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or any(m not in ("rev", "fwd", "batched", "per-sample") for m in modes):
        raise ValueError(f"check: modes must hold 'rev' (reverse mode), 'fwd' (forward mode), 'batched' (the "
                         f"backward under vmap) and/or 'per-sample' (vmap over the first input), got {modes!r}")
    if samples is not None and "per-sample" not in modes:
        raise ValueError("check: samples= names the inputs sliced for per-sample gradients; give modes with "
                         "'per-sample'")
    if set(modes) - {"rev"} and order != 1:
        raise ValueError("check: forward mode, batched and per-sample gradients are checked at order 1; give "
                         "modes=('rev',) with order=2")
    if reference is not None and not callable(reference):
        raise TypeError(f"check: reference must be callable, got {type(reference).__name__}")
    torch = _torch()
    if isinstance(fn, torch.nn.Module) and reference is not None and not isinstance(reference, torch.nn.Module):
        raise TypeError("check: the reference of a module must be a module with the same parameter names "
                        "(it is called with the checked module's parameters)")
    from .sources.torch_autograd import check_device

    check_device(device)
    if any(isinstance(t, torch.Tensor) and t.is_complex() for t in inputs) and not isinstance(fn, torch.nn.Module):
        fn, reference, inputs, names = _as_real(fn, reference, inputs, names or _arg_names(fn, len(inputs)))
        name = name or _label(fn.__wrapped__)
        if dtype is not None:  # the parts' dtype
            dtype = {"complex128": "float64", "complex64": "float32"}.get(_dtype_name(dtype), dtype)
    plan = _Plan(fn, inputs, dtype, numpy_style=False, names=names, loss=loss, seed=seed)
    if samples is not None:
        _sample_args(plan, samples)  # a bad samples= is an error before anything runs
    if output is not None:  # the caller computed it already
        plan._output = output
    if order == 2:
        return _second_order(plan, fn, reference, device=device, mode=mode, seed=seed, tolerance=tolerance,
                             name=name)
    undefined = None
    if "rev" in modes and undefined_check:
        with plan.kept():
            undefined = _undefined_gradients(plan, _free_name(name or _label(fn)), seed=seed, tolerance=tolerance)
    if modes != ("rev",) or undefined is not None:
        label = _free_name(name or _label(fn))
        extra = [] if undefined is None else [undefined]  # (case, records, source name) besides reverse mode's
        with plan.kept():
            if "fwd" in modes:
                extra.append(_forward_mode(plan, label, seed=seed, tolerance=tolerance))
            if "batched" in modes:
                extra.append(_batched_gradients(plan, label, seed=seed, tolerance=tolerance))
            if "per-sample" in modes:
                extra.append(_per_sample(plan, label, seed=seed, tolerance=tolerance, samples=samples))
        more = [r for _, records, _ in extra for r in records]
        bad = [e for e in extra if any(r.status in ("fail", "error") for r in e[1])]
        if "rev" not in modes:
            if bad:
                raise CheckFailed("\n\n".join(_describe(e) for e in bad) + "\n\n" + _REPLAY_CHECK, more)
            return Records(more)
        try:
            backward = _check(fn, inputs, reference=reference, loss=loss, dtype=dtype, device=device, mode=mode,
                              seed=seed, tolerance=tolerance, name=name, names=names, undefined_check=False)
        except CheckFailed as e:
            raise CheckFailed("\n\n".join([str(e)] + [_describe(x) for x in bad]), list(e.records) + more) from None
        if bad:
            raise CheckFailed("\n\n".join(_describe(e) for e in bad) + "\n\n" + _REPLAY_CHECK, list(backward) + more)
        return Records(list(backward) + more)
    op_name = _free_name(name or _label(fn))
    with plan.kept():
        out_shape = _out_shape(plan)
        formula = None if reference is None else (lambda *tensors: _flat(plan.call(*tensors, fn=reference)))
        candidate = Candidate(op_name)
        with _declared(_opdef(plan, op_name, out_shape, formula=formula)) as opdef:
            candidate.new_ops.append(opdef)
            candidate.torch_ops[op_name] = lambda *tensors: _flat(plan.call(*tensors))
            source = torch_candidate_source(candidate, device, plan.dtype)
            source.name = op_name
            graph, tensors = _graph(plan, op_name, out_shape, seed)
            others = [FiniteDifferences(source, "central", mode, n_directions, seed=seed, full_limit=CHECK_FULL_LIMIT)]
            if formula is not None:
                others.append(ReferenceOrFormula())
            try:
                return _judge_all(Case(graph, seed, plan.dtype), tensors, source, others, tolerance)
            except CheckFailed as failure:
                if plan.dtype == "float64":
                    raise
                records = _float64_tie_break(plan, fn, inputs, tensors["cotangent"], failure.records, device=device,
                                             mode=mode, seed=seed, name=op_name, names=names)
                if records is None:
                    raise
                return _judge_records(Case(graph, seed, plan.dtype), records, op_name)


# Note [Complex inputs]
# A complex input z = x + iy is checked as its two real parts: the callable is
# called with torch.complex(x, y), and a complex output is read as its real and
# imaginary parts (view_as_real).  For a real loss L, torch's gradient of z is
# dL/dx + i dL/dy (the conjugate Wirtinger convention, doubled), so autograd
# through the real parts gives exactly z.grad's real and imaginary parts, and
# every check of real inputs applies: a complex backward that forgets a
# conjugate (grad * w instead of grad * w.conj()) fails against differences,
# named as the input's .real or .imag part and the element.


def _as_real(fn, reference, inputs, names):
    """(fn, reference, inputs, names) with each complex tensor input split into
    its real and imaginary parts (Note [Complex inputs])."""
    import functools

    torch = _torch()
    split, new_inputs, new_names = [], [], []
    for value, name in zip(inputs, names):
        if isinstance(value, torch.Tensor) and value.is_complex():
            grad = value.requires_grad or not any(isinstance(v, torch.Tensor) and v.requires_grad for v in inputs)
            split.append(True)
            new_inputs += [value.detach().real.clone().requires_grad_(grad),
                           value.detach().imag.clone().requires_grad_(grad)]
            new_names += [f"{name}.real", f"{name}.imag"]
        else:
            split.append(False)
            new_inputs.append(value)
            new_names.append(name)

    def real_valued(f):
        if f is None:
            return None

        @functools.wraps(f)
        def wrapped(*args):
            it, rebuilt = iter(args), []
            for is_complex in split:
                rebuilt.append(torch.complex(next(it), next(it)) if is_complex else next(it))
            return _real_parts(f(*rebuilt))

        return wrapped

    return real_valued(fn), real_valued(reference), new_inputs, new_names


def _real_parts(out):
    torch = _torch()
    if isinstance(out, torch.Tensor) and out.is_complex():
        return torch.view_as_real(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_real_parts(o) for o in out)
    if isinstance(out, dict):
        return {k: _real_parts(v) for k, v in out.items()}
    return out


# Note [Second order]
# The second derivative of fn is checked as the first derivative of its first
# derivative: g(x) = d<u, fn(x)>/dx (u a seeded random cotangent, or the loss
# itself), computed by autograd with create_graph=True through fn's own
# backward, is a function like any other, and check() checks it: its backward
# (autograd through fn's backward: the double backward) against finite
# differences of g, i.e. of fn's first-order backward, along random directions
# <w, g(x + t v)>, so each direction costs a backward pair and the double
# backward runs once.  Everything the first-order check has applies unchanged:
# the error model and Richardson re-judgement, localisation of a failing
# direction to the tensor and the element, and the one-sided probe at kinks,
# where fn's first derivative jumps (relu at 0) and the stencil crossing the
# jump is nondifferentiable, not a failure.  With reference=, the reference's
# own double backward is compared analytically.  A Function whose backward
# uses values saved from its forward (computed outside autograd's graph) has a
# right first derivative and a wrong second one: this is what torch's
# gradgradcheck catches, and what first-order suites never see.
#
# Cost.  A backward of g is the double backward; each finite difference of g is
# a first backward (with no graph kept: nothing differentiates it).  So the
# check runs SECOND_ORDER_DIRECTIONS directions, not the first order's 4: each
# direction v tests the scalar <H w, v> (w the inner cotangent), and an error
# in H w is missed by one Rademacher direction only when its signed parts
# cancel, so two independent directions miss it with probability well under a
# quarter even when two equal errors are all there is (one, for torch's
# gradgradcheck fast_mode and JAX's check_grads).  One double backward and four
# first backwards: about twice a double backward (benchmarks/
# bench_higher_order.py).  The inner check is told its output's shape (the
# shapes of the leaves differentiated), so no backward runs to learn it.
SECOND_ORDER_DIRECTIONS = 2


def _second_order(plan, fn, reference, *, device, mode, seed, tolerance, name):
    torch = _torch()
    label = name or _label(fn)
    leaves = [torch.as_tensor(plan.values[a.name]).requires_grad_(a.differentiable) for a in plan.args]
    wrt = [i for i, a in enumerate(plan.args) if a.differentiable]
    gen = torch.Generator().manual_seed(seed + 1)
    u = None

    def grads_of(f, tensors, create_graph):
        nonlocal u
        xs = [t.detach().requires_grad_() if i in wrt and not t.requires_grad else t for i, t in enumerate(tensors)]
        with torch.enable_grad():
            y = _flat(plan.call(*xs, fn=f))
            if u is None:  # the cotangent, drawn at the first call
                u = torch.randn(tuple(y.shape), generator=gen, dtype=torch.float64)
            grads = torch.autograd.grad(y, [xs[i] for i in wrt], u.to(y.device, y.dtype), create_graph=create_graph,
                                        allow_unused=True)
        if not create_graph:
            return tuple(torch.zeros_like(xs[i]) if g is None else g.detach() for i, g in zip(wrt, grads))
        # a gradient that does not depend on x (a linear function) is tied to x
        # with a zero factor, so that its own derivative is 0, not an error
        return tuple(0 * xs[i] if g is None else g if g.requires_grad else g + 0 * xs[i]
                     for i, g in zip(wrt, grads))

    def first_derivative_of(f):
        def first_derivative(*tensors):
            # the graph of the first derivative only when something differentiates it
            # (the double backward); finite differences of it run without
            return grads_of(f, tensors, create_graph=torch.is_grad_enabled())

        return first_derivative

    with plan.kept():
        try:
            # the inner check needs its output's shape only, which is the shapes of
            # the leaves differentiated: no backward runs for it
            at_values = torch.empty(sum(leaves[i].numel() for i in wrt), dtype=leaves[wrt[0]].dtype)
            records = _check(first_derivative_of(fn), leaves,
                             reference=None if reference is None else first_derivative_of(reference),
                             dtype=plan.dtype, device=device, mode=mode, seed=seed, tolerance=tolerance,
                             name=f"{label}.backward", names=[a.name for a in plan.args], undefined_check=False,
                             output=at_values, n_directions=SECOND_ORDER_DIRECTIONS)
            return Records(replace(r, order=2) for r in records)
        except CheckFailed as e:
            raise CheckFailed(f"second order: the double backward of {label} (autograd through its backward, "
                              f"along the cotangent of its first derivative) against differences of its first "
                              f"derivative\n" + str(e), [replace(r, order=2) for r in e.records]) from None


def _mode_case(plan, label, seed):
    """The one-node graph of ``plan``'s callable, its values, its Case and the
    output shape: what the records of a check beside reverse mode's refer to."""
    out_shape = _out_shape(plan)
    with _declared(_opdef(plan, label, out_shape)):
        graph, tensors = _graph(plan, label, out_shape, seed)
    return graph, tensors, Case(graph, seed, plan.dtype), out_shape


def _reason(e) -> str:
    """An exception's first line (its type when it says nothing)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unjudged_in(graph, seed, a_name, b_name, dtype, message, **fields):
    from .judge import unjudged

    return unjudged(graph.case_id, graph.to_json(), seed, a_name, b_name, dtype, message, **fields)


def _agreeing(graph, seed, a_name, b_name, dtype, av, bv, tolerance, note="", **changes):
    """The record of two computations of the same values that must agree up to
    rounding (a batch against one at a time): ``av`` against ``bv``, element by
    element, at the analytic tolerance, allowing 8 eps of each value and of the
    largest."""
    import math

    from .judge import tolerance_for
    from .judge.compare import record_for_elements
    from .sources import numeric
    from .sources.base import SourceResult

    av, bv = np.asarray(av, dtype=np.float64), np.asarray(bv, dtype=np.float64)
    eps = float(np.finfo(dtype).eps)
    expected = numeric.FDResult(bv.ravel(), 8 * eps * (np.abs(bv).ravel() + np.max(np.abs(bv), initial=0.0)), None)
    rec = record_for_elements(graph, SourceResult(a_name, "analytic", math.nan, {}, dtype=dtype), b_name, "analytic",
                              "output", bv.shape, np.arange(bv.size), av.ravel(), expected,
                              tolerance or tolerance_for("analytic", "analytic", dtype), 0.0, seed=seed)
    message = ((rec.message + "\n" if rec.message else "") + note) if note else rec.message
    return replace(rec, spec_a="", spec_b="", message=message, **changes)


# Note [Forward mode]
# Forward mode (torch.func.jvp, jacfwd, a Function's jvp staticmethod) is code
# of its own, and can be wrong while the backward is right.  Along two random
# sign directions v over every differentiable input at once (input by input
# when that disagrees, which names the input), the JVP J v (by
# torch.autograd.forward_ad's dual numbers) is checked twice:
# * against central differences of the output along v, element by element
#   (Richardson where they disagree), which names the output element; and
# * against reverse mode by the adjoint identity <u, J v> = <J^T u, v>, with u
#   the check's cotangent: exact up to rounding, so a JVP that is off where the
#   differences are too noisy to tell is still caught when the backward is
#   right (and a backward bug shows here too).
# An element whose one-sided slopes along the direction differ has a kink on
# the way (relu at an exact 0): it is nondifferentiable, as a stencil across a
# kink is for the backward.  (Unlike a backward's, a JVP through a reduction
# mixes several kinks, so the one-sided slopes do not bound the right values.)
# A callable with no forward mode (a Function without a jvp staticmethod) was
# asked for one: its records are errors with torch's reason, never passes.
# Records of these checks carry ad_mode="fwd".


def _forward_mode(plan, label, *, seed, tolerance, n_directions: int = 2):
    """The forward-mode records of ``plan``'s callable: (case, records, name)."""
    import math
    import time

    import torch.autograd.forward_ad as fwad

    from .judge import tolerance_for
    from .judge.compare import record_for_elements
    from .sources import numeric
    from .sources.base import SourceResult, rademacher

    torch = _torch()
    graph, tensors, case, out_shape = _mode_case(plan, label, seed)
    u = torch.as_tensor(tensors["cotangent"])
    base = [torch.as_tensor(plan.values[a.name]) for a in plan.args]
    wrt = [i for i, a in enumerate(plan.args) if a.differentiable]
    a_name, fd_name = f"{label} jvp", f"central-fd({label})"
    result = SourceResult(a_name, "analytic", math.nan, {}, dtype=plan.dtype)
    eps = float(np.finfo(plan.dtype).eps)

    leaves = [t.clone().requires_grad_(plan.args[i].differentiable) for i, t in enumerate(base)]
    with torch.enable_grad():
        y = _flat(plan.call(*leaves))
        vjps = torch.autograd.grad((y * u.to(y.dtype)).sum(), [leaves[i] for i in wrt], allow_unused=True)
    vjps = {plan.args[i].name: (np.zeros(base[i].shape) if g is None else g.detach().double().numpy())
            for i, g in zip(wrt, vjps)}

    def forward_np(values):
        with torch.no_grad():
            return _flat(plan.call(*(torch.as_tensor(values[a.name]) for a in plan.args))).double().numpy()

    rng = np.random.default_rng(seed)

    def along(group, what):
        """The JVP and adjoint records along random directions over ``group``."""
        t0 = time.perf_counter()
        names = [plan.args[i].name for i in group]
        dirs = [{n: rademacher(rng, tuple(base[i].shape)).astype(plan.values[n].dtype)
                 for i, n in zip(group, names)} for _ in range(n_directions)]
        jvps = []
        try:
            for d in dirs:
                with fwad.dual_level():
                    args = [fwad.make_dual(t, torch.as_tensor(d[plan.args[j].name])) if j in group else t
                            for j, t in enumerate(base)]
                    tangent = fwad.unpack_dual(_flat(plan.call(*args))).tangent
                jvps.append(np.zeros(out_shape) if tangent is None else tangent.detach().double().numpy())
        except (RuntimeError, NotImplementedError) as e:
            return [_unjudged_in(graph, seed, a_name, fd_name, plan.dtype,
                                 f"{label} has no forward mode ({what}): {_reason(e)} (an autograd.Function "
                                 f"needs a jvp staticmethod; leave 'fwd' out of modes= otherwise)",
                                 op=label, tensor=f"jvp {what}", ad_mode="fwd")]
        except Exception as e:  # noqa: BLE001 - the callable's own fault, as a record
            return [_unjudged_in(graph, seed, a_name, fd_name, plan.dtype,
                                 f"{label}'s forward mode raised {type(e).__name__} ({what}): {e}",
                                 op=label, tensor=f"jvp {what}", ad_mode="fwd")]
        av = np.stack(jvps).reshape(-1)
        shape = (n_directions, *out_shape)
        fds, tol = None, None
        for method in ("central", "richardson", "one-sided"):
            tol = tolerance or tolerance_for("analytic", "richardson" if method != "central" else method,
                                             plan.dtype)
            if method != "one-sided":
                fds = [numeric.directional(forward_np, plan.values, d, method) for d in dirs]
                kink = None
            else:  # a stencil across a kink is nondifferentiable (Note [Forward mode])
                kink = _one_sided_jumps(forward_np, plan.values, dirs, tol)
            fd = numeric.FDResult(np.stack([f.value for f in fds]).reshape(-1),
                                  np.stack([np.broadcast_to(f.error, np.shape(f.value))
                                            for f in fds]).reshape(-1), kink)
            rec = record_for_elements(graph, result, fd_name if method == "central" else f"richardson-fd({label})",
                                      method if method != "one-sided" else "richardson", "output", shape,
                                      np.arange(av.size), av, fd, tol, time.perf_counter() - t0, seed=seed)
            if rec.status != "fail":
                break
        rec = replace(rec, tensor=f"jvp {what}", op=label, spec_a="", spec_b="", ad_mode="fwd")
        if method != "central":
            rec = with_opinion(rec, "richardson", "fail" if method == "one-sided" else rec.status,
                               "(judged again against Richardson differences after failing against central ones)")
        if method == "one-sided":
            rec = with_opinion(rec, "one-sided-kinks", rec.status, "(elements whose one-sided slopes along the "
                               "direction differ have a kink on the way: nondifferentiable there)")
        # the adjoint identity, against the backward
        cot = tensors["cotangent"]
        lhs = np.array([numeric.dot(cot, jv) for jv in jvps])
        rhs = np.array([sum(numeric.dot(vjps[n], d[n]) for n in names) for d in dirs])
        # the sums of |terms| on each side (the directions are signs: |g * d| = |g|)
        abs_cot, abs_vjps = np.abs(cot), sum(float(np.abs(vjps[n]).sum()) for n in names)
        rounding = np.array([eps * (numeric.dot(abs_cot, np.abs(jv)) + abs_vjps) for jv in jvps])
        tol = tolerance or tolerance_for("analytic", "analytic", plan.dtype)
        adj = record_for_elements(graph, result, f"{label} vjp", "analytic", "output", (n_directions,),
                                  np.arange(n_directions), lhs, numeric.FDResult(rhs, 4 * rounding, None), tol,
                                  time.perf_counter() - t0, seed=seed)
        adj = replace(adj, tensor=f"<u, J v> {what}", op=label, spec_a="", spec_b="", ad_mode="fwd",
                      message=(adj.message + "\n" if adj.message else "")
                      + "the adjoint identity <u, J v> = <J^T u, v>: forward mode against the backward, one "
                        "element a direction")
        if adj.status == "fail" and rec.status == "nondifferentiable":
            adj = with_opinion(adj, "one-sided-kinks", "nondifferentiable",
                               "a kink lies along these directions (see the JVP's record): forward and reverse "
                               "mode may each take another subgradient there", status="nondifferentiable")
        return [rec, adj]

    def each(i):
        return along([i], f"along {plan.args[i].name}")

    if len(wrt) == 1:
        records = each(wrt[0])
    else:
        # every input at once (two JVPs, four forwards, whatever the count), input by
        # input only when that disagrees, to name the input
        records = along(wrt, "(all tensors)")
        if any(r.status in ("fail", "error") for r in records):
            records = [r for i in wrt for r in each(i)]
    return case, records, a_name


# Note [Batched gradients]
# torch.func.vmap and autograd.grad(..., is_grads_batched=True) run a backward
# once for a whole batch of cotangents (per-sample gradients, Jacobians by
# jacrev, Hessians by jacfwd(jacrev)): code paths of their own, batching rules
# that can mix samples or fail.  With modes containing "batched", the backward
# is run on 3 seeded random cotangents at once and compared, element by
# element, with the same backward run on each of them alone: exact up to
# rounding, so judged at the analytic tolerance.


def _batched_gradients(plan, label, *, seed, tolerance, k: int = 3):
    """The batched-gradient records of ``plan``'s callable: (case, records, name)."""
    torch = _torch()
    graph, _, case, out_shape = _mode_case(plan, label, seed)
    a_name, b_name = f"{label} batched", f"{label} one by one"
    leaves = [torch.as_tensor(plan.values[a.name]).requires_grad_(a.differentiable) for a in plan.args]
    wrt = [(a.name, t) for a, t in zip(plan.args, leaves) if a.differentiable]
    gen = torch.Generator().manual_seed(seed + 7)
    cot = torch.randn((k, *out_shape), generator=gen, dtype=torch.float64)
    try:
        with torch.enable_grad():
            y = _flat(plan.call(*leaves))
            cot = cot.to(y.dtype)
            batched = torch.autograd.grad(y, [t for _, t in wrt], cot, is_grads_batched=True, retain_graph=True,
                                          allow_unused=True)
            single = [torch.autograd.grad(y, [t for _, t in wrt], cot[i], retain_graph=True, allow_unused=True)
                      for i in range(k)]
    except Exception as e:  # noqa: BLE001 - the callable's own fault, as a record
        return case, [_unjudged_in(graph, seed, a_name, b_name, plan.dtype,
                                   f"{label}'s backward under vmap (is_grads_batched) raised {type(e).__name__}: "
                                   f"{_reason(e)}", op=label, tensor="batched gradients", ad_mode="batched")], a_name
    records = []
    for j, (name, t) in enumerate(wrt):
        def host(g, shape=tuple(t.shape)):
            return np.zeros(shape) if g is None else g.detach().double().numpy()

        records.append(_agreeing(graph, seed, a_name, b_name, plan.dtype, host(batched[j], (k, *t.shape)),
                                 np.stack([host(one[j]) for one in single]), tolerance,
                                 f"{k} cotangents at once (vmap over the backward) against each alone; the first "
                                 f"index is the cotangent", tensor=f"batched grad of {name}", op=label,
                                 ad_mode="batched"))
    return case, records, a_name


# Note [Undefined output gradients]
# A callable with several outputs is often used with only some of them: the
# others' gradients arrive as None in a Function that called
# ctx.set_materialize_grads(False), or as zeros.  For each output j, the
# backward run from the other outputs alone (j's gradient undefined) must
# give what it gives with j's cotangent set to zeros, and must not raise:
# what torch's check_undefined_grad probes, run with every reverse check of a
# callable with two or more floating outputs.


def _float_outputs(out):
    torch = _torch()
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _float_outputs(o)]
    return [out] if isinstance(out, torch.Tensor) and out.dtype.is_floating_point else []


def _undefined_gradients(plan, label, *, seed, tolerance):
    """(case, records, name) for Note [Undefined output gradients], or None for a
    callable with fewer than two floating outputs."""
    torch = _torch()
    if plan.loss is not None or len(_float_outputs(plan.output())) < 2:
        return None
    leaves = [torch.as_tensor(plan.values[a.name]).requires_grad_(a.differentiable) for a in plan.args]
    wrt = [(a.name, t) for a, t in zip(plan.args, leaves) if a.differentiable]
    with torch.enable_grad():
        outs = [o for o in _float_outputs(plan.call(*leaves)) if o.requires_grad]
    if len(outs) < 2:
        return None
    graph, _, case, _ = _mode_case(plan, label, seed)
    gen = torch.Generator().manual_seed(seed + 11)
    cots = [torch.randn(tuple(o.shape), generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
    a_name, b_name = f"{label} (an output's gradient undefined)", f"{label} (its cotangent zero)"
    records = []
    for j in range(len(outs)):
        try:
            with torch.enable_grad():
                rest = [i for i in range(len(outs)) if i != j]
                without = torch.autograd.grad([outs[i] for i in rest], [t for _, t in wrt], [cots[i] for i in rest],
                                              retain_graph=True, allow_unused=True)
                zeroed = torch.autograd.grad(outs, [t for _, t in wrt],
                                             [torch.zeros_like(c) if i == j else c for i, c in enumerate(cots)],
                                             retain_graph=True, allow_unused=True)
        except Exception as e:  # noqa: BLE001 - the callable's own fault, as a record
            records.append(_unjudged_in(graph, seed, a_name, b_name, plan.dtype,
                                        f"{label}'s backward raised {type(e).__name__} with output {j}'s gradient "
                                        f"undefined (None where the Function does not materialize it): {_reason(e)}",
                                        op=label, tensor=f"output {j}'s gradient undefined", ad_mode="undefined"))
            continue
        for (name, t), g1, g2 in zip(wrt, without, zeroed):
            def host(g, shape=tuple(t.shape)):
                return np.zeros(shape) if g is None else g.detach().double().numpy()

            records.append(_agreeing(graph, seed, a_name, b_name, plan.dtype, host(g1), host(g2), tolerance,
                                     tensor=f"{name}, output {j}'s gradient undefined", op=label,
                                     ad_mode="undefined"))
    return case, records, a_name


# Note [Per-sample gradients]
# torch.func.vmap(torch.func.grad(loss of one sample)) gives every sample's
# gradient in one call (differential privacy, influence functions, Fisher
# estimates), through the vmap rules of every op and Function on the way.
# With modes containing "per-sample", the callable's first tensor input (or
# the inputs ``samples=`` names: a batch and its targets, sliced together) is
# taken as a batch of independent samples along its first axis: each
# sample's loss <u_n, fn(x_n, ...)> and its gradients with respect to every
# differentiable input (x_n's own included) are computed under vmap and, one
# sample at a time, without it, and compared at the analytic tolerance.  A
# vmap rule that mixes samples (a Function's vmap staticmethod) shows in the
# losses or the gradients; a Function functorch cannot transform is an error
# that says why.  Only for callables whose samples do not interact (no batch
# norm over the batch): a callable whose samples do interact is still checked
# consistently (vmap and the loop both see it on batches of one sample), but its
# per-sample gradients are not the batch's.


def _sample_args(plan, samples):
    """The positions in ``plan.args`` of the inputs sliced by sample: those
    ``samples`` names or numbers (positions among the inputs), or the first
    tensor input with an axis."""
    if samples is None:
        first = next((i for i, a in enumerate(plan.args) if a.role != PARAM and plan.values[a.name].ndim >= 1),
                     None)
        return [] if first is None else [first]
    samples = [samples] if isinstance(samples, (str, int)) else list(samples)
    inputs = [i for i, a in enumerate(plan.args) if a.role != PARAM]
    out = []
    for s in samples:
        if isinstance(s, int) and not isinstance(s, bool):
            if not 0 <= s < len(inputs):
                raise ValueError(f"check: samples: there is no tensor input number {s} (there are {len(inputs)})")
            out.append(inputs[s])
            continue
        found = [i for i in inputs if plan.args[i].name == s]
        if not found:
            raise ValueError(f"check: samples: no tensor input is called {s!r} (the inputs: "
                             f"{', '.join(plan.args[i].name for i in inputs)})")
        out.append(found[0])
    sizes = {plan.args[i].name: plan.values[plan.args[i].name].shape[:1] for i in out}
    if any(not size for size in sizes.values()) or len(set(sizes.values())) > 1:
        raise ValueError(f"check: samples: the inputs sliced by sample must share their first axis, got "
                         f"{', '.join(f'{k} of {tuple(v) or 0} samples' for k, v in sizes.items())}")
    return sorted(set(out))


def _per_sample(plan, label, *, seed, tolerance, samples=None):
    """The per-sample records of ``plan``'s callable: (case, records, name)."""
    torch = _torch()
    graph, _, case, _ = _mode_case(plan, label, seed)
    a_name, b_name = f"{label} per-sample (vmap)", f"{label} one sample at a time"
    sliced = _sample_args(plan, samples)
    if not sliced:
        return case, [_unjudged_in(graph, seed, a_name, b_name, plan.dtype,
                                   f"{label} has no tensor input with a batch axis for per-sample gradients",
                                   op=label, tensor="per-sample gradients", ad_mode="per-sample")], a_name
    base = [torch.as_tensor(plan.values[a.name]) for a in plan.args]
    wrt = [i for i, a in enumerate(plan.args) if a.differentiable]
    n = int(base[sliced[0]].shape[0])
    try:
        with torch.no_grad():
            one = _flat(plan.call(*[t[:1] if i in sliced else t for i, t in enumerate(base)]))
    except Exception as e:  # noqa: BLE001 - the callable's own fault, as a record
        return case, [_unjudged_in(graph, seed, a_name, b_name, plan.dtype,
                                   f"{label} on one sample raised {type(e).__name__}: {_reason(e)}", op=label,
                                   tensor="per-sample gradients", ad_mode="per-sample")], a_name
    gen = torch.Generator().manual_seed(seed + 13)
    u = torch.randn((n, *one.shape), generator=gen, dtype=torch.float64).to(one.dtype)

    def loss_of_one(*args):  # (u_n, then every leaf, the sliced ones one sample of it)
        un, leaves = args[0], list(args[1:])
        for i in sliced:
            leaves[i] = leaves[i].unsqueeze(0)
        return (_flat(plan.call(*leaves)) * un).sum()

    argnums = tuple(1 + i for i in wrt)
    try:
        in_dims = (0, *[0 if i in sliced else None for i in range(len(base))])
        g_v, l_v = torch.func.vmap(torch.func.grad_and_value(loss_of_one, argnums=argnums), in_dims=in_dims)(
            u, *base)
        loop_g, loop_l = [], []
        for k in range(n):
            leaves = [t[k].clone().requires_grad_(i in wrt) if i in sliced else t.clone().requires_grad_(i in wrt)
                      for i, t in enumerate(base)]
            with torch.enable_grad():
                value = loss_of_one(u[k], *leaves)
                grads = torch.autograd.grad(value, [leaves[i] for i in wrt], allow_unused=True)
            loop_l.append(value.detach())
            loop_g.append([torch.zeros_like(leaves[i]) if g is None else g for i, g in zip(wrt, grads)])
    except Exception as e:  # noqa: BLE001 - the callable's own fault, as a record
        return case, [_unjudged_in(graph, seed, a_name, b_name, plan.dtype,
                                   f"{label} under torch.func.vmap(grad(...)) over its first input raised "
                                   f"{type(e).__name__}: {_reason(e)}", op=label, tensor="per-sample gradients",
                                   ad_mode="per-sample")], a_name
    pairs = [("per-sample loss", l_v, torch.stack(loop_l))]
    pairs += [(f"per-sample grad of {plan.args[i].name}", g_v[j], torch.stack([g[j] for g in loop_g]))
              for j, i in enumerate(wrt)]
    note = (f"the first index is the sample, of {n} along the first axis of "
            f"{', '.join(plan.args[i].name for i in sliced)}")
    records = [_agreeing(graph, seed, a_name, b_name, plan.dtype, mine.detach().double().numpy(),
                         theirs.detach().double().numpy(), tolerance, note, tensor=tensor, op=label,
                         ad_mode="per-sample") for tensor, mine, theirs in pairs]
    return case, records, a_name


def _one_sided_jumps(f, values, dirs, tol):
    """Per JVP element (every direction's, flat): whether the output's one-sided
    slopes along its direction (``{name: array}``) differ by a jump that persists
    as the step halves (a kink on the way), not by the curvature one-sided
    differences see, which halves with the step (Note [One-sided kinks])."""
    from .judge.second_opinions import KINK_PERSISTS, ROUNDING_MARGIN
    from .sources import numeric

    xs = {n: np.asarray(values[n]) for n in dirs[0]}
    dtype = next(iter(xs.values())).dtype
    eps = float(np.finfo(dtype).eps)
    h = numeric.step_size(dtype, "central") * max(1.0, numeric.largest_magnitude(xs.values())) / 4
    f0 = np.ravel(f(values))
    masks = []
    for d in dirs:
        jumps = []
        for step in (h, h / 2):
            up = np.ravel(f({**values, **{n: x + step * d[n] for n, x in xs.items()}}))
            down = np.ravel(f({**values, **{n: x - step * d[n] for n, x in xs.items()}}))
            jumps.append((np.abs((up - f0) / step - (f0 - down) / step),
                          ROUNDING_MARGIN * eps * (np.abs(f0) + np.abs(up) + np.abs(down)) / step))
        (before, _), (jump, rounding) = jumps
        masks.append((jump > rounding + tol.atol) & (jump >= KINK_PERSISTS * before))
    return np.concatenate(masks)


def check_numpy(forward, backward, *arrays, reference=None, dtype: str | None = None, mode: str = "auto",
                seed: int = 0, tolerance: Tolerance | None = None, name: str | None = None, **hyper) -> Records:
    """Check a NumPy ``forward(*arrays, **hyper) -> (output, saved)`` and
    ``backward(saved, grad_out) -> gradients`` pair at ``arrays``: against finite
    differences of ``forward``, and, with ``reference`` (a NumPy forward of the
    same maths returning the output alone), against differences of that too.

        >>> import numpy as np
        >>> fwd = lambda x: (np.tanh(x), np.tanh(x))
        >>> bwd = lambda y, g: (g * (1 - y ** 2),)
        >>> {r.status for r in check_numpy(fwd, bwd, np.linspace(-2, 2, 5))}
        {'pass'}
    """
    label = _free_name(name or _label(forward))
    plan = _Plan(forward, arrays, dtype, numpy_style=True)
    out_shape = tuple(np.shape(forward(*(plan.values[a.name] for a in plan.args), **hyper)[0]))
    opdef = OpDef(label, tuple(plan.args), lambda *shapes, **_: out_shape, dict(hyper), samples=())
    candidate = Candidate(label)
    with _declared(opdef):
        candidate.numpy_ops[label] = (forward, backward)
        source = NumpyCandidateSource(candidate)
        graph, tensors = _graph(plan, label, out_shape, seed)
        others = [FiniteDifferences(source, "central", mode, seed=seed, full_limit=CHECK_FULL_LIMIT)]
        if reference is not None:
            ref = Candidate(f"{label}:reference")
            ref.numpy_ops[label] = (lambda *a, **h: (reference(*a, **h), None), _forward_only)
            others.append(FiniteDifferences(NumpyCandidateSource(ref), "central", mode, seed=seed,
                                            full_limit=CHECK_FULL_LIMIT))
        return _judge_all(Case(graph, seed, plan.dtype), tensors, source, others, tolerance)


def _as_callable(fn):
    """``MyFunction.apply`` for an autograd.Function subclass given as itself."""
    if isinstance(fn, type) and hasattr(fn, "apply") and hasattr(fn, "backward") and hasattr(fn, "forward"):
        return fn.apply
    return fn


def _with_hyper(fn, hyper):
    """``fn`` with hyperparameters bound: as keywords, or after the tensors for a
    Function's ``apply``, which takes none (in the order ``hyper`` gives them)."""
    if fn is None or not hyper:
        return fn
    if _function_class(fn) is not None:
        return lambda *tensors: fn(*tensors, *hyper.values())
    return lambda *tensors: fn(*tensors, **hyper)


def _forward_only(saved, g):
    raise NotImplementedError("a reference given as a forward alone has no backward")


# ---------------------------------------------------------------- fuzzing


def _regime(name, rng, shape):
    x = rng.standard_normal(shape)
    if name == "normal":
        return x
    if name == "positive":
        return np.abs(x) + 0.1
    if name == "negative":
        return -np.abs(x) - 0.1
    if name == "zeros-and-ties":
        return np.round(x * 2) / 2  # exact zeros, and ties within rows
    if name == "large":
        return 40.0 * x  # exp of this overflows float32
    if name == "offset":
        return 1e3 + x  # a mean far from the spread: cancellation in a variance
    if name == "tiny-variance":
        return 1.0 + 1e-4 * x
    raise ValueError(f"unknown regime {name!r}; choose from {REGIMES}")


REGIMES = ("normal", "positive", "negative", "zeros-and-ties", "large", "offset", "tiny-variance")


def fuzz(fn, inputs: dict, hyper: dict | None = None, *, examples: int = 50, regimes=REGIMES, dims=(1, 5),
         sizes: dict | None = None, dtype: str = "float64", reference=None, seed: int | None = None,
         tolerance: Tolerance | None = None, order: int = 1, modes=("rev",)) -> int:
    """Check ``fn`` on drawn inputs: ``inputs`` maps each argument (in order) to a
    shape of symbols and sizes (``("N", "D")``, ``(3,)``), or to ``{"shape": ...,
    "dtype": "int", "high": H}`` for integer ids (``"role": "const"`` holds a
    float input constant); ``hyper`` maps keyword arguments (positional ones
    after the tensors for a Function's ``apply``) to a value, a list of choices
    or a Hypothesis strategy.  Each symbol takes a size in ``dims`` (or as
    ``sizes={symbol: size or (lo, hi)}`` says), each float input a value regime
    from ``regimes`` (``dtype="complex128"`` or ``"complex64"``: complex inputs,
    both parts from the regime).  A failure is shrunk to the smallest sizes and simplest
    regime, and raised as ``CheckFailed`` whose first line says the draw; the
    draws are the same every call (``seed=`` picks others); ``order=2`` checks
    second derivatives (Note [Second order]), ``modes=("rev", "fwd")`` forward
    mode too (Note [Forward mode]).  Returns the number of draws checked."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from .catalogue.spec import hyper_parts, parse_inputs, realise

    specs = parse_inputs(inputs, where="fuzz")
    if order not in (1, 2):
        raise ValueError(f"fuzz: order must be 1 (first derivatives) or 2 (second derivatives), got {order!r}")
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown or not regimes:
        raise ValueError(f"fuzz: unknown regime {(unknown or [None])[0]!r}; choose from {REGIMES}")
    if not (len(dims) == 2 and 1 <= dims[0] <= dims[1]):
        raise ValueError(f"fuzz: dims must be a (lo, hi) range of sizes, got {dims!r}")
    bounds = {}
    for sym in dict.fromkeys(s for spec in specs for s in spec.symbols):
        v = (sizes or {}).get(sym, tuple(dims))
        bounds[sym] = (v, v) if isinstance(v, int) else tuple(v)
    _, strategies = hyper_parts(hyper, where="fuzz hyper")
    count = [0]
    torch = _torch()
    fn = _as_callable(fn)
    label = _label(fn)
    tdtype = getattr(torch, _dtype_name(dtype))

    @settings(max_examples=examples, database=None, deadline=None, derandomize=seed is None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        drawn = {s: data.draw(st.integers(*b), label=s) for s, b in bounds.items()}
        values_seed = data.draw(st.integers(0, 2**32 - 1), label="values seed")
        rng = np.random.default_rng(values_seed)
        args, described = [], []
        for spec in specs:
            shape = realise(spec, drawn)
            if spec.dtype == "int":
                args.append(torch.as_tensor(rng.integers(0, spec.high, shape)))
                described.append(f"{spec.name}: int{list(shape)} < {spec.high}")
                continue
            regime = data.draw(st.sampled_from(list(regimes)), label=f"{spec.name} regime")
            values = _regime(regime, rng, shape)
            if tdtype.is_complex:  # real and imaginary parts from the same regime
                values = values + 1j * _regime(regime, rng, shape)
            args.append(torch.as_tensor(values, dtype=tdtype).requires_grad_(spec.role != CONST))
            described.append(f"{spec.name}: {regime}{list(shape)}")
        kwargs = {k: data.draw(v, label=k) for k, v in strategies.items()}
        count[0] += 1
        try:
            _check(_with_hyper(fn, kwargs), args, reference=_with_hyper(reference, kwargs), dtype=dtype,
                   seed=values_seed % 1000, tolerance=tolerance, name=label, names=[s.name for s in specs],
                   order=order, modes=modes)
        except CheckFailed as e:
            raise CheckFailed(f"fuzz draw: {', '.join(described)}" + (f"; {kwargs}" if kwargs else "") + "\n"
                              + str(e).replace(_REPLAY_CHECK, _REPLAY_FUZZ), e.records) from None

    (hseed(seed)(one) if seed is not None else one)()
    return count[0]
