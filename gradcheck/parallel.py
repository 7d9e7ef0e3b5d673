"""``gradcheck run --workers N`` and ``--cluster ADDRESS``: the main job's work
spread over processes, or over a Dask cluster.

Note [Shards]
~~~~~~~~~~~~~
A run is cut into shards that need nothing from each other: one op's
catalogue sweep, a chunk of at most CHUNK (32) of one op's random graphs, one
optimizer's trajectories; a run has one dtype and device.  Each shard draws
from the run's seed for itself alone (graphs_of_op), so it gives
the same records in any process and in any order, and a parallel run gives the
records of the serial run with the same seed (order and timings aside).  A
worker is sent the run's options (plain data: the candidates as the targets
they are loaded from, never pickled objects), loads the candidates itself once
a process, runs the shard and sends back its records as JSON lines, how many
failed, and the sweep's table cells; the parent appends the lines to the run's
records file as shards finish, so a run stopped half-way keeps what came back.
Replay files are written by the workers into the run folder's cases/ (a
cluster's workers need that folder on a shared file system), named by case as
in a serial run.

A worker that dies (killed, out of memory, a candidate's crash outside
--isolate) loses the shards it was running: each is run once more, and a shard
lost twice becomes one ``error`` record saying so, and the run goes on.  With a
process pool a death breaks the whole pool without saying which shard's worker
died, so every shard in flight then is run again alone, one at a time, in a
pool of one process: there a death names its shard, which is given up, and the
innocent ones finish.  Dask knows which task's worker died and retries that one
(``retries=1``, and the scheduler's allowed-failures set to 1, so a task that
kills a second worker is given up).
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict

__all__ = ["run_parallel", "lost_shard_record", "options_of", "ATTEMPTS"]

ATTEMPTS = 2  # a shard is run at most this many times when its worker dies


def lost_shard_record(opts, shard, why: str):
    """The one ``error`` record of a shard whose worker was lost twice."""
    from .judge.record import unjudged

    kind, name, n, chunk = shard
    what = {"sweep": f"the catalogue sweep of {name}",
            "graphs": f"{n} random graphs holding {name} (chunk {chunk})",
            "optimizer": f"the trajectories of {name}"}[kind]
    return unjudged(f"shard-{kind}-{name}-{chunk}", "{}", opts.seed, "worker", "-", opts.dtype,
                    f"a worker was lost {ATTEMPTS} times running {what} ({why}); its checks were not made "
                    f"(Note [Shards] in gradcheck/parallel.py)", op=name, device=opts.device)


def options_of(opts) -> dict:
    """The run's options as plain data, for a worker to rebuild them from."""
    return {**asdict(opts), "ops": list(opts.ops), "candidates": list(opts.candidates)}


def _pool(workers):
    import multiprocessing

    # spawn: a fresh interpreter a worker, never a fork of a process holding torch's threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_parallel(opts, work, run_dir, worker, on_result, on_lost):
    """Run ``worker(options, run_dir, shard)`` for each of ``work`` on
    opts.workers processes, or on the Dask cluster at opts.cluster;
    ``on_result(result)`` as each finishes, ``on_lost(shard, why)`` for a shard
    lost ATTEMPTS times (Note [Shards]).  ``worker`` is a module-level function,
    sent by name."""
    if opts.cluster:
        return _run_dask(opts, work, run_dir, worker, on_result, on_lost)
    options = options_of(opts)
    pools = {"main": _pool(opts.workers), "alone": None}
    pending = {}  # future -> (shard, pool name)
    suspects = []  # shards whose pool broke under them: run again one at a time

    def submit(shard, where):
        if where == "alone" and pools["alone"] is None:
            pools["alone"] = _pool(1)
        pending[pools[where].submit(worker, options, str(run_dir), shard)] = (shard, where)

    def broke(where):
        pools[where].shutdown(wait=False, cancel_futures=True)
        pools[where] = _pool(opts.workers) if where == "main" else None

    try:
        for shard in work:
            submit(shard, "main")
        while pending or suspects:
            if suspects and not any(w == "alone" for _, w in pending.values()):
                submit(suspects.pop(0), "alone")
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                if future not in pending:
                    continue
                shard, where = pending.pop(future)
                try:
                    on_result(future.result())
                except BrokenProcessPool as e:
                    if where == "alone":  # the one shard running alone killed its worker: it is the culprit
                        broke("alone")
                        on_lost(shard, f"its worker died twice ({type(e).__name__})")
                    else:  # any shard in the pool may have killed it: each runs again, alone
                        suspects.append(shard)
                        for f, (other, w) in list(pending.items()):
                            if w == "main":
                                del pending[f]
                                suspects.append(other)
                        broke("main")
                except Exception as e:  # noqa: BLE001 - the shard raised: run it once more, then give up
                    if where == "main":
                        suspects.append(shard)
                    else:
                        on_lost(shard, f"{type(e).__name__}: {e}")
    finally:
        for pool in pools.values():
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def _run_dask(opts, work, run_dir, worker, on_result, on_lost):
    try:
        import dask
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError("--cluster needs dask's distributed scheduler: pip install 'gradcheck[cluster]'") from None
    options = options_of(opts)
    with dask.config.set({"distributed.scheduler.allowed-failures": ATTEMPTS - 1}):
        if opts.cluster == "local":
            cluster = LocalCluster(n_workers=opts.workers or 2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            cluster, client = None, Client(opts.cluster)
        try:
            futures = {client.submit(worker, options, str(run_dir), shard, pure=False, retries=ATTEMPTS - 1,
                                     key=f"gradcheck-{'-'.join(map(str, shard))}-{os.getpid()}"): shard
                       for shard in work}
            for future in as_completed(futures):
                shard = futures[future]
                try:
                    on_result(future.result())
                except Exception as e:  # noqa: BLE001 - KilledWorker, or the shard raised twice
                    on_lost(shard, f"{type(e).__name__}: {e}")
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
