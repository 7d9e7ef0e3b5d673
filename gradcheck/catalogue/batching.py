"""Batching rules: an op's NumPy forward on a stack of perturbed copies.

``rule(forward, args, stacked, hyper, n)`` applies ``forward`` to arguments of
which those flagged in ``stacked`` carry a leading copy axis of size ``n``, and
returns the result with that axis.  A rule only reshapes, aligns or folds the
copy axis (into the batch, or for stacked weights into the output features) and
then calls the forward itself; ``loop`` goes copy by copy and is right for any
op.  Each catalogue record names its rule (``OpDef.batching``);
``tests/test_batching.py`` checks every rule against the loop on every sample.
"""

from __future__ import annotations

import numpy as np

__all__ = ["loop", "broadcasting", "matmul", "per_sample", "shift_dims", "trailing", "linear", "conv", "reshape", "loss",
           "cross_entropy"]


def loop(forward, args, stacked, hyper, n):
    """Copy by copy: right for any op."""
    return np.stack([np.asarray(forward(*(a[j] if s else a for a, s in zip(args, stacked)), **hyper)[0])
                     for j in range(n)])


def _aligned(args, stacked):
    """Stacked arguments with size-1 axes after the copy axis, so that NumPy's
    trailing-axis broadcasting lines up each copy with the unstacked arguments."""
    rank = max(np.ndim(a) - s for a, s in zip(args, stacked))
    return [a.reshape(a.shape[:1] + (1,) * (rank - a.ndim + 1) + a.shape[1:]) if s else a
            for a, s in zip(args, stacked)]


def broadcasting(forward, args, stacked, hyper, n):
    # elementwise and batched-matmul ops: NumPy broadcasting carries the copy axis
    return np.asarray(forward(*_aligned(args, stacked), **hyper)[0])


def matmul(forward, args, stacked, hyper, n):
    """Broadcasting over batch dims.  Stacked 1-d rows a (n, k): against a 1-d b
    they are a matrix-vector product already; against b (..., k, m) each is a
    (1, k) matrix broadcast over b's batch dims, its unit axis dropped after.
    A stacked 1-d column b would read as a matrix: copy by copy."""
    (a, b), (sa, sb) = args, stacked
    if sb and np.ndim(b) == 2:
        return loop(forward, args, stacked, hyper, n)
    if sa and np.ndim(a) == 2 and np.ndim(b) >= 2:
        rows = a.reshape((n,) + (1,) * (np.ndim(b) - 2 - bool(sb)) + (1, a.shape[1]))  # a stacked b: copy to copy
        return np.squeeze(np.asarray(forward(rows, b, **hyper)[0]), axis=-2)
    if sa and np.ndim(a) == 2:
        return np.asarray(forward(a, b, **hyper)[0])
    return broadcasting(forward, args, stacked, hyper, n)


def _first_only(rule):
    """A rule valid when only the first argument is stacked; the loop otherwise."""
    def apply(forward, args, stacked, hyper, n):
        if any(stacked[1:]):
            return loop(forward, args, stacked, hyper, n)
        return rule(forward, args, hyper, n)
    return apply


@_first_only
def per_sample(forward, args, hyper, n):
    # an op on (N, ...) samples independently: fold the copies into N
    x = args[0]
    y = np.asarray(forward(x.reshape((-1,) + x.shape[2:]), *args[1:], **hyper)[0])
    return y.reshape((n, x.shape[1]) + y.shape[1:])


def shift_dims(*keys):
    """Ops taking axis arguments: a non-negative axis moves one along."""
    @_first_only
    def rule(forward, args, hyper, n):
        moved = {k: (v + 1 if k in keys and isinstance(v, int) and v >= 0 else v) for k, v in hyper.items()}
        return np.asarray(forward(*args, **moved)[0])
    return rule


@_first_only
def trailing(forward, args, hyper, n):
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


def linear(forward, args, stacked, hyper, n):
    if stacked[0] and not any(stacked[1:]):
        # x (copies, ..., in) W^T + b: the forward acts on the last axis
        return np.asarray(forward(*args, **hyper)[0])
    if not stacked[0]:
        # x W_j^T for every copy j is x (W_1; ...; W_n)^T: one call, features side by side
        return _out_features(forward, args, stacked, hyper, n, axis=np.ndim(args[0]) - 1)
    return loop(forward, args, stacked, hyper, n)


def conv(forward, args, stacked, hyper, n):
    if stacked[0] and not any(stacked[1:]):
        return per_sample(forward, args, stacked, hyper, n)
    if not stacked[0] and hyper.get("groups", 1) == 1:
        # each copy's output channels side by side: one convolution with n * out channels
        return _out_features(forward, args, stacked, hyper, n, axis=1)
    return loop(forward, args, stacked, hyper, n)


def reshape(forward, args, stacked, hyper, n):
    return np.asarray(forward(args[0], shape=(n,) + tuple(hyper["shape"]))[0])


def loss(forward, args, stacked, hyper, n):
    """Losses over (copies, ...): per-element values from the forward with
    reduction "none", reduced within each copy as the op's reduction says (kept
    as they are for "none")."""
    reduction = hyper.get("reduction", "mean")
    per = np.asarray(forward(*_aligned(args, stacked), **{**hyper, "reduction": "none"})[0])
    per = np.broadcast_to(per, (n,) + per.shape[1:])
    if reduction == "none":
        return per
    per = per.reshape(n, -1)
    return per.mean(axis=1) if reduction == "mean" else per.sum(axis=1)


def cross_entropy(forward, args, stacked, hyper, n):
    logits, target, *weight = args
    if any(stacked[1:]):
        return loop(forward, args, stacked, hyper, n)
    per = np.asarray(forward(logits.reshape((-1,) + logits.shape[2:]), np.tile(target, n), *weight,
                             **{**hyper, "reduction": "none"})[0]).reshape(n, -1)
    if hyper.get("reduction", "mean") == "none":
        return per
    if hyper.get("reduction", "mean") != "mean":
        return per.sum(axis=1)
    # the mean over the rows each copy keeps (all but those at ignore_index), by
    # their class weights when there are some
    keep = np.asarray(target) != hyper.get("ignore_index", -100)
    kept = np.sum(np.asarray(weight[0])[np.where(keep, target, 0)] * keep) if weight else np.sum(keep)
    return per.sum(axis=1) / kept
