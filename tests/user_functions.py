"""User-style custom autograd Functions and Modules, each correct and with one
realistic bug, as users write them for ``gradcheck.check`` and ``fuzz``.

Each entry of ``CASES`` says how to build inputs (float64 or float32), the
correct and the buggy implementation, and whether the given inputs reach the
bug's trigger (``reached``) or only some regime does (then ``fuzz`` gives the
spec that draws it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

# ---------------------------------------------------------------- fused activations


class SwishGate(torch.autograd.Function):
    """x * sigmoid(x) * w, fused."""

    @staticmethod
    def forward(ctx, x, w):
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, w, s)
        return x * s * w

    @staticmethod
    def backward(ctx, g):
        x, w, s = ctx.saved_tensors
        dx = g * w * (s + x * s * (1 - s))
        dw = (g * x * s).sum(0)
        return dx, dw


class SwishGateBug(SwishGate):
    @staticmethod
    def backward(ctx, g):
        x, w, s = ctx.saved_tensors
        dx = g * w * (s + s * (1 - s))  # bug: the derivative of sigmoid is missing its factor x
        return dx, (g * x * s).sum(0)


class ThresholdSoftplus(torch.autograd.Function):
    """softplus(x) = log(1 + exp(x)), linear above a threshold (as torch's)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x > 20, x, torch.log1p(torch.exp(x.clamp(max=20))))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.where(x > 20, torch.ones_like(x), torch.sigmoid(x))


class ThresholdSoftplusBug(ThresholdSoftplus):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # bug: the kernel writes the gradient below the threshold only; above it stays 0
        return g * torch.sigmoid(x) * (x <= 20).to(x.dtype)


# ---------------------------------------------------------------- a normalization


class LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(var + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight + bias

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        dxhat = g * weight
        dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
        rows = tuple(range(g.dim() - 1))
        return dx, (g * xhat).sum(rows), g.sum(rows)


class LayerNormFnBug(LayerNormFn):
    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        dxhat = g * weight
        dx = rstd * (dxhat - dxhat.mean(-1, keepdim=True))  # bug: the variance's term is dropped
        rows = tuple(range(g.dim() - 1))
        return dx, (g * xhat).sum(rows), g.sum(rows)


# ---------------------------------------------------------------- causal attention


def _causal_softmax(q, k):
    T, D = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-1, -2) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), -1)


class CausalAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D), causal) v, the softmax recomputed in backward (as
    memory-saving kernels do)."""

    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return _causal_softmax(q, k) @ v

    @staticmethod
    def backward(ctx, g):
        q, k, v = ctx.saved_tensors
        p = _causal_softmax(q, k)
        return CausalAttention._grads(p, q, k, v, g)

    @staticmethod
    def _grads(p, q, k, v, g):
        dv = p.transpose(-1, -2) @ g
        dp = g @ v.transpose(-1, -2)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) / math.sqrt(q.shape[-1])
        return ds @ k, ds.transpose(-1, -2) @ q, dv


class CausalAttentionBug(CausalAttention):
    @staticmethod
    def backward(ctx, g):
        q, k, v = ctx.saved_tensors
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)  # bug: recomputed without the mask
        return CausalAttention._grads(p, q, k, v, g)


# ---------------------------------------------------------------- conv via unfold, stride and dilation


class UnfoldConv2d(torch.autograd.Function):
    """conv2d as im2col (``F.unfold``) and a matmul; the backward scatters the
    columns back by hand (col2im), offset by stride and dilation."""

    @staticmethod
    def forward(ctx, x, w, b, stride, dilation):
        n, c, h, wd = x.shape
        o, _, k, _ = w.shape
        cols = F.unfold(x, k, dilation=dilation, stride=stride)  # (N, C*k*k, L)
        ho = (h - dilation * (k - 1) - 1) // stride + 1
        wo = (wd - dilation * (k - 1) - 1) // stride + 1
        out = (w.reshape(o, -1) @ cols).reshape(n, o, ho, wo) + b.reshape(1, o, 1, 1)
        ctx.save_for_backward(x, w, cols)
        ctx.conf = (stride, dilation, ho, wo)
        return out

    @staticmethod
    def backward(ctx, g):
        return _unfold_conv_backward(ctx, g, dilated_offsets=True)


class UnfoldConv2dBug(UnfoldConv2d):
    @staticmethod
    def backward(ctx, g):
        return _unfold_conv_backward(ctx, g, dilated_offsets=False)  # bug: col2im forgets the dilation


def _unfold_conv_backward(ctx, g, dilated_offsets):
    x, w, cols = ctx.saved_tensors
    stride, dilation, ho, wo = ctx.conf
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    g2 = g.reshape(n, o, ho * wo)
    dw = (g2 @ cols.transpose(1, 2)).sum(0).reshape(w.shape)
    dcols = (w.reshape(o, -1).t() @ g2).reshape(n, c, k, k, ho, wo)
    dx = torch.zeros_like(x)
    step = dilation if dilated_offsets else 1
    for i in range(k):
        for j in range(k):
            di, dj = i * step, j * step
            dx[:, :, di:di + stride * (ho - 1) + 1:stride, dj:dj + stride * (wo - 1) + 1:stride] += dcols[:, :, i, j]
    return dx, dw, g.sum((0, 2, 3)), None, None


# ---------------------------------------------------------------- a scan


class CumProd(torch.autograd.Function):
    """cumulative product along the last axis; the backward without division:
    dx_i = sum_{j >= i} g_j prod_{k <= j, k != i} x_k."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.cumprod(x, -1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        t = x.shape[-1]
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        rows = x.unsqueeze(-2).expand(*x.shape[:-1], t, t).masked_fill(eye, 1.0)  # row i: x with x_i = 1
        partial = torch.cumprod(rows, -1)  # [i, j] = prod_{k <= j, k != i} x_k
        upper = torch.ones(t, t, dtype=torch.bool, device=x.device).triu()
        return (partial * upper * g.unsqueeze(-2)).sum(-1)


