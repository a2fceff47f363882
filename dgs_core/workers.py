"""Training in worker processes: the page server keeps its interpreter while runs train.

A training run is pure CPU work in Python; in the page server's process it shares the
interpreter (and its GIL) with every page being drawn, and a class with five runs going makes
every page slow. So :func:`train` — what a training :class:`~dgs_core.jobs.Job` runs — hands
the run to a worker process of :data:`POOL` and streams what it records back into the
trainer the pages read (the *mirror*: the same :class:`~dgs_core.training.Trainer` object the
job's payload has always been), so the pages, Save, Export and Continue do not change::

    server (job thread)                              worker process (one of POOL)
    mirror = Trainer(config) ── config or state ──▶ trainer = Trainer(config) / from_state_dict
                               ◀── delta ───────── every SEND_EVERY_S, before a step
    events for the page      ◀── event + delta ─── at an evaluation, at most every SEND_EVERY_S
    stop.is_set() ─────────── "stop" ─────────────▶ looked for before every step
    mirror.load_state_dict   ◀── end: state_dict ── the run ended (done or stopped)

A delta carries, per optimizer, the metric rows, diagnostic records, checkpoints and
trajectory snapshots recorded since the last one (and the status); the final ``state_dict``
(less what the deltas carried) makes the mirror the worker's trainer exactly (weights,
optimizer states, data position, diagnostics), so a finished run saves and continues as if it
had trained in the server — the same numbers on the CPU (a parity test checks it). Stop sets
sends "stop" down the worker's pipe: the trainer looks for it before every step. A worker that has not ended
:data:`KILL_AFTER_S` seconds after a stop request, or that dies, is killed and replaced; its
run keeps what was streamed and is marked ended (it cannot be continued: its weights stayed
in the worker).

A worker is a fresh interpreter, ``python -m dgs_core.workers FD`` (never ``fork``: the
server has threads; and not multiprocessing's ``spawn``, which would import the server's
``__main__`` in the child — under Streamlit that is the page script being run), talking over
one socket pair. Workers live as long as the server, one run at a time each, so each imports
torch once; at most ``$DGS_LAB_MAX_JOBS`` of them (the server's cap on runs at once), at a
lower CPU priority than the pages (:data:`NICENESS`). ``$DGS_LAB_TRAIN_WORKERS=0``
trains in the job's thread instead (the CLI, the page tests; the same numbers).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from dgs_core.limits import server_limits
from dgs_core.params import ParamError, invalid
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import METRIC_COLUMNS, RUNNING, STOPPED, ProgressEvent
from dgs_core.training.trainer import Trainer

MODE_ENV = "DGS_LAB_TRAIN_WORKERS"
SEND_EVERY_S = 0.25  # the worker streams what it recorded at least this often (the page's tick is 0.2 s)
KILL_AFTER_S = 20.0  # a worker still busy this long after a stop request is killed
# Workers run at the lowest CPU priority: five runs are five busy processes (in the server's
# threads the GIL held them to one core), and pages must come first. A busy machine still gives
# them what the pages leave; an idle one, everything. The classroom benchmark (bench/classroom.py,
# 25 websocket clients + 5 training browsers on 2 cores, the machine 99 % busy) measured the
# workers at niceness 10 taking 0.47 of a core, as much as the page server's interpreter.
NICENESS = 19
STOP = "stop"  # the message that stops a worker's run
LOST = "ended: its worker process was lost"  # the status of the optimizers of a run whose worker died


def process_mode(environ: Mapping[str, str] | None = None) -> bool:
    """True (the default) to train in worker processes; ``$DGS_LAB_TRAIN_WORKERS=0``: in-process."""
    text = (os.environ if environ is None else environ).get(MODE_ENV, "1").strip() or "1"
    if text not in ("0", "1"):
        raise ParamError(MODE_ENV, text, f"Invalid {MODE_ENV}: {text!r} (must be 0 or 1)")
    return text == "1"


def train(trainer: Trainer, stop: Any, *, pace: float = 0.0) -> Iterator[ProgressEvent]:
    """Train ``trainer`` on (like :meth:`Trainer.run`, ``pace`` included): in a worker process
    of :data:`POOL`, or in this thread when :func:`process_mode` is off."""
    if process_mode():
        return POOL.train(trainer, stop, pace=pace)
    return trainer.run(stop, pace=pace)


# ---------------------------------------------------------------------------------------------
# The worker's side
# ---------------------------------------------------------------------------------------------


class _Pickler(pickle.Pickler):
    """Pickles CPU tensors as numpy arrays: a run's stream is thousands of small tensors (a
    record's element copies, checkpoints), and torch pickles each storage through torch.save
    (a 2000-step moons run's state: 1.1 s to pickle and 1.2 s to read, against 0.11 s and
    0.06 s this way)."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            type(obj) is torch.Tensor
            and obj.device.type == "cpu"
            and not obj.requires_grad
            and obj.dtype in _NUMPY_DTYPES
        ):
            return torch.from_numpy, (obj.numpy(),)
        return NotImplemented


