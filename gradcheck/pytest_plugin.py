"""The gradcheck pytest plugin (registered through the ``pytest11`` entry point).

Registers the Hypothesis profiles ``gradcheck-dev``, ``gradcheck-ci`` and
``gradcheck-thorough`` and applies one of them to the harness's own checks only
(the suites, and tests that opt in with ``gradcheck.testing.suite``): ``ci``
when the environment says CI=true, ``dev`` otherwise, unless
``--gradcheck-profile`` picks one.  Every other
Hypothesis test of the repository keeps the settings it had.  The header
prints the profile and the concrete seed of the run (``--gradcheck-seed`` to
replay it).  A test whose checks were all skipped is reported as skipped, with
the reasons, not as passed.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest
from hypothesis import settings

from .profiles import PROFILES, harness_profile, session, set_session

__all__ = ["suite_plan", "SuitePlan"]  # the rest are pytest's hooks

_TALLY = pytest.StashKey()
_SINK = pytest.StashKey()
_CHECKS = pytest.StashKey()
_ITEM = {"current": None}  # the test running now, whose checks the tally counts


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
    group.addoption("--gradcheck-profile", choices=PROFILES, default=None,
                    help="Hypothesis profile of the harness's checks: dev (10 examples a test), ci (100, "
                         "derandomized) or thorough (2000); default ci under CI=true, else dev")
    group.addoption("--gradcheck-seed", type=int, default=None, metavar="N",
                    help="seed of the harness's random draws (default: a fresh one, printed in the header)")
    parser.addini("gradcheck_profile_everywhere", type="bool", default=False,
                  help="apply gradcheck's Hypothesis profile (dev, or ci under CI=true) to every Hypothesis test of "
                       "the repository, not only to the harness's checks (opt-in)")
    group.addoption("--gradcheck-report", metavar="DIR", default=None,
                    help="stream every check's record to DIR/<run-id>/ and build the report there at the end "
                         "(failing cases go to its cases/); without it failing cases go to reports/cases/")


class _Tally:
    """Counts what the session checked, for the terminal summary."""

    def __init__(self):
        self.cases, self.statuses, self.skipped = set(), Counter(), Counter()

    def __call__(self, records, replay=""):
        for r in records:
            self.cases.add((r.case_id, r.seed, r.dtype))
            self.statuses[r.status] += 1
            if r.status == "skipped":
                self.skipped[_reason(r.message)] += 1
        current = _ITEM["current"]
        if current is not None:
            current.stash.setdefault(_CHECKS, []).extend((r.status, r.message) for r in records)


def _reason(message: str) -> str:
    """A skip reason without the node it was found at, so reasons group."""
    text = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return text.rsplit(" (", 1)[0] if text.endswith(")") and " (" in text else text


def _one_thread_per_worker(config):
    """Under pytest-xdist, each worker runs torch (and NumPy's BLAS) on one thread
    unless the user chose otherwise: N workers on N cores with N threads each
    oversubscribe the machine, and the small ops of gradient checks then run
    several times slower, spinning on each other's threads."""
    if not hasattr(config, "workerinput"):
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if "torch" in sys.modules and os.environ["OMP_NUM_THREADS"] == "1":
        sys.modules["torch"].set_num_threads(1)


def pytest_configure(config):
    from .testing import RECORD_LISTENERS

    _one_thread_per_worker(config)

    tally = _Tally()
    config.stash[_TALLY] = tally
    RECORD_LISTENERS.append(tally)
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped with the reason where none is visible)")
    chosen = config.getoption("hypothesis_profile", default=None) or ""
    seed = config.getoption("gradcheck_seed", default=None)
    if seed is None:
        seed = config.getoption("hypothesis_seed", default=None)
    if seed is None and hasattr(config, "workerinput"):
        seed = config.workerinput.get("gradcheck_seed")
    set_session(config.getoption("gradcheck_profile", default=None)
                or (chosen[len("gradcheck-"):] if chosen.startswith("gradcheck-") else None), seed)
    if config.getini("gradcheck_profile_everywhere") and not chosen:
        settings.load_profile(f"gradcheck-{session()[0]}")
    report = config.getoption("gradcheck_report", default=None)
    worker = getattr(config, "workerinput", None)
    if report and worker is None:
        from .report import RecordSink, new_run_dir, write_run_info

        run_dir = new_run_dir(report)
        os.environ["GRADCHECK_REPORT_DIR"] = str(run_dir)  # failing cases go to <run>/cases/
        name, seed_used = session()
        write_run_info(run_dir, seed=seed_used, profile=name, device=config.getoption("device", default="cpu"),
                       argv=["pytest", *config.invocation_params.args],
                       candidates=[{"target": t} for t in config.getoption("candidate", default=None) or ()])
        sink = RecordSink(run_dir)
        config.stash[_SINK] = sink
        RECORD_LISTENERS.append(_SinkListener(sink))
    elif worker is not None and worker.get("gradcheck_report_dir"):
        from .report import RecordSink

        # Note [Reports under pytest-xdist]: each worker streams its own file
        os.environ["GRADCHECK_REPORT_DIR"] = worker["gradcheck_report_dir"]
        sink = RecordSink(worker["gradcheck_report_dir"], f"records-{worker.get('workerid', os.getpid())}.jsonl")
        config.stash[_SINK] = sink
        RECORD_LISTENERS.append(_SinkListener(sink))
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config), "gradcheck-xdist")
    _check_options(config)
    if config.getoption("candidate", default=None) or config.getoption("optimizer", default=None):
        suite_plan(config)  # a candidate that does not load is a usage error, reported once, up front


