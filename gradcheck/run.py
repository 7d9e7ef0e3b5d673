"""``gradcheck run``: the main job.

The catalogue sweep (every op alone on its samples, every source pair, and a
table of the worst relative error per op and pair), then random graphs drawn
by Hypothesis cycling through the ops so that each is inside some
(``graphs(include=op)``), then optimizer trajectories against the reference.

Every record is streamed to ``<out>/<run-id>/records.jsonl`` as it is made; a
failing check also writes its replay file to ``cases/``.  At the end, or when
the run is interrupted (Ctrl-C: exit 130), the report files are built from
what was checked and a summary table printed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import report
from .candidates import load_candidate
from .case import Case, op_cases
from .judge import check_pair
from .optim import (OPTIMIZERS, NoReference, TorchRunner, compare_trajectories, optimizer_runners, reference_runner,
                    trajectories)
from .pairs import case_dtype, graph_pairs, isolate, ops_to_run, sweep_pairs, worst
from .replay import write_gradient_case, write_optimizer_case
from .sources.candidate import candidate_sources
from .strategies import cases, graphs

__all__ = ["RunOptions", "run_main_job", "run_shard", "shards"]

INTERRUPTED = 130


@dataclass
class RunOptions:
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0
    examples: int = 400
    ops: tuple = ()
    torch: bool = True
    candidates: tuple = ()  # targets: module:attr, file.py:attr, entry point names
    optimizer: str | None = None
    trajectories: int = 20  # per optimizer
    out: str = "reports"
    csv: bool = False
    sweep_table: bool = True
    isolate: bool = False  # candidates run in worker processes
    check_timeout: float = 30.0  # time limit of one call into candidate code
    workers: int = 1  # processes (gradcheck/parallel.py); 1: this process alone
    cluster: str = ""  # a Dask scheduler's address, or "local" for a LocalCluster of `workers` processes


@dataclass
class _Plan:
    """What a run checks: its ops, source pairs, the settings random graphs may draw."""

    ops: list
    sweep_pairs: list
    graph_pairs: list
    candidates: list = field(default_factory=list)
    accept: object = None


def _candidate_sources(opts, candidate):
    sources = candidate_sources(candidate, opts.device, "float64")
    return [isolate(src, opts.check_timeout) for src in sources] if opts.isolate else sources


def _make_plan(opts) -> _Plan:
    candidates = [load_candidate(t) for t in opts.candidates]
    for c in candidates:
        c.time_limit = opts.check_timeout
    ops = None
    if candidates and not any(c.loss_and_grads for c in candidates):
        ops = sorted({o for c in candidates for o in c.ops})
        unknown = [o for o in opts.ops if o not in ops]
        if unknown:
            raise ValueError(f"--ops {','.join(opts.ops)}: no candidate implements {unknown[0]!r} "
                             f"(they have {', '.join(ops)})")
    ops = ops_to_run(list(opts.ops) if opts.ops else ops)
    sources = [s for c in candidates for s in _candidate_sources(opts, c)]
    accept = None
    if candidates:
        def accept(op, hyper, shapes):  # every candidate takes the settings drawn
            return not any(c.refuses_node(op, hyper, shapes) for c in candidates)
    return _Plan(ops, sweep_pairs(opts.dtype, opts.device, torch=opts.torch),
                 graph_pairs(opts.dtype, opts.device, opts.torch, sources), candidates, accept)


class _Emitter:
    """Streams records to the sink, writes replay files for failing checks, counts failures."""

    def __init__(self, sink, run_dir):
        self.sink, self.run_dir, self.failures = sink, run_dir, 0

    def gradients(self, case, pair, records):
        bad = [r for r in records if r.status in ("fail", "error")]
        replay = ""
        if bad:
            self.failures += len(bad)
            path = self.run_dir / "cases" / f"{case.graph.case_id}-{case.seed}-{pair.label.replace('~', '-vs-')}.json"
            replay = str(write_gradient_case(path, case, pair.a, pair.b, bad, pair.outputs))
        self.sink.add(records, replay=replay, pair_label=pair.label)

    def trajectory(self, trajectory, runner, reference, records):
        bad = [r for r in records if r.status in ("fail", "error")]
        replay = ""
        if bad:
            self.failures += len(bad)
            path = self.run_dir / "cases" / f"{trajectory.case_id}-{trajectory.optimizer}.json"
            replay = str(write_optimizer_case(path, trajectory, runner, reference, bad))
        self.sink.add(records, replay=replay, pair_label=f"{trajectory.optimizer}~reference")


def run_main_job(opts: RunOptions, console=None) -> int:
    # Not on a terminal (CI logs, pipes), rich would wrap at 80 columns: tables and
    # paths read better unwrapped.
    console = console or (Console() if sys.stdout.isatty() else Console(width=140))
    plan = _make_plan(opts)
    run_dir = report.new_run_dir(opts.out)
    report.write_run_info(run_dir, seed=opts.seed, profile=f"{opts.examples} random graphs", device=opts.device,
                          dtype=opts.dtype, candidates=[c.identity for c in plan.candidates])
    t0 = time.perf_counter()
    targets = ", ".join(opts.candidates)
    console.print(f"gradcheck run: {len(plan.ops)} ops, {opts.examples} random graphs, dtype {opts.dtype}, "
                  f"device {opts.device}, seed {opts.seed}" + (f", candidate {targets}" if targets else "")
                  + (" (isolated)" if opts.isolate and targets else "") + f"\nrecords: {run_dir}/records.jsonl",
                  soft_wrap=True)
    interrupted = False
    with report.RecordSink(run_dir) as sink:
        emit = _Emitter(sink, run_dir)
        try:
            if opts.workers > 1 or opts.cluster:
                _parallel(opts, plan, sink, emit, console, run_dir)
            else:
                _sweep(opts, plan, emit, console)
                if opts.examples:
                    _random_graphs(opts, plan, emit, console)
                if opts.torch or opts.optimizer:
                    _optimizers(opts, emit, console)
        except KeyboardInterrupt:
            interrupted = True
            console.print("\n[bold]interrupted[/bold]: the report is built from the checks made so far")
        finally:
            for pair in plan.graph_pairs:
                pair.a.close()
        checks = sink.count
    for candidate in plan.candidates:
        for line in candidate.breaker.lines():
            console.print(f"circuit breaker ({candidate.name}): {line}")
    report.finish_run_info(run_dir, interrupted=interrupted)
    if not checks:
        console.print("no check was made; no report written")
        return INTERRUPTED if interrupted else 0
    t_report = time.perf_counter()
    df = report.read_records(run_dir)
    paths = report.build_report(run_dir, csv=opts.csv, records=df)
    t_report = time.perf_counter() - t_report
    _print_summary(console, df)
    wall = time.perf_counter() - t0
    console.print(f"\n{checks} checks on {df['case_id'].nunique()} graphs in {wall:.1f}s; "
                  f"{emit.failures} failing checks")
    console.print(f"report (built in {t_report:.2f}s): {paths['html']}\n        {paths['summary']}\n        "
                  f"{paths['parquet']}", soft_wrap=True)
    if interrupted:
        return INTERRUPTED
    return 1 if emit.failures else 0


_PLANS: dict = {}  # options (as JSON) -> the plan built from them, once per worker process


def shards(opts, plan, optimizers) -> list:
    """The run's shards in the serial run's order (Note [Shards])."""
    out = [("sweep", op, 0, 0) for op in plan.ops]
    if opts.examples:
        out += [("graphs", op, n, k) for op, n, k in graph_chunks(opts, plan.ops)]
    out += [("optimizer", name, opts.trajectories, 0) for name in optimizers]
    return out


def _worker_plan(options: dict):
    key = json.dumps(options, sort_keys=True, default=str)
    if key not in _PLANS:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)  # N workers on N cores: one thread each
        opts = RunOptions(**{**options, "ops": tuple(options["ops"]), "candidates": tuple(options["candidates"])})
        _PLANS[key] = (opts, _make_plan(opts), dict(optimizer_plan(opts)))
    return _PLANS[key]


def run_shard(options: dict, run_dir: str, shard) -> dict:
    """Run one shard in this process; the records as JSON lines, plain data only."""
    from .report.records import LineSink

    opts, plan, optimizers = _worker_plan(options)
    kind, name, n, chunk = shard
    emit = _Emitter(LineSink(), Path(run_dir))
    result = {"shard": list(shard), "cells": None, "note": "", "done": n or 1}
    if kind == "sweep":
        result["cells"] = [list(c) for c in sweep_op(opts, plan, emit, name)]
    elif kind == "graphs":
        graphs_of_op(opts, plan, emit, name, n, chunk=chunk)
    else:
        result["note"] = trajectories_of(opts, emit, name, optimizers[name])
    result.update(lines=emit.sink.lines, failures=emit.failures)
    return result


def _parallel(opts, plan, sink, emit, console, run_dir):
    """The run's shards on worker processes or a Dask cluster (Note [Shards] in
    parallel.py): records streamed to the sink as shards finish, the progress
    bars counting across workers, the sweep table in the serial run's order."""
    from .parallel import lost_shard_record, run_parallel

    names = [name for name, _ in optimizer_plan(opts)] if (opts.torch or opts.optimizer) else []
    work = shards(opts, plan, names)
    where = f"the Dask cluster at {opts.cluster}" if opts.cluster not in ("", "local") else (
        f"{opts.workers} {'Dask ' if opts.cluster else ''}worker processes")
    console.print(f"{len(work)} shards on {where}")
    rows = {}
    with _progress(console) as progress:
        tasks = {"sweep": progress.add_task("catalogue", total=len(plan.ops), failures=0),
                 "graphs": progress.add_task("random graphs", total=opts.examples, failures=0),
                 "optimizer": progress.add_task("optimizers", total=len(names) * opts.trajectories, failures=0)}

        def on_result(result):
            kind, name = result["shard"][:2]
            sink.add_lines(result["lines"])
            emit.failures += result["failures"]
            if kind == "sweep":
                rows[name] = [tuple(c) for c in result["cells"]]
            if result["note"]:
                progress.console.print(f"[yellow]{name}: not compared[/yellow] ({escape(result['note'])})")
            progress.update(tasks[kind], advance=result["done"], failures=emit.failures)

        def on_lost(shard, why):
            sink.add([lost_shard_record(opts, shard, why)])
            emit.failures += 1
            progress.console.print(f"[red]lost[/red] shard {shard[0]} {shard[1]}: {escape(why)}")

        run_parallel(opts, work, run_dir, run_shard, on_result, on_lost)
    if opts.sweep_table:
        _print_sweep_table(console, plan.sweep_pairs, [(op, rows[op]) for op in plan.ops if op in rows])


