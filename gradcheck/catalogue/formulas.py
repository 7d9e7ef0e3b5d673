"""Torch formulas: each op in ``torch.nn.functional`` and tensor ops, for autograd
to differentiate (no backward is written here).  torch is imported on the first
call, so the catalogue, and gradcheck, import without it."""

from __future__ import annotations


def _torch():
    import torch

    return torch


def _F():
    import torch.nn.functional as F

    return F


def _conv(name):
    def formula(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        return getattr(_F(), name)(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    return formula


def linear(x, w, b=None):
    return _F().linear(x, w, b)


def matmul(a, b):
    return _torch().matmul(a, b)


conv1d = _conv("conv1d")


conv2d = _conv("conv2d")


def max_pool2d(x, kernel_size, stride, padding):
    return _F().max_pool2d(x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride, padding):
    return _F().avg_pool2d(x, kernel_size, stride, padding)


def global_avg_pool(x):
    return x.mean(dim=tuple(range(2, x.ndim)))


def relu(x):
    return _F().relu(x)


def leaky_relu(x, negative_slope):
    return _F().leaky_relu(x, negative_slope)


def elu(x, alpha):
    return _F().elu(x, alpha)


def gelu(x, approximate):
    return _F().gelu(x, approximate=approximate)


def sigmoid(x):
    return _torch().sigmoid(x)


def tanh(x):
    return _torch().tanh(x)


def softplus(x, beta, threshold):
    return _F().softplus(x, beta, threshold)


def silu(x):
    return _F().silu(x)


def softmax(x, dim):
    return _F().softmax(x, dim)


def log_softmax(x, dim):
    return _F().log_softmax(x, dim)


def layer_norm(x, w, b, eps):
    return _F().layer_norm(x, tuple(w.shape), w, b, eps)


def batch_norm(x, w, b, eps):
    return _F().batch_norm(x, None, None, w, b, training=True, eps=eps)


def add(a, b):
    return _torch().add(a, b)


def mul(a, b):
    return _torch().mul(a, b)


def concat(*xs, dim):
    return _torch().cat(xs, dim)


def reshape(x, shape):
    return x.reshape(tuple(shape))


def flatten(x, start_dim, end_dim):
    return _torch().flatten(x, start_dim, end_dim)


# torch's dropout draws its own mask; with the mask given it is this product.
def dropout(x, mask, p):
    return x * mask / (1.0 - p)


def embedding(ids, table):
    return _F().embedding(ids, table)


def attention(q, k, v, causal):
    return _F().scaled_dot_product_attention(q, k, v, is_causal=causal)


def mse(p, t, reduction):
    return _F().mse_loss(p, t, reduction=reduction)


def smooth_l1(p, t, beta, reduction):
    return _F().smooth_l1_loss(p, t, reduction=reduction, beta=beta)


def bce_with_logits(x, t, reduction):
    return _F().binary_cross_entropy_with_logits(x, t, reduction=reduction)


def cross_entropy(x, t, reduction):
    return _F().cross_entropy(x, t, reduction=reduction)


def weighted_sum(x, w):
    return (x * w).sum()
