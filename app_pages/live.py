"""Long work in a page, one pattern: a :class:`~dgs_core.jobs.Job` per slot, watched by fragments.

A :class:`Slot` is one kind of long work on a page (the Training lab's run, its large-batch
study, the Annealing lab's two runs). For each slot a session has at most one job:

* :func:`start` stops the session's previous job in the slot, registers the new one in
  :data:`dgs_core.jobs.JOBS` and keeps its id in session state and in the URL
  (``?train_job=…``), so :func:`current` finds it again after a reload (a new session);
* :func:`watch` draws the status (Stop, Continue where the page offers it, the progress bar
  with the state, progress, elapsed time, ETA and redraw rate) and the page's view of the job,
  in a fragment rerun every ``period`` seconds while the job runs; when the job ends, one full
  rerun turns every timer off and redraws the whole page;
* :func:`every` draws one panel in a fragment of its own with its own period, and
  :func:`until` reruns the page once a condition holds (e.g. the run has its first step);
* :func:`figure` is the session's one figure cache (rebuilt when its inputs' version changes);
* :func:`preload` imports what a fresh process's first run would, starts a training worker
  (:mod:`dgs_core.workers`) and the sweep that stops the jobs of closed tabs (once per process).

The job's thread never touches Streamlit: the page polls. Stop sets the job's stop signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app_pages.ui import plain
from dgs_core import jobs, workers

STOP_WAIT_SECONDS = 0.8  # Stop waits this long for the work to end its step
IDLE_STOP_SECONDS = 180.0  # a job nobody watches stops itself after this long
SESSION_GRACE_SECONDS = 30.0  # a job whose session the server dropped (tab closed) stops after this
SWEEP_SECONDS = 5.0  # how often the server looks for such jobs
# Imported by a fresh process's first run, deep inside it (seconds on a busy CPU): torch's
# compiler stack on the first optimizer, scikit-learn on the first data set.
PRELOAD = ("torch._dynamo", "sklearn.datasets")
SHORT_STATES = {jobs.DONE: "finished"}  # the short status line's words for a state


@dataclass(frozen=True)
class Slot:
    """One kind of long work on a page.

    Attributes:
        prefix: the page-prefixed stem of its keys: the job id is kept under ``f"{prefix}_job"``
            in session state and in the URL; its buttons are ``f"{prefix}_stop"`` and
            ``f"{prefix}_continue"``.
        building: what the job prepares, for the status line ("the task and the two runs").
        noun: "run" or "study", for messages ("The run failed: …").
        idle: shown while the session has no job in the slot ("" for nothing).
        start_label: the button that starts one (named when a link's job is gone).
        short: the short status line ("running: 40 / 140 steps · ETA 3.0 s", "finished: …").
        unit: what the progress counts ("step"; a fair comparison counts each "trial", a landscape
            grid each "point").
    """

    prefix: str
    building: str = "the run"
    noun: str = "run"
    idle: str = ""
    start_label: str = "Start"
    short: bool = False
    unit: str = "step"

    @property
    def key(self) -> str:
        return f"{self.prefix}_job"


# ---------------------------------------------------------------------------------------------
# This session's jobs (ids in session state and in the URL; the jobs in dgs_core.jobs.JOBS)
# ---------------------------------------------------------------------------------------------


def current(slot: Slot) -> jobs.Job | None:
    """This session's job in ``slot``, re-attached from the URL after a reload; None (and the
    slot marked "lost") when the id names no job on this server any more."""
    job_id = st.session_state.get(slot.key)
    if job_id is None and slot.key in st.query_params:
        job_id = st.query_params[slot.key]
        st.session_state[slot.key] = job_id
    job = jobs.JOBS.get(job_id, owner=_session_id())  # this session watches it now
    if job is None and job_id is not None:
        st.session_state.pop(slot.key, None)
        st.session_state[f"{slot.key}_lost"] = True
        if slot.key in st.query_params:
            del st.query_params[slot.key]
    return job


def _session_id() -> str | None:
    """This browser session's id, made by the server (never taken from a link)."""
    ctx = get_script_run_ctx()
    return None if ctx is None else ctx.session_id


def _alive(session_id: str) -> bool:
    """Whether the web server still has this browser session (a closed tab's is dropped)."""
    return not Runtime.exists() or Runtime.instance().is_active_session(session_id)


