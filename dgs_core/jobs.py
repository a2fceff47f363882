"""Background jobs: a long computation a page starts, watches while it runs, and stops.

No streamlit here. A :class:`Job` prepares a payload (a :class:`~dgs_core.training.Trainer`,
or a study: :func:`dgs_core.studies.study_job`) and drives ``work(payload, stop)`` — any
iterator of progress events — in a daemon thread. Any
thread may read the latest event, the progress, the ETA and the payload (whose results grow
as the work goes on) while it runs. ``stop`` is a :class:`StopSignal`: ``work`` checks
``stop.is_set()`` as often as it can (the trainer does before every step), so Stop takes
effect within one step.

The thread never calls back into the page: the page polls. :class:`JobRegistry` keeps the
process's jobs by unguessable id, so a browser tab that reloads (a new session, the id kept
in its URL) finds its run again, and two sessions never see each other's jobs unless one is
given the other's id. A job whose browser session the server has dropped (the tab was closed)
stops within half a minute (:meth:`JobRegistry.stop_orphans`, :func:`sweep_sessions`); one
nobody has looked at for ``idle_stop_s`` seconds stops itself too, and finished jobs are
dropped after ``keep_s``. A training job's work runs in a worker process
(:mod:`dgs_core.workers`); the job's thread only relays it.

Two helpers for drawing while a job runs: :class:`RateMeter` (redraws per second) and
:class:`LiveCache` (figures rebuilt when their inputs change, a few per tick while live).

>>> job = Job(lambda: 3, lambda n, stop: iter(range(n)), measure=lambda i: (i + 1, 3)).start()
>>> job.join(5.0)
True
>>> job.state, job.latest, job.progress
('done', 2, (3, 3))
"""

from __future__ import annotations

import importlib
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dgs_core.limits import server_limits
from dgs_core.params import invalid

P = TypeVar("P")  # the payload
E = TypeVar("E")  # an event
V = TypeVar("V")  # a cached value

PENDING, PREPARING, RUNNING = "pending", "preparing", "running"
DONE, STOPPED, FAILED = "done", "stopped", "failed"
FINISHED_STATES = (DONE, STOPPED, FAILED)

Clock = Callable[[], float]


class StopSignal:
    """The stop request ``work`` polls: ``is_set()`` is True once :meth:`set` was called, or
    once ``idle()`` says nobody is watching (then ``reason`` is "idle")."""

    def __init__(self, idle: Callable[[], bool] | None = None) -> None:
        self._event = threading.Event()
        self._idle = idle
        self.reason: str | None = None

    def set(self, reason: str = "user") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        if not self._event.is_set() and self._idle is not None and self._idle():
            self.set("idle")
        return self._event.is_set()

    __call__ = is_set


