"""Optimizers: each implementation's trajectory against the NumPy reference, step by
step (parameters and state), on drawn gradient sequences and on training random
networks; and the properties every optimizer keeps.  Without --optimizer the
implementations are torch.optim's (float64 and float32); with it, a candidate's
(an optimizer it declared is compared with the reference step it gave)."""

import pytest
from hypothesis import given, strategies as st

from gradcheck.optim import (NoReference, check_descent, check_state_round_trip, check_zero_gradient,
                             hyper_strategy, reference_runner, trajectories)
from gradcheck.testing import assert_trajectories_agree, suite

__all__ = [  # the tests, for the thin copies in suites/
    "test_trajectory_matches_the_reference",
    "test_training_a_random_network_matches_the_reference",
    "test_property_holds",
]


def _reference(name):
    try:
        return reference_runner(name)
    except NoReference as e:
        pytest.skip(str(e))


@suite(1 / 2)
@given(data=st.data())
def test_trajectory_matches_the_reference(optimizer_runner, data):
    label, name, make = optimizer_runner
    reference = _reference(name)
    t = data.draw(trajectories(name), label="trajectory")
    assert_trajectories_agree(t, make(), reference)


@suite(1 / 4)
@given(data=st.data())
def test_training_a_random_network_matches_the_reference(optimizer_runner, data):
    label, name, make = optimizer_runner
    reference = _reference(name)
    t = data.draw(trajectories(name, graphs=True), label="trajectory")
    assert_trajectories_agree(t, make(), reference)


# Each property with the parameter shapes it runs on; the test id reads as the property.
PROPERTIES = [
    ("a_small_step_lowers_a_convex_quadratic", check_descent, {"w": (3, 4), "b": (4,)}),
    ("a_zero_gradient_leaves_parameters_unchanged", check_zero_gradient, {"w": (3, 4)}),
    ("state_survives_a_round_trip_and_the_trajectory_continues_identically", check_state_round_trip, {"w": (2, 3)}),
]


@pytest.mark.parametrize("check,shapes", [p[1:] for p in PROPERTIES], ids=[p[0] for p in PROPERTIES])
@suite(1 / 4)
@given(data=st.data())
def test_property_holds(optimizer_runner, check, shapes, data):
    label, name, make = optimizer_runner
    hyper = data.draw(hyper_strategy(name), label="hyper")
    problem = check(make(), hyper, shapes, seed=data.draw(st.integers(0, 1000)))
    assert not problem, f"{label} with {hyper}: {problem}"