class CumProdBug(CumProd):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        y = torch.cumprod(x, -1)
        # bug: the textbook shortcut divides by x, which breaks at exact zeros
        return torch.flip(torch.cumsum(torch.flip(g * y, [-1]), -1), [-1]) / x


# ---------------------------------------------------------------- a whole small model


class LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, g.sum(0)


class LinearFnBug(LinearFn):
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, g.mean(0)  # bug: the bias gradient averages the batch


class CustomLinear(torch.nn.Module):
    def __init__(self, fan_in, fan_out, fn=LinearFn):
        super().__init__()
        self.fn = fn
        self.weight = torch.nn.Parameter(torch.randn(fan_out, fan_in) / math.sqrt(fan_in))
        self.bias = torch.nn.Parameter(torch.randn(fan_out) * 0.1)

    def forward(self, x):
        return self.fn.apply(x, self.weight, self.bias)


class SmallModel(torch.nn.Module):
    """A two-layer MLP of custom linears, a layer norm Function and a dropout."""

    def __init__(self, linear=LinearFn, norm=LayerNormFn):
        super().__init__()
        self.l1 = CustomLinear(6, 8, linear)
        self.norm_w = torch.nn.Parameter(1 + 0.1 * torch.randn(8))
        self.norm_b = torch.nn.Parameter(0.1 * torch.randn(8))
        self.norm = norm
        self.drop = torch.nn.Dropout(0.25)
        self.l2 = CustomLinear(8, 3, linear)

    def forward(self, x):
        h = self.norm.apply(self.l1(x), self.norm_w, self.norm_b)
        return self.l2(self.drop(torch.tanh(h)))


def model_loss(out):
    return F.cross_entropy(out, torch.tensor([0, 2, 1, 0]))


# ---------------------------------------------------------------- the table


@dataclass
class UserCase:
    name: str
    correct: object
    buggy: object
    inputs: object  # inputs(dtype) -> tuple of check's positional inputs
    reached: bool  # whether the given inputs reach the bug's trigger
    kind: str = "function"  # or "model": correct/buggy build nn.Modules
    fuzz_inputs: dict = field(default_factory=dict)
    fuzz_hyper: dict = field(default_factory=dict)
    loss: object = None
    reference: object = None  # the same maths in built-in ops


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(seed, *shape, dtype, grad=True, scale=1.0):
    return (scale * torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)).to(dtype).requires_grad_(grad)


def _model_inputs(dtype):
    return (_randn(7, 4, 6, dtype=dtype, grad=False),)


CASES = [
    UserCase("swish_gate", SwishGate, SwishGateBug,
             lambda dt: (_randn(0, 4, 5, dtype=dt), _randn(1, 5, dtype=dt)), reached=True,
             fuzz_inputs={"x": ("N", "D"), "w": ("D",)},
             reference=lambda x, w: x * torch.sigmoid(x) * w),
    UserCase("threshold_softplus", ThresholdSoftplus, ThresholdSoftplusBug,
             lambda dt: (_randn(2, 3, 4, dtype=dt, scale=3.0),), reached=False,
             fuzz_inputs={"x": ("N", "D")}, reference=F.softplus),
    UserCase("layer_norm", LayerNormFn, LayerNormFnBug,
             lambda dt: (_randn(3, 4, 6, dtype=dt), _randn(4, 6, dtype=dt), _randn(5, 6, dtype=dt)), reached=True,
             fuzz_inputs={"x": ("N", "D"), "weight": ("D",), "bias": ("D",)},
             reference=lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-5)),
    UserCase("causal_attention", CausalAttention, CausalAttentionBug,
             lambda dt: tuple(_randn(10 + i, 2, 4, 3, dtype=dt) for i in range(3)), reached=True,
             fuzz_inputs={"q": ("N", "T", "D"), "k": ("N", "T", "D"), "v": ("N", "T", "D")},
             reference=lambda q, k, v: _causal_softmax(q, k) @ v),
    UserCase("unfold_conv2d", UnfoldConv2d, UnfoldConv2dBug,
             lambda dt: (_randn(20, 2, 2, 6, 6, dtype=dt), _randn(21, 3, 2, 2, 2, dtype=dt), _randn(22, 3, dtype=dt),
                         2, 1), reached=False,  # stride 2, dilation 1: the bug needs dilation > 1
             fuzz_inputs={"x": ("N", "C", 7, 7), "w": ("O", "C", 2, 2), "b": ("O",)},
             fuzz_hyper={"stride": st.integers(1, 2), "dilation": st.integers(1, 2)},
             reference=lambda x, w, b, stride, dilation: F.conv2d(x, w, b, stride=stride, dilation=dilation)),
    UserCase("cumprod", CumProd, CumProdBug,
             lambda dt: (_randn(30, 3, 5, dtype=dt),), reached=False,  # the bug needs an exact zero
             fuzz_inputs={"x": ("N", "T")}, reference=lambda x: torch.cumprod(x, -1)),
    UserCase("small_model", lambda: _seeded(SmallModel), lambda: _seeded(SmallModel, LinearFnBug),
             _model_inputs, reached=True, kind="model", loss=model_loss),
]


