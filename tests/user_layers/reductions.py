"""Losses written three ways about reduction="none": an MSE that knows only
"mean" and "sum" (anything else summed, correct for what it claims), an L1 that
gives per-element losses (correct for all three), a torch huber that passes
reduction through to F.huber_loss, and an L1 whose backward sums the cotangent
(right for "mean" and "sum", wrong element by element: the bug shows only with
reduction "none")."""

import numpy as np
import torch.nn.functional as F

from gradcheck import Candidate

candidate = Candidate("reduction-styles")
buggy = Candidate("l1-none-sums-its-cotangent")


@candidate.op("mse")
class MseMeanOrSum:
    @staticmethod
    def forward(pred, target, reduction="mean"):
        d = pred - target
        n = d.size if reduction == "mean" else 1
        return np.asarray(np.sum(d * d) / n), (d, n)

    @staticmethod
    def backward(saved, g):
        d, n = saved
        return 2 * g / n * d, -2 * g / n * d


def _l1(per_cotangent):
    class L1:
        @staticmethod
        def forward(pred, target, reduction="mean"):
            d = pred - target
            per = np.abs(d)
            out = per if reduction == "none" else per.mean() if reduction == "mean" else per.sum()
            return out, (d, 1.0 / d.size if reduction == "mean" else 1.0)

        @staticmethod
        def backward(saved, g):
            d, k = saved
            g = per_cotangent(g)
            return g * k * np.sign(d), -g * k * np.sign(d)

    return L1


candidate.op("l1")(_l1(lambda g: g))
buggy.op("l1")(_l1(np.sum))  # one cotangent an element summed into one


@candidate.op("huber")
def huber(pred, target, delta=1.0, reduction="mean"):
    return F.huber_loss(pred, target, delta=delta, reduction=reduction)
