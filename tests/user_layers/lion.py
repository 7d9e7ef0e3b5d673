"""An optimizer outside the reference's five: Lion (sign of an interpolated
momentum), as a torch.optim.Optimizer, declared with the NumPy step it is
compared with.  ``buggy`` updates its momentum with the wrong beta;
``no_reference`` declares no reference step (properties only)."""

import numpy as np
import torch

from gradcheck import Candidate

HYPER = {"lr": [1e-2, 1e-3], "betas": [(0.9, 0.99), (0.95, 0.98)], "weight_decay": [0.0, 0.1]}


def lion_step(params, grads, state, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0):
    """The reference: NumPy, state kept explicitly."""
    b1, b2 = betas
    new_params, new_state = {}, {}
    for name, p in params.items():
        g = grads[name]
        m = state.get(name, {}).get("exp_avg", np.zeros_like(p))
        update = np.sign(b1 * m + (1 - b1) * g)
        new_params[name] = p * (1 - lr * weight_decay) - lr * update
        new_state[name] = {"exp_avg": b2 * m + (1 - b2) * g}
    return new_params, new_state


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    def _momentum_beta(self, group):
        return group["betas"][1]

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, _ = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (b1 * m + (1 - b1) * p.grad).sign()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                beta = self._momentum_beta(group)
                m.mul_(beta).add_(p.grad, alpha=1 - beta)


class LionBug(Lion):
    def _momentum_beta(self, group):
        return group["betas"][0]  # bug: the momentum decays with beta1, not beta2


candidate = Candidate("lion")
candidate.optimizer("lion", reference=lion_step, hyper=HYPER)(Lion)

buggy = Candidate("lion-bug")
buggy.optimizer("lion", reference=lion_step, hyper=HYPER)(LionBug)

no_reference = Candidate("lion-no-reference")
no_reference.optimizer("lion_unchecked", hyper=HYPER)(Lion)
