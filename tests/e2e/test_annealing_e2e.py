"""Annealing lab in a real browser: build a warmup-cosine schedule and see its curve, then run the
two-phase demo for a few steps and see the phase boundary; a link (``?anneal=``) opened in a new
browser reopens its tab, schedules and settings, and the URL follows the widgets."""

from __future__ import annotations

import math
import re

import pytest

from dgs_core.schedules.curves import curve
from dgs_core.studies.annealing import VARIANTS, TwoPhaseSettings
from dgs_core.studies.annealing_lab import LINK_PARAM, AnnealingLabConfig
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e


def _element(key: str) -> str:
    """The keyed element's container (Streamlit adds the class st-key-<key>), skipping the stale
    copy Streamlit may keep for a moment after a rerun."""
    return f".st-key-{key}:not([data-stale='true'])"


def _graph_ready(page, key: str, condition: str = "true", timeout: float = 60_000) -> None:
    """Wait until the chart's plotly div has drawn and ``condition`` (JS, on ``gd``) holds.

    ``gd._fullData`` holds the traces with decoded arrays (``gd.data`` keeps plotly's base64
    typed arrays); plotly.js itself loads lazily, which takes seconds on a busy CPU.
    """
    selector = f"{_element(key)} .js-plotly-plot"
    page.wait_for_function(
        f"""() => {{ const gd = document.querySelector("{selector}");
                     return Boolean(gd && gd._fullData && gd._fullData.length && ({condition})); }}""",
        timeout=timeout,
    )


def _graph(page, key: str, expression: str):
    handle = page.wait_for_selector(f"{_element(key)} .js-plotly-plot", state="attached")
    return handle.evaluate(f"gd => {expression}")


def _legend(page, key: str) -> str:
    return page.locator(f"{_element(key)} g.legend").first.text_content()


def _set_number(page, key: str, value: float) -> None:
    box = page.locator(f"{_element(key)} input")
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def test_warmup_cosine_curve_then_two_phase_boundary(server, page, tmp_path) -> None:
    # The server's very first session runs the main page first: a deep link as the first request
    # can show Streamlit's "Page not found" dialog (which makes the page inert) on a fresh server.
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_text("DGS Lab").first.wait_for()
    page.goto(f"{server.url}/annealing")
    wait_for_app(page)
    page.get_by_text("Run length (steps)").wait_for(timeout=60_000)

    # Build the warmup-cosine schedule: 60 warmup steps, then cosine down to 0.01 at step 300.
    _set_number(page, "anneal_sched_warmup_cosine_warmup_steps", 60)
    _set_number(page, "anneal_sched_warmup_cosine_min_lr", 0.01)
    _graph_ready(
        page,
        "anneal_overlay",
        "Math.abs(gd._fullData[0].y[60] - 0.1) < 1e-12 && Math.abs(gd._fullData[0].y[299] - 0.01) < 1e-4",
    )
    name, ys = _graph(page, "anneal_overlay", "[gd._fullData[0].name, Array.from(gd._fullData[0].y)]")
    assert name == "Warmup + cosine"
    assert ys[0] == 0.0 and ys[30] == pytest.approx(0.05) and ys[60] == pytest.approx(0.1)
    assert ys[180] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 120 / 240)) / 2)
    assert "Warmup + cosine" in _legend(page, "anneal_overlay")
    assert page.query_selector("[data-testid='stException']") is None
    page.locator(_element("anneal_overlay")).screenshot(path=str(tmp_path / "warmup_cosine.png"))

    # A min_lr above base_lr is refused next to the control (Streamlit's markdown shows <= as ≤).
    _set_number(page, "anneal_sched_warmup_cosine_min_lr", 0.5)
    page.get_by_text(re.compile(r"Invalid min_lr: 0\.5 \(must be (<=|≤) base_lr=0\.1\)")).wait_for()
    _set_number(page, "anneal_sched_warmup_cosine_min_lr", 0.01)

    # The two-phase demo, a few steps: 30 on noisy data, then at most 20 annealing.
    page.get_by_role("tab", name="Two-phase annealing").click()
    _set_number(page, "anneal_tp_main_steps", 30)
    _set_number(page, "anneal_tp_anneal_steps", 20)
    page.locator(f"{_element('anneal_tp_run')} button").click()
    page.get_by_text("finished: 200 / 200 steps").wait_for(timeout=120_000)
    wait_for_app(page)
    _graph_ready(page, "anneal_tp_chart", "gd.layout.shapes && gd.layout.shapes.length > 0")
    lines = _graph(
        page, "anneal_tp_chart", "gd.layout.shapes.filter(s => s.type === 'line').map(s => [s.x0, s.x1])"
    )
    assert lines == [[30, 30], [30, 30]]  # the boundary, on both panels
    legend = _legend(page, "anneal_tp_chart")
    assert "phase boundary (step 30)" in legend
    for label in VARIANTS.values():
        assert label in legend
    assert "main phase: 30% label noise" in page.locator(_element("anneal_tp_chart")).inner_text()
    assert page.query_selector("[data-testid='stException']") is None
    page.locator(_element("anneal_tp_chart")).screenshot(path=str(tmp_path / "two_phase.png"))
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def _selected_tab(page) -> str:
    return page.locator("[role='tab'][aria-selected='true']").first.inner_text().strip()


