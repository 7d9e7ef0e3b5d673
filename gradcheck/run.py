"""``gradcheck run``: the main job.

1. The catalogue sweep: every op alone on its samples, every source pair; a
   table of the worst relative error per op and pair.
2. Random graphs: ``examples`` graphs drawn by Hypothesis, cycling through the
   ops so that each is inside some (``graphs(include=op)``), every source pair.

Every record is streamed to ``<out>/<run-id>/records.jsonl`` as it is made; a
failing check also writes its case to ``cases/`` for ``gradcheck repro``.  At
the end the report files are built and a summary table printed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .check import Case, check_pair, op_cases
from .sweep import Pair, default_pairs, ops_to_run, worst

__all__ = ["RunOptions", "run_main_job"]


@dataclass
class RunOptions:
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    examples: int = 400
    ops: tuple = ()
    torch: bool = True
    candidate: str | None = None
    optimizer: str | None = None
    trajectories: int = 20  # per optimizer
    out: str = "reports"
    csv: bool = False
    sweep_table: bool = True


def _graph_pairs(opts, candidate_sources):
    """Source pairs for random graphs: analytic sources against finite differences
    of their own forward (float64) and against the float64 reference."""
    from .sources import FiniteDifferences, ReferenceOrFormula, ReferenceSource

    ref = ReferenceSource()
    ref64 = ReferenceOrFormula()
    pairs = [Pair("ref~central", ref, FiniteDifferences(ref, "central"))]
    if opts.torch:
        from .backends.torch_autograd import TorchSource

        t64 = TorchSource(opts.device, "float64")
        pairs.append(Pair("torch~central", t64, FiniteDifferences(t64, "central")))
        pairs.append(Pair("torch~ref", t64, ref64, outputs=True))
        if opts.dtype != "float64":
            pairs.append(Pair(f"torch-{opts.dtype}~ref", TorchSource(opts.device, opts.dtype), ref64, outputs=True))
    for src in candidate_sources:
        own = src.candidate.float_dtypes(("float64",))[0]
        pairs.append(Pair(f"{src.name}~central", src, FiniteDifferences(src, "central"), dtype=own))
        pairs.append(Pair(f"{src.name}~ref", src, ref64, outputs=True, dtype=own))
    return pairs


def _case_dtype(pair, opts):
    if pair.dtype:
        return pair.dtype
    src = pair.a
    if getattr(src, "torch_dtype", None) is not None:
        return src.dtype
    return "float64" if opts.dtype not in ("float64", "float32") else opts.dtype


def run_main_job(opts: RunOptions, console=None) -> int:
    from rich.console import Console
    from rich.table import Table

    from . import report
    from .replay import write_gradient_case

    import sys

    # Not on a terminal (CI logs, pipes), rich would wrap at 80 columns: tables and
    # paths read better unwrapped.
    console = console or (Console() if sys.stdout.isatty() else Console(width=140))
    candidate_sources, accept = [], None
    if opts.candidate:
        from .candidates import candidate_sources as sources_of, load_candidate

        cand = load_candidate(opts.candidate)
        candidate_sources = sources_of(cand, opts.device, "float64")
        accept = (lambda op, hyper, shapes: not cand.refuses_node(op, hyper, shapes))
        mine = sorted(set(cand.ops)) if not cand.loss_and_grads else None
        if opts.ops:
            unknown = [o for o in opts.ops if mine is not None and o not in mine]
            if unknown:
                raise ValueError(f"--ops {','.join(opts.ops)}: the candidate does not implement {unknown[0]!r} "
                                 f"(it has {', '.join(mine)})")
        ops = ops_to_run(list(opts.ops) if opts.ops else mine)
    else:
        ops = ops_to_run(list(opts.ops) if opts.ops else None)
    sweep_pairs = default_pairs(opts.dtype, opts.device, torch=opts.torch)
    graph_pairs = _graph_pairs(opts, candidate_sources)
    run_dir = report.new_run_dir(opts.out)
    t0 = time.perf_counter()
    failures = 0
    console.print(f"gradcheck run: {len(ops)} ops, {opts.examples} random graphs, dtype {opts.dtype}, "
                  f"device {opts.device}, seed {opts.seed}" + (f", candidate {opts.candidate}" if opts.candidate
                                                               else "") + f"\nrecords: {run_dir}/records.jsonl",
                  soft_wrap=True)

    with report.RecordSink(run_dir) as sink:
        def emit(case, pair, records):
            nonlocal failures
            bad = [r for r in records if r.status in ("fail", "error")]
            replay = ""
            if bad:
                failures += len(bad)
                path = run_dir / "cases" / f"{case.graph.case_id}-{case.seed}-{pair.label.replace('~', '-vs-')}.json"
                replay = str(write_gradient_case(path, case, pair.a, pair.b, bad, pair.outputs))
            sink.add(records, replay=replay, pair_label=pair.label)

        # 1. the catalogue sweep
        table_rows = []
        with _progress(console) as progress:
            task = progress.add_task("catalogue", total=len(ops), failures=0)
            for op in ops:
                cells = []
                for p in sweep_pairs:
                    recs = []
                    for case in op_cases(op, opts.dtype if opts.dtype in ("float64", "float32") else "float64",
                                         opts.seed):
                        r = check_pair(case, p.a, p.b, outputs=p.outputs)
                        emit(case, p, r)
                        recs += r
                    cells.append(worst(recs))
                table_rows.append((op, cells))
                progress.update(task, advance=1, failures=failures)
        if opts.sweep_table:
            _print_sweep_table(console, sweep_pairs, table_rows)

        # 2. random graphs, cycling through the ops
        if opts.examples:
            with _progress(console) as progress:
                task = progress.add_task("random graphs", total=opts.examples, failures=failures)
                _random_graphs(opts, ops, graph_pairs, emit, lambda: progress.update(task, advance=1,
                                                                                       failures=failures), accept)
        # 3. optimizers: torch.optim (and a candidate's) against the reference, step by step
        if opts.torch or opts.optimizer:
            failures += _optimizers(opts, sink, console, run_dir)
        checks = sink.count

    paths = report.build_report(run_dir, csv=opts.csv)
    df = report.read_records(run_dir)
    _print_summary(console, df, Table)
    wall = time.perf_counter() - t0
    console.print(f"\n{checks} checks on {df['case_id'].nunique()} graphs in {wall:.1f}s; "
                  f"{failures} failing checks")
    console.print(f"report: {paths['html']}\n        {paths['summary']}\n        {paths['parquet']}", soft_wrap=True)
    return 1 if failures else 0


def _optimizers(opts, sink, console, run_dir) -> int:
    """Every optimizer's trajectories against the reference; returns the failing checks."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from .optim import OPTIMIZERS, ReferenceRunner, TorchRunner, compare_trajectories, optimizer_runners, trajectories
    from .replay import write_optimizer_case

    plan = []
    if opts.torch:
        plan += [(name, lambda name=name: TorchRunner(name, opts.device, "float64")) for name in OPTIMIZERS]
    if opts.optimizer:
        from .candidates import load_candidate

        cand = load_candidate(opts.optimizer)
        plan += [(r.optimizer, lambda c=cand, n=r.optimizer: next(x for x in optimizer_runners(c, opts.device)
                                                                   if x.optimizer == n))
                 for r in optimizer_runners(cand, opts.device)]
    with _progress(console) as progress:
        task = progress.add_task("optimizers", total=len(plan) * opts.trajectories, failures=0)
        bad = 0
        for name, make in plan:
            @seed(opts.seed)
            @settings(max_examples=opts.trajectories, database=None, deadline=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(t=trajectories(name))
            def check_one(t):
                nonlocal bad
                runner, reference = make(), ReferenceRunner(name)
                records = compare_trajectories(t, runner, reference)
                failing = [r for r in records if r.status in ("fail", "error")]
                replay = ""
                if failing:
                    bad += len(failing)
                    path = run_dir / "cases" / f"{t.case_id}-{name}.json"
                    replay = str(write_optimizer_case(path, t, runner, reference, failing))
                sink.add(records, replay=replay, pair_label=f"{name}~reference")
                progress.update(task, advance=1, failures=bad)

            check_one()
    return bad


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("failures so far: {task.fields[failures]}"), TimeElapsedColumn(),
                    console=console, transient=False)


