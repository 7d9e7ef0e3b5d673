"""Ops declared from a short spec (``candidate.new_op(name, impl, inputs=...)``):
torch Functions for a fused gate and causal attention, a NumPy layer, a loss of
the user's own; ``buggy`` has one realistic bug in the gate."""

import sys
from pathlib import Path

import numpy as np
import torch

from gradcheck import Candidate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the Functions of user_functions.py
from user_functions import CausalAttention, SwishGate, SwishGateBug, _causal_softmax

GATE = {"x": ("N", "D"), "w": ("D",)}
ATTENTION = {"q": ("N", "T", "D"), "k": ("N", "T", "D"), "v": ("N", "T", "D")}


class Scale:
    """y = x * exp(log_scale), a NumPy layer with a per-feature parameter."""

    @staticmethod
    def forward(x, log_scale):
        s = np.exp(log_scale)
        return x * s, (x, s)

    @staticmethod
    def backward(saved, g):
        x, s = saved
        lead = tuple(range(g.ndim - 1))
        return g * s, (g * x * s).sum(axis=lead)


def pseudo_huber(pred, target, delta):
    return (delta ** 2 * (torch.sqrt(1 + ((pred - target) / delta) ** 2) - 1)).mean()


def _declare(candidate, gate):
    candidate.new_op("swish_gate", gate, inputs=GATE, formula=lambda x, w: x * torch.sigmoid(x) * w)
    candidate.new_op("causal_attention", CausalAttention, inputs=ATTENTION,
                     formula=lambda q, k, v: _causal_softmax(q, k) @ v)
    candidate.new_op("scale", Scale, inputs={"x": ("N", "D"), "log_scale": ("D",)},
                     formula=lambda x, s: x * torch.exp(s))
    candidate.new_op("pseudo_huber", pseudo_huber, inputs={"pred": ("N", "D"), "target": ("N", "D")},
                     roles={"target": "const"}, hyper={"delta": [1.0, 0.5]}, formula=pseudo_huber)


candidate = Candidate("spec-declared", version="1.0")
_declare(candidate, SwishGate)

buggy = Candidate("spec-declared-bug")
_declare(buggy, SwishGateBug)
