"""Reference backprop in pure NumPy.

Every op has a forward ``f(*tensors, **hyper) -> (output, cache)`` and a
hand-written VJP ``f_backward(cache, grad_output) -> tuple of input gradients``
side by side in one module, so each rule can be checked by eye against the math.
``executor`` runs a graph of them forward and backward.

This package imports nothing from torch or gradcheck.
"""

from typing import Callable, NamedTuple

from . import activations, layers, losses, normalization, structure


class Op(NamedTuple):
    forward: Callable
    backward: Callable


def _collect(*modules):
    ops = {}
    for module in modules:
        for attr in dir(module):
            if attr.endswith("_forward"):
                name = attr[: -len("_forward")]
                ops[name] = Op(getattr(module, attr), getattr(module, name + "_backward"))
    return ops


OPS = _collect(activations, layers, losses, normalization, structure)

from .executor import backward, forward, loss_and_grads  # noqa: E402

__all__ = ["OPS", "Op", "forward", "backward", "loss_and_grads"]
