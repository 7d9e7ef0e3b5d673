"""Running a source in a worker process, so a candidate that crashes the process
(a segfault in an extension, ``os.abort``, ``os._exit``) or hangs inside C code
costs one ``error`` record, not the run.

    IsolatedSource("candidate:numpy", "mypkg.layers:candidate", timeout=60)

The worker is started with ``spawn``, loads the candidate from its target (the
one given on the command line) and rebuilds the source from its spec; it is
reused across checks and restarted after a crash or a time-out.  Its output
goes to a log file of its own (a chatty candidate does not flood the
terminal), whose last lines a crash report quotes.  Before each call into
candidate code the worker writes which op and phase it enters into shared
memory, so a hang that never returns to Python is still blamed on its op, and
that op is not called again in the run (Note [Guarded calls] in candidates.py).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile

from .._guards import Breaker
from ..graph import Graph
from .base import Source, Unsupported
from .specs import parse_source

__all__ = ["IsolatedSource", "WorkerFailure"]

_SLOT = 128  # bytes of shared memory for "op.phase" of the call in flight


class WorkerFailure(Exception):
    """The worker process died, did not answer in time, or its source raised;
    ``op`` and ``phase`` say where, when known."""

    def __init__(self, message, op="", phase=""):
        super().__init__(message)
        self.op, self.phase = op, phase


def _worker(conn, spec, target, time_limit, log_path, in_flight):
    # everything the candidate prints goes to the worker's own log, not the terminal
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what a Ctrl-C stops
    try:
        candidate = None
        if target:
            from .._guards import CALL_LISTENERS
            from ..candidates import load_candidate  # the worker loads the candidate the command line named

            def heartbeat(op, phase):
                text = f"{op}\t{phase}".encode()[:_SLOT - 1]
                in_flight.value = text

            CALL_LISTENERS.append(heartbeat)
            candidate = load_candidate(target)
            candidate.time_limit = time_limit
        source = parse_source(spec, candidate)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("err", f"cannot build source {spec!r}: {type(e).__name__}: {e}", False, "", ""))
        return
    conn.send(("ready", source.name, source.device, sorted(source.provides), source.dtype))

    def local_vjp(op, args, hyper, g):
        impl = source.local_op(op)
        return impl.backward(impl.forward(*args, **hyper)[1], g)

    methods = {"run": lambda graph, tensors: source.run(Graph.from_json(graph), tensors),
               "forward": lambda graph, tensors: source.forward(Graph.from_json(graph), tensors),
               "complex_claim": lambda graph: source.complex_claim(Graph.from_json(graph)),
               "local_forward": lambda op, args, hyper: source.local_op(op).forward(*args, **hyper)[0],
               "local_vjp": local_vjp}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        method, args = msg
        os.ftruncate(1, 0)  # keep only what the current call printed
        os.lseek(1, 0, os.SEEK_SET)
        try:
            conn.send(("ok", methods[method](*args)))
        except BaseException as e:  # noqa: BLE001 - every failure goes back as data
            conn.send(("err", f"{type(e).__name__}: {e}", isinstance(e, Unsupported), getattr(e, "op", ""),
                       getattr(e, "phase", "")))
        in_flight.value = b""


def _describe_exit(code):
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class IsolatedSource(Source):
    """A source run in a worker process: ``spec`` names it (``parse_source``), and
    ``target`` the candidate whose code it runs, loaded in the worker.
    ``time_limit``: the candidate's own limit for one call there; ``timeout``: how
    long the parent waits for one answer before killing the worker (a hang in C
    code, where the time limit cannot interrupt it)."""

    def __init__(self, spec: str, target: str = "", timeout: float = 60.0, start_timeout: float = 120.0,
                 time_limit: float | None = None):
        if not spec:
            raise ValueError("IsolatedSource needs a source spec; a source built in code cannot be isolated")
        self.spec, self.target, self.timeout, self.start_timeout = spec, target, timeout, start_timeout
        self.time_limit = timeout if time_limit is None else time_limit
        self._proc = self._conn = None
        self.dtype = None
        self.breaker = Breaker()  # ops that hung or crashed the worker: not called again (the candidate's, if set)
        self.log = os.path.join(tempfile.gettempdir(), f"gradcheck-worker-{os.getpid()}-{id(self)}.log")
        self.name, self.device, provides = self._start()
        self.provides = frozenset(provides)

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._in_flight = ctx.Array("c", _SLOT, lock=False)
        self._proc = ctx.Process(target=_worker, args=(child, self.spec, self.target, self.time_limit, self.log,
                                                      self._in_flight), daemon=True)
        self._proc.start()
        child.close()
        msg = self._receive(self.start_timeout, "starting")
        if msg[0] != "ready":
            self.close()
            raise WorkerFailure(msg[1])
        self.dtype = msg[4]
        return msg[1], msg[2], msg[3]

    def _label(self):
        return repr(self.name) if self.name != Source.name else repr(self.spec)

    def _where(self):
        text = bytes(self._in_flight.value).decode(errors="replace")
        op, _, phase = text.partition("\t")
        return op, phase

    def _output(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 600))
                tail = f.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its last output: ...{tail[-500:]}" if tail else ""

    def _receive(self, timeout, doing):
        if not self._conn.poll(timeout):
            op, phase = self._where()
            output = self._output()
            self._kill()
            where = f" in {op}.{phase}" if op else ""
            message = (f"the isolated source {self._label()} did not answer within {timeout:g} s while {doing}{where} "
                       f"(a hang the time limit could not interrupt); the worker was killed{output}")
            if op:
                self.breaker.trip(op, phase, message)
            raise WorkerFailure(message, op, phase)
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            op, phase = self._where()
            self._proc.join(5)
            code = self._proc.exitcode
            self._proc = None
            where = f" in {op}.{phase}" if op else ""
            message = (f"the isolated source {self._label()} crashed while {doing}{where} ({_describe_exit(code)})"
                       f"{self._output()}")
            if op:
                self.breaker.trip(op, phase, message)
            raise WorkerFailure(message, op, phase) from None

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._proc = None

    def _call(self, method, *args, doing=None, ops=()):
        for (op, phase), entry in self.breaker.tripped.items():
            if op in ops:
                self.breaker.check(op, phase)  # raises, and counts the call not made
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((method, args))
        msg = self._receive(self.timeout, doing or f"running {method}")
        if msg[0] == "ok":
            return msg[1]
        if msg[2]:
            raise Unsupported(msg[1])
        raise WorkerFailure(msg[1], op=msg[3], phase=msg[4])

    def run(self, graph, tensors):
        return self._call("run", graph.to_json(), tensors, doing=f"running case {graph.case_id}", ops=graph.ops)

    def forward(self, graph, tensors):
        return self._call("forward", graph.to_json(), tensors, doing=f"running the forward of case {graph.case_id}",
                          ops=graph.ops)

    def complex_claim(self, graph):
        return self._call("complex_claim", graph.to_json())

    def local_op(self, op):
        """``op`` as the worker's source runs it, one call there a forward or VJP."""
        from reference_impl import Op

        def forward(*args, **hyper):
            return self._call("local_forward", op, args, hyper, doing=f"running {op}.forward", ops=(op,)), (args, hyper)

        def backward(saved, g):
            args, hyper = saved
            return self._call("local_vjp", op, args, hyper, g, doing=f"running {op}.backward", ops=(op,))

        return Op(forward, backward)

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._proc.join(2)
        self._kill()
        try:
            os.unlink(self.log)
        except OSError:
            pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
