"""The gradcheck pytest plugin (registered through the ``pytest11`` entry point).

Registers the Hypothesis profiles ``dev``, ``ci`` and ``thorough``; loads ``ci``
when the environment says CI=true and ``dev`` otherwise, unless
``--hypothesis-profile`` picks one; prints the profile and seed in the header.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

# No "explain" phase: it re-runs a failing example many times to annotate it, and
# gradcheck's own failure message already says what failed, where and by how much.
_COMMON = dict(deadline=None, print_blob=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ci: the whole of `pytest suites/` within 3 minutes on 2 cores, the same examples
# every run (derandomized: a red CI is never a coincidence of the draw).
settings.register_profile("dev", max_examples=10, **_COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=2000, **_COMMON)

PROFILES = ("dev", "ci", "thorough")
_TALLY = pytest.StashKey()
_SINK = pytest.StashKey()


def default_profile() -> str:
    return "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"


def pytest_addoption(parser):
    group = parser.getgroup("gradcheck", "gradient checks (gradcheck)")
    group.addoption("--candidate", action="append", metavar="TARGET", default=[],
                    help="check this candidate instead of the built-in sources: module:attr, path/file.py:attr, "
                         "or an entry point name of the gradcheck.candidates group (repeatable)")
    group.addoption("--optimizer", action="append", metavar="TARGET", default=[],
                    help="check this candidate's optimizers (a Candidate with @candidate.optimizer, named like "
                         "--candidate) instead of torch.optim (repeatable)")
    group.addoption("--device", default="cpu", help="torch device for torch sources: cpu, cuda, cuda:N")
    group.addoption("--dtype", default=None, choices=("float64", "float32", "float16", "bfloat16"),
                    help="dtype of the sources compared with the float64 reference (default: float64 and float32)")
    group.addoption("--isolate", action="store_true",
                    help="run candidates in a worker process: a crash or hang costs one error record")
    group.addoption("--check-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="time limit of one call into candidate code (default 30)")
    group.addoption("--gradcheck-report", metavar="DIR", default=None,
                    help="stream every check's record to DIR/<run-id>/ and build the report there at the end "
                         "(failing cases go to its failures/); without it failing cases go to reports/failures/")


class _Tally:
    """Counts what the session checked, for the terminal summary."""

    def __init__(self):
        self.cases, self.statuses = set(), {}

    def __call__(self, records, replay=""):
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
    if report and not hasattr(config, "workerinput"):
        from .report import RecordSink, new_run_dir

        run_dir = new_run_dir(report)
        os.environ["GRADCHECK_REPORT_DIR"] = str(run_dir)  # failing cases go to <run>/failures/
        sink = RecordSink(run_dir)
        config.stash[_SINK] = sink
        RECORD_LISTENERS.append(_SinkListener(sink))
    if config.getoption("candidate", default=None) or config.getoption("optimizer", default=None):
        suite_plan(config)  # a candidate that does not load is a usage error, reported once, up front


class _SinkListener:
    def __init__(self, sink):
        self.sink = sink

    def __call__(self, records, replay=""):
        self.sink.add(records, replay=replay)


def pytest_unconfigure(config):
    from .testing import RECORD_LISTENERS

    RECORD_LISTENERS[:] = [listener for listener in RECORD_LISTENERS
                           if listener is not config.stash.get(_TALLY, None)
                           and getattr(listener, "sink", None) is not config.stash.get(_SINK, None)]


def pytest_terminal_summary(terminalreporter, config):
    tally = config.stash.get(_TALLY, None)
    if tally and tally.statuses:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.statuses.items()))
        terminalreporter.write_line(f"gradcheck: {len(tally.cases)} cases (graph, seed, dtype) checked; "
                                    f"records: {counts}")
    sink = config.stash.get(_SINK, None)
    if sink is not None:
        sink.close()
        if sink.count:
            from .report import build_report

            paths = build_report(sink.dir)
            terminalreporter.write_line(f"gradcheck: report {paths['html']} ({sink.count} records)")


def pytest_report_header(config):
    lines = []
    for target in config.getoption("candidate", default=[]) or []:
        lines.append(f"gradcheck: candidate {target} on {config.getoption('device')}")
    profile = settings.default
    seed = config.getoption("hypothesis_seed", default=None)
    how = f"seed {seed}" if seed is not None else (
        "derandomized: the same examples every run" if profile.derandomize else "random seed per run; "
        "a failure prints how to reproduce it")
    name = config.getoption("hypothesis_profile", default=None) or default_profile()
    return lines + [f"gradcheck: hypothesis profile {name!r} (max_examples={profile.max_examples}), {how}"]


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


class SuitePlan:
    """What the suites check: sources against finite differences of their own
    forward (``self_check``), sources against the float64 reference
    (``vs_reference``, each with the case dtypes it runs on), torch candidates
    against torch's own ops, and the ops to target."""

    def __init__(self, self_check, vs_reference, torch_candidates, ops, candidates, optimizers=()):
        self.self_check, self.vs_reference = self_check, vs_reference
        self.torch_candidates, self.ops, self.candidates = torch_candidates, ops, candidates
        self.optimizers = list(optimizers)  # (label, optimizer name, factory of a fresh runner)