def _check_options(config):
    """Options refused before anything runs, in one line each."""
    from .sources.torch_autograd import DeviceError, check_device

    device = config.getoption("device", default="cpu")
    if device != "cpu":
        try:
            check_device(device)
        except DeviceError as e:
            raise pytest.UsageError(str(e)) from None
    timeout = config.getoption("check_timeout", default=30.0)
    if not timeout > 0:
        raise pytest.UsageError(f"--check-timeout {timeout:g}: give a positive number of seconds")


class _XdistHooks:
    """Note [Reports under pytest-xdist]
    The controller of ``pytest -n N`` runs no test: the records are made in the
    workers.  The controller gives every worker the session's seed (so the
    header's seed is the one every worker draws with) and the run folder; each
    worker streams its records to ``records-<worker>.jsonl`` there (no two
    processes append to one file) and its replay files to the folder's cases/
    (named by test, so they cannot collide), and sends its tally back when it
    finishes.  The controller merges the workers' files into records.jsonl,
    adds up the tallies for the counts line, and builds one report.  Hypothesis's
    example database is a directory of files written atomically, safe for
    workers to share.  ``--dist loadgroup`` (what ``make test`` uses) keeps a
    test's examples on one worker."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        node.workerinput["gradcheck_seed"] = session()[1]
        sink = self.config.stash.get(_SINK, None)
        if sink is not None:
            node.workerinput["gradcheck_report_dir"] = str(sink.dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        sent = getattr(node, "workeroutput", {}).get("gradcheck_tally")
        tally = self.config.stash.get(_TALLY, None)
        if sent and tally is not None:
            tally.cases.update(tuple(c) for c in sent["cases"])
            tally.statuses.update(sent["statuses"])
            tally.skipped.update(sent["skipped"])


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workeroutput"):  # a pytest-xdist worker: send the tally home
        tally = config.stash.get(_TALLY, None)
        if tally is not None:
            config.workeroutput["gradcheck_tally"] = {"cases": [list(c) for c in tally.cases],
                                                      "statuses": dict(tally.statuses),
                                                      "skipped": dict(tally.skipped)}
        sink = config.stash.get(_SINK, None)
        if sink is not None:
            sink.close()


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
    _ITEM["current"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    _ITEM["current"] = item
    try:
        return (yield)
    finally:
        _ITEM["current"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    checks = item.stash.get(_CHECKS, None)
    if call.when == "call" and report.passed and checks and all(status == "skipped" for status, _ in checks):
        reasons = Counter(_reason(message) for _, message in checks)
        text = "; ".join(f"{why}" + (f" (x{n})" if n > 1 else "") for why, n in reasons.most_common(3))
        report.outcome = "skipped"
        report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"Skipped: compared nothing: {text}")
    return report


def pytest_terminal_summary(terminalreporter, config):
    tally = config.stash.get(_TALLY, None)
    if tally and tally.statuses:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.statuses.items()))
        terminalreporter.write_line(f"gradcheck: {len(tally.cases)} cases (graph, seed, dtype) checked; "
                                    f"records: {counts}")
        for why, n in tally.skipped.most_common(5):
            terminalreporter.write_line(f"gradcheck: left unchecked ({n} skipped): {why}")
    plan = config.stash.get(_PLAN, None)
    for candidate in plan.candidates if plan is not None else ():
        for line in candidate.breaker.lines():
            terminalreporter.write_line(f"gradcheck: circuit breaker ({candidate.name}): {line}")
    sink = config.stash.get(_SINK, None)
    if sink is not None and not hasattr(config, "workerinput"):
        for part in sorted(sink.dir.glob("records-*.jsonl")):  # the workers' records
            sink.merge(part)
        sink.close()
        if sink.count:
            from .report import build_report, finish_run_info

            finish_run_info(sink.dir, interrupted=bool(getattr(terminalreporter, "_session_interrupted", False)))
            paths = build_report(sink.dir)
            terminalreporter.write_line(f"gradcheck: report {paths['html']} ({sink.count} records)")


def pytest_report_header(config):
    lines = []
    for target in config.getoption("candidate", default=[]) or []:
        lines.append(f"gradcheck: candidate {target} on {config.getoption('device')}")
    profile = harness_profile()
    name, seed = session()
    how = ("derandomized: the same examples every run" if profile.derandomize
           else f"seed {seed} (replay this draw with --gradcheck-seed {seed})")
    return lines + [f"gradcheck: hypothesis profile {name!r} (max_examples={profile.max_examples}) "
                    f"for the harness's checks, {how}"]


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
    forward (``self_check``: ``(source, case dtypes)``), sources against the
    float64 reference (``vs_reference``, each with the case dtypes it runs on),
    torch candidates against torch's own ops, and the ops to target."""

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


