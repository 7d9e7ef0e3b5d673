"""Seeded optimizer bugs: each is caught by the optimizer suite's checks under the
ci profile, with a message that names the step, the parameter or buffer, and the
values."""

import numpy as np
import pytest
from hypothesis import given, settings

from reference_impl import optimizers as ref
from gradcheck import Candidate
from gradcheck.optim import ReferenceRunner, compare_trajectories, optimizer_runners, trajectories


def _adam_variant(bug):
    """Adam with one planted mistake: "no-bias-correction" or "eps-inside-sqrt"."""

    def step(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False):
        def update(p, g, s):
            g = -g if maximize else g
            if weight_decay:
                g = g + weight_decay * p
            b1, b2 = betas
            t = s.get("step", 0) + 1
            m = b1 * s.get("exp_avg", np.zeros_like(p)) + (1 - b1) * g
            v = b2 * s.get("exp_avg_sq", np.zeros_like(p)) + (1 - b2) * g * g
            s.update(step=t, exp_avg=m, exp_avg_sq=v)
            if amsgrad:
                v = np.maximum(s.get("max_exp_avg_sq", np.zeros_like(p)), v)
                s["max_exp_avg_sq"] = v
            if bug == "no-bias-correction":  # m and v used raw
                return p - lr * m / (np.sqrt(v) + eps), s
            return p - lr * (m / (1 - b1**t)) / np.sqrt(v / (1 - b2**t) + eps), s  # eps inside the root

        return ref._each(params, grads, state, update)

    return step


adam_without_bias_correction = _adam_variant("no-bias-correction")
adam_eps_inside_sqrt = _adam_variant("eps-inside-sqrt")


def adamw_with_l2(params, grads, state, weight_decay=1e-2, **hyper):
    # "AdamW" that decays through the gradient, i.e. Adam with L2
    return ref.adam(params, grads, state, weight_decay=weight_decay, **hyper)


def _sgd_variant(bug):
    def step(params, grads, state, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
             maximize=False):
        def update(p, g, s):
            g = -g if maximize else g
            if weight_decay and bug != "decay-after-update":
                g = g + weight_decay * p
            if momentum:
                if "momentum_buffer" not in s and bug != "zero-init":
                    buf = g
                else:
                    buf = momentum * s.get("momentum_buffer", np.zeros_like(p)) + (1 - dampening) * g
                s["momentum_buffer"] = buf
                g = g + momentum * buf if nesterov and bug != "no-look-ahead" else buf
            p = p - lr * g
            if weight_decay and bug == "decay-after-update":
                p = p - lr * weight_decay * p  # decay applied to the already-updated parameters
            return p, s

        return ref._each(params, grads, state, update)

    return step


def torch_adam_without_bias_correction():
    import torch

    class Adam(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     maximize=False):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                          maximize=maximize))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                b1, b2 = group["betas"]
                for p in group["params"]:
                    g = -p.grad if group["maximize"] else p.grad
                    if group["weight_decay"]:
                        g = g + group["weight_decay"] * p
                    s = self.state[p]
                    if not s:
                        s["step"] = torch.tensor(0.0, dtype=p.dtype)
                        s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                        if group["amsgrad"]:
                            s["max_exp_avg_sq"] = torch.zeros_like(p)
                    s["step"] += 1
                    s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                    s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                    v = s["exp_avg_sq"]
                    if group["amsgrad"]:
                        torch.maximum(s["max_exp_avg_sq"], v, out=s["max_exp_avg_sq"])
                        v = s["max_exp_avg_sq"]
                    p.addcdiv_(s["exp_avg"], v.sqrt() + group["eps"], value=-group["lr"])

    return Adam