def start(slot: Slot, job: jobs.Job, *, reuse: Hashable | None = None, keep: int = 3) -> None:
    """Stop this session's previous job in ``slot``, then register and start ``job``.

    ``reuse``: a key of what the job computes; the slot's last ``keep`` jobs are remembered by
    it, and starting a key again re-attaches its job instead if that one ran to the end
    (returning to a setting is instant). A refusal (the server's cap on jobs) is kept for
    :func:`watch` to show.
    """
    preload()  # also starts the sweep that stops the jobs of closed tabs
    kept: dict[Hashable, str] = st.session_state.setdefault(f"{slot.key}_kept", {})
    previous = current(slot)
    if previous is not None and previous.running:
        previous.stop(STOP_WAIT_SECONDS)
    reused = jobs.JOBS.get(kept.get(reuse)) if reuse is not None else None
    if reused is not None and reused.state == jobs.DONE:
        job = reused
    else:
        try:
            jobs.JOBS.add(job, owner=_session_id())
        except ValueError as exc:
            st.session_state[f"{slot.key}_error"] = str(exc)
            return
        job.start()
        if reuse is not None:
            kept.pop(reuse, None)
            kept[reuse] = job.id
            while len(kept) > keep:
                kept.pop(next(iter(kept)))
    st.session_state[slot.key] = job.id
    st.session_state.pop(f"{slot.key}_error", None)
    st.session_state[f"{slot.key}_rerun_app"] = True  # the fragments' timers are set by a full run
    st.query_params[slot.key] = job.id


def stop(slot: Slot) -> None:
    """Ask this session's job in ``slot`` to stop (waits up to STOP_WAIT_SECONDS for it)."""
    job = current(slot)
    if job is not None:
        job.stop(STOP_WAIT_SECONDS)


def _resume(slot: Slot, make: Callable[[Any], jobs.Job]) -> None:
    job = current(slot)
    if job is not None and job.payload is not None:
        start(slot, make(job.payload))


# ---------------------------------------------------------------------------------------------
# The status line
# ---------------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """Seconds for a reader: "4.2 s", "42 s", "3:07 min"; "–" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d} min"


def status_line(slot: Slot, job: jobs.Job, rate: float | None = None) -> str:
    """ "running · step 120 / 300 · elapsed 4.2 s · ETA 6.3 s · 4.9 redraws/s" (or the short form:
    "running: 120 / 300 steps · ETA 6.3 s", "finished: 300 / 300 steps")."""
    done, total = job.progress or (0, 0)
    if job.state == jobs.PREPARING:
        return f"preparing: building {slot.building}…"
    state = job.state
    if state == jobs.STOPPED and job.stop_reason == "idle":
        state = f"stopped (nobody watched it for {IDLE_STOP_SECONDS:.0f} s)"
    elif state == jobs.STOPPED and job.stop_reason == "session":
        state = "stopped (its browser tab was closed)"
    if slot.short:
        text = f"{SHORT_STATES.get(state, state)}: {done} / {total} {slot.unit}s"
        return f"{text} · ETA {duration(job.eta_s)}" if job.running else text
    parts = [state]
    if total:
        parts.append(f"{slot.unit} {done} / {total}")
    parts.append(f"elapsed {duration(job.elapsed_s)}")
    if job.running:
        parts.append(f"ETA {duration(job.eta_s)}")
        if rate is not None:
            parts.append(f"{rate:.1f} redraws/s")
    return " · ".join(parts)


def status(
    slot: Slot, job: jobs.Job, *, resume: Callable[[Any], jobs.Job] | None = None, can_resume: bool = False
) -> None:
    """Stop (and Continue when ``resume`` makes a job that continues the payload), the progress
    bar with :func:`status_line`, and the error of a failed job."""
    meter = st.session_state.setdefault(f"{slot.prefix}_meter", jobs.RateMeter(window_s=5.0))
    meter.tick()
    # one row: the buttons as wide as their labels, the bar the rest (columns would squeeze them)
    row = st.container(horizontal=True, vertical_alignment="center", wrap=False)
    row.button("Stop", key=f"{slot.prefix}_stop", disabled=not job.running, on_click=stop, args=(slot,))
    if resume is not None:
        row.button(
            "Continue",
            key=f"{slot.prefix}_continue",
            disabled=not can_resume,
            on_click=_resume,
            args=(slot, resume),
            help="train on from where the run stopped",
        )
    row.progress(job.fraction, text=status_line(slot, job, meter.rate))
    if job.state == jobs.FAILED:
        st.error(f"The {slot.noun} failed: {plain(job.error)}")