# ---------------------------------------------------------------- beyond first-order reverse mode
# (tests/test_forward_mode.py and the higher-order zoo in tests/zoo.py)


class SwishGateTwice(torch.autograd.Function):
    """A backward written in differentiable ops of what it saved: right to any order."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(x) * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * w * s * (1 + x * (1 - s)), (g * x * s).sum(0)


class SwishGateTwiceBug(SwishGateTwice):
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(x)
        # bug: a detached factor in w's gradient; the first derivative is still right
        return g * w * s * (1 + x * (1 - s)), (g * x * s.detach()).sum(0)


class SwishJ(torch.autograd.Function):
    """x * sigmoid(x) with a hand-written backward and jvp."""

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * s * (1 + x * (1 - s))

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return t * s * (1 + x * (1 - s))


class SwishJBug(SwishJ):
    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return t * s * (1 + x * s)  # bug: 1 - s written as s; the backward is right


class ScatterInto(torch.autograd.Function):
    """x[idx] gathered; the backward scatters into a zero buffer: with
    ``INPLACE`` by writing into it (fails under vmap), otherwise functionally."""

    INPLACE = False

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x[:, :3] * 2

    @classmethod
    def _backward(cls, ctx, g):
        out = torch.zeros(ctx.shape, dtype=g.dtype)
        if cls.INPLACE:
            out[:, :3] += 2 * g  # a batched g written into an unbatched buffer
            return out
        return torch.cat([2 * g, out[:, 3:].expand(*g.shape[:-1], -1)], -1)

    @staticmethod
    def backward(ctx, g):
        return ScatterInto._backward(ctx, g)


class ScatterIntoInPlace(ScatterInto):
    INPLACE = True

    @staticmethod
    def backward(ctx, g):
        return ScatterIntoInPlace._backward(ctx, g)


class SinCos(torch.autograd.Function):
    """(sin x, cos x), with ``ctx.set_materialize_grads(False)``: an output's
    gradient arrives as None when the output is unused."""

    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return x.sin(), x.cos()

    @staticmethod
    def backward(ctx, gs, gc):
        (x,) = ctx.saved_tensors
        out = torch.zeros_like(x)
        if gs is not None:
            out = out + gs * x.cos()
        if gc is not None:
            out = out - gc * x.sin()
        return out


class SinCosBug(SinCos):
    @staticmethod
    def backward(ctx, gs, gc):
        (x,) = ctx.saved_tensors
        return gs * x.cos() - gc * x.sin()  # bug: assumes both gradients are there


class CMul(torch.autograd.Function):
    """z * w for complex z and w, with a hand-written backward."""

    @staticmethod
    def forward(ctx, z, w):
        ctx.save_for_backward(z, w)
        return z * w

    @staticmethod
    def backward(ctx, g):
        z, w = ctx.saved_tensors
        return g * w.conj(), (g * z.conj()).sum(0)


class CMulBug(CMul):
    @staticmethod
    def backward(ctx, g):
        z, w = ctx.saved_tensors
        return g * w, (g * z.conj()).sum(0)  # bug: the VJP misses w's conjugate


class Square(torch.autograd.Function):
    """x * x, usable under torch.func transforms (vmap rule generated)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareMixingRule(Square):
    """The same with a hand-written vmap rule that reverses the samples."""

    generate_vmap_rule = False

    @staticmethod
    def vmap(info, in_dims, x):
        d = in_dims[0]
        return (x * x).flip(d), d  # bug: the samples come back reversed


def _seeded(cls, *args):
    torch.manual_seed(0)
    return cls(*args)


def callable_of(case: UserCase, which: str, dtype=torch.float64):
    """The thing handed to ``check``: ``Fn.apply``, or a freshly built model in ``dtype``."""
    impl = case.correct if which == "correct" else case.buggy
    return impl().to(dtype) if case.kind == "model" else impl.apply
