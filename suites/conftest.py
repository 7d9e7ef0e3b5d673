"""Which sources and ops the suites check: the built-in ones, or the candidates
given with --candidate (see gradcheck.pytest_plugin.suite_plan)."""

import pytest

from gradcheck.pytest_plugin import suite_plan
from gradcheck.sources import ReferenceOrFormula


def _ids(sources):
    return [f"{s.name}-{getattr(s, 'dtype', None) or 'any'}" if hasattr(s, "torch_dtype") else s.name
            for s in sources]


def pytest_generate_tests(metafunc):
    plan = suite_plan(metafunc.config)
    names = metafunc.fixturenames
    if "source" in names:
        metafunc.parametrize("source,self_dtypes", plan.self_check, ids=_ids([s for s, _ in plan.self_check]))
    if "other_source" in names:
        sources = [s for s, _ in plan.vs_reference]
        metafunc.parametrize("other_source,case_dtypes", plan.vs_reference, ids=_ids(sources))
    if "torch_candidate" in names:
        metafunc.parametrize("torch_candidate", plan.torch_candidates, ids=_ids(plan.torch_candidates))
    if "op" in names:
        metafunc.parametrize("op", plan.ops)
    _parametrize_optimizers(metafunc, plan)
    if "sample" in names:
        from gradcheck.ops import CATALOGUE

        samples = [(op, i) for op in plan.ops for i in range(len(CATALOGUE[op].samples))]
        metafunc.parametrize("sample", samples, ids=[f"{op}-{i}" for op, i in samples])


@pytest.fixture(scope="session")
def reference64():
    return ReferenceOrFormula()


def _parametrize_optimizers(metafunc, plan):
    if "optimizer_runner" in metafunc.fixturenames:
        metafunc.parametrize("optimizer_runner", plan.optimizers, ids=[label for label, _, _ in plan.optimizers])