# ---------------------------------------------------------------------------------------------
# Fragments
# ---------------------------------------------------------------------------------------------


def watch(slot: Slot, draw: Callable[[jobs.Job], None], *, period: float) -> None:
    """``draw(job)`` (the status and the page's view of the job) in a fragment rerun every
    ``period`` seconds (``JOBS.shared_period``) while this session's job in ``slot`` runs.
    When the job ends, one full rerun turns the timers off and redraws every panel — one tick
    later, so the browser shows the end before it draws them. Without a job: the slot's idle
    text, or why the link's job is gone."""
    st.session_state.pop(f"{slot.key}_rerun_app", None)  # a full run is under way already
    if message := st.session_state.get(f"{slot.key}_error"):
        st.error(plain(message))
    job = current(slot)
    ticking = job is not None and job.running

    @st.fragment(run_every=jobs.JOBS.shared_period(period) if ticking else None)
    def tick() -> None:
        if st.session_state.pop(f"{slot.key}_rerun_app", False):
            st.rerun(scope="app")  # started from inside a fragment (Continue)
        live_job = current(slot)
        if live_job is None:
            if st.session_state.pop(f"{slot.key}_lost", False):
                st.info(
                    f"The {slot.noun} of this link is no longer on the server. "
                    f"Press {slot.start_label} for a new one."
                )
            elif slot.idle:
                st.info(slot.idle)
            return
        draw(live_job)
        if ticking and not live_job.running:
            if st.session_state.get(f"{slot.key}_end_shown") == live_job.id:
                st.rerun(scope="app")
            st.session_state[f"{slot.key}_end_shown"] = live_job.id

    with st.container():  # the fragment's own block: its reruns never touch the elements around it
        tick()


def every(slot: Slot, period: float, draw: Callable[[jobs.Job], None]) -> None:
    """``draw(job)`` in a fragment of its own (a panel with its own redraw period), rerun every
    ``period`` seconds (``JOBS.shared_period``) while this session's job in ``slot`` runs."""
    job = current(slot)
    if job is None:
        return

    @st.fragment(run_every=jobs.JOBS.shared_period(period) if job.running else None)
    def redraw() -> None:
        live_job = current(slot)
        if live_job is not None and live_job.id == job.id:
            draw(live_job)

    with st.container():  # the fragment's own block: its reruns never touch the others
        redraw()


def until(slot: Slot, ready: Callable[[jobs.Job], bool], *, period: float) -> None:
    """While the job runs and ``ready(job)`` is False, check every ``period`` seconds; then one
    full rerun (e.g. the page lays out its panels once the run has a first step)."""

    @st.fragment(run_every=period)
    def wait() -> None:
        job = current(slot)
        if job is None or not job.running or ready(job):
            st.rerun(scope="app")

    with st.container():
        wait()


# ---------------------------------------------------------------------------------------------
# The session's figures, and the process's imports
# ---------------------------------------------------------------------------------------------


def figure(name: str, version: Hashable, build: Callable[[], Any]) -> Any:
    """``build()``'s value, rebuilt only when ``version`` changed (the session's one cache;
    ``name`` is page-prefixed, e.g. "train_loss")."""
    cache = st.session_state.setdefault("live_figures", jobs.LiveCache())
    return cache.get(name, version, build)


def chart(name: str, version: Hashable, build: Callable[[], Any]) -> None:
    """The cached :func:`figure` ``name`` as a chart with key ``f"{name}_chart"``."""
    st.plotly_chart(figure(name, version, build), key=f"{name}_chart")


@st.cache_resource(show_spinner=False)
def _preloaded(modules: tuple[str, ...]) -> bool:
    jobs.preload(modules)
    jobs.sweep_sessions(jobs.JOBS, _alive, every_s=SWEEP_SECONDS, grace_s=SESSION_GRACE_SECONDS)
    if workers.process_mode():
        workers.POOL.warm()  # the first run need not wait for a worker process to import torch
    return True


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Once per server process: import ``modules`` in the background (see jobs.preload), start
    a training worker and the sweep that stops the jobs of closed tabs (jobs.sweep_sessions)."""
    _preloaded(modules)
