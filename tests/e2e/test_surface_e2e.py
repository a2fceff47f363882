"""Surface lab in a real browser: open /surface on a fresh server, click a map, see every panel and
curve follow, reopen the copied URL (at a step) and get the same picture; play, step and scrub the
timeline in the browser and count the messages to the server (none: no rerun per frame)."""

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
TIMELINE = ".st-key-surface_main .dgs-tl"
PANELS = len(DEFAULT_OPTIMIZERS)
CLICK = (-0.8, 1.8)  # inside Rosenbrock's [−2, 2] × [−1, 3], away from the default paths


def _state(page) -> dict:
    """What the timeline draws: its step, and each path's label, start, f − f* at the start and
    the step it is drawn to (the component's own account, beside the canvas)."""
    return page.wait_for_selector(TIMELINE, state="attached").evaluate("root => root.__timeline.state()")


def _wait_drawn(page, paths: int) -> None:
    page.wait_for_function(
        """([selector, n]) => { const root = document.querySelector(selector);
            return !!root && !!root.__timeline && root.__timeline.state().drawn.length === n; }""",
        arg=[TIMELINE, paths],
        timeout=180_000,
    )


def _wait_for_starts(page, point: tuple[float, float], tolerance: float = 1e-9) -> None:
    page.wait_for_function(
        """([selector, x, y, n, tol]) => { const root = document.querySelector(selector);
            if (!root || !root.__timeline) return false;
            const s = root.__timeline.state().starts;
            const near = ([a, b]) => Math.abs(a - x) <= tol && Math.abs(b - y) <= tol;
            return s.length === n && s.every(near); }""",
        arg=[TIMELINE, point[0], point[1], PANELS, tolerance],
        timeout=120_000,
    )


def _dismiss_dialog(page) -> None:
    if page.query_selector("[role='dialog']"):
        page.keyboard.press("Escape")
        page.wait_for_selector("[role='dialog']", state="detached")


def test_click_timeline_and_copied_link(server, page, browser, tmp_path) -> None:
    page.goto(f"{server.url}/surface")
    wait_for_app(page)
    _wait_drawn(page, PANELS)
    # the full app, not a bare page: navigation and the app's page config
    labels = page.wait_for_selector("[data-testid='stSidebarNav']").inner_text()
    for title in re.findall(r'st\.Page\([^)]*title="([^"]+)"', APP):
        assert title in labels
    assert "DGS Lab" in page.title()
    _dismiss_dialog(page)
    before = _state(page)
    assert before["starts"] == [[-2, 2]] * PANELS and len(before["labels"]) == PANELS
    page.locator(".st-key-surface_main").screenshot(path=str(tmp_path / "surface_default.png"))

    # Click the first panel at CLICK: every panel's path starts there, every curve with it.
    x, y = page.wait_for_selector(TIMELINE).evaluate(
        f"root => root.__timeline.pixel(0, {CLICK[0]}, {CLICK[1]})"
    )
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    _wait_for_starts(page, CLICK, tolerance=0.011)  # a click lands on the nearest 0.01
    wait_for_app(page)
    after = _state(page)
    start = after["starts"][0]
    assert after["labels"] == before["labels"] and after["starts"] == [start] * PANELS
    assert page.locator(".st-key-surface_x input").input_value() == f"{start[0]:.4f}"
    assert page.locator(".st-key-surface_y input").input_value() == f"{start[1]:.4f}"
    assert all(a != b for a, b in zip(after["firstGaps"], before["firstGaps"], strict=True))  # new f(x₀)
    assert page.query_selector("[data-testid='stException']") is None
    assert max(after["drawn"]) == 500  # the timeline opens at the end (a diverged path stops early)
    page.locator(".st-key-surface_main").screenshot(path=str(tmp_path / "surface_clicked.png"))

    # The URL now holds the whole picture; a new session opened on it shows the same one.
    assert f"start={start[0]}%2C{start[1]}" in page.url
    url = page.url + "&t=40"
    again = browser.new_context(viewport={"width": 1600, "height": 3000}).new_page()
    again.goto(url)
    wait_for_app(again)
    _wait_drawn(again, PANELS)
    _dismiss_dialog(again)
    _wait_for_starts(again, tuple(start))
    reopened = _state(again)
    assert reopened["step"] == 40 and reopened["drawn"] == [40] * PANELS  # opens at the linked step
    assert reopened["firstGaps"] == after["firstGaps"]
    again.locator(".st-key-surface_main").screenshot(path=str(tmp_path / "surface_reopened.png"))
    again.context.close()


def test_play_step_and_scrub_run_in_the_browser_without_reruns_and_export_downloads_a_bundle(
    server, page
) -> None:
    sent = []  # every message the browser sends the server (a rerun is one)
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(f"{server.url}/surface?opt=sgd,adam&steps=200&t=0")
    wait_for_app(page)
    _wait_drawn(page, 2)
    _dismiss_dialog(page)
    assert _state(page)["drawn"] == [0, 0]
    root = page.wait_for_selector(TIMELINE)
    page.wait_for_timeout(1000)
    before = len(sent)

    root.evaluate("root => { root.__draws.length = 0; }")
    page.locator(f"{TIMELINE} [data-act=play]").click()
    page.wait_for_function(  # played through to the end of the run, frame by frame
        "root => { const s = root.__timeline.state(); return s.step === 200 && !s.playing; }",
        arg=root,
        timeout=120_000,
    )
    played = root.evaluate("root => root.__draws.map(d => d[1])")
    assert len(played) >= 30 and played[-1] == 200 and played == sorted(played)  # many frames, in order
    assert _state(page)["drawn"] == [200, 200]

    # one step at a time: the buttons and the arrow keys
    page.locator(f"{TIMELINE} [data-act=back]").click()
    assert _state(page)["step"] == 199
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert _state(page)["step"] == 197
    page.locator(f"{TIMELINE} [data-act=forward]").click()
    assert _state(page)["step"] == 198
    page.keyboard.press("Home")
    assert _state(page)["step"] == 0
    page.wait_for_function("() => new URL(location.href).searchParams.get('t') === '0'")  # the link keeps it

    # the opening steps one by one, slowly; pause stops there
    page.locator(f"{TIMELINE} [data-act=opening]").click()
    page.wait_for_function("root => root.__timeline.state().step >= 3", arg=root, timeout=60_000)
    page.locator(f"{TIMELINE} [data-act=play]", has_text="pause").click()
    paused = _state(page)["step"]
    page.wait_for_timeout(1500)
    assert _state(page)["step"] == paused and paused < 25  # paused inside the opening
    assert f"t={paused}" in page.url  # a copied link opens where the timeline stands

    # the slider
    page.locator(f"{TIMELINE} .dgs-tl-slider").fill("120")
    assert _state(page)["drawn"] == [120, 120]
    page.wait_for_timeout(1000)
    assert len(sent) == before  # no rerun: not one message to the server for all of it

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
