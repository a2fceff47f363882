"""The Study protocol: work made of several runs that a page starts, watches and stops.

A study is any object with two methods:

* ``run(stop) -> Iterator[StudyEvent]`` trains, yielding an event whenever one of its runs has
  something new. ``stop`` is a callable (or an object with ``is_set()``, as a
  ``threading.Event``) checked before every step: once it returns True the study returns soon
  after, keeping everything it finished; calling ``run`` again continues where it stopped.
* ``progress() -> (done, total)``: steps done and planned over all its runs, readable from
  another thread while ``run`` goes on.

A :class:`StudyEvent` says which run it concerns, carries that run's own event and the study's
progress. A study runs as the payload of a :class:`~dgs_core.jobs.Job` (:func:`study_job`):
``prepare`` builds it in the job's thread, ``work`` is ``study.run``, ``poll`` is
``study.progress``. :class:`~dgs_core.studies.trainers.TrainerStudy` implements it for studies
made of training runs (the large-batch question, the Annealing lab's runs).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dgs_core.jobs import Job

Stop = Callable[[], bool] | Any
"""A stop request: a callable returning True, an object with ``is_set()``, or None (never)."""


@dataclass(frozen=True)
class StudyEvent:
    """One run of a study has something new.

    Attributes:
        run: the key of the run it concerns (a batch size, a variant's name).
        event: that run's own event (a :class:`~dgs_core.training.results.ProgressEvent`).
        done, total: the study's progress (steps, over all its runs) when it was yielded.
    """

    run: Hashable
    event: Any
    done: int
    total: int


@runtime_checkable
class Study(Protocol):
    """Several runs behind one iterator of :class:`StudyEvent`; see the module docstring."""

    def run(self, stop: Stop = None) -> Iterator[StudyEvent]: ...

    def progress(self) -> tuple[int, int]: ...


def study_job(build: Callable[[], Study], *, name: str = "study", idle_stop_s: float | None = None) -> Job:
    """A :class:`~dgs_core.jobs.Job` that builds the study (``build``, in the job's thread), runs
    it (``study.run``) and reads its progress (``study.progress``).

    >>> from dgs_core.studies.trainers import TrainerStudy
    >>> from dgs_core.training.config import TrainConfig
    >>> config = TrainConfig(optimizers=["sgd"], steps=6, eval_every=3, diag_every=0,
    ...                      task_params={"n_samples": 100}, device="cpu")
    >>> job = study_job(lambda: TrainerStudy({"a": config, "b": config})).start()
    >>> job.join(60.0), job.state, job.progress
    (True, 'done', (12, 12))
    """
    return Job(
        build,
        lambda study, stop: study.run(stop),
        poll=lambda study: study.progress(),
        idle_stop_s=idle_stop_s,
        name=name,
    )
