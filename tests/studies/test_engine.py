"""The Ray engine without a cluster: fewer worker slots when memory is short, and a failed
embedded start leaves nothing running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgs_core.studies import engine

GB = 1 << 30
SLEEPER = "import time; time.sleep(120)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(120)"
)


@pytest.mark.parametrize(
    ("cores", "memory", "workers"),
    [
        (2, 16 * GB, 2),  # plenty: every core
        (2, 2 * GB, 2),  # the 2-core, 4 GB laptop with 2 GB free: Ray (0.6 GB) + 2 trials fit
        (2, 3 * GB // 2, 1),  # 1.5 GB free: Ray's own share leaves room for one trial process
        (2, 700 << 20, 1),  # short: one trial at a time
        (2, 100 << 20, 1),  # at least one
        (16, 3 * GB, 4),  # memory, not cores, decides: (3 GB − 0.625 GB) / 0.5 GB
    ],
)
def test_workers_follow_the_cores_and_the_free_memory(monkeypatch, cores, memory, workers) -> None:
    monkeypatch.setattr(engine.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(engine, "available_memory", lambda: memory)
    assert engine.local_workers() == workers


def test_available_memory_is_a_plausible_number_of_bytes() -> None:
    assert 64 << 20 < engine.available_memory() < 1 << 50


def _child(tag: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLEEPER, tag])


def test_only_this_process_s_children_with_the_marker_are_stopped(tmp_path: Path) -> None:
    marked, other = _child(str(tmp_path / "ray-like")), _child("unrelated")
    try:
        assert engine.stop_left_behind(str(tmp_path)) == 1
        assert marked.wait(timeout=20) != 0
        assert other.poll() is None
    finally:
        for proc in (marked, other):
            proc.kill()
            proc.wait()


def test_a_child_that_outlives_its_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM, str(tmp_path / "ray-like")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stubborn.stdout.readline() == "ready\n"  # SIGTERM ignored from here on
        started = time.monotonic()
        assert engine.stop_left_behind(str(tmp_path), grace_s=1.0) == 1
        assert stubborn.wait(timeout=20) == -signal.SIGKILL
        assert time.monotonic() - started >= 1.0  # after its grace
    finally:
        stubborn.kill()
        stubborn.wait()


def test_an_embedded_start_that_times_out_is_tried_again_and_stops_what_it_started(monkeypatch) -> None:
    """Ray raises a bare Exception when its raylet does not register within 30 s (a loaded
    machine); the processes it had started must not stay behind."""
    import ray

    started: list[subprocess.Popen] = []

    def slow_init(**kwargs):
        started.append(_child(str(Path(ray.__file__).parent / "core" / "raylet")))
        raise Exception("The current node timed out during startup.")  # Ray's own type

    monkeypatch.setattr(ray, "init", slow_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(engine, "_current", None)
    monkeypatch.delenv(engine.ADDRESS_ENV, raising=False)
    try:
        with pytest.raises(RuntimeError, match=r"embedded Ray did not start .*: The current node timed out"):
            engine.connect()
        assert len(started) == engine.START_ATTEMPTS  # tried again, each time stopping what it started
        assert all(proc.wait(timeout=20) != 0 for proc in started)
        assert engine.current() is None
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_the_embedded_ray_outlives_the_thread_that_started_it(monkeypatch) -> None:
    """A study's thread starts Ray on a page server; Ray must keep running when that thread
    ends (Linux kills a process whose parent *thread* exits, when asked to, as Ray asks)."""
    import threading

    import ray

    monkeypatch.delenv(engine.ADDRESS_ENV, raising=False)
    monkeypatch.setattr(engine, "RunnerPool", lambda workers: f"{workers} runners")  # not this test's
    engine.shutdown()
    thread = threading.Thread(target=engine.connect)
    thread.start()
    thread.join()
    try:
        # a process killed and not yet waited for is a zombie without a command line
        started = engine.children_with("gcs_server") + engine.children_with("raylet")
        assert len(started) == 2, "Ray's GCS or raylet died with the thread that started it"
        time.sleep(2)  # Ray's processes were killed at once, before: give the signal time
        alive = [_state(pid) in ("R", "S", "D") for pid in started]
        assert alive == [True, True], "Ray's GCS or raylet died with the thread that started it"
        assert engine.current() is not None and engine.current().address == engine.ADDRESS_LOCAL
        assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
        assert engine.runner_pool() == f"{engine.current().workers} runners"  # started with Ray
    finally:
        engine.shutdown()


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, D, Z…), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
