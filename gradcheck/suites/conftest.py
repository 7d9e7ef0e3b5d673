"""Which sources and ops the suites check: the built-in ones, or the candidates
given with --candidate (see gradcheck.pytest_plugin.suite_plan).  A test that
targets an op is parametrized with each source and the ops that source runs
itself (a candidate's own ops), never with another candidate's."""

import pytest

from gradcheck.pytest_plugin import suite_plan
from gradcheck.sources import ReferenceOrFormula
from gradcheck.sources.base import candidate_of

__all__ = ["pytest_generate_tests", "reference64"]  # for the thin copy in suites/


def _id(source):
    return f"{source.name}-{getattr(source, 'dtype', None) or 'any'}" if hasattr(source, "torch_dtype") else source.name


def _own_ops(source, plan):
    return [op for op in plan.ops if op in source.provides]


def _with_ops(entries, plan, names):
    """``entries`` (tuples whose first item is a source) crossed with that
    source's own ops, or samples of them, as the test's names ask."""
    from gradcheck.catalogue import CATALOGUE

    rows, ids = [], []
    for entry in entries:
        source = entry[0]
        for op in _own_ops(source, plan):
            if "sample" in names:
                for i in range(len(CATALOGUE[op].samples)):
                    rows.append((*entry, (op, i)))
                    ids.append(f"{_id(source)}-{op}-{i}")
            else:
                rows.append((*entry, op))
                ids.append(f"{_id(source)}-{op}")
    return rows, ids


def _builtin_torch(plan):
    """The built-in torch sources, whose higher derivatives the suites check (a
    candidate's Function need not be twice differentiable or have a jvp)."""
    return [e for e in plan.self_check if hasattr(e[0], "loss_function") and candidate_of(e[0]) is None]


def _declared_higher(plan):
    """(torch candidate source, op) for each candidate op that declared order=2 or
    modes beyond "rev" (OpOptions): checked so inside random graphs."""
    rows = []
    for source, _ in plan.self_check:
        candidate = candidate_of(source)
        if candidate is None or not hasattr(source, "loss_function"):
            continue
        for op in _own_ops(source, plan):
            options = candidate.options_of(op)
            if options.order == 2 or set(options.modes) - {"rev"}:
                rows.append((source, op))
    return rows


def pytest_generate_tests(metafunc):
    plan = suite_plan(metafunc.config)
    names = metafunc.fixturenames
    per_op = "op" if "op" in names else "sample" if "sample" in names else None
    for fixture, entries, argnames in (("source", plan.self_check, "source,self_dtypes"),
                                       ("other_source", plan.vs_reference, "other_source,case_dtypes"),
                                       ("torch_candidate", [(s,) for s in plan.torch_candidates], "torch_candidate"),
                                       ("torch_source", _builtin_torch(plan), "torch_source,self_dtypes")):
        if fixture not in names:
            continue
        if per_op:
            rows, ids = _with_ops(entries, plan, names)
            metafunc.parametrize(f"{argnames},{per_op}", rows, ids=ids)
        else:
            rows = [e if len(e) > 1 else e[0] for e in entries]
            metafunc.parametrize(argnames, rows, ids=[_id(e[0]) for e in entries])
        per_op = None
    if per_op == "op":
        metafunc.parametrize("op", plan.ops)
    if "higher_op" in names:
        rows = _declared_higher(plan)
        metafunc.parametrize("higher_source,higher_op", rows, ids=[f"{_id(src)}-{op}" for src, op in rows])
    if "optimizer_runner" in names:
        metafunc.parametrize("optimizer_runner", plan.optimizers, ids=[label for label, _, _ in plan.optimizers])


@pytest.fixture(scope="session")
def reference64():
    return ReferenceOrFormula()
