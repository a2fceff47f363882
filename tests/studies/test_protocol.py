"""The Study protocol: every study runs as a jobs.Job payload, stops soon after a request keeping
what it finished, and continues; the studies' docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

from dgs_core.studies import Study, StudyEvent, TrainerStudy, study_job
from dgs_core.studies.annealing import TwoPhaseSettings, TwoPhaseStudy
from dgs_core.studies.large_batch import LargeBatchStudy, large_batch_base
from dgs_core.training.config import TrainConfig

SMALL = {"n_samples": 200, "label_noise": 0.3, "hq_fraction": 0.3}


def config(**changes) -> TrainConfig:
    base = {
        "task_params": SMALL,
        "model": {"size": "tiny"},
        "optimizers": ["sgd"],
        "steps": 40,
        "eval_every": 5,
        "diag_every": 0,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def test_every_study_implements_the_protocol():
    base = large_batch_base("moons", task_params=SMALL, device="cpu", diag_every=0)
    settings = TwoPhaseSettings(task_params=SMALL, main_steps=10, anneal_steps=5, model_size="tiny")
    for study in (
        TrainerStudy({"a": config()}),
        LargeBatchStudy(base, small_batch=16, large_batch=64, epochs=1),
        TwoPhaseStudy(settings),
    ):
        assert isinstance(study, Study)
        done, total = study.progress()
        assert done == 0 and total == sum(c.steps for c in study.configs.values())


def test_events_say_which_run_and_the_progress():
    study = TrainerStudy({"a": config(steps=10), "b": config(steps=20, seed=3)})
    events = list(study.run())
    assert all(isinstance(e, StudyEvent) for e in events)
    assert [(e.run, e.event.step) for e in events[:3]] == [("a", 5), ("b", 5), ("a", 10)]
    assert [e.done for e in events] == sorted(e.done for e in events)  # progress never goes back
    assert events[-1].done == events[-1].total == 30
    assert {e.run for e in events if e.event.finished} == {"a", "b"}  # each run ends with its last event


def test_a_study_job_stops_soon_and_keeps_what_it_finished():
    job = study_job(lambda: TrainerStudy({"a": config(steps=20_000, max_steps=20_000)}), name="t")
    job.start()
    while job.events < 2:
        job.join(0.01)
    assert job.stop(wait=10.0) and job.state == "stopped"
    study = job.payload
    done, total = job.progress
    assert 0 < done < total == 20_000 and done == study.trainers["a"].step
    assert study.all_results("a")["sgd"].status == "stopped"
    again = study_job(lambda: study).start()  # a new job continues the same study
    while study.trainers["a"].step <= done + 5:
        again.join(0.01)
    again.stop(wait=10.0)
    assert study.trainers["a"].step > done


@pytest.mark.parametrize(
    "module",
    ["protocol", "trainers", "large_batch", "annealing", "annealing_lab"],
    ids=lambda m: f"dgs_core.studies.{m}",
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(f"dgs_core.studies.{module}"))
    assert result.attempted and not result.failed