def _open(page, url: str) -> None:
    page.goto(url)
    wait_for_app(page)
    page.get_by_text("Run length (steps)").wait_for(state="attached", timeout=60_000)  # hidden off its tab
    page.locator(_element("anneal_tp_main_steps")).wait_for(state="attached", timeout=60_000)


def test_a_link_reopens_its_tab_and_schedules_in_a_new_browser(server, browser, page, tmp_path) -> None:
    # a fresh server's first session runs the main page first (see the test above)
    page.goto(server.url)
    wait_for_app(page)
    link = AnnealingLabConfig(
        tab="two_phase",
        run_steps=400,
        curves=(
            curve("cosine", base_lr=0.1, total_steps=400, min_lr=0.001),
            curve("one_cycle", base_lr=0.2, total_steps=400),
        ),
        two_phase=TwoPhaseSettings(main_steps=60, anneal_steps=40, schedule_free=True),
    ).to_link()
    _open(page, f"{server.url}/annealing?{LINK_PARAM}={link}")
    assert _selected_tab(page) == "Two-phase annealing"
    assert page.locator(f"{_element('anneal_tp_main_steps')} input").input_value() == "60"
    assert page.locator(f"{_element('anneal_tp_sf')} input").is_checked()

    # change a setting here: the URL follows, and so does the tab
    _set_number(page, "anneal_tp_main_steps", 45)
    page.wait_for_function("() => !location.search.includes('" + link[-20:] + "')", timeout=60_000)
    copied = page.url
    assert (
        AnnealingLabConfig.from_link(copied.split(f"{LINK_PARAM}=", 1)[1].split("&")[0]).two_phase.main_steps
        == 45
    )
    assert "tab" not in copied.split("?", 1)[1].split("&")[0]  # one parameter holds it all

    # a new browser (no session, no cookies) on the copied link: the same tab, schedules and settings
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    fresh = context.new_page()
    fresh.set_default_timeout(90_000)
    try:
        _open(fresh, copied)
        assert _selected_tab(fresh) == "Two-phase annealing"
        assert fresh.locator(f"{_element('anneal_tp_main_steps')} input").input_value() == "45"
        assert fresh.locator(f"{_element('anneal_tp_sf')} input").is_checked()
        fresh.get_by_role("tab", name="Schedules").click()
        wait_for_app(fresh)
        _graph_ready(fresh, "anneal_overlay", "gd._fullData.length === 2")
        names = _graph(fresh, "anneal_overlay", "gd._fullData.map(t => t.name)")
        assert names == ["Cosine", "One-cycle"]
        ys = _graph(fresh, "anneal_overlay", "Array.from(gd._fullData[0].y)")
        assert len(ys) == 400 and ys[0] == pytest.approx(0.1) and ys[-1] == pytest.approx(0.001, rel=0.05)
        assert fresh.locator(f"{_element('anneal_run_steps')} input").input_value() == "400"
        # the tab switch is in the link too
        fresh.wait_for_function(
            "() => { const m = location.search.match(/anneal=([^&]+)/); return m && m[1] !== '"
            + copied.split(f"{LINK_PARAM}=", 1)[1].split("&")[0]
            + "'; }",
            timeout=60_000,
        )
        tab = AnnealingLabConfig.from_link(fresh.url.split(f"{LINK_PARAM}=", 1)[1].split("&")[0]).tab
        assert tab == "schedules"
        assert fresh.query_selector("[data-testid='stException']") is None
        fresh.screenshot(path=str(tmp_path / "reopened.png"), full_page=True)
    finally:
        context.close()


def test_a_lessons_open_in_the_lab_link_shows_the_steps_schedules(server, page) -> None:
    from urllib.parse import urlencode

    from dgs_core import lessons

    shipped, _ = lessons.load_lessons()
    step = next(
        s for lesson in shipped for s in lesson.steps if s.lab == "annealing" and s.figure == "schedules"
    )
    link = lessons.lab_link(step)
    page.goto(server.url)
    wait_for_app(page)
    _open(page, f"{server.url}/{link.page}?{urlencode(link.query)}")
    assert _selected_tab(page) == "Schedules"
    curves, run_steps = step.lab_config()
    assert page.locator(f"{_element('anneal_run_steps')} input").input_value() == str(run_steps)
    _graph_ready(page, "anneal_overlay", f"gd._fullData.length === {len(curves)}")
    assert _graph(page, "anneal_overlay", "gd._fullData.map(t => t.name)") == [c.label for c in curves]
    assert page.query_selector("[data-testid='stException']") is None
