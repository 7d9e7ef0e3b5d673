"""The graph executor: forward in order, then the chain rule in reverse.

A graph is given as a list of steps ``(name, op, input_names, hyper)`` in
topological order, plus a dict of leaf arrays, and the ops to run it with:
``{op name: Op(forward, backward)}``.  Each op's forward returns ``(output,
cache)``; its backward maps ``(cache, grad_output)`` to one gradient per input,
``None`` for inputs that are not differentiable.
"""

import numpy as np


def forward(steps, leaves, ops):
    """Run every step; return ``(values, caches)`` keyed by name (leaves included)."""
    values = dict(leaves)
    caches = {}
    for name, op, inputs, hyper in steps:
        out, cache = ops[op].forward(*(values[i] for i in inputs), **hyper)
        values[name] = np.asarray(out)
        caches[name] = cache
    return values, caches


def backward(steps, values, caches, output, ops):
    """Gradients of ``values[output]`` (a scalar) with respect to every value.

    Steps run in reverse topological order.  A value that feeds several steps (or
    the same step twice) receives the sum of the gradients from each use.
    """
    grads = {output: np.ones_like(values[output])}
    for name, op, inputs, _ in reversed(steps):
        g = grads.get(name)
        if g is None:  # the output does not depend on this step
            continue
        input_grads = ops[op].backward(caches[name], g)
        if len(input_grads) != len(inputs):
            raise ValueError(
                f"{op}.backward returned {len(input_grads)} gradients for {len(inputs)} inputs"
            )
        for inp, gi in zip(inputs, input_grads):
            if gi is None:
                continue
            grads[inp] = grads[inp] + gi if inp in grads else gi
    return grads


def loss_and_grads(steps, leaves, output, ops):
    """Forward and backward in one call: ``(loss, values, grads)``."""
    values, caches = forward(steps, leaves, ops)
    grads = backward(steps, values, caches, output, ops)
    return values[output], values, grads
