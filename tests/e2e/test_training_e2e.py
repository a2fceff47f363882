"""Training lab in a real browser: start a run with two optimizers, watch both loss curves grow,
measure the redraw rate, press Stop (and time it), move the step scrubber, export the snapshot;
and a run's link, reopened in a new browser on another server (a restart: its job is gone),
shows the same run — the same numbers, the link's settings in the sidebar, its tab and step."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import pytest

from tests.e2e.conftest import VIEWPORT, StreamlitServer, wait_for_app

pytestmark = pytest.mark.e2e

LOSS = ".st-key-train_loss_chart .js-plotly-plot"
STATUS = "[data-testid='stProgress']"

# The last step of each panel's mini-batch loss line (plotly's decoded arrays live in _fullData;
# long lines are thinned for drawing, so their length stops growing but their last step does not).
BATCH_POINTS = """() => { const gd = document.querySelector('.st-key-train_loss_chart .js-plotly-plot');
  if (!gd || !gd._fullData) return null;
  return gd._fullData.filter(t => t.name === 'batch loss')
    .map(t => t.x.length ? t.x[t.x.length - 1] : 0); }"""

# Distinct status texts seen in `ms` milliseconds: each redraw writes a new step count.
REDRAWS = """ms => new Promise(done => { const seen = new Set(); const t0 = performance.now();
  const timer = setInterval(() => { const p = document.querySelector("[data-testid='stProgress']");
    if (p) seen.add(p.innerText);
    if (performance.now() - t0 > ms) { clearInterval(timer); done(seen.size); } }, 20); })"""


# Click Stop and time, in the browser, until the status shows "stopped".
STOP_LATENCY = """() => new Promise((done, fail) => { const t0 = performance.now();
  document.querySelector('.st-key-train_stop button').click();
  const timer = setInterval(() => { const p = document.querySelector("[data-testid='stProgress']");
    if (p && p.innerText.startsWith('stopped')) { clearInterval(timer); done(performance.now() - t0); }
    if (performance.now() - t0 > 20000) { clearInterval(timer); fail(new Error('not stopped in 20 s')); }
  }, 10); })"""


# Click Start and time, in the browser, until the loss chart shows the new run's first mini-batch
# loss point (a chart of an earlier run may still be on the page: its data must have been replaced).
FIRST_CURVE = """() => new Promise((done, fail) => {
  const chart = () => document.querySelector('.st-key-train_loss_chart .js-plotly-plot');
  const old = chart() ? chart().data : null; const t0 = performance.now();
  document.querySelector('.st-key-train_start button').click();
  const timer = setInterval(() => { const gd = chart();
    if (gd && gd.data !== old && gd._fullData
        && gd._fullData.some(t => t.name === 'batch loss' && t.x.length > 0)) {
      clearInterval(timer); done(performance.now() - t0); }
    if (performance.now() - t0 > 60000) { clearInterval(timer); fail(new Error('no curve in 60 s')); }
  }, 10); })"""

# Every optimizer's mini-batch loss values, as drawn (a short run: not thinned).
LOSSES_WHEN_DRAWN = """() => { const gd = document.querySelector('.st-key-train_loss_chart .js-plotly-plot');
  const lines = gd && gd._fullData ? gd._fullData.filter(t => t.name === 'batch loss') : [];
  return lines.length ? lines.map(t => Array.from(t.y)) : null; }"""


def _batch_losses(page) -> list:
    """The loss chart's batch-loss lines, read once the chart is drawn (a rerun can redraw it)."""
    return page.wait_for_function(LOSSES_WHEN_DRAWN, polling=250, timeout=90_000).json_value()


def _click(page, key: str) -> None:
    """Click the button with widget key ``key`` (a button with help renders twice; the first is live)."""
    page.locator(f".st-key-{key} button").first.click()


def _status(page) -> str:
    return page.locator(STATUS).inner_text()


