"""AppTest for the Lessons page: every shipped step draws its figure, Next walks the URL, a
malformed lesson is named while the others load, presenter mode hides the picker."""

from __future__ import annotations

import shutil

import pytest

from dgs_core.lessons import LESSONS_DIR, LESSONS_DIR_ENV, load_lessons
from tests.pages.conftest import app_at

PAGE = "app_pages/lessons.py"
SHIPPED, _ = load_lessons()
STEPS = [(lesson.id, i) for lesson in SHIPPED for i in range(len(lesson.steps))]


def _at(lesson: str, step: int, **query: str):
    at = app_at(PAGE)
    at.query_params.update({"lesson": lesson, "step": str(step + 1), **query})
    return at


@pytest.mark.parametrize(("lesson", "index"), STEPS, ids=[f"{x}-{i + 1}" for x, i in STEPS])
def test_every_step_draws_without_an_error(lesson: str, index: int) -> None:
    at = _at(lesson, index)
    at.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    step = next(x for x in SHIPPED if x.id == lesson).steps[index]
    assert step.title in at.subheader[0].value
    assert len(at.get("plotly_chart")) == 1


def test_next_walks_lesson_one_and_then_opens_lesson_two() -> None:
    first, second = SHIPPED[0], SHIPPED[1]
    at = _at(first.id, 0)
    at.run()
    for index in range(1, len(first.steps)):
        at.button(key="lesson_next_top").click().run()
        assert at.query_params["step"] == str(index + 1)
        assert first.steps[index].title in at.subheader[0].value
    at.button(key="lesson_next_top").click().run()
    assert at.query_params["lesson"] == second.id and at.query_params["step"] == "1"


def test_a_control_changes_the_figure_and_the_lab_link() -> None:
    at = _at(SHIPPED[0].id, 0)
    at.run()
    (lr,) = [n for n in at.number_input if n.key.endswith("SGD lr")]
    lr.set_value(0.002).run()
    assert not at.exception
    (link,) = at.get("link_button")
    assert "sgd.lr=0.002" in link.proto.url


def test_a_malformed_lesson_is_named_and_the_others_load(tmp_path, monkeypatch) -> None:
    shutil.copy(LESSONS_DIR / "01-learning-rate.md", tmp_path / "01-learning-rate.md")
    (tmp_path / "02-bad.md").write_text(
        '+++\ntitle = "Bad"\n+++\n\n+++ step\ntitle = "s"\nlab = "surface"\n'
        "[config]\nsteps = -1\n+++\nText.\n",
        encoding="utf-8",
    )
    monkeypatch.setenv(LESSONS_DIR_ENV, str(tmp_path))
    at = _at("01-learning-rate", 0)
    at.run()
    assert not at.exception
    (error,) = at.error
    assert "02-bad.md, step 1: Invalid steps: -1" in error.value
    assert at.selectbox(key="lesson_pick").options == ["1. Gradient descent and the learning rate"]


def test_presenter_mode_hides_the_picker_and_keeps_the_steps_controls() -> None:
    at = _at(SHIPPED[0].id, 0, present="1")
    at.run()
    assert not at.exception
    assert at.session_state["present"] is True
    assert not [s for s in at.selectbox if s.key == "lesson_pick"]
    assert [n.key for n in at.number_input] == ["lesson_01-learning-rate_0_sgd.lr_SGD lr"]
    at.button(key="present_exit").click().run()
    assert at.session_state["present"] is False and "present" not in at.query_params
