"""``OpDef``: everything the harness knows about one op, in one record.

An ``OpDef`` says which tensors an op takes and in what role, its
hyperparameters with their defaults, the rule giving its output shape, the
``Sample`` settings each source is checked on op by op, where its kinks are
(branch, margin, subgradient rule), its torch formula, how its NumPy forward
runs on a stack of perturbed copies, and where random graphs place it.  Every
part of the harness (the reference's re-runs, torch, batching, placement,
replay) finds an op here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..frozen import Frozen

__all__ = ["TensorArg", "OpDef", "Sample", "Placement", "ShapeError", "CATALOGUE", "get_op", "is_builtin",
           "register_op", "declare_op", "PARAM", "INPUT", "CONST", "ROLES"]

PARAM, INPUT, CONST = "param", "input", "const"
ROLES = (PARAM, INPUT, CONST)


class ShapeError(ValueError):
    """Input shapes or hyperparameters an op cannot take."""


@dataclass(frozen=True)
class TensorArg:
    """One tensor input of an op.

    role: ``param`` (trainable), ``input`` (a differentiable activation or data
    tensor) or ``const`` (never differentiated: labels, ids, masks).
    """

    name: str
    role: str = INPUT
    dtype: str = "float"  # or "int"
    optional: bool = False
    variadic: bool = False  # takes one or more tensors (concat)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"TensorArg {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.dtype not in ("float", "int"):
            raise ValueError(f"TensorArg {self.name!r}: dtype must be 'float' or 'int', got {self.dtype!r}")

    @property
    def differentiable(self) -> bool:
        return self.role != CONST and self.dtype == "float"


@dataclass(frozen=True)
class Sample:
    """One setting to check an op on: a shape per tensor input (a list of shapes
    for a variadic one), hyperparameters, and init overrides per tensor."""

    shapes: Mapping
    hyper: Mapping = field(default_factory=dict)
    init: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class OpDef:
    name: str
    inputs: tuple
    shape: Callable  # shape(*input_shapes, **hyper) -> output shape, or raises ShapeError
    hyper: Mapping = field(default_factory=dict)  # name -> default
    family: str = "layer"  # layer | activation | normalization | structure | loss
    kinks: bool = False  # has points where it is not differentiable (relu at 0, ...)
    # The forward accepts complex input (Note [Complex step] in reference_impl/_util.py):
    # a bool, or a predicate on the full hyperparameters.
    complex_step: bool | Callable = True
    samples: tuple = ()
    init: Mapping = field(default_factory=dict)  # tensor name -> init spec overriding the role's default
    # For ops with kinks: branch(*inputs, **hyper) -> array saying which side of each
    # kink the inputs are on (Note [Kinks] in sources/numeric.py).
    branch: Callable | None = None
    # For ops with kinks: margin(*inputs, **hyper) -> the smallest distance of any
    # input to a kink (relu's 0, the gap between a pool window's top two values).
    margin: Callable | None = None
    # For ops whose derivative jumps at a kink: subgradient(inputs, hyper, grad_out,
    # candidate_grads, reference_grads, tolerance) -> (violation, explanation): the
    # violation is "" when the candidate's local VJP is an element of the
    # subdifferential (Note [Exact kinks]); the explanation says what each side gave.
    subgradient: Callable | None = None
    # For normalisations: spread(*inputs, **hyper) -> the smallest std / max|x| of
    # a group of values the op normalises; near 0, x - mean is rounding and the
    # op's low-precision output is too (Note [Degenerate normalisation]).
    spread: Callable | None = None
    # For ops placed into random graphs by the generic rule (ops a user declares):
    # hyper_strategy(x_shape) -> a Hypothesis strategy of hyperparameter dicts, and
    # arg_shapes(x_shape, hyper) -> {name: shape} for the tensor inputs after the first
    # (default: each the shape of x).  families: where the op may be placed.
    hyper_strategy: Callable | None = None
    arg_shapes: Callable | None = None
    families: tuple = ()
    doc: str = ""
    # torch(*tensors, **hyper): the op in torch, differentiated by autograd (the torch
    # source, and the independent side for ops the reference lacks).
    torch: Callable | None = None
    # batching(forward, args, stacked, hyper, n): the op's NumPy forward on arguments
    # carrying a leading axis of n perturbed copies (catalogue/batching.py); None: copy by copy.
    batching: Callable | None = None
    # Where random graphs place the op (catalogue/placement.py); None for a declared
    # op, which the generic rule places by hyper_strategy, arg_shapes and families.
    placement: "Placement | None" = None
    # Whether torch's formula has a double backward and a forward-mode rule: torch
    # implements neither for some kernels (pdist, multi_margin_loss), and the
    # higher-order suites place an op only where it has both.  A predicate
    # ``higher_order(hyper, shapes) -> bool`` where that depends on the node (the
    # kernel torch picks for attention's 4-d inputs on CPU has no double backward).
    higher_order: "bool | Callable" = True
    # Where torch's own backward is known to disagree with its forward:
    # ``torch_deviates(*inputs, **hyper) -> str``, the reason or "" (Note [Torch's
    # own deviations] in judge/second_opinions.py).
    torch_deviates: Callable | None = None
    # Whether torch's formula runs under torch.func.vmap: gaussian_nll_loss tests
    # its variance with data-dependent control flow, which vmap cannot batch;
    # affine_grid's gradient with respect to a parameter, its theta batched
    # (vmap(grad) over the samples), raises "Cannot access data pointer of
    # Tensor that doesn't have storage" in torch's fallback; the per-sample
    # suite places an op only where it does.
    vmap: bool = True
    # frozen(arg_shapes, hyper) -> {arg name: boolean mask}: elements of an input
    # the op's backward gives no gradient by convention, not by its derivative
    # (embedding's padding_idx row); finite differences hold them still (Note
    # [Frozen elements] in sources/finite_differences.py).  None: no such elements.
    frozen: Callable | None = None
    # terms(*inputs, **hyper) -> float: for a loss that cancels terms larger than
    # itself (cosine_embedding's 1 - cos near 1), the size of those terms, the
    # rounding floor of its finite differences (Note [Loss rounding]).  None: the
    # loss's own size.
    terms: Callable | None = None
    # Declared order of the hyperparameters, for callables that take them
    # positionally (torch.autograd.Function.apply takes no keywords).
    hyper_names: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.hyper_names is None:
            object.__setattr__(self, "hyper_names", tuple(self.hyper))
        object.__setattr__(self, "hyper", Frozen(self.hyper))
        object.__setattr__(self, "samples", tuple(self.samples))
        object.__setattr__(self, "init", Frozen(self.init))

    def supports_complex_step(self, hyper: Mapping) -> bool:
        full = self.full_hyper(hyper)
        return self.complex_step(full) if callable(self.complex_step) else bool(self.complex_step)

    @property
    def is_loss(self) -> bool:
        return self.family == "loss"

    def full_hyper(self, hyper: Mapping) -> dict:
        """``hyper`` with defaults filled in; an unknown name is an error."""
        unknown = set(hyper) - set(self.hyper)
        if unknown:
            raise ShapeError(
                f"op {self.name!r} has no hyperparameter {sorted(unknown)[0]!r}; "
                f"it takes {sorted(self.hyper) or 'none'}"
            )
        return {**self.hyper, **hyper}

    def bind(self, n_inputs: int) -> list:
        """The TensorArgs matched by ``n_inputs`` tensors, in order."""
        required = [a for a in self.inputs if not a.optional and not a.variadic]
        variadic = [a for a in self.inputs if a.variadic]
        if variadic:
            if n_inputs < len(required) + 1:
                raise ShapeError(f"op {self.name!r} takes at least {len(required) + 1} tensors, got {n_inputs}")
            return required + variadic * (n_inputs - len(required))
        if not len(required) <= n_inputs <= len(self.inputs):
            raise ShapeError(
                f"op {self.name!r} takes {len(required)}"
                + (f" to {len(self.inputs)}" if len(self.inputs) > len(required) else "")
                + f" tensors ({', '.join(a.name for a in self.inputs)}), got {n_inputs}"
            )
        return list(self.inputs[:n_inputs])


@dataclass(frozen=True)
class Placement:
    """Where random graphs put an op.

    block: the kind of block it is drawn as (activation, layer, normalization,
    branch, reshape; input for ops that start a graph, head for losses);
    families: ``{family: rank}``, the families it belongs to and its place in the
    block's order there (lower ranks are simpler, and Hypothesis shrinks toward
    them); place(ctx, x): applies it to tensor x and returns the new tensor's name
    (or raises NotHere); applies(shape): whether it can take a tensor of that
    shape at all, checked before drawing it."""

    block: str
    families: Mapping
    place: Callable
    applies: Callable = lambda shape: True


CATALOGUE: dict[str, OpDef] = {}
_BUILTIN: set = set()  # the names ops.py registers, before any user declares an op


def register_op(op: OpDef) -> OpDef:
    if op.name in CATALOGUE:
        raise ValueError(f"op {op.name!r} is already in the catalogue")
    CATALOGUE[op.name] = op
    return op


def declare_op(op: OpDef) -> OpDef:
    """Register an op a user declares (``Candidate.new_op``); declaring the same
    name again replaces it (a module loaded twice), a built-in name is refused."""
    if op.name in _BUILTIN:
        raise ValueError(f"op {op.name!r} is a built-in op of the catalogue; choose another name")
    CATALOGUE[op.name] = op
    return op


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of the catalogue's own ops (not one a user declared)."""
    return name in _BUILTIN


def get_op(name: str) -> OpDef:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; the catalogue has {sorted(CATALOGUE)}") from None
