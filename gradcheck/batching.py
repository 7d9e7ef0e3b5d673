"""Vectorised NumPy forwards over a stack of perturbed copies.

Full finite differences evaluate the loss at many copies of the inputs, each with
one element moved.  ``forward_copies`` runs the reference's own forwards once on
the whole stack (a leading copy axis on every value that depends on the moved
leaf) instead of once a copy.  Each op is applied to stacked arguments by a rule
in ``RULES`` that only reshapes, aligns or folds the copy axis (into the batch,
or for stacked weights into the output features) and then calls the op's
forward; an op without a rule, or whose forward is not the reference's (a
candidate's op), runs copy by copy.  ``tests/test_batching.py`` checks every rule
against the copy-by-copy loop on every catalogue sample.
"""

from __future__ import annotations

import numpy as np

import reference_impl

__all__ = ["forward_copies", "RULES", "slices"]

BUDGET = 64 << 20  # bytes of downstream values a batch of copies may hold


def slices(n: int, per_copy_bytes: int, budget: int = BUDGET):
    """Slices of ``range(n)`` holding as many copies as fit in ``budget`` when each
    copy holds ``per_copy_bytes`` of values: a small leaf feeding large activations
    (a bias before a convolution) is not stacked a thousand times at once."""
    size = max(1, budget // max(per_copy_bytes, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _loop(forward, args, stacked, hyper, n):
    """Copy by copy: right for any op."""
    return np.stack([np.asarray(forward(*(a[j] if s else a for a, s in zip(args, stacked)), **hyper)[0])
                     for j in range(n)])


def _aligned(args, stacked):
    """Stacked arguments with size-1 axes after the copy axis, so that NumPy's
    trailing-axis broadcasting lines up each copy with the unstacked arguments."""
    rank = max(np.ndim(a) - s for a, s in zip(args, stacked))
    return [a.reshape(a.shape[:1] + (1,) * (rank - a.ndim + 1) + a.shape[1:]) if s else a
            for a, s in zip(args, stacked)]


def _broadcasting(forward, args, stacked, hyper, n):
    # elementwise and batched-matmul ops: NumPy broadcasting carries the copy axis
    return np.asarray(forward(*_aligned(args, stacked), **hyper)[0])


def _first_only(rule):
    """A rule valid when only the first argument is stacked; the loop otherwise."""
    def apply(forward, args, stacked, hyper, n):
        if any(stacked[1:]):
            return _loop(forward, args, stacked, hyper, n)
        return rule(forward, args, hyper, n)
    return apply


@_first_only
def _per_sample(forward, args, hyper, n):
    # an op on (N, ...) samples independently: fold the copies into N
    x = args[0]
    y = np.asarray(forward(x.reshape((-1,) + x.shape[2:]), *args[1:], **hyper)[0])
    return y.reshape((n, x.shape[1]) + y.shape[1:])


def _shift_dims(*keys):
    """Ops taking axis arguments: a non-negative axis moves one along."""
    @_first_only
    def rule(forward, args, hyper, n):
        moved = {k: (v + 1 if k in keys and isinstance(v, int) and v >= 0 else v) for k, v in hyper.items()}
        return np.asarray(forward(*args, **moved)[0])
    return rule


@_first_only
def _trailing(forward, args, hyper, n):
    # an op on the trailing axes only (layer norm over its weight's axes)
    return np.asarray(forward(*args, **hyper)[0])


def _stack_rows(a, is_stacked, n):
    """Copies of a weight (or bias) one after another along its first axis: the
    stacked copies reshaped, or the one unstacked tensor repeated."""
    if is_stacked:
        return a.reshape((-1,) + a.shape[2:])
    return np.concatenate([a] * n, axis=0)


def _out_features(forward, args, stacked, hyper, n, axis):
    """x unstacked, its weight and/or bias stacked: the copies' output features
    (or channels) side by side in one call, n * out of them, then split off along
    ``axis`` of the output and moved to the front."""
    x, w, *b = args
    rows = [_stack_rows(w, stacked[1], n)] + [_stack_rows(v, s, n) for v, s in zip(b, stacked[2:])]
    y = np.asarray(forward(x, *rows, **hyper)[0])
    out = w.shape[1] if stacked[1] else w.shape[0]
    y = y.reshape(y.shape[:axis] + (n, out) + y.shape[axis + 1:])
    return np.moveaxis(y, axis, 0)


def _linear(forward, args, stacked, hyper, n):
    if stacked[0] and not any(stacked[1:]):
        # x (copies, ..., in) W^T + b: the forward acts on the last axis
        return np.asarray(forward(*args, **hyper)[0])
    if not stacked[0]:
        # x W_j^T for every copy j is x (W_1; ...; W_n)^T: one call, features side by side
        return _out_features(forward, args, stacked, hyper, n, axis=np.ndim(args[0]) - 1)
    return _loop(forward, args, stacked, hyper, n)


def _conv(forward, args, stacked, hyper, n):
    if stacked[0] and not any(stacked[1:]):
        return _per_sample(forward, args, stacked, hyper, n)
    if not stacked[0] and hyper.get("groups", 1) == 1:
        # each copy's output channels side by side: one convolution with n * out channels
        return _out_features(forward, args, stacked, hyper, n, axis=1)
    return _loop(forward, args, stacked, hyper, n)


def _reshape(forward, args, stacked, hyper, n):
    return np.asarray(forward(args[0], shape=(n,) + tuple(hyper["shape"]))[0])


def _loss(forward, args, stacked, hyper, n):
    """Losses over (copies, ...): per-element values from the forward with
    reduction "none", reduced within each copy as the op's reduction says."""
    reduction = hyper.get("reduction", "mean")
    per = np.asarray(forward(*_aligned(args, stacked), **{**hyper, "reduction": "none"})[0])
    per = np.broadcast_to(per, (n,) + per.shape[1:]).reshape(n, -1)
    return per.mean(axis=1) if reduction == "mean" else per.sum(axis=1)


def _cross_entropy(forward, args, stacked, hyper, n):
    logits, target = args
    if stacked[1]:
        return _loop(forward, args, stacked, hyper, n)
    per = np.asarray(forward(logits.reshape((-1,) + logits.shape[2:]), np.tile(target, n),
                             **{**hyper, "reduction": "none"})[0]).reshape(n, -1)
    return per.mean(axis=1) if hyper.get("reduction", "mean") == "mean" else per.sum(axis=1)


RULES = {
    **dict.fromkeys(["relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "silu",
                     "add", "mul", "dropout", "matmul", "attention"], _broadcasting),
    **dict.fromkeys(["conv1d", "conv2d"], _conv),
    **dict.fromkeys(["max_pool2d", "avg_pool2d", "global_avg_pool"], _per_sample),
    "softmax": _shift_dims("dim"),
    "log_softmax": _shift_dims("dim"),
    "flatten": _shift_dims("start_dim", "end_dim"),
    "layer_norm": _trailing,
    "linear": _linear,
    "reshape": _reshape,
    **dict.fromkeys(["mse", "smooth_l1", "bce_with_logits"], _loss),
    "cross_entropy": _cross_entropy,
}


def apply(op: str, forward, args, stacked, hyper, n):
    """``op`` on arguments of which those flagged in ``stacked`` carry a leading
    copy axis of size ``n``; the result carries it too."""
    rule = RULES.get(op) if forward is reference_impl.OPS.get(op, (None,))[0] else None
    return (rule or _loop)(forward, args, stacked, hyper, n)


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