_NUMPY_DTYPES = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}


def _send(conn: Connection, message: Any) -> None:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    conn.send_bytes(buffer.getbuffer())


def _slim(state: dict[str, Any]) -> dict[str, Any]:
    """A trainer's state without what the deltas carried (the mirror has it)."""
    for lane in state["lanes"].values():
        for key in _STREAMED:
            lane[key] = None
    return state


_STREAMED = ("columns", "records", "checkpoints", "trajectory")


class _Tracker:
    """What a worker's trainer recorded since the last delta (per optimizer)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        results = trainer.results
        self.rows = {label: r.steps_done for label, r in results.items()}
        self.records = {label: len(r.records) for label, r in results.items()}
        self.checkpoints = {label: set(r.checkpoints) for label, r in results.items()}
        self.trajectory = {label: set(r.trajectory) for label, r in results.items()}

    def delta(self) -> dict[str, Any]:
        lanes = {}
        for label, lane in self.trainer.lanes.items():
            r = lane.result
            # the last row sent goes again: an annealing plan that ends evaluates its last step late
            start, rows = max(0, self.rows[label] - 1), r.steps_done
            trajectory = r.trajectory
            lanes[label] = {
                "status": r.status,
                "reason": r.reason,
                "last_evaluation": r.last_evaluation,
                "start": start,
                "columns": {name: r.columns[name][start:rows] for name in METRIC_COLUMNS},
                "records": r.records[self.records[label] :],
                "checkpoints": {s: w for s, w in r.checkpoints.items() if s not in self.checkpoints[label]},
                "trajectory_steps": list(trajectory),
                "trajectory": {s: w for s, w in trajectory.items() if s not in self.trajectory[label]},
                "lr": lane.lr,
                "batch_size": lane.batch_size,
            }
            self.rows[label], self.records[label] = rows, len(r.records)
            self.checkpoints[label].update(r.checkpoints)
            self.trajectory[label] = set(trajectory)
        return {"step": self.trainer.step, "lanes": lanes}


def _run(conn: Connection, request: tuple[str, Any, float]) -> None:
    kind, data, pace = request
    trainer = Trainer(TrainConfig.from_dict(data)) if kind == "config" else Trainer.from_state_dict(data)
    tracker = _Tracker(trainer)
    _send(conn, ("started",))
    sent = evented = time.monotonic()  # the last message; the last event

    stopping = False

    def should_stop() -> bool:  # called before every step: the records are whole here
        nonlocal sent, stopping
        if time.monotonic() - sent >= SEND_EVERY_S:
            _send(conn, ("delta", tracker.delta()))
            sent = time.monotonic()
        if not stopping and conn.poll():  # one select(): microseconds against a step's milliseconds
            stopping = pickle.loads(conn.recv_bytes()) == STOP  # the only message during a run
        return stopping

    for event in trainer.run(should_stop, pace=pace):
        if event.finished:
            _send(conn, ("end", tracker.delta(), _slim(trainer.state_dict()), event.elapsed_s))
        elif time.monotonic() - evented >= SEND_EVERY_S:  # the page reads the latest event only
            _send(conn, ("event", tracker.delta(), event.elapsed_s))
            sent = evented = time.monotonic()


def serve(conn: Connection) -> None:
    """A worker process's main loop: one run per request, until the server closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which ends its workers
    while True:
        try:
            request = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if request == STOP:  # a stop that crossed the end of its run
            continue
        try:
            _run(conn, request)
        except (BrokenPipeError, EOFError):
            return  # the server is gone
        except Exception as exc:  # the job shows it; the worker stays for the next run
            _send(conn, ("error", type(exc).__name__, str(exc), traceback.format_exc()))


