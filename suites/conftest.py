"""Which sources the suites check.  Each analytic source under test is checked
against finite differences of its own forward; every source but the reference is
also checked against the reference."""

import pytest

from gradcheck.sources import ReferenceSource


def _sources(config):
    from gradcheck.backends.torch_autograd import TorchSource

    return [ReferenceSource(), TorchSource("cpu", "float64")]


def pytest_generate_tests(metafunc):
    if "source" in metafunc.fixturenames:
        sources = _sources(metafunc.config)
        metafunc.parametrize("source", sources, ids=[s.name for s in sources])
    if "other_source" in metafunc.fixturenames:
        sources = [s for s in _sources(metafunc.config) if s.name != "reference"]
        metafunc.parametrize("other_source", sources, ids=[s.name for s in sources])


@pytest.fixture(scope="session")
def reference64():
    return ReferenceSource(compute_dtype="float64")
