"""Hypothesis strategies for optimizer checks: valid hyperparameters of each
optimizer, and trajectories to run them on."""

from __future__ import annotations

from hypothesis import strategies as st

from ..catalogue import BUILTIN_OPS
from ..strategies import graphs as graph_strategy
from .runners import DECLARED, OPTIMIZERS, known_optimizers
from .trajectory import Trajectory

__all__ = ["hyper_strategy", "trajectories"]


def hyper_strategy(name):
    """Hyperparameters of optimizer ``name`` as torch.optim takes them, valid
    combinations only (nesterov needs momentum and no dampening); for an
    optimizer a candidate declared, the strategy it declared."""
    common = dict(weight_decay=st.sampled_from([0.0, 0.1]), maximize=st.booleans())
    if name == "sgd":
        @st.composite
        def sgd(draw):
            h = {"lr": draw(st.sampled_from([0.1, 0.01])), **{k: draw(v) for k, v in common.items()}}
            if draw(st.booleans()):
                h["momentum"] = draw(st.sampled_from([0.9, 0.5]))
                h["dampening"] = draw(st.sampled_from([0.0, 0.3]))
                h["nesterov"] = h["dampening"] == 0 and draw(st.booleans())
            return h
        return sgd()
    if name in ("adam", "adamw"):
        return st.fixed_dictionaries({"lr": st.sampled_from([1e-2, 1e-3]),
                                      "betas": st.sampled_from([(0.9, 0.999), (0.8, 0.99)]),
                                      "eps": st.sampled_from([1e-8, 1e-3]), "amsgrad": st.booleans(), **common})
    if name == "rmsprop":
        return st.fixed_dictionaries({"lr": st.sampled_from([1e-2, 1e-3]), "alpha": st.sampled_from([0.99, 0.9]),
                                      "momentum": st.sampled_from([0.0, 0.5]), "centered": st.booleans(),
                                      **common})
    if name == "adagrad":
        return st.fixed_dictionaries({"lr": st.sampled_from([0.1, 0.01]), "lr_decay": st.sampled_from([0.0, 0.01]),
                                      "initial_accumulator_value": st.sampled_from([0.0, 0.1]), **common})
    if name in DECLARED:
        return DECLARED[name].hyper
    raise KeyError(f"unknown optimizer {name!r}; known: {known_optimizers()}")


def trajectories(name, graphs=False):
    """``Trajectory`` draws for optimizer ``name``: parameter shapes and a Gaussian
    gradient sequence, or (``graphs=True``) a small random MLP trained on its loss."""
    steps = st.integers(1, 8)
    seeds = st.integers(0, 2**32 - 1)
    if graphs:
        # include="linear": every trained network has weights; built-in ops only, as the
        # reference computes the gradients
        nets = graph_strategy(["mlp"], ops=tuple(sorted(BUILTIN_OPS)), include="linear", max_depth=2)
        return st.builds(lambda h, g, k, s: Trajectory(name, h, {}, k, s, graph=g.to_json()),
                         hyper_strategy(name), nets, steps, seeds)
    shapes = st.dictionaries(st.sampled_from(["w", "b", "g"]),
                             st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), min_size=1)
    return st.builds(lambda h, sh, k, s, scale: Trajectory(name, h, sh, k, s, scale),
                     hyper_strategy(name), shapes, steps, seeds, st.sampled_from([1.0, 1e-3, 10.0]))
