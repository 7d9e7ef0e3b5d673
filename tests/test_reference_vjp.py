"""Every reference VJP against finite differences of its own forward, op by op."""

import pytest

from gradcheck.case import Case
from gradcheck.judge import check_pair
from gradcheck.graph import single_op_graph
from gradcheck.catalogue import CATALOGUE
from gradcheck.sources import FiniteDifferences, ReferenceSource

SAMPLES = [(op.name, i) for op in CATALOGUE.values() for i in range(len(op.samples))]
IDS = [f"{op}-{i}" for op, i in SAMPLES]
REF = ReferenceSource()


def _records(op_name, i, method, dtype="float64", seed=None):
    graph = single_op_graph(op_name, CATALOGUE[op_name].samples[i])
    return check_pair(Case(graph, seed=i if seed is None else seed, dtype=dtype), REF, FiniteDifferences(REF, method))


def test_every_op_has_samples_and_every_sample_builds():
    for op in CATALOGUE.values():
        assert op.samples, f"{op.name} has no samples"
    assert len(SAMPLES) >= 2 * len(CATALOGUE) - 2


@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_reference_vjp_matches_differences_to_1e_8(op_name, i, method):
    records = _records(op_name, i, method)
    assert records, "no tensor was compared"
    for r in records:
        assert r.status == "pass", r.message
        assert r.max_rel_err <= 1e-8, f"{r.tensor}: {r.max_rel_err:.3g}"


@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_reference_vjp_matches_complex_step_to_1e_12(op_name, i):
    op = CATALOGUE[op_name]
    if not op.supports_complex_step(op.samples[i].hyper):
        pytest.skip(f"{op_name} with {dict(op.samples[i].hyper)} takes no complex input (complex_step is off for it)")
    for r in _records(op_name, i, "complex"):
        assert r.status == "pass", r.message
        assert r.max_rel_err <= 1e-12, f"{r.tensor}: {r.max_rel_err:.3g}"


@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_reference_float32_has_no_false_alarm(op_name, i):
    # float32 forward and VJP against float32 central differences with the
    # dtype-aware step; a stencil crossing a kink is nondifferentiable, not a failure.
    for r in _records(op_name, i, "central", dtype="float32"):
        assert r.status in ("pass", "nondifferentiable"), r.message


def test_catalogue_and_reference_name_the_same_ops():
    import reference_impl

    assert set(CATALOGUE) == set(reference_impl.OPS)


def test_reference_impl_imports_neither_torch_nor_gradcheck():
    import ast
    import pathlib

    import reference_impl

    for path in pathlib.Path(reference_impl.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in ("torch", "gradcheck"), f"{path.name} imports {name}"


@pytest.mark.parametrize("op_name,i", SAMPLES, ids=IDS)
def test_reference_keeps_float32_in_every_output_and_gradient(op_name, i):
    import numpy as np

    from gradcheck.case import materialize

    graph = single_op_graph(op_name, CATALOGUE[op_name].samples[i])
    r = REF.run(graph, materialize(graph, 0, "float32"))
    for name, value in {**r.outputs, **r.grads}.items():
        assert np.asarray(value).dtype == np.float32, f"{name} is {np.asarray(value).dtype}"
