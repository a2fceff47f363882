"""The long-work pattern's status line (app_pages/live.py); starting, re-attaching, stopping and the
fragments are exercised through the labs (test_training_page.py, test_annealing_page.py)."""

from __future__ import annotations

import threading

import pytest

from app_pages import live
from dgs_core import jobs

LONG = live.Slot("t", building="the models")
SHORT = live.Slot("s", short=True)


def job_at(state: str, reason: str = "idle") -> jobs.Job:
    """A job that has measured (1, 4) and is then ``state`` ("running", "done" or "stopped")."""
    gate, measured = threading.Event(), threading.Event()

    def work(payload, stop):
        yield (1, 4)
        measured.set()
        gate.wait(10.0)

    job = jobs.Job(lambda: None, work, measure=lambda event: event, clock=lambda: 100.0).start()
    assert measured.wait(10.0)
    if state == "stopped":
        job.signal.set(reason)
    if state != "running":
        gate.set()
        assert job.join(10.0)
    assert job.state == state
    return job


@pytest.mark.parametrize(
    ("state", "slot", "text", "reason"),
    [
        ("running", LONG, "running · step 1 / 4 · elapsed 0.0 s · ETA – · 4.5 redraws/s", None),
        ("done", LONG, "done · step 1 / 4 · elapsed 0.0 s", None),
        ("stopped", LONG, "stopped (nobody watched it for 180 s) · step 1 / 4 · elapsed 0.0 s", "idle"),
        ("stopped", LONG, "stopped (its browser tab was closed) · step 1 / 4 · elapsed 0.0 s", "session"),
        ("running", SHORT, "running: 1 / 4 steps · ETA –", None),
        ("done", SHORT, "finished: 1 / 4 steps", None),
    ],
)
def test_status_line(state, slot, text, reason):
    job = job_at(state, reason or "idle")
    try:
        assert live.status_line(slot, job, rate=4.5) == text
    finally:
        job.stop(5.0)


def test_status_line_while_preparing():
    ready = threading.Event()
    job = jobs.Job(lambda: ready.wait(10.0), lambda payload, stop: iter(())).start()
    try:
        assert live.status_line(LONG, job) == "preparing: building the models…"
    finally:
        ready.set()
        job.join(10.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "–"), (float("nan"), "–"), (4.25, "4.2 s"), (42.0, "42 s"), (187.0, "3:07 min")],
)
def test_duration(seconds, text):
    assert live.duration(seconds) == text


def test_slot_keys_are_prefixed_by_page():
    assert live.Slot("train").key == "train_job" and live.Slot("anneal_tp").key == "anneal_tp_job"
