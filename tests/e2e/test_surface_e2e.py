"""Surface lab in a real browser: open /surface on a fresh server, click the contour, see every panel
and curve follow, move and play the timeline, then reopen the copied URL and get the same picture."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest

from dgs_core.surfaces.config import DEFAULT_OPTIMIZERS
from dgs_core.viz.surface import timeline_steps
from tests.e2e.conftest import StreamlitServer, wait_for_app

pytestmark = pytest.mark.e2e

APP = "\n".join(line for line in open("app.py").read().splitlines() if not line.lstrip().startswith("#"))
MAIN = ".st-key-surface_main .js-plotly-plot"
PANELS = len(DEFAULT_OPTIMIZERS)
# A point of the panels' click grid (31 × 31 over Rosenbrock's [−2, 2] × [−1, 3]) away from the
# default paths: grid column 9, row 21.
CLICK = (-2 + 9 * 4 / 30, -1 + 21 * 4 / 30)  # (−0.8, 1.8)

STATE = """gd => {
    const lines = gd._fullData.filter(t => t.mode === 'lines+markers' && t.showlegend);
    return {
        starts: gd._fullData.filter(t => t.name === 'start').map(t => [t.x[0], t.y[0]]),
        lengths: lines.map(t => t.x.length),
        names: lines.map(t => t.name),
    };
}"""


def _graph(page, selector: str, expression: str):
    handle = page.wait_for_selector(selector, state="attached")
    return handle.evaluate(expression)


def _loss_curves(page) -> list[list[float]]:
    expression = "gd => gd._fullData.filter(t => t.mode === 'lines').map(t => Array.from(t.y))"
    return _graph(page, ".st-key-surface_loss .js-plotly-plot", expression)


def _slider_value(page) -> int:
    return int(page.locator(".st-key-surface_step input[type='range']").input_value())


def _wait_for_starts(page, point: tuple[float, float]) -> None:
    page.wait_for_function(
        """([selector, x, y, n]) => {
            const gd = document.querySelector(selector);
            if (!gd || !gd._fullData) return false;
            const s = gd._fullData.filter(t => t.name === 'start');
            return s.length === n && s.every(t => Math.abs(t.x[0] - x) < 1e-6 && Math.abs(t.y[0] - y) < 1e-6);
        }""",
        arg=[MAIN, point[0], point[1], PANELS],
        timeout=120_000,
    )


def _wait_for_step(page, step: int) -> None:
    page.wait_for_function(
        """([selector, step]) => {
            const gd = document.querySelector(selector);
            if (!gd || !gd._fullData) return false;
            const lines = gd._fullData.filter(t => t.mode === 'lines+markers' && t.showlegend);
            return lines.length > 0 && lines.every(t => t.x.length <= step + 1)
                && lines.some(t => t.x.length === step + 1);
        }""",
        arg=[MAIN, step],
        timeout=120_000,
    )


def _dismiss_dialog(page) -> None:
    if page.query_selector("[role='dialog']"):
        page.keyboard.press("Escape")
        page.wait_for_selector("[role='dialog']", state="detached")


def test_click_timeline_and_copied_link(server, page, browser, tmp_path) -> None:
    page.goto(f"{server.url}/surface")
    wait_for_app(page)
    page.wait_for_selector(MAIN, timeout=180_000)
    # the full app, not a bare page: navigation and the app's page config
    labels = page.wait_for_selector("[data-testid='stSidebarNav']").inner_text()
    for title in re.findall(r'st\.Page\([^)]*title="([^"]+)"', APP):
        assert title in labels
    assert "DGS Lab" in page.title()
    _dismiss_dialog(page)
    before = _graph(page, MAIN, STATE)
    assert before["starts"] == [[-2, 2]] * PANELS and len(before["names"]) == PANELS
    losses_before = _loss_curves(page)
    page.screenshot(path=str(tmp_path / "surface_default.png"))

    # Click the first panel's contour at CLICK: every panel's start moves there.
    x, y = _graph(
        page,
        MAIN,
        f"""gd => {{
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p({CLICK[0]}), r.top + ya._offset + ya.l2p({CLICK[1]})];
        }}""",
    )
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    _wait_for_starts(page, (-0.8, 1.8))
    wait_for_app(page)
    after = _graph(page, MAIN, STATE)
    assert after["names"] == before["names"]
    assert page.locator(".st-key-surface_x input").input_value() == "-0.8000"
    assert page.locator(".st-key-surface_y input").input_value() == "1.8000"
    losses_after = _loss_curves(page)
    assert len(losses_after) == len(losses_before)
    assert all(a[0] != b[0] for a, b in zip(losses_after, losses_before, strict=True))  # new f(x₀)
    assert page.query_selector("[data-testid='stException']") is None

    # Move the shared timeline: every panel and both curves' cursors follow.
    track = page.locator(".st-key-surface_step [role='group'] > div[data-orientation]").bounding_box()
    page.mouse.click(track["x"] + 0.25 * track["width"], track["y"] + track["height"] / 2)
    wait_for_app(page)
    step = _slider_value(page)
    assert 0 < step < 500
    _wait_for_step(page, step)
    for chart in ("surface_loss", "surface_scaling"):  # the curves' step cursors
        page.wait_for_function(
            """([selector, step]) => {
                const gd = document.querySelector(selector);
                const shapes = gd && gd._fullLayout && gd._fullLayout.shapes;
                return !!shapes && shapes.length > 0 && shapes.every(s => s.x0 === step);
            }""",
            arg=[f".st-key-{chart} .js-plotly-plot", step],
        )
    page.screenshot(path=str(tmp_path / "surface_clicked_step.png"))

    # The URL now holds the whole picture; a new session opened on it shows the same one.
    url = page.url
    assert "start=-0.8%2C1.8" in url and f"t={step}" in url
    again = browser.new_context(viewport={"width": 1600, "height": 3000}).new_page()
    again.goto(url)
    wait_for_app(again)
    again.wait_for_selector(MAIN, timeout=180_000)
    _dismiss_dialog(again)
    _wait_for_starts(again, (-0.8, 1.8))
    assert _graph(again, MAIN, STATE) == _graph(page, MAIN, STATE)
    assert _slider_value(again) == step
    assert _loss_curves(again) == losses_after
    again.screenshot(path=str(tmp_path / "surface_reopened.png"))
    again.context.close()


def test_play_moves_the_timeline_and_export_downloads_a_bundle(server, page, tmp_path) -> None:
    page.goto(f"{server.url}/surface?opt=sgd,adam&steps=200&t=0")
    wait_for_app(page)
    page.wait_for_selector(MAIN, timeout=180_000)
    _dismiss_dialog(page)
    assert _slider_value(page) == 0
    page.locator(".st-key-surface_play button").click()
    frames = timeline_steps(200, 40)
    page.wait_for_function(  # the fragment's timer has advanced every panel three frames at least
        """([selector, step]) => {
            const gd = document.querySelector(selector);
            if (!gd || !gd._fullData) return false;
            const lines = gd._fullData.filter(t => t.mode === 'lines+markers' && t.showlegend);
            return lines.length === 2 && lines.every(t => t.x.length >= step + 1);
        }""",
        arg=[MAIN, frames[3]],
        timeout=120_000,
    )
    page.get_by_role("button", name="❚❚ Pause").click()
    page.get_by_role("button", name="▶ Play").wait_for(timeout=120_000)
    page.wait_for_timeout(2500)  # a frame already under way when Pause was clicked may still land
    wait_for_app(page)
    paused = _slider_value(page)
    assert paused >= frames[3]
    page.wait_for_timeout(2500)
    assert _slider_value(page) == paused  # paused: the timer is off
    _wait_for_step(page, paused)
    assert f"t={paused}" in page.url or paused == 200

    with page.expect_download() as download:
        page.get_by_role("button", name="Export snapshot (.zip)").click()
    data = download.value.path().read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        config = json.loads(bundle.read("config.json"))
    assert manifest["kind"] == "surface"
    assert config["optimizers"] == ["sgd", "adam"]
    assert (config["surface"], config["steps"]) == ("rosenbrock", 200)


# The page scripts live in app_pages/, not pages/ (see app.py), so no legacy-mode dialog.
def test_fresh_server_deep_link_has_no_page_not_found_dialog(page, tmp_path) -> None:
    fresh = StreamlitServer(env={"DGS_LAB_RUNS_DIR": str(tmp_path)})
    try:
        page.goto(f"{fresh.url}/surface")
        page.get_by_role("heading", name="Surface lab").wait_for(timeout=180_000)  # the page did run
        assert page.query_selector("[role='dialog']") is None
    finally:
        fresh.stop()
