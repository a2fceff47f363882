"""Lessons: guided steps through the labs, for a class or on your own.

A lesson is a file in ``assets/lessons/`` (:mod:`dgs_core.lessons`); a malformed one is named
by file, step and field at the top and the others still load. The lesson and the step are in
the URL (``?lesson=01-learning-rate&step=2``), so a copied link reopens exactly that step
(``&present=1`` in presenter mode). Each step: its prose with the math, one live figure drawn
by its lab's builders (:mod:`app_pages.parts.lesson_step`), a "try this" with the one or two
controls it names, and "open in the lab" with the step's state.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

from app_pages.parts.lesson_step import show_figure, step_controls, step_figure
from app_pages.ui import presenter_query, presenting
from dgs_core.lessons import Lesson, lab_link, lessons_dir, load_lessons

LAB_NAMES = {"surface": "Surface lab", "training": "Training lab", "annealing": "Annealing lab"}


@st.cache_resource(max_entries=4, show_spinner=False)
def _load(directory: str, versions: tuple[tuple[str, float], ...]) -> tuple[list[Lesson], list[str]]:
    """Every lesson of ``directory``, parsed once per version of its files."""
    return load_lessons(Path(directory))


def lessons_in(directory: Path) -> tuple[list[Lesson], list[str]]:
    versions = tuple((p.name, p.stat().st_mtime) for p in sorted(directory.glob("*.md")))
    return _load(str(directory), versions)


def position(lessons: list[Lesson]) -> tuple[Lesson, int]:
    """The lesson and step (0-based) the URL names; a name or number it cannot use is reported
    and the first lesson or step shown instead."""
    by_id = {lesson.id: lesson for lesson in lessons}
    wanted = st.query_params.get("lesson", lessons[0].id)
    lesson = by_id.get(wanted) or next((x for x in lessons if x.id.split("-")[0] == wanted.zfill(2)), None)
    if lesson is None:
        st.warning(f"No lesson {wanted!r} here; showing the first one.")
        lesson = lessons[0]
    text = st.query_params.get("step", "1")
    try:
        index = int(text) - 1
    except ValueError:
        index = -1
    if not 0 <= index < len(lesson.steps):
        steps = len(lesson.steps)
        st.warning(f"Lesson {lesson.title!r} has steps 1 to {steps}, not {text!r}; showing step 1.")
        index = 0
    go_to(lesson.id, index)
    return lesson, index


def go_to(lesson_id: str, index: int) -> None:
    """Put the lesson and step into the URL (the page draws what the URL says)."""
    if st.query_params.get("lesson") != lesson_id or st.query_params.get("step") != str(index + 1):
        st.query_params["lesson"] = lesson_id
        st.query_params["step"] = str(index + 1)


def _picked() -> None:
    go_to(st.session_state.lesson_pick, 0)


def picker(lessons: list[Lesson], lesson: Lesson) -> None:
    """The lesson picker (hidden in presenter mode: the link names the lesson)."""
    st.session_state.lesson_pick = lesson.id
    titles = {x.id: f"{int(x.id[:2]) if x.id[:2].isdigit() else ''}. {x.title}" for x in lessons}
    st.selectbox("Lesson", list(titles), format_func=titles.get, key="lesson_pick", on_change=_picked)


def navigation(lessons: list[Lesson], lesson: Lesson, index: int, where: str) -> None:
    """Prev / step k of n / Next; Next on a lesson's last step opens the next lesson."""
    at = lessons.index(lesson)
    prev, middle, nxt = st.columns([1, 3, 1], vertical_alignment="center")
    prev.button(
        "← Prev",
        key=f"lesson_prev_{where}",
        disabled=index == 0,
        on_click=go_to,
        args=(lesson.id, index - 1),
        width="stretch",
    )
    middle.progress((index + 1) / len(lesson.steps), text=f"Step {index + 1} of {len(lesson.steps)}")
    if index + 1 < len(lesson.steps):
        nxt.button(
            "Next →", key=f"lesson_next_{where}", on_click=go_to, args=(lesson.id, index + 1), width="stretch"
        )
    elif at + 1 < len(lessons):
        nxt.button(
            "Next lesson →",
            key=f"lesson_next_{where}",
            on_click=go_to,
            args=(lessons[at + 1].id, 0),
            width="stretch",
            help=lessons[at + 1].title,
        )
    else:
        nxt.button("Next →", key=f"lesson_next_{where}", disabled=True, width="stretch")


# ---------------------------------------------------------------------------------------------

directory = lessons_dir()
shipped, errors = lessons_in(directory)
for error in errors:
    st.error(f"This lesson could not be loaded (the others are fine): {error}")
if not shipped:
    st.info(f"No lessons in {directory}.")
    st.stop()

lesson, index = position(shipped)
step = lesson.steps[index]
if not presenting():
    st.title("Lessons")
    picker(shipped, lesson)
    if lesson.summary:
        st.caption(lesson.summary)
st.subheader(f"{lesson.title} · {step.title}")
navigation(shipped, lesson, index, "top")

key = f"lesson_{lesson.id}_{index}"
prose, figure_column = st.columns([2, 3], gap="large")
with prose:
    st.markdown(step.body)
    if step.try_this or step.controls:
        with st.container(border=True, key="lesson_try"):
            st.markdown(f"**Try this.** {step.try_this}")
            config = step_controls(step, key)
    else:
        config = step.lab_config()
    link = lab_link(step, config)
    query = urlencode({**link.query, **presenter_query()})
    st.link_button(
        f"Open in the {LAB_NAMES[link.page]} ↗",
        f"{link.page}?{query}",
        help="opens the lab in a new tab with this step's settings",
    )
with figure_column:
    show_figure(step_figure(step, config, directory), key=f"{key}_figure")
