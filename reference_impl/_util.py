"""Small helpers shared by the reference ops."""

import numpy as np


def pair(v):
    """An int or a 2-sequence as a 2-tuple (conv and pool geometry)."""
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    a, b = v
    return (int(a), int(b))


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the VJP of NumPy broadcasting."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def is_positive(x):
    """``x > 0`` decided on the real part.

    Note [Complex step]: the complex-step derivative f'(x) ~= Im f(x + ih) / h is
    exact to rounding for real-analytic f, and stays valid for piecewise analytic f
    as long as the branch is chosen from the real part of x.  Every branch in the
    reference (relu, max-pool winners, smooth_l1's threshold) goes through the real
    part, so the same forward serves real inputs and complex-step differentiation.
    """
    return np.real(x) > 0


def window_slices(k_index, dilation, stride, out_size):
    """The strided slice of a padded axis that kernel tap ``k_index`` reads."""
    start = k_index * dilation
    return slice(start, start + stride * (out_size - 1) + 1, stride)


def out_size(size, kernel, stride, padding, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
