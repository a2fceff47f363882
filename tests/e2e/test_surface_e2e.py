"""Surface lab in a real browser: open /surface on a fresh server, click the contour, see every panel
and curve follow, reopen the copied URL (at a step) and get the same picture; play the timeline in
the browser and count the messages to the server (none: no rerun per frame)."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest

from dgs_core.surfaces.config import DEFAULT_OPTIMIZERS
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
    """The f − f* curves under the paths (same figure: the axes titled f(x_t) − f*)."""
    expression = """gd => gd._fullData
        .filter(t => t.mode === 'lines' && t.name !== 'step' && t.yaxis
            && (gd._fullLayout['yaxis' + t.yaxis.slice(1)].title.text || '').startsWith('f(x_t)'))
        .map(t => Array.from(t.y))"""
    return _graph(page, MAIN, expression)


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


def _drawn_steps(page) -> list[int]:
    return _graph(page, MAIN, f"gd => ({STATE})(gd).lengths.map(n => n - 1)")


def _frame_index(page, step: int) -> int:
    return _graph(page, MAIN, f"gd => gd._transitionData._frames.findIndex(f => f.name === '{step}')")


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

    # The timeline runs in the browser: the link keeps the step it opens at (none: the end).
    drawn = _drawn_steps(page)
    assert len(drawn) == PANELS and max(drawn) == 500  # (a path that diverged stops early)
    page.screenshot(path=str(tmp_path / "surface_clicked.png"))

    # The URL now holds the whole picture; a new session opened on it shows the same one.
    assert "start=-0.8%2C1.8" in page.url
    url = page.url + "&t=40"
    again = browser.new_context(viewport={"width": 1600, "height": 3000}).new_page()
    again.goto(url)
    wait_for_app(again)
    again.wait_for_selector(MAIN, timeout=180_000)
    _dismiss_dialog(again)
    _wait_for_starts(again, (-0.8, 1.8))
    assert _drawn_steps(again) == [40] * PANELS  # opens at the linked step
    assert _graph(again, MAIN, "gd => gd.layout.sliders[0].active") == _frame_index(again, 40)
    assert _loss_curves(again) == losses_after
    again.screenshot(path=str(tmp_path / "surface_reopened.png"))
    again.context.close()


# Records the frames the figure animates (plotly_animatingframe), with their times.
WATCH = """gd => { window.__frames = []; gd.on('plotly_animatingframe', e => window.__frames.push(
    [performance.now(), e.name])); return true; }"""


def test_play_runs_in_the_browser_without_reruns_and_export_downloads_a_bundle(server, page) -> None:
    sent = []  # every message the browser sends the server (a rerun is one)
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(f"{server.url}/surface?opt=sgd,adam&steps=200&t=0")
    wait_for_app(page)
    page.wait_for_selector(MAIN, timeout=180_000)
    _dismiss_dialog(page)
    assert _drawn_steps(page) == [0, 0]
    _graph(page, MAIN, WATCH)
    page.wait_for_timeout(1000)
    before = len(sent)
    page.locator(f"{MAIN} .updatemenu-button", has_text="▶ play").click()
    page.wait_for_function(  # played through to the end of the run, frame by frame
        """selector => {
            const gd = document.querySelector(selector);
            const lines = gd._fullData.filter(t => t.mode === 'lines+markers' && t.showlegend);
            return lines.length === 2 && lines.every(t => t.x.length === 201);
        }""",
        arg=MAIN,
        timeout=120_000,
    )
    played = page.evaluate("window.__frames.map(f => Number(f[1]))")
    assert len(played) >= 30 and played[-1] == 200 and played == sorted(played)  # many frames, in order
    cursors = _graph(page, MAIN, "gd => gd._fullData.filter(t => t.name === 'step').map(t => t.x[0])")
    assert cursors == [200, 200, 200]  # the curves' cursors moved with the paths
    page.wait_for_timeout(1000)
    assert len(sent) == before  # no rerun: not one message to the server while playing

    # the opening steps one by one, slowly; pause stops there
    page.locator(f"{MAIN} .updatemenu-button", has_text="first steps").click()
    page.wait_for_function("() => window.__frames.some(f => f[1] === '3')", timeout=120_000)
    page.locator(f"{MAIN} .updatemenu-button", has_text="pause").click()
    page.wait_for_timeout(1500)
    paused = _drawn_steps(page)
    page.wait_for_timeout(1500)
    assert _drawn_steps(page) == paused and paused[0] < 25  # paused inside the opening
    assert len(sent) == before

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
        # an old /home link: Home at "/", with no "Page not found" box over it
        page.goto(f"{fresh.url}/home")
        page.get_by_role("heading", name="DGS Lab").wait_for(timeout=180_000)
        wait_for_app(page)
        page.wait_for_url(f"{fresh.url}/", timeout=60_000)
        page.wait_for_timeout(1000)
        assert page.query_selector("[role='dialog']") is None
    finally:
        fresh.stop()