class Job(Generic[P, E]):
    """``work(prepare(), stop)`` in a daemon thread; see the module docstring.

    Args:
        prepare: builds the payload in the thread (so a slow build never blocks the page);
            its ``ValueError`` fails the job with that message.
        work: ``(payload, stop) -> iterable of events``; it should return soon after
            ``stop.is_set()`` turns True.
        measure: ``event -> (done, total)`` for :attr:`progress` and :attr:`eta_s`.
        poll: ``payload -> (done, total)``, read whenever :attr:`progress` is (for work whose
            events are sparser than its progress: the trainer yields on evaluations only, but
            its ``step`` counts every step); takes precedence over ``measure``.
        idle_stop_s: stop when :meth:`touch` was not called for this long (None: never).
        name: for the thread's name.
        clock: seconds, monotonic (tests pass a fake).

    States: "pending" → "preparing" → "running" → "done" (the work ran out), "stopped"
    (a stop request ended it; :attr:`stop_reason` says "user" or "idle") or "failed"
    (:attr:`error` holds the message, :attr:`traceback` the details).
    """

    def __init__(
        self,
        prepare: Callable[[], P],
        work: Callable[[P, StopSignal], Iterable[E]],
        *,
        measure: Callable[[E], tuple[int, int]] | None = None,
        poll: Callable[[P], tuple[int, int]] | None = None,
        idle_stop_s: float | None = None,
        name: str = "job",
        clock: Clock = time.monotonic,
    ) -> None:
        if idle_stop_s is not None and not idle_stop_s > 0:
            raise invalid("idle_stop_s", idle_stop_s, "> 0 or None")
        self.id = secrets.token_urlsafe(12)
        self.name = name
        self._prepare, self._work, self._measure, self._poll = prepare, work, measure, poll
        self._clock = clock
        self.idle_stop_s = idle_stop_s
        self._seen = clock()
        self.signal = StopSignal(self._idle if idle_stop_s is not None else None)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=f"dgs-{name}-{self.id[:6]}", daemon=True)
        self.state = PENDING
        self.payload: P | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._latest: E | None = None
        self._events = 0
        self._progress: tuple[int, int] | None = None
        self._first: tuple[float, int] | None = None  # (time, done) of the first measured event
        self._last: tuple[float, int] | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> Job[P, E]:
        """Start the thread (once); returns the job."""
        with self._lock:
            if self.state != PENDING:
                raise ValueError(f"Invalid start: the job is already {self.state}")
            self.state = PREPARING
            self.started_at = self._clock()
        self._thread.start()
        return self

    def stop(self, wait: float = 0.0) -> bool:
        """Ask the work to stop; wait up to ``wait`` seconds for it. True if it has ended."""
        self.signal.set("user")
        if self.state == PENDING:
            self.state, self.ended_at = STOPPED, self._clock()
            return True
        if wait > 0:
            self._thread.join(wait)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has (or never started)."""
        if self.started_at is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def touch(self) -> None:
        """Someone is watching: postpones the idle stop."""
        self._seen = self._clock()

    def _idle(self) -> bool:
        return self.idle_stop_s is not None and self._clock() - self._seen > self.idle_stop_s

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        state = FAILED
        try:
            payload = self._prepare()
            self.payload = payload
            if not self.signal.is_set():
                self.state = RUNNING
                for event in self._work(payload, self.signal):
                    self._record(event)
            state = STOPPED if self.signal.is_set() else DONE
        except Exception as exc:  # the page shows it; the thread must not die silently
            self.error = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            self.traceback = traceback.format_exc()
        finally:
            self.ended_at = self._clock()
            self.state = state

    def _record(self, event: E) -> None:
        progress = self._measure(event) if self._measure is not None and self._poll is None else None
        with self._lock:
            self._latest = event
            self._events += 1
        if progress is not None:
            self._sample(progress)

    def _sample(self, progress: tuple[int, int]) -> None:
        now = self._clock()
        with self._lock:
            self._progress = (int(progress[0]), int(progress[1]))
            if self._first is None:
                self._first = (now, self._progress[0])
            self._last = (now, self._progress[0])

    # -- reading ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def running(self) -> bool:
        """Preparing or running."""
        return self.state in (PREPARING, RUNNING)

    @property
    def stop_reason(self) -> str | None:
        return self.signal.reason

    @property
    def latest(self) -> E | None:
        """The last event (None before the first)."""
        return self._latest

    @property
    def events(self) -> int:
        return self._events

    @property
    def progress(self) -> tuple[int, int] | None:
        """(done, total): by ``poll`` now, else of the last event by ``measure``."""
        return self._refresh()

    def _refresh(self) -> tuple[int, int] | None:
        payload = self.payload
        if self._poll is not None and payload is not None and self.state != FAILED:
            self._sample(self._poll(payload))
        return self._progress

    @property
    def fraction(self) -> float:
        """done / total in [0, 1] (0 before the first measurement)."""
        progress = self.progress
        if progress is None or progress[1] <= 0:
            return 0.0
        return min(1.0, max(0.0, progress[0] / progress[1]))

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self._clock()
        return end - self.started_at

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate since the first measurement; None while unknown or ended."""
        self._refresh()
        with self._lock:
            first, last, progress = self._first, self._last, self._progress
        if self.finished or first is None or last is None or progress is None:
            return None
        elapsed, done = last[0] - first[0], last[1] - first[1]
        if elapsed <= 0 or done <= 0:
            return None
        return max(0.0, (progress[1] - progress[0]) * elapsed / done)


