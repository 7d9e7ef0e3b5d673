"""The finite-difference engine against functions with known derivatives."""

import numpy as np
import pytest

from gradcheck.sources import numeric


def f_poly(t):
    x = t["x"]
    return (x**3 - 2 * x**2 + x).sum()


def df_poly(x):
    return 3 * x**2 - 4 * x + 1


X = np.array([-1.5, -0.2, 0.3, 1.0, 2.5, 40.0])


@pytest.mark.parametrize("method,bound", [("central", 1e-8), ("richardson", 1e-10), ("complex", 1e-14)])
def test_gradient_of_a_polynomial(method, bound):
    r = numeric.jacobian(f_poly, {"x": X}, method=method)["x"]
    exact = df_poly(X)
    assert np.max(np.abs(r.value - exact) / np.abs(exact).max()) < bound
    # The predicted error is a bound of the right order, not a blanket.
    assert np.all(np.abs(r.value - exact) <= 4 * r.error + 1e-13 * np.abs(exact).max())


def test_jacobian_of_a_vector_function_has_output_then_input_axes():
    a = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])

    def f(t):
        return a @ np.sin(t["x"])

    x = np.array([0.1, 0.7, -0.4])
    r = numeric.jacobian(f, {"x": x}, method="richardson")["x"]
    assert r.value.shape == (2, 3)
    np.testing.assert_allclose(r.value, a * np.cos(x), rtol=1e-10, atol=1e-12)


def test_jacobian_over_two_tensors_with_exp_and_log():
    def f(t):
        return np.exp(t["a"]).sum() * np.log(t["b"]).sum()

    t = {"a": np.array([0.1, -0.3]), "b": np.array([[1.5, 2.0], [0.5, 3.0]])}
    r = numeric.jacobian(f, t, method="complex")
    np.testing.assert_allclose(r["a"].value, np.exp(t["a"]) * np.log(t["b"]).sum(), rtol=1e-14)
    np.testing.assert_allclose(r["b"].value, np.exp(t["a"]).sum() / t["b"], rtol=1e-14)


@pytest.mark.parametrize("method", numeric.METHODS)
def test_directional_derivative_equals_gradient_dot_direction(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5)
    v = rng.choice([-1.0, 1.0], 5)
    d = numeric.directional(f_poly, {"x": x}, {"x": v}, method=method)
    assert abs(float(d.value) - df_poly(x) @ v) < 1e-7 * np.abs(df_poly(x)).sum()


def test_step_sizes_follow_the_cube_root_of_eps():
    assert numeric.step_size("float64") == pytest.approx(6.06e-6, rel=1e-2)
    assert numeric.step_size("float32") == pytest.approx(4.92e-3, rel=1e-2)
    with pytest.raises(ValueError, match="method must be one of"):
        numeric.step_size("float64", "forward")
    with pytest.raises(ValueError, match="no finite-difference step"):
        numeric.step_size("int64")


def test_float32_step_beats_a_fixed_1e_6_step():
    # Note [Finite-difference step]: h = 1e-6 in float32 is dominated by rounding.
    x = np.linspace(0.5, 2.0, 16).astype(np.float32)

    def f(t):
        return (np.sin(t["x"]) * t["x"]).sum(dtype=np.float32)

    exact = np.sin(x.astype(np.float64)) + x * np.cos(x.astype(np.float64))
    ours = numeric.jacobian(f, {"x": x}, method="central")["x"].value
    naive = []
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[i] += np.float32(1e-6)
        xm[i] -= np.float32(1e-6)
        naive.append((f({"x": xp}) - f({"x": xm})) / np.float32(2e-6))
    err_ours = np.max(np.abs(ours - exact))
    err_naive = np.max(np.abs(np.array(naive, dtype=np.float64) - exact))
    assert err_ours < 1e-3
    assert err_naive > 10 * err_ours


def test_kink_is_flagged_only_where_the_stencil_crosses_it():
    def f(t):
        x = t["x"]
        return np.abs(x).sum(), (np.real(x) > 0).tobytes()

    x = np.array([1e-7, -0.5, 0.8])
    r = numeric.jacobian(f, {"x": x}, method="central", with_branches=True)["x"]
    assert r.kink.tolist() == [True, False, False]
    np.testing.assert_allclose(r.value[1:], [-1.0, 1.0], rtol=1e-9)


def test_integer_tensors_and_bad_methods_are_refused_by_name():
    with pytest.raises(TypeError, match="'ids'"):
        numeric.jacobian(lambda t: 0.0, {"ids": np.arange(3)}, wrt=["ids"])
    with pytest.raises(ValueError, match="method must be one of"):
        numeric.jacobian(f_poly, {"x": X}, method="five-point")
    with pytest.raises(ValueError, match="every direction is zero"):
        numeric.directional(f_poly, {"x": X}, {"x": np.zeros_like(X)})


def test_step_descent_finds_the_slope_of_a_loss_varying_on_a_scale_below_the_step():
    """Note [Step descent]: an input offset by 1e3 into a normalisation in float32
    gets a central step of 4.9, five times the scale the loss varies on."""
    rng = np.random.default_rng(5)
    x = (1e3 + rng.standard_normal((1, 3))).astype(np.float32)
    g = rng.standard_normal((1, 3))

    def loss(t, dtype):
        v = np.asarray(t["x"], dtype=dtype)
        xhat = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + dtype(1e-5))
        return float((xhat * g).sum())

    v = x.astype(np.float64)
    xhat = (v - v.mean()) / np.sqrt(v.var() + 1e-5)
    gx = (g - g.mean() - xhat * (g * xhat).mean()) / np.sqrt(v.var() + 1e-5)  # the exact gradient
    central = numeric.jacobian(lambda t: loss(t, np.float32), {"x": x})["x"].value
    assert np.max(np.abs(central - gx)) > 0.1  # the magnitude-sized step measures curvature
    r = numeric.refine(lambda t: loss(t, np.float32), {"x": x}, ["x"])["x"]
    assert np.all(np.abs(r.value - gx) <= r.error + 5e-3 * np.max(np.abs(gx)))
    assert np.max(np.abs(r.value - gx)) < 0.01
