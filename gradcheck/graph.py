"""``Graph``: a frozen, JSON round-trippable DAG of op nodes ending in a scalar loss.

Leaves are the tensors a case is built from (parameters, inputs, constants such
as labels and masks); nodes apply catalogue ops to leaves and earlier nodes.
Construction validates everything (known ops, inputs defined before use, shape
rules, a scalar output), so a ``Graph`` that exists is a graph that runs.

    >>> b = GraphBuilder()
    >>> h = b.op("linear", b.input("x", (4, 3)), b.param("w", (2, 3)))
    >>> g = b.build(b.op("weighted_sum", h, b.const("probe", (4, 2)), name="loss"))
    >>> Graph.from_json(g.to_json()) == g
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .frozen import Frozen, thaw_value
from .catalogue import CONST, INPUT, PARAM, ROLES, Sample, ShapeError, get_op

__all__ = ["Leaf", "Node", "Graph", "GraphBuilder", "GraphError", "single_op_graph", "INIT_KINDS", "MAX_ELEMENTS",
           "MAX_NODES"]

MAX_ELEMENTS = 50_000_000  # the most scalars a case may hold (400 MB in float64): a larger one is refused, not allocated
MAX_NODES = 10_000


class GraphError(ValueError):
    """A graph that cannot be built: unknown op, undefined input, bad shapes."""


# init kind -> the settings it needs (others are optional: mean, std, low)
INIT_KINDS = {"normal": (), "uniform": (), "randint": ("high",), "mask": ("p",), "sign": (), "label_lists": (),
              "distinct": ("high",)}

DEFAULT_INIT = {
    PARAM: {"kind": "normal", "std": 0.5},
    INPUT: {"kind": "normal", "std": 1.0},
    CONST: {"kind": "normal", "std": 1.0},
}


@dataclass(frozen=True)
class Leaf:
    name: str
    shape: tuple
    role: str = INPUT
    dtype: str = "float"
    init: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"a leaf name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.shape, (list, tuple)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in self.shape):
            raise GraphError(f"leaf {self.name!r}: shape must be a list of sizes >= 0, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not isinstance(self.init, Mapping):
            raise GraphError(f"leaf {self.name!r}: init must be an object, got {self.init!r}")
        init = dict(self.init) or (DEFAULT_INIT[self.role] if self.role in DEFAULT_INIT else {})
        object.__setattr__(self, "init", Frozen(init))
        if self.role not in ROLES:
            raise GraphError(f"leaf {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.dtype not in ("float", "int"):
            raise GraphError(f"leaf {self.name!r}: dtype must be 'float' or 'int', got {self.dtype!r}")
        kind = self.init.get("kind", "normal")
        if kind not in INIT_KINDS:
            raise GraphError(f"leaf {self.name!r}: unknown init kind {kind!r}; known: {', '.join(INIT_KINDS)}")
        for key in INIT_KINDS[kind]:
            if key not in self.init:
                raise GraphError(f"leaf {self.name!r}: init kind {kind!r} needs {key!r}")
        for key, value in self.init.items():
            if key != "kind" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value)):
                raise GraphError(f"leaf {self.name!r}: init {key!r} must be a finite number, got {value!r}")
        if self.dtype == "int" and kind not in ("randint", "label_lists", "distinct"):
            raise GraphError(f"leaf {self.name!r}: an int leaf needs init kind 'randint' with 'high' (or "
                             f"'label_lists', or 'distinct' with 'high')")
        if kind == "distinct" and len(self.shape) >= 2 and math.prod(self.shape[2:]) > self.init["high"]:
            raise GraphError(f"leaf {self.name!r}: {math.prod(self.shape[2:])} distinct ids per plane cannot be "
                             f"drawn below high={self.init['high']}")

    @property
    def differentiable(self) -> bool:
        return self.role != CONST and self.dtype == "float"

    def to_dict(self):
        return {"name": self.name, "shape": list(self.shape), "role": self.role, "dtype": self.dtype,
                "init": thaw_value(self.init)}


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple
    hyper: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "hyper", Frozen(self.hyper))

    def to_dict(self):
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "hyper": thaw_value(self.hyper)}


@dataclass(frozen=True)
class Graph:
    leaves: tuple
    nodes: tuple
    output: str
    shapes: Mapping = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "leaves", tuple(self.leaves))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "shapes", self._infer_shapes())

    def _infer_shapes(self):
        shapes, dtypes = {}, {}
        for leaf in self.leaves:
            if leaf.name in shapes:
                raise GraphError(f"name {leaf.name!r} is used twice")
            shapes[leaf.name], dtypes[leaf.name] = leaf.shape, leaf.dtype
        self._check_size(shapes)  # before any shape rule: a huge leaf is refused by size, not by its mismatch
        for node in self.nodes:
            if node.name in shapes:
                raise GraphError(f"name {node.name!r} is used twice")
            try:
                op = get_op(node.op)
            except KeyError as e:
                raise GraphError(f"node {node.name!r}: {e.args[0]}") from None
            missing = [i for i in node.inputs if i not in shapes]
            if missing:
                raise GraphError(f"node {node.name!r} ({node.op}): input {missing[0]!r} is not defined before it")
            try:
                args = op.bind(len(node.inputs))
                hyper = op.full_hyper(node.hyper)
                for arg, name in zip(args, node.inputs):
                    if arg.dtype != dtypes[name]:
                        raise ShapeError(f"input {arg.name!r} must be {arg.dtype}, {name!r} is {dtypes[name]}")
                    if arg.dtype == "int" and self._is_node(name):
                        raise ShapeError(f"input {arg.name!r} must be an int leaf")
                shapes[node.name] = tuple(op.shape(*(shapes[i] for i in node.inputs), **hyper))
            except ShapeError as e:
                raise GraphError(f"node {node.name!r} ({node.op}): {e}") from None
            dtypes[node.name] = "float"
        self._check_size(shapes)
        if self.output not in shapes or not self._is_node(self.output):
            raise GraphError(f"output {self.output!r} is not a node of the graph")
        if shapes[self.output] != ():
            raise GraphError(f"output {self.output!r} must be a scalar loss, has shape {shapes[self.output]}")
        return Frozen(shapes)

    def _check_size(self, shapes):
        if len(self.nodes) > MAX_NODES:
            raise GraphError(f"the graph has {len(self.nodes):,} nodes, more than the {MAX_NODES:,} a case may have")
        total = sum(math.prod(s) for s in shapes.values())
        if total > MAX_ELEMENTS:
            raise GraphError(f"the graph's tensors hold {total:,} scalars ({total * 8 / 2**30:.3g} GiB in float64), "
                             f"more than the {MAX_ELEMENTS:,} a case may hold")

    def _is_node(self, name):
        return any(n.name == name for n in self.nodes)

    # -- views

    def leaf(self, name) -> Leaf:
        for leaf in self.leaves:
            if leaf.name == name:
                return leaf
        raise KeyError(name)

    def node(self, name) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def differentiable_leaves(self) -> tuple:
        return tuple(leaf for leaf in self.leaves if leaf.differentiable)

    def steps(self):
        """``(name, op, inputs, hyper)`` per node with defaults filled in: the executor's form."""
        return [(name, op, inputs, dict(hyper)) for name, op, inputs, hyper in self.plan()]

    def plan(self) -> tuple:
        """``steps()`` computed once and shared (a Graph is immutable): the form every
        forward of every check reads.  Its hyper dicts must not be modified."""
        cached = self.__dict__.get("_plan")
        if cached is None:
            cached = tuple((n.name, n.op, n.inputs, get_op(n.op).full_hyper(n.hyper)) for n in self.nodes)
            self.__dict__["_plan"] = cached
        return cached

    def downstream(self, name) -> frozenset:
        """Names of the nodes whose value depends on ``name`` (and ``name`` itself):
        all a perturbation of it changes."""
        out = {name}
        for node in self.nodes:
            if any(i in out for i in node.inputs):
                out.add(node.name)
        return frozenset(out)

    def consumers(self, name) -> list:
        return [n for n in self.nodes if name in n.inputs]

    def op_of(self, tensor) -> str:
        """The op a tensor belongs to: the first op consuming a leaf, or a node's own op."""
        if self._is_node(tensor):
            return self.node(tensor).op
        users = self.consumers(tensor)
        return users[0].op if users else ""

    @property
    def ops(self) -> tuple:
        return tuple(n.op for n in self.nodes)

    @property
    def size(self) -> int:
        """Number of differentiable scalars: the cost of a full finite-difference check."""
        return sum(math.prod(l.shape) for l in self.differentiable_leaves)

    # -- serialisation

    def to_dict(self):
        return {"leaves": [l.to_dict() for l in self.leaves], "nodes": [n.to_dict() for n in self.nodes],
                "output": self.output}

    def to_json(self, indent=None) -> str:
        if indent is None:
            cached = self.__dict__.get("_json")
            if cached is None:
                cached = self.__dict__["_json"] = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            return cached
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, d) -> "Graph":
        try:
            leaves = [Leaf(l["name"], l["shape"], l.get("role", INPUT), l.get("dtype", "float"), l.get("init", {}))
                      for l in d["leaves"]]
            nodes = [Node(n["name"], n["op"], n["inputs"], n.get("hyper", {})) for n in d["nodes"]]
            return cls(leaves, nodes, d["output"])
        except (KeyError, TypeError, AttributeError) as e:
            raise GraphError(f"not a graph description: missing or malformed {e}") from None

    @classmethod
    def from_json(cls, text) -> "Graph":
        return cls.from_dict(json.loads(text))

    @property
    def case_id(self) -> str:
        """A stable content hash: the same graph gives the same id on any machine."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def describe(self) -> str:
        """The graph as readable text, one line per leaf and node."""
        lines = []
        for l in self.leaves:
            lines.append(f"  {l.name}: {l.role} {l.dtype}{list(l.shape)}")
        for n in self.nodes:
            hyper = ", ".join(f"{k}={v!r}" for k, v in n.hyper.items())
            args = ", ".join(n.inputs) + (", " + hyper if hyper else "")
            lines.append(f"  {n.name} = {n.op}({args})  -> {list(self.shapes[n.name])}")
        lines.append(f"  loss: {self.output}")
        return "\n".join(lines)


class GraphBuilder:
    """Build a ``Graph`` step by step; each method returns the new tensor's name."""

    def __init__(self):
        self._leaves, self._nodes = [], []

    def leaf(self, name, shape, role=INPUT, dtype="float", init=None) -> str:
        self._leaves.append(Leaf(name, shape, role, dtype, init or {}))
        return name

    def input(self, name, shape, init=None) -> str:
        return self.leaf(name, shape, INPUT, init=init)

    def param(self, name, shape, init=None) -> str:
        return self.leaf(name, shape, PARAM, init=init)

    def const(self, name, shape, dtype="float", init=None) -> str:
        return self.leaf(name, shape, CONST, dtype, init)

    def op(self, op, *inputs, name=None, **hyper) -> str:
        name = name or f"{op}{sum(n.op == op for n in self._nodes)}"
        self._nodes.append(Node(name, op, inputs, hyper))
        return name

    def build(self, output=None) -> Graph:
        return Graph(self._leaves, self._nodes, output or self._nodes[-1].name)


