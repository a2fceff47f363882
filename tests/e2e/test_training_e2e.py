"""Training lab in a real browser: start a run with two optimizers, watch both loss curves grow,
measure the redraw rate, press Stop (and time it), move the step scrubber, export the snapshot."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import pytest

from tests.e2e.conftest import wait_for_app

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
