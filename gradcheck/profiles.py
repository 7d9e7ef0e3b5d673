"""The harness's Hypothesis profiles, and the profile and seed of this session.

``gradcheck-dev`` (10 examples a test), ``gradcheck-ci`` (100, derandomized: a
red CI is never a coincidence of the draw; the whole of ``pytest suites/``
within 3 minutes on 2 cores) and ``gradcheck-thorough`` (2,000).  They are built
on Hypothesis's own defaults, not on whatever profile is loaded (under CI
Hypothesis loads one of its own), and namespaced: a profile called "ci" would
replace the one Hypothesis loads under CI for every test of a repository.  The
pytest plugin sets the session's choice; they apply to the harness's checks
only (``gradcheck.testing.suite``).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, Phase, settings

__all__ = ["PROFILES", "default_profile", "harness_profile", "run_seed", "set_session", "session"]

# No "explain" phase: it re-runs a failing example many times to annotate it, and
# gradcheck's own failure message already says what failed, where and by how much.
_COMMON = dict(deadline=None, print_blob=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
_BASE = settings.get_profile("default")
settings.register_profile("gradcheck-dev", _BASE, max_examples=10, **_COMMON)
settings.register_profile("gradcheck-ci", _BASE, max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("gradcheck-thorough", _BASE, max_examples=2000, **_COMMON)

PROFILES = ("dev", "ci", "thorough")

_SESSION = {"profile": None, "seed": None}


def default_profile() -> str:
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def set_session(profile: str | None, seed: int | None):
    """This session's profile (None: by the environment) and seed (None: a fresh one)."""
    _SESSION["profile"] = profile or default_profile()
    _SESSION["seed"] = int(seed) if seed is not None else random.SystemRandom().randrange(2**32)


def session() -> tuple:
    """(profile name, seed) of this session."""
    return _SESSION["profile"] or default_profile(), _SESSION["seed"]


def harness_profile():
    """The Hypothesis settings the harness's checks run under in this session."""
    return settings.get_profile(f"gradcheck-{session()[0]}")


def run_seed():
    """The seed of this session's harness checks, or None when derandomized."""
    return None if harness_profile().derandomize else _SESSION["seed"]
