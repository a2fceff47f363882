"""Background jobs: states, stop (and its latency on a real trainer), idle stop, failures, the ETA,
the registry (isolation, caps, expiry), the redraw-rate meter and the live figure cache."""

from __future__ import annotations

import threading
import time

import pytest

from dgs_core import jobs
from dgs_core.jobs import Job, JobRegistry, LiveCache, RateMeter, StopSignal
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer


class FakeClock:
    """A settable monotonic clock (thread-safe enough: one float)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _until_stopped(_payload, stop):
    """Events 0, 1, 2, … until asked to stop."""
    i = 0
    while not stop.is_set():
        yield i
        i += 1
        time.sleep(0.001)


def test_job_runs_to_done_and_keeps_the_last_event_and_progress():
    job = Job(lambda: [10, 20, 30], lambda items, stop: iter(items), measure=lambda v: (v // 10, 3))
    assert job.state == jobs.PENDING and job.latest is None and job.fraction == 0.0
    job.start()
    assert job.join(5.0)
    assert (job.state, job.latest, job.events, job.progress, job.fraction) == ("done", 30, 3, (3, 3), 1.0)
    assert job.payload == [10, 20, 30]
    assert job.finished and not job.running and job.error is None and job.stop_reason is None
    assert job.eta_s is None  # ended
    with pytest.raises(ValueError, match="Invalid start: the job is already done"):
        job.start()


def test_stop_ends_the_work_promptly_and_says_why():
    job = Job(lambda: None, _until_stopped).start()
    while job.events < 5:
        time.sleep(0.001)
    started = time.perf_counter()
    assert job.stop(wait=1.0)
    assert time.perf_counter() - started < 0.5
    assert (job.state, job.stop_reason) == ("stopped", "user")
    assert job.latest == job.events - 1


def test_stop_before_start_and_during_prepare():
    never = Job(lambda: None, _until_stopped)
    assert never.stop() and never.state == "stopped" and never.join()

    gate = threading.Event()
    slow = Job(lambda: gate.wait(5.0), _until_stopped).start()
    assert slow.state == "preparing"
    assert not slow.stop(wait=0.05)  # still preparing
    gate.set()
    assert slow.join(5.0)
    assert (slow.state, slow.events) == ("stopped", 0)  # the work never started


def test_stop_latency_on_a_real_trainer_is_one_step():
    """The trainer checks the signal before every step: Stop ends a long run at once and keeps
    what was recorded (statuses "stopped")."""
    config = TrainConfig(
        task="moons",
        task_params={"n_samples": 200},
        optimizers=["sgd", "dgs"],
        steps=20_000,
        eval_every=10,
        diag_every=10,
        device="cpu",
    )
    job = Job(lambda: Trainer(config), lambda trainer, stop: trainer.run(stop)).start()
    while job.events < 3:
        time.sleep(0.005)
    started = time.perf_counter()
    assert job.stop(wait=1.0)
    latency = time.perf_counter() - started
    assert latency < 1.0, latency
    trainer = job.payload
    assert 30 <= trainer.step < 20_000
    assert {r.status for r in trainer.results.values()} == {"stopped"}
    assert job.latest.finished  # the trainer's last event after the stop


def test_idle_job_stops_itself():
    clock = FakeClock()
    job = Job(lambda: None, _until_stopped, idle_stop_s=10.0, clock=clock).start()
    while job.events < 3:
        time.sleep(0.001)
    clock.t += 9.0
    job.touch()  # watched: the idle time starts again
    clock.t += 9.0
    time.sleep(0.02)
    assert job.running
    clock.t += 2.0
    assert job.join(5.0)
    assert (job.state, job.stop_reason) == ("stopped", "idle")


def test_stop_signal_idle_check_and_reason():
    idle = [False]
    signal = StopSignal(lambda: idle[0])
    assert not signal.is_set() and signal.reason is None
    idle[0] = True
    assert signal() and signal.reason == "idle"
    signal.set("user")  # the first reason stays
    assert signal.reason == "idle"


def test_failures_are_kept_with_their_message():
    def bad_config():
        raise ValueError("Invalid steps: 0 (must be an integer in [1, 20000])")

    failed = Job(bad_config, _until_stopped).start()
    assert failed.join(5.0)
    assert (failed.state, failed.error) == ("failed", "Invalid steps: 0 (must be an integer in [1, 20000])")

    def crash(_payload, _stop):
        yield 1
        raise RuntimeError("boom")

    crashed = Job(lambda: None, crash).start()
    assert crashed.join(5.0)
    assert (crashed.state, crashed.error, crashed.latest) == ("failed", "RuntimeError: boom", 1)
    assert "raise RuntimeError" in crashed.traceback
    with pytest.raises(ValueError, match="Invalid idle_stop_s: 0"):
        Job(lambda: None, crash, idle_stop_s=0)


def test_eta_from_the_rate_since_the_first_event():
    clock, gate = FakeClock(0.0), threading.Event()

    def work(_payload, _stop):
        for done in (1, 2, 3, 4):
            clock.t += 2.0
            yield done
        gate.wait(5.0)

    job = Job(lambda: None, work, measure=lambda done: (done, 10), clock=clock).start()
    while job.events < 4:
        time.sleep(0.001)
    # first event: t=2, done=1; last: t=8, done=4 → 0.5 steps/s; 6 steps left → 12 s
    assert job.eta_s == pytest.approx(12.0)
    assert job.fraction == pytest.approx(0.4)
    assert job.elapsed_s == pytest.approx(8.0)
    gate.set()
    assert job.join(5.0) and job.eta_s is None


def test_registry_isolates_ids_caps_unfinished_jobs_and_expires_finished_ones():
    clock = FakeClock()
    registry = JobRegistry(max_jobs=2, keep_s=60.0, clock=clock)
    gate = threading.Event()
    first = registry.add(Job(lambda: None, lambda _p, _s: iter([gate.wait(5.0)])).start())
    second = registry.add(Job(lambda: None, _until_stopped).start())
    assert first.id != second.id and len(first.id) >= 16  # unguessable, one per session
    assert registry.get(first.id) is first and registry.get("someone-else") is None
    assert registry.get(None) is None
    with pytest.raises(ValueError, match=r"2 runs are in progress on this server \(the cap is max_jobs=2\)"):
        registry.add(Job(lambda: None, _until_stopped))
    gate.set()
    assert first.join(5.0)
    third = registry.add(Job(lambda: None, lambda _p, _s: iter(())))  # one slot is free again
    assert len(registry) == 2 and first.id not in registry  # the finished one made room
    clock.t += 61.0
    third.stop()
    registry.get(second.id)  # seen now
    registry._sweep()
    assert third.id not in registry and second.id in registry  # finished and unseen for > keep_s
    registry.discard(second.id, wait=5.0)
    assert second.id not in registry and second.state == "stopped"


def test_registry_get_touches_the_job():
    clock = FakeClock()
    registry = JobRegistry(clock=clock)
    job = registry.add(Job(lambda: None, _until_stopped, idle_stop_s=10.0, clock=clock).start())
    for _ in range(3):
        clock.t += 8.0
        assert registry.get(job.id) is job  # each look postpones the idle stop
        time.sleep(0.01)
        assert job.running
    job.stop(wait=5.0)
    with pytest.raises(ValueError, match="Invalid max_jobs: 0"):
        JobRegistry(max_jobs=0)


def test_rate_meter_counts_ticks_in_its_window():
    clock = FakeClock(0.0)
    meter = RateMeter(window_s=2.0, clock=clock)
    assert meter.rate == 0.0
    for _ in range(9):  # every 0.25 s for 2 s
        meter.tick()
        clock.t += 0.25
    assert meter.rate == pytest.approx(4.0)
    clock.t += 5.0
    meter.tick()  # the old ticks fall out of the window
    assert meter.rate == 0.0
    with pytest.raises(ValueError, match="Invalid window_s"):
        RateMeter(window_s=0)


def test_live_cache_rebuilds_on_change_when_settled_and_takes_turns_while_live():
    clock = FakeClock(0.0)
    cache: LiveCache[str] = LiveCache(per_tick=1, min_age_s=0.5, clock=clock)
    built: list[str] = []

    def draw(version: int, budget: int | None = None) -> list[str]:
        cache.begin(live=True, budget=budget)
        values = []
        for name in ("loss", "b", "a", "c"):
            build = lambda n=name: built.append(n) or f"{n}{version}"  # noqa: E731
            values.append(cache.get(name, version, build, every_tick=name == "loss"))
        clock.t += 0.2
        return values

    assert draw(0) == ["loss0", "b0", "a0", "c0"]  # first sight, even while live: everything
    built.clear()
    ticks = [draw(v) for v in range(1, 13)]
    assert built.count("loss") == 12  # every tick
    assert all(built.count(n) >= 2 for n in "abc")  # each in turn …
    assert len(built) - 12 <= 12  # … at most one of them per tick
    assert all(values[0] == f"loss{v}" for v, values in enumerate(ticks, start=1))
    # once old enough (0.5 s: tick 3), the least recently refreshed first; ties in request order
    order = [n for n in built if n != "loss"]
    assert order[:3] == ["b", "a", "c"]
    assert ticks[2][1:] == ["b3", "a0", "c0"]

    clock.t += 5.0
    assert draw(50, budget=0)[1:] == ticks[-1][1:]  # no turns this tick: kept as they were
    cache.begin(live=False)  # settled: a changed version rebuilds at once, an equal one never
    built.clear()
    assert [cache.get(n, 99, lambda n=n: built.append(n) or f"{n}99") for n in "abc"] == ["a99", "b99", "c99"]
    assert cache.get("a", 99, lambda: built.append("a") or "again") == "a99"
    assert built == ["a", "b", "c"] and cache.rebuilt == ["a", "b", "c"]
    cache.clear(["a"])
    assert cache.get("a", 99, lambda: "fresh") == "fresh"
    with pytest.raises(ValueError, match="Invalid per_tick"):
        LiveCache(per_tick=-1)


def test_preload_imports_in_the_background():
    thread = jobs.preload(["json", "no_such_module_dgs"])
    thread.join(5.0)
    assert not thread.is_alive()


def test_poll_reads_the_payloads_progress_between_events():
    class Counter:
        step = 0

    gate = threading.Event()

    def work(payload, _stop):
        yield "start"
        payload.step = 7  # progress without an event
        gate.wait(5.0)

    job = Job(Counter, work, poll=lambda c: (c.step, 10)).start()
    while job.events < 1 or job.payload.step != 7:
        time.sleep(0.001)
    assert job.progress == (7, 10) and job.fraction == pytest.approx(0.7)
    gate.set()
    assert job.join(5.0)


def test_registry_caps_each_sessions_unfinished_jobs_but_not_those_stopping():
    registry = JobRegistry(max_jobs=8, max_session_jobs=2, keep_jobs=16)
    mine = [registry.add(Job(lambda: None, _until_stopped).start(), owner="a") for _ in range(2)]
    with pytest.raises(ValueError, match=r"this browser session has 2 runs in progress .*max_session_jobs=2"):
        registry.add(Job(lambda: None, _until_stopped), owner="a")
    theirs = registry.add(Job(lambda: None, _until_stopped).start(), owner="b")  # another session may
    mine[0].signal.set()  # asked to stop: it no longer holds the session's slot
    third = registry.add(Job(lambda: None, _until_stopped).start(), owner="a")
    for job in (*mine, theirs, third):
        job.stop(wait=5.0)
    with pytest.raises(ValueError, match="Invalid keep_jobs: 4"):
        JobRegistry(max_jobs=8, keep_jobs=4)


def test_the_servers_registry_takes_its_caps_from_the_limits():
    from dgs_core.jobs import JOBS
    from dgs_core.limits import server_limits

    limits = server_limits()
    assert (JOBS.max_jobs, JOBS.max_session_jobs) == (limits.max_jobs, limits.max_session_jobs)


def test_jobs_of_a_session_the_server_dropped_stop_after_the_grace():
    clock = FakeClock()
    registry = JobRegistry(max_jobs=8, max_session_jobs=2, clock=clock)
    live = {"a", "b", "c-old"}
    mine = registry.add(Job(lambda: None, _until_stopped).start(), owner="a")
    theirs = registry.add(Job(lambda: None, _until_stopped).start(), owner="b")
    reloaded = registry.add(Job(lambda: None, _until_stopped).start(), owner="c-old")
    assert registry.stop_orphans(live.__contains__, grace_s=30.0) == []
    live -= {"a", "c-old"}  # a's tab closed; c's tab reloaded (a new session, the id in its URL)
    assert registry.stop_orphans(live.__contains__, grace_s=30.0) == []  # within the grace
    live.add("c-new")
    assert registry.get(reloaded.id, owner="c-new") is reloaded  # the new session takes it over
    clock.t += 31.0
    assert registry.stop_orphans(live.__contains__, grace_s=30.0) == [mine.id]
    assert mine.join(5.0) and (mine.state, mine.stop_reason) == ("stopped", "session")
    assert theirs.running and reloaded.running
    live.add("a")  # a session seen alive again is not stopped later
    clock.t += 100.0
    assert registry.stop_orphans(live.__contains__, grace_s=30.0) == []
    for job in (theirs, reloaded):
        job.stop(wait=5.0)


def test_the_session_sweep_runs_in_the_background():
    registry = JobRegistry()
    job = registry.add(Job(lambda: None, _until_stopped).start(), owner="gone")
    jobs.sweep_sessions(registry, lambda _session: False, every_s=0.01, grace_s=0.0)
    assert job.join(5.0) and job.stop_reason == "session"


def test_live_pages_share_the_server_s_redraws():
    registry = JobRegistry(max_jobs=4)
    assert registry.shared_period(0.15) == 0.15  # nothing live: the page's own period
    release = threading.Event()

    def work(payload, stop):
        yield (1, 4)
        release.wait(10.0)

    running = [registry.add(Job(lambda: None, work, measure=lambda e: e).start()) for _ in range(3)]
    finished = registry.add(Job(lambda: None, lambda payload, stop: iter([(1, 1)])).start())
    assert finished.join(10.0) and registry.unfinished() == 3
    assert registry.shared_period(0.15) == pytest.approx(0.45)  # three live runs: a third as often each
    release.set()
    assert all(job.join(10.0) for job in running)
    assert registry.shared_period(0.15) == 0.15
