"""Ops declared from a short symbolic spec: ``{"x": ("N", "D"), "w": ("D",)}``.

A spec names each tensor input (in call order) and its shape as symbols
(``"N"``, ``"D"``) and fixed sizes (``3``); an entry may instead be a dict
``{"shape": (...), "dtype": "int", "high": 10, "role": "const"}``.  From it the
harness derives everything an ``OpDef`` holds:

* roles: the first symbol of the first input is the batch dimension; an input
  whose shape has it is an activation (``input``), one without is a parameter
  (``param``), integer inputs are constants (``const``) — any can be overridden;
* the output shape, found by running the op on the shapes at hand (cached), so
  no shape rule is written by hand; shapes that break the spec's symbols, or
  that the op raises on, are a ``ShapeError``;
* samples for the op-by-op suites (batch 2 and others 3; batch 3 and others 2);
* placement in random graphs: the tensor at hand is the first input, its
  symbols bound from its shape, the other symbols drawn, the other inputs made
  as fresh leaves; an op returning a scalar is a loss, used as a graph's head;
* families from the first input's rank (2: mlp; 3: cnn and sequence; 4: cnn).

``fuzz`` reads the same specs (``parse_inputs``, ``realise``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from hypothesis import find
from hypothesis import strategies as st

from .opdef import CONST, INPUT, PARAM, ROLES, OpDef, Placement, Sample, ShapeError, TensorArg
from .placement import NotHere, head_probe

__all__ = ["InputSpec", "parse_inputs", "batch_symbol", "bind", "realise", "hyper_parts", "spec_opdef",
           "FAMILIES_BY_RANK"]

FAMILIES_BY_RANK = {2: ("mlp",), 3: ("cnn", "sequence"), 4: ("cnn",)}
ALL_FAMILIES = ("mlp", "cnn", "sequence")


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # symbols (str) and sizes (int)
    dtype: str = "float"  # or "int"
    high: int = 4  # integer inputs are drawn below this
    role: str | None = None  # None: inferred

    @property
    def symbols(self) -> tuple:
        return tuple(s for s in self.shape if isinstance(s, str))


def parse_inputs(inputs, roles=None, where="inputs") -> list:
    """``[InputSpec]`` from ``{name: shape or dict}``, with clear errors."""
    if not isinstance(inputs, dict) or not inputs:
        raise TypeError(f"{where}: give a dict of input name -> shape, such as {{'x': ('N', 'D'), 'w': ('D',)}}")
    roles = dict(roles or {})
    unknown = sorted(set(roles) - set(inputs))
    if unknown:
        raise ValueError(f"{where}: roles names {unknown[0]!r}, which is not an input ({', '.join(inputs)})")
    out = []
    for name, spec in inputs.items():
        entry = dict(spec) if isinstance(spec, dict) else {"shape": spec}
        extra = sorted(set(entry) - {"shape", "dtype", "high", "role"})
        if extra:
            raise ValueError(f"{where}: input {name!r} has unknown key {extra[0]!r} (shape, dtype, high, role)")
        shape = entry.get("shape")
        if not isinstance(shape, (tuple, list)) or not all(
                (isinstance(s, str) and s) or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)
                for s in shape):
            raise ValueError(f"{where}: input {name!r} needs a shape of symbols and positive sizes, such as "
                             f"('N', 'D') or ('N', 3); got {shape!r}")
        dtype = entry.get("dtype", "float")
        if dtype not in ("float", "int"):
            raise ValueError(f"{where}: input {name!r}: dtype must be 'float' or 'int', got {dtype!r}")
        high = entry.get("high", 4)
        if not isinstance(high, int) or high < 1:
            raise ValueError(f"{where}: input {name!r}: high must be a positive int, got {high!r}")
        role = roles.get(name, entry.get("role"))
        if role is not None and role not in ROLES:
            raise ValueError(f"{where}: input {name!r}: role must be one of {ROLES}, got {role!r}")
        out.append(InputSpec(name, tuple(shape), dtype, high, role))
    return out


def batch_symbol(specs) -> str | None:
    """The first symbol of the first input: the batch dimension."""
    first = specs[0].shape
    return first[0] if first and isinstance(first[0], str) else None


def _role(spec, batch):
    if spec.role is not None:
        return spec.role
    if spec.dtype == "int":
        return CONST
    return INPUT if batch is None or batch in spec.symbols else PARAM


def bind(specs, shapes, *, partial=False) -> dict:
    """``{symbol: size}`` from actual shapes (one per spec, or fewer with
    ``partial``); ShapeError when a rank, a fixed size or a repeated symbol
    disagrees."""
    sizes = {}
    for spec, shape in zip(specs, shapes):
        shape = tuple(shape)
        if len(shape) != len(spec.shape):
            raise ShapeError(f"{spec.name!r} takes rank {len(spec.shape)} {spec.shape}, got shape {shape}")
        for s, n in zip(spec.shape, shape):
            if isinstance(s, int):
                if s != n:
                    raise ShapeError(f"{spec.name!r} has size {s} where shape {shape} has {n}")
            elif sizes.setdefault(s, n) != n:
                raise ShapeError(f"symbol {s!r} is {sizes[s]} and {n} in {spec.name!r} {shape}")
    if not partial and len(shapes) != len(specs):
        raise ShapeError(f"takes {len(specs)} tensors ({', '.join(s.name for s in specs)}), got {len(shapes)}")
    return sizes


def realise(spec, sizes) -> tuple:
    return tuple(sizes[s] if isinstance(s, str) else s for s in spec.shape)


def hyper_parts(hyper, where="hyper"):
    """(defaults, strategies) from ``{name: value | list of choices | strategy}``:
    a list's default is its first choice, a strategy's its simplest example."""
    defaults, strategies = {}, {}
    for k, v in dict(hyper or {}).items():
        if isinstance(v, st.SearchStrategy):
            strategies[k] = v
            defaults[k] = find(v, lambda _: True)
        elif isinstance(v, list):
            if not v:
                raise ValueError(f"{where}: {k!r} has an empty list of choices")
            strategies[k], defaults[k] = st.sampled_from(v), v[0]
        else:
            strategies[k], defaults[k] = st.just(v), v
    return defaults, strategies


def _values(specs, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, s.high, shape) if s.dtype == "int" else rng.standard_normal(shape)
            for s, shape in zip(specs, shapes)]


def spec_opdef(name: str, run: Callable, inputs, *, hyper=None, roles=None, families=None, sizes=None,
               loss=None, kinks: bool = False, formula=None, doc: str = "") -> OpDef:
    """The ``OpDef`` of an op declared by spec (see the module docstring).

    run(opdef, *arrays, **hyper) -> the output (anything with a ``shape``), the
    op's own forward on float64 NumPy arrays (a torch op is wrapped by the
    caller; ``opdef`` gives the roles and the hyperparameters' order);
    sizes: ``{symbol: size or (lo, hi)}`` fixing or bounding a symbol in samples
    and random graphs (a kernel size, say); loss: True/False to say whether the
    op is a loss (default: it is when it returns a scalar)."""
    specs = parse_inputs(inputs, roles, where=f"new_op({name!r})")
    batch = batch_symbol(specs)
    defaults, strategies = hyper_parts(hyper, where=f"new_op({name!r}) hyper")
    sizes = dict(sizes or {})
    for s, v in sizes.items():
        ok = isinstance(v, int) and v >= 1 or (isinstance(v, tuple) and len(v) == 2 and 1 <= v[0] <= v[1])
        if not ok:
            raise ValueError(f"new_op({name!r}): sizes[{s!r}] must be a positive int or a (lo, hi) range, got {v!r}")
    cache = {}

    def shape(*shapes, **hyper_values):
        key = (tuple(tuple(s) for s in shapes), tuple(sorted((k, repr(v)) for k, v in hyper_values.items())))
        if key not in cache:
            bind(specs, shapes)
            try:
                out = run(draft[0], *_values(specs, shapes), **hyper_values)
            except Exception as e:  # noqa: BLE001 - shapes the op cannot take
                cache[key] = ShapeError(f"{name} raised {type(e).__name__} on shapes {list(key[0])}: {e}")
            else:
                cache[key] = tuple(int(n) for n in np.shape(out))
        if isinstance(cache[key], ShapeError):
            raise cache[key]
        return cache[key]

    args = tuple(TensorArg(s.name, _role(s, batch), s.dtype) for s in specs)
    draft = [OpDef(name, args, shape, defaults, complex_step=False)]  # what ``run`` needs: roles, hyper order
    symbols = list(dict.fromkeys(sym for s in specs for sym in s.symbols))

    def fixed(sym, default):
        v = sizes.get(sym, default)
        return v if isinstance(v, int) else min(max(default, v[0]), v[1])

    samples = []
    for b_size, other in ((2, 3), (3, 2)):
        chosen = {sym: (b_size if sym == batch else fixed(sym, other)) for sym in symbols}
        shapes = {s.name: realise(s, chosen) for s in specs}
        try:
            shape(*shapes.values(), **defaults)
        except ShapeError:
            continue
        if not any(dict(x.shapes) == shapes for x in samples):
            samples.append(Sample(shapes))
    if not samples:
        probe = {sym: (2 if sym == batch else fixed(sym, 3)) for sym in symbols}
        try:
            shape(*(realise(s, probe) for s in specs), **defaults)
        except ShapeError as e:
            raise ValueError(f"new_op({name!r}): the op does not run at the sample shapes "
                             f"{ {s.name: realise(s, probe) for s in specs} }: {e}; give sizes= for its symbols") \
                from None
    is_loss = loss if loss is not None else shape(*samples[0].shapes.values(), **defaults) == ()
    rank = len(specs[0].shape)
    families = tuple(families) if families else FAMILIES_BY_RANK.get(rank, ALL_FAMILIES)
    unknown = [f for f in families if f not in ALL_FAMILIES]
    if unknown:
        raise ValueError(f"new_op({name!r}): unknown family {unknown[0]!r}; choose from {ALL_FAMILIES}")

    def draw_inputs(ctx, x):
        """The op's tensors with ``x`` first (its symbols bound from x's shape, the
        rest drawn), and its hyperparameters; NotHere when x does not fit."""
        try:
            bound = bind(specs[:1], [ctx.shapes[x]], partial=True)
        except ShapeError:
            raise NotHere from None
        for sym in symbols:
            if sym not in bound:
                v = sizes.get(sym)
                bound[sym] = v if isinstance(v, int) else ctx.dim(*(v if v else (1, None)))
        for sym, v in sizes.items():
            if sym in bound and (bound[sym] != v if isinstance(v, int) else not v[0] <= bound[sym] <= v[1]):
                raise NotHere
        values = {k: ctx.draw(s) for k, s in strategies.items()}
        made = [x]
        for s, arg in zip(specs[1:], args[1:]):
            init = {"kind": "randint", "high": s.high} if s.dtype == "int" else None
            made.append(ctx.leaf("p" if arg.role == PARAM else s.name[:6], realise(s, bound), arg.role, s.dtype,
                                 init))
        try:
            out = shape(*(ctx.shapes[m] for m in made), **{**defaults, **values})
        except ShapeError:
            raise NotHere from None
        return made, values, out

    def place(ctx, x):
        made, values, _ = draw_inputs(ctx, x)
        return ctx.apply(name, *made, **values)

    def head(ctx, x):
        try:
            made, values, out = draw_inputs(ctx, x)
        except NotHere:
            return head_probe(ctx, x)
        if out != ():
            return head_probe(ctx, x)
        try:
            values = ctx.settings_for(name, made, values)
        except NotHere:
            return head_probe(ctx, x)
        ctx.b.op(name, *made, name="loss", **values)

    def applies(x_shape):
        return len(x_shape) == rank

    placement = Placement("head" if is_loss else "layer", {f: 100 for f in families}, head if is_loss else place,
                          applies)
    init = {s.name: {"kind": "randint", "high": s.high} for s in specs if s.dtype == "int"}
    return replace(draft[0], family="loss" if is_loss else "layer", kinks=kinks, samples=tuple(samples), init=init,
                   families=families, torch=formula, placement=placement, doc=doc or f"declared by spec: {inputs}")
