"""The gradcheck pytest plugin (registered through the ``pytest11`` entry point).

Registers the Hypothesis profiles ``dev``, ``ci`` and ``thorough``; loads ``ci``
when the environment says CI=true and ``dev`` otherwise, unless
``--hypothesis-profile`` picks one; prints the profile and seed in the header.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ci: the whole of `pytest suites/` within 3 minutes on 2 cores, the same examples
# every run (derandomized: a red CI is never a coincidence of the draw).
settings.register_profile("dev", max_examples=10, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)

PROFILES = ("dev", "ci", "thorough")
_TALLY = pytest.StashKey()


def default_profile() -> str:
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def pytest_addoption(parser):
    group = parser.getgroup("gradcheck", "gradient checks (gradcheck)")
    group.addoption("--gradcheck-report", metavar="DIR", default=None,
                    help="where failing cases (DIR/failures/*.json) are written; default reports/")


class _Tally:
    """Counts what the session checked, for the terminal summary."""

    def __init__(self):
        self.cases, self.statuses = set(), {}

    def __call__(self, records):
        for r in records:
            self.cases.add((r.case_id, r.seed, r.dtype))
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1


def pytest_configure(config):
    from .testing import RECORD_LISTENERS

    tally = _Tally()
    config.stash[_TALLY] = tally
    RECORD_LISTENERS.append(tally)
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped with the reason where none is visible)")
    if not config.getoption("hypothesis_profile", default=None):
        settings.load_profile(default_profile())
    report = config.getoption("gradcheck_report", default=None)
    if report:
        os.environ["GRADCHECK_REPORT_DIR"] = report


def pytest_unconfigure(config):
    from .testing import RECORD_LISTENERS

    tally = config.stash.get(_TALLY, None)
    if tally in RECORD_LISTENERS:
        RECORD_LISTENERS.remove(tally)


def pytest_terminal_summary(terminalreporter, config):
    tally = config.stash.get(_TALLY, None)
    if tally and tally.statuses:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.statuses.items()))
        terminalreporter.write_line(f"gradcheck: {len(tally.cases)} cases (graph, seed, dtype) checked; "
                                    f"records: {counts}")


def pytest_report_header(config):
    profile = settings.default
    seed = config.getoption("hypothesis_seed", default=None)
    how = f"seed {seed}" if seed is not None else (
        "derandomized: the same examples every run" if profile.derandomize else "random seed per run; "
        "a failure prints how to reproduce it")
    name = config.getoption("hypothesis_profile", default=None) or default_profile()
    return f"gradcheck: hypothesis profile {name!r} (max_examples={profile.max_examples}), {how}"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if "cuda" in item.keywords]
    if not marked or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False here")
    for item in marked:
        item.add_marker(skip)