class JobRegistry:
    """The process's jobs by id (thread-safe); see the module docstring.

    Args:
        max_jobs: at most this many unfinished jobs at once on the server (a new one beyond is
            refused).
        max_session_jobs: at most this many unfinished jobs at once per owner (a browser
            session), not counting those already asked to stop; None: no per-owner cap.
        keep_jobs: at most this many jobs kept in all (the least recently seen finished ones
            go first); defaults to ``max_jobs``.
        keep_s: finished jobs nobody looked at for this long are dropped.
    """

    def __init__(
        self,
        *,
        max_jobs: int = 16,
        max_session_jobs: int | None = None,
        keep_jobs: int | None = None,
        keep_s: float = 3600.0,
        clock: Clock = time.monotonic,
    ) -> None:
        keep_jobs = max_jobs if keep_jobs is None else keep_jobs
        for name, value in (
            ("max_jobs", max_jobs),
            ("max_session_jobs", max_session_jobs),
            ("keep_jobs", keep_jobs),
        ):
            if value is None and name == "max_session_jobs":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid(name, value, "an integer >= 1")
        if keep_jobs < max_jobs:
            raise invalid("keep_jobs", keep_jobs, f">= max_jobs ({max_jobs})")
        if not keep_s > 0:
            raise invalid("keep_s", keep_s, "> 0")
        self.max_jobs, self.max_session_jobs, self.keep_jobs = max_jobs, max_session_jobs, keep_jobs
        self.keep_s, self._clock = keep_s, clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._seen: dict[str, float] = {}
        self._owners: dict[str, str] = {}
        self._gone: dict[str, float] = {}  # job id -> when its owner was first seen gone

    def add(self, job: Job, owner: str | None = None) -> Job:
        """Keep ``job`` (started or not) for ``owner``; ``ValueError`` when the server's or the
        owner's cap on unfinished jobs is reached."""
        with self._lock:
            self._sweep()
            unfinished = sum(not j.finished for j in self._jobs.values())  # (the lock is held)
            if unfinished >= self.max_jobs:
                raise ValueError(
                    f"Invalid start: {unfinished} runs are in progress on this server (the cap is "
                    f"max_jobs={self.max_jobs}); stop one or wait for one to finish"
                )
            if owner is not None and self.max_session_jobs is not None:
                mine = sum(
                    not j.finished and not j.signal.is_set() and self._owners.get(i) == owner
                    for i, j in self._jobs.items()
                )
                if mine >= self.max_session_jobs:
                    raise ValueError(
                        f"Invalid start: this browser session has {mine} runs in progress (the cap "
                        f"is max_session_jobs={self.max_session_jobs}); stop one or wait for one to finish"
                    )
            if owner is not None:
                self._owners[job.id] = owner
            self._jobs[job.id] = job
            self._seen[job.id] = self._clock()
            self._sweep()
        return job

    def get(self, job_id: Any, owner: str | None = None) -> Job | None:
        """The job with this id (and it counts as watched), or None. With ``owner``: that
        session watches it now and becomes its owner (a reloaded tab is a new session)."""
        if not isinstance(job_id, str):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._seen[job_id] = self._clock()
                job.touch()
                if owner is not None and job_id in self._owners:
                    self._owners[job_id] = owner
                    self._gone.pop(job_id, None)
        return job

    def stop_orphans(self, alive: Callable[[str], bool], *, grace_s: float = 30.0) -> list[str]:
        """Stop the unfinished jobs whose owner session has not been ``alive`` for ``grace_s``
        seconds (the tab was closed: the server dropped its session); returns their ids.

        Call it every few seconds. The grace lets a reloaded tab (a new session) take its job
        over through :meth:`get`, and a dropped connection reconnect. The stop reason is
        "session"."""
        now, stopped = self._clock(), []
        with self._lock:
            owned = [(i, self._jobs[i], owner) for i, owner in self._owners.items() if i in self._jobs]
        for job_id, job, owner in owned:
            if job.finished or job.signal.is_set() or alive(owner):
                self._gone.pop(job_id, None)
                continue
            since = self._gone.setdefault(job_id, now)
            if now - since >= grace_s:
                job.signal.set("session")
                self._gone.pop(job_id, None)
                stopped.append(job_id)
        return stopped

    def discard(self, job_id: str, wait: float = 0.0) -> None:
        """Stop the job (waiting up to ``wait`` s) and forget it."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._seen.pop(job_id, None)
            self._owners.pop(job_id, None)
            self._gone.pop(job_id, None)
        if job is not None:
            job.stop(wait)

    def unfinished(self) -> int:
        """How many of the jobs have not finished (the server's live runs)."""
        with self._lock:
            return sum(not j.finished for j in self._jobs.values())

    def shared_period(self, period: float) -> float:
        """A live page's redraw period on a shared server: ``period`` while one run is live,
        ``n`` × ``period`` while ``n`` are (a class's live pages then ask for as many redraws a
        second in all as one page alone: every redraw is a script run in the server's one
        interpreter)."""
        return period * max(1, self.unfinished())

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def _sweep(self) -> None:
        now = self._clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished and now - self._seen[job_id] > self.keep_s:
                self._forget(job_id)
        finished = sorted((self._seen[i], i) for i, j in self._jobs.items() if j.finished)
        while len(self._jobs) > self.keep_jobs and finished:
            _, job_id = finished.pop(0)
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        del self._jobs[job_id], self._seen[job_id]
        self._owners.pop(job_id, None)
        self._gone.pop(job_id, None)


_LIMITS = server_limits()
JOBS = JobRegistry(max_jobs=_LIMITS.max_jobs, max_session_jobs=_LIMITS.max_session_jobs, keep_jobs=256)
"""The process's registry (pages share it; each session holds only its own ids). Its caps are
the server's limits ($DGS_LAB_MAX_JOBS, $DGS_LAB_MAX_SESSION_JOBS; see :mod:`dgs_core.limits`)."""


def sweep_sessions(
    registry: JobRegistry, alive: Callable[[str], bool], *, every_s: float = 5.0, grace_s: float = 30.0
) -> threading.Thread:
    """Every ``every_s`` seconds, stop ``registry``'s jobs whose session is gone
    (:meth:`JobRegistry.stop_orphans`), in a daemon thread; returns it. The server's pages
    start one per process, with ``alive`` asking the web server's session list."""

    def sweep() -> None:
        while True:
            time.sleep(every_s)
            try:
                registry.stop_orphans(alive, grace_s=grace_s)
            except Exception:  # a sweep must never end the thread; the next one tries again
                continue

    thread = threading.Thread(target=sweep, name="dgs-session-sweep", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------
# Drawing while a job runs
# ---------------------------------------------------------------------------------------------


class RateMeter:
    """Ticks per second over the last ``window_s`` seconds (a page's redraw rate)."""

    def __init__(self, window_s: float = 2.0, clock: Clock = time.monotonic) -> None:
        if not window_s > 0:
            raise invalid("window_s", window_s, "> 0")
        self.window_s, self._clock = window_s, clock
        self._ticks: deque[float] = deque()

    def tick(self) -> None:
        now = self._clock()
        self._ticks.append(now)
        while self._ticks and now - self._ticks[0] > self.window_s:
            self._ticks.popleft()

    def reset(self) -> None:
        self._ticks.clear()

    @property
    def rate(self) -> float:
        """(ticks − 1) / (time between the first and last tick in the window); 0 with fewer than 2."""
        if len(self._ticks) < 2:
            return 0.0
        span = self._ticks[-1] - self._ticks[0]
        return (len(self._ticks) - 1) / span if span > 0 else 0.0


@dataclass
class _Entry:
    version: Hashable
    value: Any
    fresh_at: float  # when it was built or last found up to date


class LiveCache(Generic[V]):
    """Values (figures) rebuilt when their version changes — a few per tick while live.

    Call :meth:`begin` once per redraw, then :meth:`get` for each value. A value seen for the
    first time is built at once. When not live, a value whose version changed is rebuilt at
    once. While live every version changes all the time, so a value marked ``every_tick`` is
    rebuilt on every tick and the others take turns: at most ``per_tick`` of them per tick,
    the least recently refreshed first (ties: in the order they were first asked for), none
    more often than every ``min_age_s`` seconds; the rest keep their last value. One redraw
    stays cheap however many panels a page has, for the server that builds them and for the
    browser that draws them.
    """

    def __init__(self, *, per_tick: int = 1, min_age_s: float = 0.5, clock: Clock = time.monotonic) -> None:
        if isinstance(per_tick, bool) or not isinstance(per_tick, int) or per_tick < 0:
            raise invalid("per_tick", per_tick, "an integer >= 0")
        if not min_age_s >= 0:
            raise invalid("min_age_s", min_age_s, ">= 0")
        self.per_tick, self.min_age_s, self._clock = per_tick, min_age_s, clock
        self._entries: dict[str, _Entry] = {}
        self._live = False
        self._turn: set[str] = set()
        self.rebuilt: list[str] = []  # what the current tick built

    def begin(self, *, live: bool, budget: int | None = None) -> None:
        """Start a redraw; ``live``: a run is going on (throttle the rebuilds); ``budget``:
        this tick's number of turns instead of ``per_tick`` (0 when something else was drawn)."""
        self._live = live
        self.rebuilt = []
        now = self._clock()
        due = [(e.fresh_at, name) for name, e in self._entries.items() if now - e.fresh_at >= self.min_age_s]
        due.sort(key=lambda item: item[0])  # stable: ties keep the order of first request
        self._turn = {name for _, name in due[: self.per_tick if budget is None else budget]}

    def get(self, name: str, version: Hashable, build: Callable[[], V], *, every_tick: bool = False) -> V:
        """The value of ``name`` at ``version`` — or, while live and not its turn, its last value."""
        entry = self._entries.get(name)
        now = self._clock()
        if entry is not None and entry.version == version:
            entry.fresh_at = now
            return entry.value
        if entry is None or not self._live or every_tick or name in self._turn:
            value = build()
            self._entries[name] = _Entry(version, value, now)
            self.rebuilt.append(name)
            return value
        return entry.value

    def clear(self, names: Sequence[str] | None = None) -> None:
        """Forget every value (or those ``names``)."""
        for name in list(self._entries) if names is None else names:
            self._entries.pop(name, None)


def preload(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread and return it.

    Why: the first run in a fresh process pays for imports that happen deep inside it
    (``torch.optim`` pulls in ``torch._dynamo`` on the first optimizer, scikit-learn on the
    first data set: seconds on a busy CPU). A page calls this once per process when it first
    loads, so a run started a few seconds later is not slowed down. Imports are thread-safe;
    a run that needs a module meanwhile waits for the import lock. A module that fails to
    import is skipped here (the run itself then raises the real error).
    """

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the run that needs it reports the real error
                continue

    thread = threading.Thread(target=load, name="dgs-preload", daemon=True)
    thread.start()
    return thread
