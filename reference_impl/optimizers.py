"""Reference optimizers: one step over a dict of parameter arrays, with explicit state.

``step(params, grads, state, **hyper) -> (new_params, new_state)``: nothing is
modified in place.  ``state`` maps each parameter name to a dict of its buffers,
named as torch.optim names them (``momentum_buffer``, ``exp_avg``, ...), plus
``step`` where the algorithm counts steps.  Each follows the algorithm as
torch.optim documents it.
"""

import numpy as np

__all__ = ["OPTIMIZERS", "sgd", "adam", "adamw", "rmsprop", "adagrad"]


def _each(params, grads, state, update):
    new_params, new_state = {}, {}
    for name, p in params.items():
        new_params[name], new_state[name] = update(p, grads[name], dict(state.get(name, {})))
    return new_params, new_state


def sgd(params, grads, state, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False):
    def update(p, g, s):
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            if "momentum_buffer" not in s:
                buf = g  # the first step takes the gradient itself, undamped
            else:
                buf = momentum * s["momentum_buffer"] + (1 - dampening) * g
            s["momentum_buffer"] = buf
            g = g + momentum * buf if nesterov else buf  # nesterov looks ahead along the new buffer
        return p - lr * g, s

    return _each(params, grads, state, update)


def _adam_update(p, g, s, lr, betas, eps, amsgrad):
    b1, b2 = betas
    t = s.get("step", 0) + 1
    m = b1 * s.get("exp_avg", np.zeros_like(p)) + (1 - b1) * g
    v = b2 * s.get("exp_avg_sq", np.zeros_like(p)) + (1 - b2) * g * g
    s.update(step=t, exp_avg=m, exp_avg_sq=v)
    if amsgrad:
        v = np.maximum(s.get("max_exp_avg_sq", np.zeros_like(p)), v)
        s["max_exp_avg_sq"] = v
    m_hat = m / (1 - b1**t)  # bias corrections: m and v start at zero
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), s


def adam(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         maximize=False):
    def update(p, g, s):
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p  # L2: the decay goes through the moments
        return _adam_update(p, g, s, lr, betas, eps, amsgrad)

    return _each(params, grads, state, update)


def adamw(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
          maximize=False):
    def update(p, g, s):
        g = -g if maximize else g
        p = p * (1 - lr * weight_decay)  # decoupled: the decay bypasses the moments
        return _adam_update(p, g, s, lr, betas, eps, amsgrad)

    return _each(params, grads, state, update)


def rmsprop(params, grads, state, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    def update(p, g, s):
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        s["step"] = s.get("step", 0) + 1
        sq = alpha * s.get("square_avg", np.zeros_like(p)) + (1 - alpha) * g * g
        s["square_avg"] = sq
        if centered:
            ga = alpha * s.get("grad_avg", np.zeros_like(p)) + (1 - alpha) * g
            s["grad_avg"] = ga
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * s.get("momentum_buffer", np.zeros_like(p)) + g / avg
            s["momentum_buffer"] = buf
            return p - lr * buf, s
        return p - lr * g / avg, s

    return _each(params, grads, state, update)


def adagrad(params, grads, state, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10, maximize=False):
    def update(p, g, s):
        g = -g if maximize else g
        t = s.get("step", 0) + 1
        s["step"] = t
        if weight_decay:
            g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        acc = s.get("sum", np.full_like(p, initial_accumulator_value)) + g * g
        s["sum"] = acc
        return p - clr * g / (np.sqrt(acc) + eps), s

    return _each(params, grads, state, update)


OPTIMIZERS = {"sgd": sgd, "adam": adam, "adamw": adamw, "rmsprop": rmsprop, "adagrad": adagrad}
