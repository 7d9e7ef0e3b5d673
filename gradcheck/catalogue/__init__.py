"""The op catalogue: one ``OpDef`` record per op, the only per-op table.

    >>> from gradcheck.catalogue import get_op
    >>> get_op("relu").placement.block, get_op("relu").kinks
    ('activation', True)
"""

from .opdef import (CATALOGUE, CONST, INPUT, PARAM, ROLES, OpDef, Placement, Sample, ShapeError, TensorArg,
                    declare_op, get_op, register_op)
from .ops import BUILTIN_OPS

__all__ = ["CATALOGUE", "BUILTIN_OPS", "OpDef", "Placement", "Sample", "ShapeError", "TensorArg", "get_op",
           "register_op", "declare_op", "PARAM", "INPUT", "CONST", "ROLES"]
