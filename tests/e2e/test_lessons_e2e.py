"""A class from links alone, in a real browser: Home → lesson 1 → Next to its end → one step in
its lab → a copied step link reopened in a new browser context in presenter mode; then every
step of every lesson at 1280 × 720 in presenter mode, checked for exceptions, for hidden
controls and for figure text of at least 18 px (screenshots in $DGS_LAB_SHOTS_DIR, else a
temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dgs_core.lessons import load_lessons
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e

PROJECTOR = {"width": 1280, "height": 720}
LESSONS, _ = load_lessons()
SMALLEST_FIGURE_TEXT = """() => Math.min(...[...document.querySelectorAll('.js-plotly-plot .main-svg text')]
    .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
    .map(t => parseFloat(getComputedStyle(t).fontSize)))"""


def _step_shown(page, title: str) -> None:
    """Wait until the step titled ``title`` is drawn with its figure."""
    page.wait_for_selector(f"h3:has-text({title!r})", timeout=180_000)
    wait_for_app(page)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=180_000)
    wait_for_app(page)


def _visible(page, selector: str) -> int:
    return sum(1 for el in page.query_selector_all(selector) if el.is_visible())


def _check_presented(page, step) -> None:
    assert page.query_selector("[data-testid='stException']") is None
    for hidden in ("stSidebar", "stHeader", "stToolbar"):
        assert _visible(page, f"[data-testid='{hidden}']") == 0, hidden
    assert _visible(page, "[data-testid='stSelectbox']") == 0  # the lesson picker
    live = len(step.controls) if step.lab == "surface" else 0
    assert _visible(page, "[data-testid='stNumberInput']") == live
    assert page.evaluate(SMALLEST_FIGURE_TEXT) >= 18


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DGS_LAB_SHOTS_DIR") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_class_from_links_alone(server, browser, shots: Path) -> None:
    context = browser.new_context(viewport=PROJECTOR)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_text("Start lesson 1").click()
    first = LESSONS[0]
    _step_shown(page, first.steps[0].title)
    assert "/lessons" in page.url
    for step in first.steps[1:]:
        page.get_by_role("button", name="Next →").first.click()
        _step_shown(page, step.title)
        assert page.query_selector("[data-testid='stException']") is None
    query = parse_qs(urlsplit(page.url).query)
    assert query["lesson"] == [first.id] and query["step"] == [str(len(first.steps))]
    step_link = page.url

    with context.expect_page() as opened:
        page.get_by_role("link", name="Open in the Surface lab ↗").first.click()
    lab = opened.value
    lab.set_default_timeout(120_000)
    lab.wait_for_selector("h1:has-text('Surface lab')", timeout=180_000)
    wait_for_app(lab)
    lab_query = parse_qs(urlsplit(lab.url).query)
    lr = first.steps[-1].config["hparams"]["sgd"]["lr"]
    assert lab_query["opt"] == ["sgd"] and float(lab_query["sgd.lr"][0]) == lr
    assert "could not be used" not in lab.inner_text("body")
    context.close()

    fresh = browser.new_context(viewport=PROJECTOR)
    page = fresh.new_page()
    page.set_default_timeout(120_000)
    page.goto(step_link + "&present=1")
    _step_shown(page, first.steps[-1].title)
    _check_presented(page, first.steps[-1])
    assert parse_qs(urlsplit(page.url).query)["present"] == ["1"]
    page.screenshot(path=str(shots / "reopened-link-presenter.png"))
    fresh.close()


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.id)
def test_every_step_in_presenter_mode_at_1280x720(server, browser, shots: Path, lesson) -> None:
    context = browser.new_context(viewport=PROJECTOR)
    page = context.new_page()
    page.set_default_timeout(120_000)
    for index, step in enumerate(lesson.steps):
        page.goto(f"{server.url}/lessons?lesson={lesson.id}&step={index + 1}&present=1")
        _step_shown(page, step.title)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"{lesson.id}-step{index + 1}.png"))
        _check_presented(page, step)
    context.close()


def test_presenter_mode_on_a_lab_page(server, browser, shots: Path) -> None:
    context = browser.new_context(viewport=PROJECTOR)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{server.url}/surface?present=1")
    timeline = page.wait_for_selector(".st-key-surface_main .dgs-tl", timeout=180_000)
    drawn = "root => !!root.__timeline && root.__timeline.state().drawn.length > 0"
    page.wait_for_function(drawn, arg=timeline)
    wait_for_app(page)
    assert _visible(page, "[data-testid='stSidebar']") == 0
    assert _visible(page, "[data-testid='stHeader']") == 0
    assert timeline.evaluate("root => root.__timeline.state().font") >= 18  # the canvas's text
    assert parse_qs(urlsplit(page.url).query)["present"] == ["1"]
    page.screenshot(path=str(shots / "surface-lab-presenter.png"))
    page.get_by_role("button", name="Exit presenter mode").click()
    page.wait_for_selector("[data-testid='stSidebar']", state="visible")
    wait_for_app(page)
    assert "present" not in parse_qs(urlsplit(page.url).query)
    context.close()