def test_two_optimizers_train_live_stop_and_scrub(server, page, tmp_path) -> None:
    page.goto(f"{server.url}/training")
    wait_for_app(page)
    page.get_by_text("Run settings").wait_for()

    # Two optimizers (drop Adam from the default SGD, Adam, DGS) and a long run to watch.
    page.locator(".st-key-train_optimizers [data-rac] button[aria-label='Remove Adam']").click()
    wait_for_app(page)
    steps = page.locator(".st-key-train_steps input")
    steps.fill("20000")
    steps.press("Enter")
    wait_for_app(page)
    page.get_by_text("2 optimizer(s) × 20000 steps").wait_for()
    page.screenshot(path=str(tmp_path / "before.png"))

    _click(page, "train_start")
    page.wait_for_function(
        f"() => {{ const n = ({BATCH_POINTS})(); return n && n.length === 2 && n[0] > 0; }}", timeout=120_000
    )
    first = page.evaluate(BATCH_POINTS)
    page.wait_for_function(
        f"() => {{ const n = ({BATCH_POINTS})(); return n && n[0] > {first[0]} && n[1] > {first[1]}; }}",
        timeout=30_000,
    )
    second = page.evaluate(BATCH_POINTS)
    assert len(second) == 2 and all(b > a for a, b in zip(first, second, strict=True)), (first, second)
    assert _status(page).startswith("running")

    # Redraw rate: the browser counts status updates; the server reports its own rate.
    window = 4.0
    seen = page.evaluate(REDRAWS, window * 1000)
    reported = float(re.search(r"([\d.]+) redraws/s", _status(page)).group(1))
    print(f"redraws: {seen / window:.1f}/s seen by the browser, {reported:.1f}/s reported by the server")
    # 5/s is the page's period; on 2 shared cores the browser itself (plotly drawing the figures)
    # delays the timer that asks for each redraw, so only liveness is asserted here (speed
    # targets belong in bench/, not in timed tests): the status changed during the window.
    assert seen >= 2, seen
    page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

    # Stop, timed in the browser from the click to the redrawn status. The trainer itself stops
    # within one step (tests/test_jobs.py); the rest is the round trip through a browser and a
    # server that share 2 cores with the training thread here, hence the loose bound.
    latency = page.evaluate(STOP_LATENCY) / 1000
    print(f"Stop latency: {latency:.2f} s (click to 'stopped' on screen)")
    assert latency < 5.0, latency
    wait_for_app(page)
    stopped = _status(page)
    stopped_at = int(re.search(r"step (\d+) / 20000", stopped).group(1))
    assert 0 < stopped_at < 20_000
    time.sleep(1.0)
    assert _status(page) == stopped  # nothing trains any more

    # The scrubber: Home moves every panel to step 1 (the loss cursor, the per-parameter views).
    thumb = page.locator(".st-key-train_step input[type='range']")  # react-aria's (visually hidden) input
    thumb.wait_for(state="attached", timeout=60_000)
    assert int(thumb.input_value()) == stopped_at
    thumb.focus()
    thumb.press("Home")
    wait_for_app(page)
    page.get_by_text("Per parameter at step 1", exact=True).wait_for()
    cursor = page.locator(LOSS).evaluate("gd => gd.layout.shapes.map(s => s.x0)")
    assert cursor and set(cursor) == {1}, cursor
    histogram = page.locator(".st-key-train_histogram_chart .js-plotly-plot").evaluate(
        "gd => gd.data.map(t => t.name)"
    )
    assert histogram == ["SGD (step 1)", "DGS (step 1)"], histogram
    assert page.query_selector("[data-testid='stException']") is None
    page.screenshot(path=str(tmp_path / "scrubbed.png"), full_page=True)

    # Export snapshot (.zip): a bundle of this run.
    with page.expect_download(timeout=60_000) as download:
        _click(page, "train_export")
    data = open(download.value.path(), "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        config = json.loads(bundle.read("config.json"))
    assert manifest["kind"] == "training" and [r["label"] for r in manifest["runs"]] == ["sgd", "dgs"]
    assert config["steps"] == 20_000 and config["task"] == "moons"


def _selected_tab(page) -> str:
    return page.locator("[role='tab'][aria-selected='true']").inner_text().strip()


def _wait_done(page) -> None:
    page.wait_for_function(
        "() => document.querySelector(\"[data-testid='stProgress']\")?.innerText.startsWith('done')",
        timeout=180_000,
    )
    wait_for_app(page)


def _scrubbed_to_first_step(page) -> int:
    thumb = page.locator(".st-key-train_step input[type='range']")
    thumb.wait_for(state="attached", timeout=90_000)
    return int(thumb.input_value())


def test_a_link_reopened_after_a_restart_shows_the_same_run_settings_tab_and_step(server, browser, tmp_path):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(f"{server.url}/training")
    wait_for_app(page)
    page.get_by_text("Run settings").wait_for()
    assert page.locator(".st-key-train_pace input[type='radio']").first.is_checked()  # paced by default

    # SGD and DGS, 60 steps, seed 5, as fast as possible (not the defaults)
    page.locator(".st-key-train_optimizers [data-rac] button[aria-label='Remove Adam']").click()
    wait_for_app(page)
    for key, value in (("train_steps", "60"), ("train_seed", "5")):
        field = page.locator(f".st-key-{key} input")
        field.fill(value)
        field.press("Enter")
        wait_for_app(page)
    page.locator(".st-key-train_pace").get_by_text("as fast as possible").click()
    wait_for_app(page)
    page.get_by_text("2 optimizer(s) × 60 steps").wait_for()

    first_curve = page.evaluate(FIRST_CURVE) / 1000
    print(f"Start → first curve: {first_curve:.2f} s")
    _wait_done(page)
    assert _scrubbed_to_first_step(page) == 60
    thumb = page.locator(".st-key-train_step input[type='range']")
    thumb.focus()
    thumb.press("Home")
    wait_for_app(page)
    page.get_by_text("Per parameter at step 1", exact=True).wait_for()
    page.wait_for_function("() => location.search.includes('step=1')")
    losses = _batch_losses(page)
    assert len(losses) == 2 and all(len(y) == 60 for y in losses)
    page.get_by_role("tab", name="Large-batch question").click()
    page.wait_for_function("() => location.search.includes('tab=large-batch')")
    wait_for_app(page)
    link = page.url.split(server.url, 1)[1]
    assert "cfg=" in link and "pace=0" in link and "train_job=" in link, link
    context.close()

    # Another server (a restart: the link's job is on no server now), a new browser
    other = StreamlitServer(env={"DGS_LAB_RUNS_DIR": str(tmp_path / "runs")})
    try:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(f"{other.url}{link}")
        wait_for_app(page)
        page.get_by_text("Run settings").wait_for()
        page.get_by_role("tab", name="Large-batch question").wait_for()
        assert _selected_tab(page) == "Large-batch question"
        page.locator(".st-key-train_seed input").wait_for()  # the sidebar drawn (not its placeholders)
        page.locator(".st-key-train_optimizers").get_by_text("DGS").first.wait_for()
        chosen = page.locator(".st-key-train_optimizers").inner_text()
        assert "SGD" in chosen and "DGS" in chosen and "Adam" not in chosen, chosen
        assert page.locator(".st-key-train_steps input").input_value() == "60"
        assert page.locator(".st-key-train_seed input").input_value() == "5"
        assert page.locator(".st-key-train_pace input[type='radio']").nth(1).is_checked()  # as fast
        assert page.query_selector("[data-testid='stException']") is None
        page.get_by_role("tab", name="Train").click()
        _wait_done(page)
        assert _scrubbed_to_first_step(page) == 1  # the link's step, not the run's last
        page.get_by_text("Per parameter at step 1", exact=True).wait_for()
        assert _batch_losses(page) == losses  # retrained from the link: the same numbers
        assert "no longer on the server" not in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "reopened.png"), full_page=True)
        context.close()
    finally:
        other.stop()
