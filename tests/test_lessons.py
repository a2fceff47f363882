"""Lessons are data: every shipped lesson loads, every claim its prose makes holds at the settings
it names, its prepared runs were made by its current configurations, and a malformed lesson
file is reported by file, step and field while the others still load."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from dgs_core import lessons
from dgs_core.lessons import LESSONS_DIR, PREPARED, LessonError, check_step, load_lessons, parse_lesson
from dgs_core.runs.read import read_bundle

SHIPPED, ERRORS = load_lessons()
STEPS = [step for lesson in SHIPPED for step in lesson.steps]


def test_the_shipped_lessons_load() -> None:
    assert ERRORS == []
    assert len(SHIPPED) >= 6 and all(len(lesson.steps) >= 2 for lesson in SHIPPED)
    assert [lesson.id[:2] for lesson in SHIPPED] == [f"{k:02d}" for k in range(1, len(SHIPPED) + 1)]


@pytest.mark.parametrize("step", [s for s in STEPS if s.checks], ids=lambda s: f"{s.lesson}-{s.index + 1}")
def test_every_claim_of_a_step_holds_at_its_settings(step) -> None:
    assert check_step(step) == []


@pytest.mark.parametrize("step", [s for s in STEPS if s.prepared], ids=lambda s: f"{s.lesson}-{s.index + 1}")
def test_a_prepared_run_was_made_by_the_steps_current_config(step) -> None:
    bundle = read_bundle(lessons.prepared_path(step))
    assert json.loads(json.dumps(bundle.config)) == json.loads(json.dumps(step.lab_config().to_dict()))


def test_no_prepared_run_is_left_over() -> None:
    used = {step.prepared_name for step in STEPS if step.prepared}
    assert {p.name for p in (LESSONS_DIR / PREPARED).glob("*.zip")} == used


def test_a_check_that_does_not_hold_is_reported() -> None:
    step = next(s for s in STEPS if s.lesson.startswith("01") and s.checks)
    wrong = lessons.Check(optimizer="sgd", metric="final_gap", below=0.0)
    failures = lessons.check_values(step, {"sgd": {"final_gap": 0.5}}) + wrong.failures(
        {"sgd": {"final_gap": 0.5}}
    )
    assert "sgd final_gap = 0.5, not below 0" in failures


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\nlab = "nowhere"\n+++\n',
            "bad.md, step 1: Invalid lab",
        ),
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\nlab = "surface"\n[config]\nsteps = -1\n+++\n',
            "bad.md, step 1: Invalid steps: -1",
        ),
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\nlab = "surface"\ncontrols = ["sgd.nope"]\n+++\n',
            "bad.md, step 1: Invalid controls: 'sgd.nope'",
        ),
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\nlab = "surface"\nfigure = "pie"\n+++\n',
            "bad.md, step 1: Invalid figure: 'pie'",
        ),
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\nlab = "surface"\nsurprise = 1\n+++\n',
            "bad.md, step 1: Invalid step key: 'surprise'",
        ),
        (
            '+++\ntitle = "x"\n+++\n+++ step\ntitle = "s"\n',
            "bad.md: a header opened on line 4 is never closed",
        ),
        ("+++\ntitle = \n+++\n", "bad.md: the header is not valid TOML"),
        ('+++\ntitle = "x"\n+++\n', "bad.md: a lesson has 1 to"),
    ],
)
def test_a_malformed_lesson_is_named_by_file_step_and_field_and_the_others_load(
    text: str, where: str, tmp_path: Path
) -> None:
    shutil.copy(LESSONS_DIR / "01-learning-rate.md", tmp_path / "01-learning-rate.md")
    (tmp_path / "bad.md").write_text(text, encoding="utf-8")
    with pytest.raises(LessonError):
        parse_lesson(tmp_path / "bad.md")
    loaded, errors = load_lessons(tmp_path)
    assert [lesson.id for lesson in loaded] == ["01-learning-rate"]
    assert len(errors) == 1 and errors[0].startswith(where), errors


# ---------------------------------------------------------------------------------------------
# A step's controls and its link into the lab; Home's race sentence
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step", [s for s in STEPS if s.lab == "surface"], ids=lambda s: f"{s.lesson}-{s.index + 1}"
)
def test_a_surface_steps_link_carries_its_exact_state(step) -> None:
    from dgs_core.surfaces.config import parse_query

    link = lessons.lab_link(step)
    config, notices = parse_query(link.query)
    assert link.page == "surface" and notices == []
    assert replace(config, view=step.lab_config().view) == step.lab_config()


def test_the_controls_change_the_linked_state_and_a_bad_value_names_its_field() -> None:
    step = next(s for s in STEPS if s.controls == ("sgd.lr",))
    assert lessons.control_start(step, step.lab_config(), "sgd.lr") == step.config["hparams"]["sgd"]["lr"]
    config = lessons.with_controls(step, {"sgd.lr": 0.002})
    assert lessons.lab_link(step, config).query["sgd.lr"] == "0.002"
    with pytest.raises(ValueError, match="lr"):
        lessons.with_controls(step, {"sgd.lr": -1.0})


def test_a_training_steps_link_carries_its_exact_configuration() -> None:
    from dgs_core.training.config import TrainConfig

    for step in [s for s in STEPS if s.lab == "training"]:
        link = lessons.lab_link(step)
        assert link.page == "training"
        assert TrainConfig.from_link(link.query["cfg"]) == step.lab_config()


def test_a_study_step_opens_the_fair_comparison_with_its_settings() -> None:
    from dgs_core.studies.sweep import StudySpec

    steps = [s for s in STEPS if s.lab == "study"]
    assert steps
    for step in steps:
        link = lessons.lab_link(step)
        assert link.page == "training"
        assert link.query["train_mode"] == "fair"
        assert StudySpec.from_link(link.query["study"]) == step.lab_config()


def test_an_annealing_steps_link_opens_its_tab_with_its_exact_settings() -> None:
    from dgs_core.studies.annealing import TwoPhaseSettings
    from dgs_core.studies.annealing_lab import AnnealingLabConfig

    steps = [s for s in STEPS if s.lab == "annealing"]
    assert {s.figure for s in steps} >= {"schedules", "two_phase"}
    for step in steps:
        link = lessons.lab_link(step)
        assert link.page == "annealing" and list(link.query) == ["anneal"]
        opened = AnnealingLabConfig.from_link(link.query["anneal"])
        named = step.lab_config()
        if step.figure == "two_phase":
            assert opened.tab == "two_phase" and opened.two_phase == named
            assert isinstance(named, TwoPhaseSettings)
        else:
            curves, run_steps = named
            assert opened.tab == "schedules" and opened.run_steps == run_steps == 1000
            assert opened.curves == tuple(curves)  # names, parameters and warmups, in order
            assert [c.warmup_before for c in opened.curves] == [0, 0, 100]


def test_homes_race_sentence_is_what_the_runs_show() -> None:
    from dgs_core.surfaces.config import SurfaceConfig
    from dgs_core.viz.lessons import race_caption

    runs = SurfaceConfig(surface="rosenbrock", optimizers=("sgd", "adam", "adan")).simulate()
    gaps = {name: float(run.metrics()["final_gap"][0]) for name, run in runs.items()}
    assert all(int(run.metrics()["steps_to_tolerance"][0]) < 0 for run in runs.values())
    order = sorted(gaps, key=gaps.get)
    text = race_caption(runs)
    labels = {"sgd": "SGD", "adam": "Adam", "adan": "Adan"}
    positions = [text.index(f"{labels[name]} (") for name in order]
    assert positions == sorted(positions), text
    assert f"{gaps[order[0]]:.2g}" in text
