"""Reference backprop in pure NumPy.

Every op has a forward ``f(*tensors, **hyper) -> (output, cache)`` and a
hand-written VJP ``f_backward(cache, grad_output) -> tuple of input gradients``
side by side in one module, so each rule can be checked by eye against the math.
``executor`` runs a graph of them forward and backward.

This package imports nothing from torch or gradcheck.
"""

from typing import Callable, NamedTuple

from . import activations, executor, layers, losses, normalization, recurrent, spatial, structure, tensor_math


class Op(NamedTuple):
    forward: Callable
    backward: Callable


def _collect(*modules):
    ops = {}
    for module in modules:
        for attr in dir(module):
            if attr.endswith("_forward") and not attr.startswith("_"):  # _name_forward: a private building block
                name = attr[: -len("_forward")]
                ops[name] = Op(getattr(module, attr), getattr(module, name + "_backward"))
    return ops


OPS = _collect(activations, layers, losses, normalization, recurrent, spatial, structure, tensor_math)


def forward(steps, leaves, ops=None):
    """``executor.forward`` with the reference's ops unless others are given."""
    return executor.forward(steps, leaves, OPS if ops is None else ops)


def backward(steps, values, caches, output, ops=None):
    return executor.backward(steps, values, caches, output, OPS if ops is None else ops)


def loss_and_grads(steps, leaves, output, ops=None):
    return executor.loss_and_grads(steps, leaves, output, OPS if ops is None else ops)


__all__ = ["OPS", "Op", "forward", "backward", "loss_and_grads"]
