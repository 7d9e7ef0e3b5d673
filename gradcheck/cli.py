"""The ``gradcheck`` command.

Bad input is refused before any work starts, in one line that names what was
wrong and what would be accepted, with exit code 2 (1 means a check failed,
130 that the run was interrupted); nothing is written for refused input.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .case import DTYPES

__all__ = ["main"]

FULL_REPLAY_LIMIT = 200_000  # differentiable scalars a full finite-difference replay may perturb one by one


class UsageError(Exception):
    """Input the command refuses: the message is the one line it prints."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (no usage dump), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a number >= 0")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} seconds: give a positive number")
    return value


def _check_out(out):
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder (it is created if missing)")
    return out


def cmd_run(args) -> int:
    from .candidates import CandidateLoadError
    from .run import RunOptions, run_main_job

    examples = args.examples
    if examples is None:
        examples = {"dev": 60, "ci": 1000, "thorough": 10000}[args.profile]
    from .sources.torch_autograd import DeviceError, check_device

    try:
        try:
            check_device(args.device)
        except DeviceError as e:
            raise UsageError(str(e)) from None
        _check_out(args.out)
        opts = RunOptions(dtype=args.dtype, device=args.device, seed=args.seed, examples=examples,
                          ops=tuple(o.strip() for o in args.ops.split(",") if o.strip()) if args.ops else (),
                          torch=not args.no_torch, candidates=tuple(args.candidate or ()), optimizer=args.optimizer,
                          out=args.out, csv=args.csv, isolate=args.isolate, check_timeout=args.check_timeout,
                          workers=args.workers, cluster=args.cluster or "")
        if opts.workers < 1:
            raise UsageError(f"--workers {opts.workers}: give 1 or more processes")
        return run_main_job(opts)
    except (UsageError, CandidateLoadError, KeyError, LookupError, ValueError, TypeError) as e:
        print(f"gradcheck run: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


def cmd_report(args) -> int:
    from . import report

    try:
        if args.compare:
            old, new = args.compare
            result = report.comparison(old, new, growth=args.growth)
            print("\n".join(result.lines()))
            if args.html:
                path = report.write_comparison_page(result, args.html)
                print(f"html: {path}")
            return 1 if result.failed else 0
        if not args.run:
            print("gradcheck report: give a run folder, or --compare OLD NEW", file=sys.stderr)
            return 2
        paths = report.build_report(args.run, csv=args.csv, plots=args.plots)
        skipped = paths.pop("skipped_lines", 0)
        if skipped:
            print(f"skipped {skipped} unreadable line(s) of records.jsonl; rebuilt from the rest", file=sys.stderr)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        return 0
    except (OSError, ValueError, KeyError) as e:
        print(f"gradcheck report: {e}", file=sys.stderr)
        return 2


def _repro_candidate(replay, target):
    """The candidate the command line names, checked against the one the file expects."""
    from .candidates import load_candidate
    from .replay import ReplayError

    expected = replay.candidate
    if expected and not target:
        hint = f" (it was written for --candidate {expected['target']})" if expected.get("target") else ""
        raise ReplayError(f"{replay.path} checks candidate {expected['name']!r}: give --candidate TARGET{hint}")
    if not target:
        return None
    candidate = load_candidate(target)
    if expected and candidate.name != expected["name"]:
        raise ReplayError(f"{replay.path} was written for candidate {expected['name']!r}, but {target} is "
                          f"{candidate.name!r}")
    if expected and expected.get("version") and candidate.version != expected["version"]:
        print(f"note: the file was written for version {expected['version']!r} of {candidate.name!r}; this is "
              f"version {candidate.version!r}", file=sys.stderr)
    return candidate


def cmd_repro(args) -> int:
    from .candidates import CandidateLoadError
    from .replay import ReplayError, read_replay

    try:
        replay = read_replay(args.case)
        candidate = _repro_candidate(replay, args.candidate)
        a_spec, b_spec = args.a or replay.specs[0], args.b or replay.specs[1]
        if not a_spec or not b_spec:
            raise ReplayError("the file names no source to replay with; give --a SPEC and --b SPEC "
                              "(e.g. --a reference --b 'fd:central:full(reference)')")
        if replay.kind == "optimizer":
            return _repro_optimizer(replay, a_spec, b_spec, candidate)
        from .judge import check_pair
        from .sources import parse_source
        from .testing import describe_failure

        case = replay.case()
        a, b = parse_source(a_spec, candidate), parse_source(b_spec, candidate)
        _check_replay_size(case, b, b_spec)
    except (OSError, ValueError, KeyError, LookupError, TypeError, CandidateLoadError) as e:
        print(f"gradcheck repro: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    records = check_pair(case, a, b, outputs=bool(replay.doc.get("outputs", False)))
    print(f"replaying case {case.graph.case_id}: {a_spec} against {b_spec}")
    for r in records:
        print(f"  {r.status:17s} {r.op:16s} {r.tensor:12s} max rel err {r.max_rel_err:.3g}, "
              f"error/tolerance {r.ratio:.3g}")
    if any(r.status in ("fail", "error") for r in records):
        print()
        print(describe_failure(case, records, a.name, b.name))
        return 1
    others = [r for r in records if r.status != "pass"]
    if others:
        print(f"no check fails on this case; {len(others)} of {len(records)} are not passes:")
        for r in others[:5]:
            print(f"  [{r.status}] {r.tensor or r.op}: {r.message.splitlines()[-1] if r.message else ''}")
        return 0
    print("every check passes on this case")
    return 0


def _check_replay_size(case, b, b_spec):
    from .replay import ReplayError
    from .sources import FiniteDifferences

    if isinstance(b, FiniteDifferences) and b.mode == "full" and case.graph.size > FULL_REPLAY_LIMIT:
        raise ReplayError(f"the case has {case.graph.size:,} differentiable scalars: full differences would run "
                          f"{2 * case.graph.size:,} forwards; replay with --b and mode auto or directional, e.g. "
                          f"--b '{b_spec.replace(':full:', ':auto:', 1)}'")


def _repro_optimizer(replay, a_spec, b_spec, candidate) -> int:
    from .optim import compare_trajectories, parse_runner

    trajectory = replay.trajectory()
    a, b = parse_runner(a_spec, candidate), parse_runner(b_spec, candidate)
    records = compare_trajectories(trajectory, a, b)
    print(f"replaying trajectory {trajectory.case_id}: {a_spec} against {b_spec}")
    bad = [r for r in records if r.status in ("fail", "error")]
    for r in bad[:5]:
        print(f"\n[{r.status}] {r.message}")
    if bad:
        return 1
    print(f"every check passes on this trajectory ({len(records)} checks)")
    return 0


_TEST_HELP = """usage: gradcheck test [pytest options]

Run the installed suites (gradcheck.suites) with pytest: every op of the
candidate alone and on random architectures, and every optimizer.  Everything
after "test" goes to pytest, so the suites' own options apply:

  --candidate TARGET         the candidate (module:attr, file.py:attr, entry point)
  --optimizer TARGET         a candidate's optimizers
  --gradcheck-profile NAME   dev, ci (the default) or thorough
  --gradcheck-report DIR     records, report.html and replay files under DIR
  --isolate                  candidates in worker processes (crashes and hangs are records)
  --device, --dtype, -x, -k, -n N (with pytest-xdist), ...

for example: gradcheck test --candidate mypkg.layers:candidate -x
"""


def cmd_test(argv) -> int:
    """``pytest --pyargs gradcheck.suites`` with the caller's options: the suites as
    installed, run from any folder (in a fresh interpreter, so pytest sees the
    modules it rewrites before anything imports them)."""
    import importlib.util
    import subprocess

    if any(a in ("-h", "--help") for a in argv):
        print(_TEST_HELP, end="")
        return 0
    suites = Path(importlib.util.find_spec("gradcheck.suites").origin).parent
    try:
        return subprocess.call([sys.executable, "-m", "pytest", str(suites), *argv])
    except KeyboardInterrupt:
        return 130


def cmd_catalogue(args) -> int:
    from .catalogue import CATALOGUE
    from .catalogue.coverage import coverage_markdown, coverage_rows

    if args.coverage:
        print(coverage_markdown(), end="")
        return 1 if any(r[2] == "unknown" for r in coverage_rows()) else 0
    for name in sorted(CATALOGUE):
        op = CATALOGUE[name]
        hyper = ", ".join(f"{k}={v!r}" for k, v in op.hyper.items())
        args_ = ", ".join(("*" if a.variadic else "") + a.name for a in op.inputs)
        print(f"{name}({args_}{', ' + hyper if hyper else ''})  [{op.family}]")
    return 0


def build_parser():
    parser = _Parser(prog="gradcheck", description="Check gradients against independent sources.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="the main job: the op catalogue and random graphs against every source "
                                     "pair, with a report")
    run.add_argument("--dtype", default="float64", choices=tuple(DTYPES),
                     help="dtype of the sweep and of the torch source compared with the float64 reference")
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    run.add_argument("--seed", type=_count, default=0, help="seed of the values and of the graph draws")
    run.add_argument("--examples", type=_count, default=None, help="random graphs to check (default: by --profile)")
    run.add_argument("--profile", default="ci", choices=("dev", "ci", "thorough"),
                     help="size of the run when --examples is not given: 60, 1000 or 10000 graphs")
    run.add_argument("--ops", help="comma-separated op names (default: the whole catalogue)")
    run.add_argument("--candidate", action="append", metavar="TARGET",
                     help="also check this candidate (module:attr, file.py:attr, entry point; repeatable)")
    run.add_argument("--isolate", action="store_true",
                     help="run candidates in worker processes: a crash, os._exit or a hang in C costs one error "
                          "record, not the run")
    run.add_argument("--check-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                     help="time limit of one call into candidate code (default 30)")
    run.add_argument("--optimizer", help="also check this candidate's optimizers against the reference")
    run.add_argument("--no-torch", action="store_true", help="skip the torch source and torch.optim")
    run.add_argument("--out", default="reports", help="folder for the run's report folder (default reports/)")
    run.add_argument("--csv", action="store_true", help="also write records.csv")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="run the sweep, the random graphs and the optimizers on N processes (default 1), "
                          "with the same records as one")
    run.add_argument("--cluster", metavar="ADDRESS",
                     help="run them on the Dask scheduler at ADDRESS (tcp://host:8786), or 'local' for a Dask "
                          "LocalCluster of --workers processes (pip install 'gradcheck[cluster]')")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="rebuild a run's report files, or compare two runs")
    rep.add_argument("run", nargs="?", help="a run folder (reports/<run-id>)")
    rep.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                     help="compare run NEW with run OLD: how many checks matched, regressions among them, shifts "
                          "per op, pair and dtype, and new failures with no counterpart; exit 1 when there are "
                          "regressions or unmatched new failures")
    rep.add_argument("--html", metavar="FILE", help="with --compare: also write the comparison as a page")
    rep.add_argument("--growth", type=_seconds, default=10.0,
                     help="an error/tolerance ratio growing more than this factor is a regression (default 10)")
    rep.add_argument("--csv", action="store_true", help="also write records.csv")
    rep.add_argument("--plots", choices=("notable", "all", "none"), default="notable",
                     help="which per-op and optimizer plots to draw besides the overview: those with a "
                          "failure (default), every one, or none (no overview either)")
    rep.set_defaults(func=cmd_report)
    repro = sub.add_parser("repro", help="replay a failing case from its JSON file")
    repro.add_argument("case", help="a case file written by a failing check (<report dir>/cases/*.json)")
    repro.add_argument("--candidate", metavar="TARGET",
                       help="the candidate whose code the case checks (module:attr, file.py:attr, entry point); "
                            "the file says which it expects but never loads code itself")
    repro.add_argument("--a", help="source spec overriding the file's source_a")
    repro.add_argument("--b", help="source spec overriding the file's source_b")
    repro.set_defaults(func=cmd_repro)
    cat = sub.add_parser("catalogue", help="the ops the harness can check (--coverage: against torch.nn.functional)")
    cat.add_argument("--coverage", action="store_true",
                     help="every public function of torch.nn.functional: the op covering it, or why none does")
    cat.set_defaults(func=cmd_catalogue)
    # parsed by pytest, not here: listed for --help
    sub.add_parser("test", help="run the installed suites against a candidate with pytest (gradcheck test --help)",
                   add_help=False)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"]:
        return cmd_test(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
