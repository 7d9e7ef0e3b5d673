"""A user's layers written before avg_pool2d took count_include_pad and cross_entropy a class weight."""
import numpy as np
import torch
from gradcheck import Candidate

candidate = Candidate("old-layers")


@candidate.op("avg_pool2d")
class AvgPool2d:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        y = torch.nn.functional.avg_pool2d(torch.as_tensor(x), kernel_size, stride, padding)
        return y.numpy(), (x.shape, kernel_size, stride, padding)

    @staticmethod
    def backward(saved, g):
        shape, k, s, p = saved
        x = torch.zeros(shape, dtype=torch.as_tensor(g).dtype, requires_grad=True)
        torch.nn.functional.avg_pool2d(x, k, s, p).backward(torch.as_tensor(g))
        return (x.grad.numpy(),)


class Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        ctx.save_for_backward(x)
        ctx.geometry = (kernel_size, stride, padding)
        return torch.nn.functional.avg_pool1d(x, kernel_size, stride, padding)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            torch.nn.functional.avg_pool1d(x, *ctx.geometry).backward(g)
        return x.grad, None, None, None


candidate.op("avg_pool1d")(Pool)


@candidate.op("cross_entropy")
class CrossEntropy:
    """Without class weights: a weight tensor would arrive as ``reduction``."""

    @staticmethod
    def forward(logits, target, reduction="mean", ignore_index=-100, label_smoothing=0.0):
        x = torch.as_tensor(logits).requires_grad_()
        loss = torch.nn.functional.cross_entropy(x, torch.as_tensor(target), reduction=reduction,
                                                 ignore_index=ignore_index, label_smoothing=label_smoothing)
        (grad,) = torch.autograd.grad(loss, x)
        return loss.detach().numpy(), grad.numpy()

    @staticmethod
    def backward(grad, g):
        return g * grad, None
