#!/usr/bin/env python3
"""Scaling of ``gradcheck run`` over workers (gradcheck/parallel.py).

1. Measured here: the same sweep (``--examples N --seed 3``) with 1 and with 2
   worker processes, as graphs per second and parallel efficiency
   (speed-up / workers).
2. Modelled for 8, 32 and 128 workers from measured parts: every shard's cost,
   run in this process one by one; the cost of appending a record to the sink
   in the parent (the merge); Dask's cost per task, from trivial tasks on a
   LocalCluster; a worker's start-up.  A run on W workers then takes about
   start-up + the makespan of the shards scheduled longest first on W workers
   (no worker can finish before its largest shard) + the merge, serial in the
   parent + tasks x per-task cost / the scheduler's one process, and the model
   says which of the three bounds it.

    .venv/bin/python benchmarks/bench_parallel.py               # writes benchmarks/results_parallel.md
    .venv/bin/python benchmarks/bench_parallel.py --examples 400

Benchmarks, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import heapq
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(examples, workers, folder) -> tuple:
    cmd = [sys.executable, "-m", "gradcheck.cli", "run", "--examples", str(examples), "--seed", "3",
           "--workers", str(workers), "--out", str(folder)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = re.search(r"(\d+) checks on (\d+) graphs in ([\d.]+)s", proc.stdout)
    report = float(re.search(r"built in ([\d.]+)s", proc.stdout).group(1))
    return int(m.group(1)), int(m.group(2)), float(m.group(3)) - report, wall


def _makespan(costs, workers) -> float:
    loads = [0.0] * workers
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)
    return max(loads)


def _dask_per_task() -> float:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return float("nan")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.gather(client.map(abs, range(20)))
        t0 = time.perf_counter()
        client.gather(client.map(abs, range(1000, 1500)))
        return (time.perf_counter() - t0) / 500


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_parallel.md"))
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    measured = {}
    for workers in (1, 2):
        sub = folder / f"w{workers}"
        sub.mkdir()
        measured[workers] = _run(args.examples, workers, sub)
    checks, graphs, one, _ = measured[1]

    from gradcheck.parallel import options_of
    from gradcheck.report.records import RecordSink
    from gradcheck.run import RunOptions, _make_plan, optimizer_plan, run_shard, shards

    opts = RunOptions(examples=args.examples, seed=3)
    plan = _make_plan(opts)
    work = shards(opts, plan, [n for n, _ in optimizer_plan(opts)])
    costs, lines = [], []
    run_dir = folder / "model"
    for shard in work:
        t0 = time.perf_counter()
        result = run_shard(options_of(opts), str(run_dir), shard)
        costs.append(time.perf_counter() - t0)
        lines += result["lines"]
    with RecordSink(folder / "merge") as sink:
        t0 = time.perf_counter()
        sink.add_lines(lines)
        merge = time.perf_counter() - t0
    per_task = _dask_per_task()
    startup = max(0.0, measured[2][3] - measured[2][2])  # the 2-worker command's wall time beyond its checks

    rows = [f"| {w} | {graphs / s:.1f} | {one / s / w:.0%} | measured |"
            for w, (_, _, s, _) in sorted(measured.items())]
    model = []
    for w in (1, 2, 8, 32, 128):
        span = _makespan(costs, w)
        sched = len(work) * (per_task if per_task == per_task else 0.0)
        total = span + merge + sched
        bound = max((span, "the largest shards"), (merge, "the merge in the parent"), (sched, "the scheduler"))[1]
        model.append(f"| {w} | {graphs / total:.1f} | {sum(costs) / total / w:.0%} | model: {total:.2f} s, "
                     f"bounded by {bound} |")
    text = "\n".join([
        "# Scaling over workers",
        "",
        f"`gradcheck run --examples {args.examples} --seed 3 --workers W`: {checks} checks on {graphs} graphs "
        f"(the catalogue sweep and the random graphs) and the optimizers; {len(work)} shards.",
        "",
        "| workers | graphs/s | efficiency | |",
        "|---|---|---|---|",
        *rows,
        *model,
        "",
        f"Measured parts: shards {sum(costs):.2f} s in all, the largest {max(costs):.2f} s "
        f"({work[costs.index(max(costs))][0]} {work[costs.index(max(costs))][1]}), the median "
        f"{sorted(costs)[len(costs) // 2]:.3f} s; the merge {merge * 1e6 / max(len(lines), 1):.1f} us a record "
        f"({merge:.2f} s for {len(lines)}); Dask {per_task * 1e3:.2f} ms a task; start-up of the 2-worker "
        f"command beyond its checks {startup:.1f} s (interpreters importing torch, and the report).",
        "",
        "Times of the checks alone (the report, built once at the end whatever the workers, is left out). "
        "Efficiency in the model is the shards' total over W times the run. Past the point where the largest "
        "shard bounds the run, more workers do not help; the shards are an op's sweep, a chunk of at most 32 of "
        "an op's random graphs, and an optimizer's trajectories, the last whole (a smaller chunk, or trajectories "
        "cut by seed range, would lower that bound).",
    ]) + "\n"
    Path(args.out).write_text(text)
    print(text)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