_PLAN = pytest.StashKey()


def suite_plan(config) -> SuitePlan:
    plan = config.stash.get(_PLAN, None)
    if plan is None:
        plan = config.stash[_PLAN] = _make_plan(config)
    return plan


def _optimizer_plan(config):
    from .candidates import load_candidate
    from .optim import OPTIMIZERS, TorchRunner, optimizer_runners

    device, dtype = config.getoption("device"), config.getoption("dtype")
    targets = config.getoption("optimizer")
    if not targets:
        dtypes = (dtype,) if dtype in ("float64", "float32") else ("float64", "float32")
        return [(f"torch.optim.{cls}-{d}", name, lambda name=name, d=d: TorchRunner(name, device, d))
                for name, cls in OPTIMIZERS.items() for d in dtypes]
    plan = []
    for target in targets:
        try:
            candidate = load_candidate(target)
        except (LookupError, TypeError, FileNotFoundError) as e:
            raise pytest.UsageError(f"--optimizer {target}: {e}") from None
        if not candidate.optimizers:
            raise pytest.UsageError(f"--optimizer {target}: {candidate!r} declares no optimizer")
        for runner in optimizer_runners(candidate, device, dtype or "float64"):
            name = runner.optimizer
            plan.append((runner.name, name, lambda c=candidate, n=name: next(
                r for r in optimizer_runners(c, device, dtype or "float64") if r.optimizer == n)))
    return plan


def _make_plan(config) -> SuitePlan:
    plan = _make_source_plan(config)
    plan.optimizers = _optimizer_plan(config)
    return plan


def _make_source_plan(config) -> SuitePlan:
    from .backends.torch_autograd import TorchSource
    from .candidates import EngineSource, NumpyCandidateSource, load_candidate, torch_candidate_source
    from .ops import CATALOGUE
    from .sources import ReferenceSource

    device = config.getoption("device")
    dtype = config.getoption("dtype")
    dtypes = (dtype,) if dtype else ("float64", "float32")
    numpy_dtypes = tuple(d for d in dtypes if d in ("float64", "float32")) or ("float64",)
    targets = config.getoption("candidate")
    if not targets:
        return SuitePlan([ReferenceSource(), TorchSource(device, "float64")],
                         [(TorchSource(device, d), (d,)) for d in dtypes], [], sorted(CATALOGUE), [])
    timeout = config.getoption("check_timeout")
    self_check, vs_reference, torch_candidates, ops, candidates = [], [], [], set(), []
    for target in targets:
        try:
            candidate = load_candidate(target)
        except (LookupError, TypeError, FileNotFoundError) as e:
            raise pytest.UsageError(f"--candidate {target}: {e}") from None
        candidate.time_limit = timeout
        candidates.append(candidate)
        ops |= set(candidate.ops) if not candidate.loss_and_grads else set(CATALOGUE)
        if candidate.numpy_ops:
            src = NumpyCandidateSource(candidate)
            self_check.append(src)
            vs_reference.append((src, numpy_dtypes))
        if candidate.torch_ops:
            self_check.append(torch_candidate_source(candidate, device, "float64"))
            for d in dtypes:
                src = torch_candidate_source(candidate, device, d)
                vs_reference.append((src, (d,)))
                torch_candidates.append(src)
        if candidate.loss_and_grads:
            src = EngineSource(candidate)
            self_check.append(src)
            vs_reference.append((src, numpy_dtypes))
    if config.getoption("isolate"):
        self_check = [_isolated(s, timeout) for s in self_check]
        vs_reference = [(_isolated(s, timeout), d) for s, d in vs_reference]
        torch_candidates = [_isolated(s, timeout) for s in torch_candidates]
    return SuitePlan(self_check, vs_reference, torch_candidates, sorted(ops), candidates)


def _isolated(source, timeout):
    from .isolation import IsolatedSource

    return IsolatedSource(source.spec, timeout=timeout)
