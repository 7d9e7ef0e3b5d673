"""Vectorised NumPy forwards over a stack of perturbed copies.

Full finite differences evaluate the loss at many copies of the inputs, each with
one element moved.  ``forward_copies`` runs the reference's own forwards once on
the whole stack (a leading copy axis on every value that depends on the moved
leaf) instead of once a copy.  Each op is applied to stacked arguments by the
batching rule its catalogue record names (catalogue/batching.py); an op without
one, or whose forward is not the reference's (a candidate's op), runs copy by
copy.
"""

from __future__ import annotations

import reference_impl

from ..catalogue import get_op
from ..catalogue.batching import loop

__all__ = ["forward_copies", "apply", "slices"]

BUDGET = 64 << 20  # bytes of downstream values a batch of copies may hold


def slices(n: int, per_copy_bytes: int, budget: int = BUDGET):
    """Slices of ``range(n)`` holding as many copies as fit in ``budget`` when each
    copy holds ``per_copy_bytes`` of values: a small leaf feeding large activations
    (a bias before a convolution) is not stacked a thousand times at once."""
    size = max(1, budget // max(per_copy_bytes, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def apply(op: str, forward, args, stacked, hyper, n):
    """``op`` on arguments of which those flagged in ``stacked`` carry a leading
    copy axis of size ``n``; the result carries it too."""
    rule = get_op(op).batching if forward is reference_impl.OPS.get(op, (None,))[0] else None
    return (rule or loop)(forward, args, stacked, hyper, n)


def forward_copies(steps, values: dict, name: str, copies, ops):
    """Run ``steps`` (those downstream of ``name``) at each copy of ``name`` in
    ``copies`` (copy axis first), the other values from ``values``.  Returns every
    value, and the set of names whose values carry the copy axis."""
    values = {**values, name: copies}
    stacked = {name}
    n = len(copies)
    for step, op, inputs, hyper in steps:
        args = [values[i] for i in inputs]
        flags = [i in stacked for i in inputs]
        values[step] = apply(op, ops[op].forward, args, flags, hyper, n)
        stacked.add(step)
    return values, stacked