# ---------------------------------------------------------------------------------------------
# The server's side
# ---------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A run failed in its worker process (the message names the original exception)."""


class _Worker:
    """One worker process and its end of the socket pair."""

    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        root = str(Path(__file__).resolve().parents[1])  # where dgs_core is, whatever the cwd
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dgs_core.workers", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
        child.close()
        with contextlib.suppress(AttributeError, OSError):  # not on every system: then as the server
            os.setpriority(os.PRIO_PROCESS, self.process.pid, NICENESS)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def receive(self, timeout: float) -> Any:
        """The next message, or None after ``timeout`` seconds; EOFError once the process is gone."""
        if not self.conn.poll(timeout):
            if not self.alive:
                raise EOFError
            return None
        return pickle.loads(self.conn.recv_bytes())

    def close(self) -> None:
        self.conn.close()
        if self.alive:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)


class WorkerPool:
    """At most ``size`` long-lived worker processes, started when first needed.

    >>> pool = WorkerPool(size=1)
    >>> len(pool)
    0
    """

    def __init__(self, *, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise invalid("size", size, "an integer >= 1")
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._count = 0

    def __len__(self) -> int:
        """Worker processes started and not ended (busy or idle)."""
        return self._count

    def _acquire(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                self._count -= 1
                worker.close()
            if self._count >= self.size:
                raise ValueError(
                    f"Invalid start: all {self.size} training workers are busy; wait for a run to end"
                )
            self._count += 1
        try:
            return _Worker()  # outside the lock: starting one takes a moment
        except Exception:
            with self._lock:
                self._count -= 1
            raise

    def _release(self, worker: _Worker, *, healthy: bool) -> None:
        if healthy and worker.alive:
            with self._lock:
                self._idle.append(worker)
            return
        worker.close()
        with self._lock:
            self._count -= 1

    def warm(self) -> None:
        """Start one idle worker now (in the background), so the next run does not wait for it."""

        def start() -> None:
            with self._lock:
                if self._idle or self._count >= self.size:
                    return
            self._release(self._acquire(), healthy=True)

        threading.Thread(target=start, name="dgs-warm-worker", daemon=True).start()

    def close(self) -> None:
        """End the idle workers (busy ones end when their run does, as the pipe closes)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.close()

    def train(self, trainer: Trainer, stop: Any, *, pace: float = 0.0) -> Iterator[ProgressEvent]:
        """Train ``trainer`` on in a worker (spread over about ``pace`` seconds, as
        :meth:`Trainer.run`), mirroring what it records into ``trainer``."""
        should_stop: Callable[[], bool] = getattr(stop, "is_set", stop) or (lambda: False)
        worker = self._acquire()
        healthy = started = False
        try:
            fresh = trainer.step == 0
            _send(
                worker.conn,
                ("config", trainer.config.to_dict(), pace)
                if fresh
                else ("state", trainer.state_dict(), pace),
            )
            stopped_at: float | None = None
            while True:
                if stopped_at is None and should_stop():
                    if not started:  # still starting (importing torch, building the trainer):
                        _stop_unstarted(trainer)  # end it; the mirror is the state it was sent
                        yield _event(trainer, {}, finished=True, elapsed=0.0)
                        return
                    _send(worker.conn, STOP)
                    stopped_at = time.monotonic()
                if stopped_at is not None and time.monotonic() - stopped_at > KILL_AFTER_S:
                    raise WorkerError(f"the run did not stop within {KILL_AFTER_S:g} s; its worker was ended")
                try:
                    message = worker.receive(0.05)
                except (EOFError, OSError):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        worker.process.wait(1.0)
                    code = worker.exitcode
                    raise WorkerError(
                        f"the training worker process ended unexpectedly (exit code {code})"
                    ) from None
                if message is None:
                    continue
                kind = message[0]
                started = True
                if kind == "started":
                    continue
                if kind == "error":
                    _, name, text, details = message
                    if name in ("ValueError", "ParamError"):
                        raise ValueError(text)
                    raise WorkerError(f"{name}: {text}\n\nIn the worker process:\n{details}")
                lanes = _apply(trainer, message[1])
                if kind == "end":
                    state = message[2]
                    for label, lane in state["lanes"].items():  # the streamed parts, from the mirror
                        result = trainer.lanes[label].result
                        lane.update({key: getattr(result, key) for key in _STREAMED})
                    trainer.load_state_dict(state)
                    healthy = True
                    yield _event(trainer, lanes, finished=True, elapsed=message[3])
                    return
                if kind == "event":
                    yield _event(trainer, lanes, finished=False, elapsed=message[2])
        finally:
            if not healthy and started:
                for result in trainer.results.values():
                    if result.status in (RUNNING, STOPPED):
                        result.status = LOST
            self._release(worker, healthy=healthy)


def _stop_unstarted(trainer: Trainer) -> None:
    """A run stopped before its worker began it: it stays as it was, stopped."""
    for result in trainer.results.values():
        if result.status == RUNNING:
            result.status = STOPPED


def _apply(trainer: Trainer, delta: Mapping[str, Any]) -> dict[str, tuple[float, int]]:
    """Add a worker's delta to the mirror; returns each optimizer's (lr, batch size).

    Every container a page may be reading is extended with one call or replaced whole, and the
    ``step`` column (whose length counts the rows) grows last, so a reader never finds a row
    in it that another column lacks."""
    for label, lane in delta["lanes"].items():
        result = trainer.lanes[label].result
        start = lane["start"]
        for name in reversed(METRIC_COLUMNS):
            result.columns[name][start:] = lane["columns"][name]
        result.records.extend(lane["records"])
        if lane["checkpoints"]:
            result.checkpoints = {**result.checkpoints, **lane["checkpoints"]}
        known = {**result.trajectory, **lane["trajectory"]}
        result.trajectory = {s: known[s] for s in lane["trajectory_steps"]}
        result.last_evaluation, result.reason, result.status = (
            lane["last_evaluation"],
            lane["reason"],
            lane["status"],
        )
    trainer.step = delta["step"]
    return {label: (lane["lr"], lane["batch_size"]) for label, lane in delta["lanes"].items()}


def _event(
    trainer: Trainer, lanes: Mapping[str, tuple[float, int]], *, finished: bool, elapsed: float
) -> ProgressEvent:
    """The progress event the in-process trainer would have yielded, from the mirror."""
    progress = {
        label: result.progress(lr=lanes[label][0], batch_size=lanes[label][1])
        if label in lanes
        else result.progress()
        for label, result in trainer.results.items()
    }
    return ProgressEvent(trainer.step, trainer.config.steps, MappingProxyType(progress), finished, elapsed)


POOL = WorkerPool(size=server_limits().max_jobs)
"""The server's workers (none started until a run needs one); at most ``$DGS_LAB_MAX_JOBS``."""


if __name__ == "__main__":  # a worker process: python -m dgs_core.workers FD
    serve(Connection(int(sys.argv[1])))
