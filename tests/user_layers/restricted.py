"""Correct layers that do not implement every setting, and say so: a convolution
for stride 1 without padding or dilation, a max pool without padding, and an
engine that runs every op but attention.  Random graphs must draw only what
they claim, and a check that needs more is skipped with the reason."""

import numpy as np

import reference_impl
from gradcheck import Candidate
from reference_impl import layers

candidate = Candidate("restricted-layers")


@candidate.op("conv2d", supports={"stride": [1, (1, 1)], "padding": [0, (0, 0)], "dilation": [1, (1, 1)]})
class Conv2dStride1:
    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if stride not in (1, (1, 1)) or padding not in (0, (0, 0)) or dilation not in (1, (1, 1)):
            raise NotImplementedError("only stride 1, no padding, no dilation")
        return layers.conv2d_forward(x, weight, bias, groups=groups)

    backward = staticmethod(layers.conv2d_backward)


def _no_padding(hyper, shapes):
    return hyper["padding"] in (0, (0, 0))


@candidate.op("max_pool2d", supports=_no_padding)
class MaxPoolNoPadding:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        assert padding in (0, (0, 0)), "no padding here"
        return layers.max_pool2d_forward(x, kernel_size, stride)

    backward = staticmethod(layers.max_pool2d_backward)


partial_engine = Candidate("partial-engine", exclude=("attention",))


@partial_engine.engine
def loss_and_grads(graph, tensors):
    if "attention" in graph.ops:
        raise NotImplementedError("this engine has no attention")
    loss, _, grads = reference_impl.loss_and_grads(graph.steps(), tensors, graph.output)
    return float(loss), {l.name: grads.get(l.name, np.zeros(l.shape)) for l in graph.differentiable_leaves}