def single_op_graph(op_name: str, sample: Sample) -> Graph:
    """One op on fresh leaves; an op whose output is not a scalar is reduced by ``weighted_sum`` against a
    random constant, so the loss's gradient probes the op's VJP in a random direction."""
    op = get_op(op_name)
    b = GraphBuilder()
    names = []
    for arg in op.inputs:
        shape = sample.shapes.get(arg.name)
        if shape is None:
            if arg.optional:
                continue
            raise GraphError(f"sample for {op_name!r} gives no shape for {arg.name!r}")
        init = sample.init.get(arg.name) or op.init.get(arg.name)
        shapes = shape if arg.variadic else [shape]
        for i, s in enumerate(shapes):
            name = f"{arg.name}{i}" if arg.variadic else arg.name
            names.append(b.leaf(name, s, arg.role, arg.dtype, init))
    shape = op.shape(*(b._leaves[i].shape for i in range(len(names))), **op.full_hyper(sample.hyper))
    if op.is_loss and tuple(shape) == ():  # (a loss with reduction "none" is probed like any op)
        return b.build(b.op(op_name, *names, name="loss", **sample.hyper))
    out = b.op(op_name, *names, name="out", **sample.hyper)
    return b.build(b.op("weighted_sum", out, b.const("probe", shape), name="loss"))