BUGS = [
    ("adam-without-bias-correction", "adam", adam_without_bias_correction),
    ("adamw-decays-through-the-gradient", "adamw", adamw_with_l2),
    ("sgd-nesterov-without-look-ahead", "sgd", _sgd_variant("no-look-ahead")),
    ("adam-eps-inside-the-square-root", "adam", adam_eps_inside_sqrt),
    ("sgd-momentum-buffer-not-initialised-with-the-first-gradient", "sgd", _sgd_variant("zero-init")),
    ("sgd-weight-decay-after-the-update", "sgd", _sgd_variant("decay-after-update")),
    ("torch-optimizer-adam-without-bias-correction", "adam", torch_adam_without_bias_correction),
]


def _candidate(bug_id, name, impl):
    c = Candidate(f"zoo-{bug_id}")
    c.optimizer(name)(impl() if bug_id.startswith("torch-") else impl)
    return c


@pytest.mark.parametrize("bug_id,name,impl", BUGS, ids=[b[0] for b in BUGS])
def test_seeded_optimizer_bug_is_caught_with_a_per_step_message(bug_id, name, impl):
    (runner,) = optimizer_runners(_candidate(bug_id, name, impl))
    caught = []

    @settings(settings.get_profile("gradcheck-ci"), database=None)
    @given(t=trajectories(name))
    def search(t):
        bad = [r for r in compare_trajectories(t, runner, ReferenceRunner(name)) if r.status != "pass"]
        if bad:
            caught.append(bad[0])
            raise AssertionError(bad[0].message)

    with pytest.raises(AssertionError):
        search()
    first = caught[-1]  # the shrunk example
    assert first.message.startswith("step ") and " of " in first.message.split("\n")[0]
    assert "Mismatched elements" in first.message and "at index" in first.message
    assert first.op == name and first.source_a.startswith("zoo-") and first.source_b == f"reference-{name}"


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_the_reference_written_as_a_candidate_optimizer_passes(name):
    c = Candidate("reference-as-candidate")
    c.optimizer(name)(ref.OPTIMIZERS[name])
    (runner,) = optimizer_runners(c)

    @settings(settings.get_profile("gradcheck-ci"), database=None)
    @given(t=trajectories(name))
    def search(t):
        assert {r.status for r in compare_trajectories(t, runner, ReferenceRunner(name))} == {"pass"}

    search()


def test_a_candidate_step_that_raises_is_an_error_record_naming_it():
    def broken(params, grads, state, **hyper):
        raise RuntimeError("no")

    c = Candidate("broken")
    c.optimizer("sgd")(broken)
    (runner,) = optimizer_runners(c)
    from gradcheck.optim import Trajectory

    (r,) = compare_trajectories(Trajectory("sgd", {"lr": 0.1}, {"w": (2,)}, 3), runner, ReferenceRunner("sgd"))
    assert r.status == "error" and "broken-sgd.step raised RuntimeError: no" in r.message


def test_pytest_optimizer_option_checks_a_candidate_optimizer():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "pytest", "suites/test_optimizers.py", "-p", "no:cacheprovider",
                          "--gradcheck-profile", "dev", "--optimizer",
                          "examples/my_layers/my_layers/layers.py:candidate", "-v"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "my-layers-sgd" in out.stdout and "5 passed" in out.stdout


DIVERGING = ('{"leaves":[{"dtype":"float","init":{"kind":"normal","std":1.0},"name":"x1","role":"input","shape":[1,3]},'
             '{"dtype":"float","init":{"kind":"normal","std":0.5},"name":"p2","role":"param","shape":[3,2]},'
             '{"dtype":"float","init":{"kind":"normal","std":0.5},"name":"p4","role":"param","shape":[1,2]},'
             '{"dtype":"float","init":{"kind":"normal","std":0.5},"name":"p5","role":"param","shape":[1]},'
             '{"dtype":"float","init":{"kind":"normal","std":1.0},"name":"target7","role":"input","shape":[1,1]}],'
             '"nodes":[{"hyper":{},"inputs":["x1","p2"],"name":"matm_3","op":"matmul"},'
             '{"hyper":{},"inputs":["matm_3","p4","p5"],"name":"line_6","op":"linear"},'
             '{"hyper":{},"inputs":["line_6","target7"],"name":"loss","op":"mse"}],"output":"loss"}')