def _sweep(opts, plan, emit, console):
    """Every op alone on its catalogue samples, against every sweep pair; a table."""
    rows = []
    with _progress(console) as progress:
        task = progress.add_task("catalogue", total=len(plan.ops), failures=0)
        for op in plan.ops:
            rows.append((op, sweep_op(opts, plan, emit, op)))
            progress.update(task, advance=1, failures=emit.failures)
    if opts.sweep_table:
        _print_sweep_table(console, plan.sweep_pairs, rows)


def sweep_op(opts, plan, emit, op) -> list:
    """One op of the sweep (a shard of a parallel run): its catalogue samples
    against every sweep pair; the worst cell per pair, for the table."""
    dtype = opts.dtype if opts.dtype in ("float64", "float32") else "float64"
    cells = []
    for p in plan.sweep_pairs:
        recs = []
        for case in op_cases(op, dtype, opts.seed):
            r = check_pair(case, p.a, p.b, outputs=p.outputs)
            emit.gradients(case, p, r)
            recs += r
        cells.append(worst(recs))
    return cells


def graphs_per_op(opts, ops) -> list:
    """How many of the run's random graphs hold each op, in the order of ``ops``."""
    return [opts.examples // len(ops) + (1 if i < opts.examples % len(ops) else 0) for i in range(len(ops))]


# An op's random graphs are drawn in chunks of at most this many, each from a seed
# of its own: a chunk is a shard of a parallel run (Note [Shards] in parallel.py).
CHUNK = 32


def graph_chunks(opts, ops) -> list:
    """(op, graphs, chunk index) for every chunk of the run's random graphs."""
    return [(op, min(CHUNK, n - k * CHUNK), k) for op, n in zip(ops, graphs_per_op(opts, ops))
            for k in range(-(-n // CHUNK))]


def _random_graphs(opts, plan, emit, console):
    with _progress(console) as progress:
        task = progress.add_task("random graphs", total=opts.examples, failures=emit.failures)
        for op, n, chunk in graph_chunks(opts, plan.ops):
            graphs_of_op(opts, plan, emit, op, n, lambda: progress.update(task, advance=1, failures=emit.failures),
                         chunk)


def graphs_of_op(opts, plan, emit, op, n, tick=lambda: None, chunk=0):
    """``n`` random graphs holding ``op``, each checked by every graph pair (a
    shard of a parallel run).  Drawn from the run's seed for this op and chunk
    alone (the first chunk from the seed itself), so a shard's graphs are the
    same in whichever process, and order, it runs."""

    @seed(opts.seed if chunk == 0 else zlib.crc32(f"{opts.seed}:{op}:{chunk}".encode()))
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases(graphs(include=op, accept=plan.accept)))
    def check_one(case):
        for pair in plan.graph_pairs:
            c = Case(case.graph, case.seed, case_dtype(pair, opts.dtype), case.scale, case.quantize, case.offset)
            emit.gradients(c, pair, check_pair(c, pair.a, pair.b, outputs=pair.outputs))
        tick()

    check_one()


def optimizer_plan(opts) -> list:
    """(name, make runner) for every optimizer the run compares with the reference."""
    plan = []
    if opts.torch:
        plan += [(name, lambda name=name: TorchRunner(name, opts.device, "float64")) for name in OPTIMIZERS]
    if opts.optimizer:
        cand = load_candidate(opts.optimizer)
        plan += [(r.optimizer, lambda c=cand, n=r.optimizer: next(x for x in optimizer_runners(c, opts.device)
                                                                   if x.optimizer == n))
                 for r in optimizer_runners(cand, opts.device)]
    return plan


def _optimizers(opts, emit, console):
    """Every optimizer's trajectories against the reference, step by step."""
    plan = optimizer_plan(opts)
    with _progress(console) as progress:
        task = progress.add_task("optimizers", total=len(plan) * opts.trajectories, failures=0)
        before = emit.failures
        for name, make in plan:
            why = trajectories_of(opts, emit, name, make,
                                  lambda: progress.update(task, advance=1, failures=emit.failures - before))
            if why:
                console.print(f"[yellow]{name}: not compared[/yellow] ({escape(why)})")


def trajectories_of(opts, emit, name, make, tick=lambda: None) -> str:
    """The run's trajectories of optimizer ``name`` against the reference (a shard
    of a parallel run); why it was not compared, or ""."""
    try:
        reference_runner(name)
    except NoReference as e:
        return str(e)

    @seed(opts.seed)
    @settings(max_examples=opts.trajectories, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(t=trajectories(name))
    def check_one(t):
        runner, reference = make(), reference_runner(name)
        emit.trajectory(t, runner, reference, compare_trajectories(t, runner, reference))
        tick()

    check_one()
    return ""


def _progress(console):
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("failures so far: {task.fields[failures]}"), TimeElapsedColumn(),
                    console=console, transient=False)


def _print_sweep_table(console, pairs, rows):
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


def _print_summary(console, df):
    summary = report.summarize(df)
    by_op = summary.groupby("op")[["pass", "fail", "error", "nondifferentiable", "skipped"]].sum()
    by_op["worst ratio"] = summary.groupby("op")["worst ratio"].max()
    table = Table(title="summary by op (all source pairs and dtypes)")
    for col in ["op", "pass", "fail", "error", "nondiff.", "skipped", "worst error/tol"]:
        table.add_column(col, justify="left" if col == "op" else "right")
    for op, row in by_op.sort_values(["fail", "error"], ascending=False).iterrows():
        style = "red" if row["fail"] or row["error"] else None
        table.add_row(escape(str(op) or "(whole case)"),
                      *(str(int(row[c])) for c in ["pass", "fail", "error", "nondifferentiable", "skipped"]),
                      f"{row['worst ratio']:.2g}" if row["worst ratio"] == row["worst ratio"] else "-", style=style)
    console.print(table)