def _random_graphs(opts, ops, pairs, emit, tick, accept=None):
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from .strategies import cases, graphs

    per_op = [opts.examples // len(ops) + (1 if i < opts.examples % len(ops) else 0) for i in range(len(ops))]
    for op, n in zip(ops, per_op):
        if not n:
            continue

        @seed(opts.seed)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=cases(graphs(include=op, accept=accept)))
        def check_one(case):
            for pair in pairs:
                c = Case(case.graph, case.seed, _case_dtype(pair, opts), case.scale, case.quantize)
                emit(c, pair, check_pair(c, pair.a, pair.b, outputs=pair.outputs))
            tick()

        check_one()


def _print_sweep_table(console, pairs, rows):
    from rich.table import Table

    table = Table(title="catalogue: worst relative error max|a - b| / max|b| per op and source pair")
    table.add_column("op", no_wrap=True)
    for p in pairs:
        table.add_column(p.label, justify="right")
    for op, cells in rows:
        table.add_row(op, *(_cell(rel, status) for rel, status in cells))
    console.print(table)


def _cell(rel, status):
    if status == "skipped":
        return "n/a"
    if status == "error":
        return "[red]ERROR[/red]"
    text = f"{rel:.1e}" if not math.isnan(rel) else "-"
    return {"fail": f"[red]{text} FAIL[/red]", "nondifferentiable": f"{text} kink"}.get(status, text)


def _print_summary(console, df, Table):
    from .report import summarize

    summary = summarize(df)
    by_op = summary.groupby("op")[["pass", "fail", "error", "nondifferentiable", "skipped"]].sum()
    by_op["worst ratio"] = summary.groupby("op")["worst ratio"].max()
    table = Table(title="summary by op (all source pairs and dtypes)")
    for col in ["op", "pass", "fail", "error", "nondiff.", "skipped", "worst error/tol"]:
        table.add_column(col, justify="left" if col == "op" else "right")
    for op, row in by_op.sort_values(["fail", "error"], ascending=False).iterrows():
        style = "red" if row["fail"] or row["error"] else None
        table.add_row(str(op), *(str(int(row[c])) for c in ["pass", "fail", "error", "nondifferentiable", "skipped"]),
                      f"{row['worst ratio']:.2g}" if row["worst ratio"] == row["worst ratio"] else "-", style=style)
    console.print(table)