def test_a_trajectory_that_diverges_beyond_float32_is_skipped_from_there_not_an_error():
    # Gradient ascent on a product of parameters: float32 overflows at step 6, and so
    # does the float64 reference's value range for float32; nothing can be compared.
    from gradcheck.optim import Trajectory, TorchRunner

    hyper = {"lr": 0.1, "weight_decay": 0.0, "maximize": True, "momentum": 0.9, "dampening": 0.0, "nesterov": True}
    t = Trajectory("sgd", hyper, {}, 6, 6, graph=DIVERGING)
    records = compare_trajectories(t, TorchRunner("sgd", dtype="float32"), ReferenceRunner("sgd"))
    assert "error" not in {r.status for r in records} and "fail" not in {r.status for r in records}
    skipped = [r for r in records if r.status == "skipped"]
    assert skipped and all("diverged" in r.message and "beyond the range of float32" in r.message for r in skipped)
    assert any(r.status == "pass" for r in records)  # the steps before it were compared


def test_a_candidate_that_overflows_while_the_reference_stays_in_range_is_still_an_error():
    def overflowing(params, grads, state, lr=0.1, **hyper):
        with np.errstate(over="ignore"):
            return {k: p * 1e308 * 1e10 for k, p in params.items()}, state

    c = Candidate("overflowing")
    c.optimizer("sgd")(overflowing)
    (runner,) = optimizer_runners(c)
    from gradcheck.optim import Trajectory

    records = compare_trajectories(Trajectory("sgd", {"lr": 0.1}, {"w": (2,)}, 3), runner, ReferenceRunner("sgd"))
    assert records[-1].status == "error" and "non-finite" in records[-1].message, records[-1].message


def _bias_before_batch_norm():
    from gradcheck import GraphBuilder

    b = GraphBuilder()
    h = b.op("linear", b.input("x", (3, 4)), b.param("w", (5, 4)), b.param("bias", (5,)))
    h = b.op("batch_norm", h, b.param("g", (5,), init={"kind": "normal", "mean": 1.0, "std": 0.3}),
             b.param("beta", (5,)))
    return b.build(b.op("mse", h, b.input("target", (3, 5)), name="loss"))


ADAPTIVE = [("rmsprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.0,
                         "maximize": False}),
            ("adam", {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "weight_decay": 0.0,
                      "maximize": False})]


@pytest.mark.parametrize("name,hyper", ADAPTIVE, ids=[n for n, _ in ADAPTIVE])
def test_an_adaptive_step_on_a_gradient_that_is_zero_in_exact_arithmetic_is_no_false_alarm(name, hyper):
    """The bias before a batch norm has gradient 0 in exact arithmetic; its rounding
    noise, divided by its own running size, moves torch.optim and the reference
    apart by about lr.  Judged with the gradient's noise floor: no failure, and the
    elements are counted apart; a real bug on the same network still fails."""
    from gradcheck.optim import Trajectory, TorchRunner

    graph = _bias_before_batch_norm().to_json()
    statuses = set()
    for seed in range(5):
        t = Trajectory(name, hyper, {}, 8, seed, graph=graph)
        records = compare_trajectories(t, TorchRunner(name), ReferenceRunner(name))
        statuses |= {r.status for r in records}
        assert not [r for r in records if r.status in ("fail", "error")], [r.message for r in records
                                                                              if r.status == "fail"][:1]
    assert "nondifferentiable" in statuses  # the noise was there, and was recognised as such
    def wrong_step(params, grads, state, **h):  # the learning rate taken half as large again
        return ref.OPTIMIZERS[name](params, grads, state, **{**h, "lr": h["lr"] * 1.5})

    t = Trajectory(name, hyper, {}, 8, 0, graph=graph)
    (runner,) = optimizer_runners(_candidate(f"{name}-wrong-lr", name, wrong_step))
    assert any(r.status == "fail" for r in compare_trajectories(t, runner, ReferenceRunner(name)))