def _load(option, target):
    from .candidates import CandidateLoadError, load_candidate

    try:
        return load_candidate(target)
    except CandidateLoadError as e:
        raise pytest.UsageError(f"{option} {target}: {e}") from None


def _optimizer_plan(config):
    from .optim import OPTIMIZERS, TorchRunner, optimizer_runners

    device, dtype = config.getoption("device"), config.getoption("dtype")
    targets = config.getoption("optimizer")
    if not targets:
        dtypes = (dtype,) if dtype in ("float64", "float32") else ("float64", "float32")
        return [(f"torch.optim.{cls}-{d}", name, lambda name=name, d=d: TorchRunner(name, device, d))
                for name, cls in OPTIMIZERS.items() for d in dtypes]
    plan = []
    for target in targets:
        candidate = _load("--optimizer", target)
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
    from .catalogue import CATALOGUE
    from .pairs import suite_sources

    targets = config.getoption("candidate")
    timeout = config.getoption("check_timeout")
    candidates = [_load("--candidate", target) for target in targets]
    ops = set(CATALOGUE) if not candidates else set()
    for candidate in candidates:
        candidate.time_limit = timeout
        ops |= set(candidate.ops) if not candidate.loss_and_grads else set(CATALOGUE) - candidate.exclude
    sources = suite_sources(candidates, config.getoption("device"), config.getoption("dtype"),
                            timeout if config.getoption("isolate") else None)
    return SuitePlan(sources.self_check, sources.vs_reference, sources.torch_candidates, sorted(ops), candidates)
