"""Training in worker processes: the same numbers as in-process (metrics, records, checkpoints,
trajectory, weights and optimizer states), Stop within a step, Continue in a worker, a lost
worker, and a training job run through the pool."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest
import torch

from dgs_core import jobs, workers
from dgs_core.params import ParamError
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.workers import WorkerError, WorkerPool

CONFIG = TrainConfig(
    task="moons",
    task_params={"n_samples": 200},
    optimizers=["sgd", "dgs"],
    steps=120,
    eval_every=20,
    diag_every=10,
)


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(size=1)
    pool.warm()  # the worker imports torch while the first test trains in-process
    yield pool
    pool.close()


def _same(a: float, b: float) -> bool:
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def assert_same_run(reference: Trainer, mirror: Trainer) -> None:
    assert mirror.step == reference.step
    for label, expected in reference.results.items():
        got = mirror.results[label]
        assert (got.status, got.reason, got.last_evaluation) == (
            expected.status,
            expected.reason,
            expected.last_evaluation,
        )
        for name, column in expected.columns.items():
            assert len(got.columns[name]) == len(column)
            assert all(_same(x, y) for x, y in zip(column, got.columns[name], strict=True)), name
        assert [r.step for r in got.records] == [r.step for r in expected.records]
        for mine, theirs in zip(got.records, expected.records, strict=True):
            assert mine.elements.keys() == theirs.elements.keys()
            assert all(torch.equal(mine.elements[k], theirs.elements[k]) for k in theirs.elements)
        assert sorted(got.checkpoints) == sorted(expected.checkpoints)
        assert sorted(got.trajectory) == sorted(expected.trajectory)
        assert all(torch.equal(got.trajectory[s], w) for s, w in expected.trajectory.items())
    mine, theirs = mirror.state_dict()["lanes"], reference.state_dict()["lanes"]
    for label, lane in theirs.items():
        assert all(torch.equal(mine[label]["model"][k], v) for k, v in lane["model"].items())
        assert mine[label]["batches"] == lane["batches"] and mine[label]["samples"] == lane["samples"]
        assert mine[label]["optimizer"]["state"].keys() == lane["optimizer"]["state"].keys()


def test_a_run_in_a_worker_gives_the_in_process_numbers(pool: WorkerPool) -> None:
    reference = Trainer(CONFIG)
    expected = [(e.step, e.finished) for e in reference.run()]
    mirror = Trainer(CONFIG)
    events = list(pool.train(mirror, None))
    # evaluations' events, at most one per SEND_EVERY_S (the page reads the latest), and the end
    got = [(e.step, e.finished) for e in events]
    assert set(got[:-1]) <= set(expected[:-1]) and got[-1] == expected[-1]
    assert_same_run(reference, mirror)
    final = events[-1].lanes["dgs"]
    assert final.result is mirror.results["dgs"] and final.step == CONFIG.steps and final.spikes >= 0
    assert len(pool) == 1  # the worker stays for the next run


def test_a_paced_run_in_a_worker_lasts_about_its_pace_with_the_same_numbers(pool: WorkerPool) -> None:
    reference = Trainer(CONFIG)
    list(reference.run())
    mirror = Trainer(CONFIG)
    start = time.monotonic()
    list(pool.train(mirror, None, pace=1.5))
    assert 1.4 <= time.monotonic() - start < 10.0  # spread over ~1.5 s (the worker's messages aside)
    assert_same_run(reference, mirror)


def test_stop_ends_the_worker_run_within_a_step_and_continue_trains_on_in_a_worker(pool: WorkerPool) -> None:
    config = CONFIG.__class__.from_dict({**CONFIG.to_dict(), "steps": 1000, "eval_every": 10})
    stop = threading.Event()
    mirror = Trainer(config)
    run = pool.train(mirror, stop)
    first = next(run)  # an evaluation has arrived
    assert first.step % 10 == 0 and mirror.results["sgd"].steps_done >= first.step
    stop.set()
    asked = time.perf_counter()
    rest = list(run)
    assert time.perf_counter() - asked < 2.0
    assert rest[-1].finished and 10 <= mirror.step < config.steps
    assert {r.status for r in mirror.results.values()} == {"stopped"}
    assert not mirror.complete  # so the page offers Continue

    list(pool.train(mirror, None))  # Continue: the mirror's state goes to the worker
    reference = Trainer(config)
    list(reference.run())
    assert_same_run(reference, mirror)


def test_a_training_job_runs_in_a_worker_and_the_page_reads_its_trainer(
    pool: WorkerPool, monkeypatch
) -> None:
    monkeypatch.setenv(workers.MODE_ENV, "1")
    monkeypatch.setattr(workers, "POOL", pool)
    seen = []

    def work(trainer: Trainer, stop):
        for event in workers.train(trainer, stop):
            seen.append(trainer.results["sgd"].steps_done)  # the mirror has grown to each event's step
            yield event

    job = jobs.Job(lambda: Trainer(CONFIG), work, poll=lambda t: (t.step, t.config.steps)).start()
    assert job.join(120.0)
    assert job.state == jobs.DONE and job.progress == (CONFIG.steps, CONFIG.steps)
    assert seen[-1] == 120 and set(seen) <= {20, 40, 60, 80, 100, 120}
    assert job.payload.results["dgs"].status == "done" and len(job.payload.results["dgs"].records) == 13
    assert len(pool) == 1  # back in the pool, idle


def test_a_lost_worker_fails_the_run_which_cannot_be_continued(pool: WorkerPool) -> None:
    config = CONFIG.__class__.from_dict({**CONFIG.to_dict(), "steps": 20_000, "eval_every": 10})
    mirror = Trainer(config)
    run = pool.train(mirror, None)
    next(run)
    worker = run.gi_frame.f_locals["worker"]  # the busy worker: the one whose pipe the run reads
    os.kill(worker.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match="ended unexpectedly"):
        list(run)
    assert {r.status for r in mirror.results.values()} == {workers.LOST}
    assert mirror.complete and len(pool) == 0  # no Continue from weights that stayed in the worker
    assert mirror.results["sgd"].steps_done >= 10  # what was streamed is kept


def test_the_mode_comes_from_the_environment() -> None:
    assert workers.process_mode({}) and workers.process_mode({workers.MODE_ENV: "1"})
    assert not workers.process_mode({workers.MODE_ENV: "0"})
    with pytest.raises(ParamError, match="DGS_LAB_TRAIN_WORKERS"):
        workers.process_mode({workers.MODE_ENV: "yes"})
    with pytest.raises(ValueError, match="Invalid size: 0"):
        WorkerPool(size=0)


def test_a_stop_while_the_worker_starts_ends_the_run_at_once() -> None:
    """A cold worker spends seconds importing torch; a Stop meanwhile ends the run at once (the
    worker is ended) and leaves the trainer as it was, stopped and ready to continue."""
    cold = WorkerPool(size=1)
    stop = threading.Event()
    mirror = Trainer(CONFIG)
    run = cold.train(mirror, stop)
    stop.set()
    asked = time.perf_counter()
    events = list(run)
    assert time.perf_counter() - asked < 2.0
    assert events[-1].finished and mirror.step == 0 and len(cold) == 0
    assert {r.status for r in mirror.results.values()} == {"stopped"} and not mirror.complete
