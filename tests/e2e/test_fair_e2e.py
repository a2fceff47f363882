"""The Training lab's fair comparison in a real browser: a small study (SGD and Adam, 2 trials
each, 2 seeds, 60 steps) started on the embedded Ray ("starting Ray…" first), its progress,
a page refresh in the middle (the study is found again), the seed bands and the tuned
hyperparameters, then the tuned run opened as an ordinary live run with the tuned learning
rates in the sidebar. Screenshots at 1366×768 and 1280×720 in ``$DGS_SHOTS`` (default: the
test's temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e

STATUS = ".st-key-train_fair_progress"  # the best-so-far table (drawn once Ray runs the study)
BAR = "[data-testid='stProgress']"
TOTAL = 2 * 2 + 2 * 2  # 2 optimizers × (2 tuning trials + 2 seeds)
PROGRESS_MATCHES = """pattern => new RegExp(pattern).test(
  (document.querySelector("[data-testid='stProgress']") || {}).innerText || '')"""
INPUT_HOLDS = """([key, value]) => {
  const box = document.querySelector(`.st-key-${key} input`); return !!box && box.value === value; }"""
BANDS = """() => { const gd = document.querySelector('.st-key-train_fair_bands_chart .js-plotly-plot');
  if (!gd || !gd._fullData) return null;
  return gd._fullData.map(t => ({name: t.name, fill: t.fill || '', n: (t.x || []).length})); }"""


def _set_number(page, key: str, value: float) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def _trials_done(page) -> int:
    match = re.search(r"trial (\d+) / (\d+)", page.locator(BAR).first.inner_text())
    assert match, page.locator(BAR).first.inner_text()
    assert int(match.group(2)) == TOTAL
    return int(match.group(1))


def _shots(page, folder: Path, name: str, at: str | None = None) -> None:
    """Screenshots at the two sizes, scrolled to the element ``at`` (a selector) if given."""
    folder.mkdir(parents=True, exist_ok=True)
    for width, height in ((1366, 768), (1280, 720)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(1500)  # the layout settles, plotly resizes
        if at is not None:
            # in one turn of the page's JS: a live element is redrawn (replaced) meanwhile, and
            # Playwright's own scroll failed once on one that was detached under it
            page.locator(at).first.evaluate("element => element.scrollIntoView({block: 'center'})")
            page.wait_for_timeout(500)
        page.screenshot(path=str(folder / f"{name}-{width}x{height}.png"))
    page.set_viewport_size({"width": 1600, "height": 3000})


def test_a_small_fair_comparison_runs_shows_bands_and_opens_the_tuned_run(server, page, tmp_path) -> None:
    shots = Path(os.environ.get("DGS_SHOTS", tmp_path))
    page.goto(f"{server.url}/training?train_mode=fair")
    wait_for_app(page)
    page.get_by_text("Study settings").wait_for()

    # SGD and Adam (drop DGS and Adan from the four defaults); a tiny budget; few steps
    for label in ("DGS (interpretation)", "Adan"):
        page.locator(f".st-key-train_fair_optimizers [data-rac] button[aria-label='Remove {label}']").click()
        wait_for_app(page)
    _set_number(page, "train_fair_trials", 0)  # a bad budget marks its widget and blocks Start
    page.get_by_text("Invalid trials: 0 (must be an integer in [1, 1000])").first.wait_for()
    assert page.locator(".st-key-train_fair_start button").first.is_disabled()
    _set_number(page, "train_fair_trials", 2)
    _set_number(page, "train_fair_seeds", 2)
    _set_number(page, "train_fair_steps", 60)
    _set_number(page, "train_fair_eval_every", 20)
    caption = page.get_by_text(re.compile(r"2 optimizer\(s\) × \(2 tuning trials \+ 2 seeds\) = 8 trials"))
    caption.wait_for()
    _shots(page, shots, "fair-settings")

    page.locator(".st-key-train_fair_start button").first.click()
    # a fresh server: the embedded Ray starts first, and the page says so
    page.locator(".st-key-train_fair_starting").get_by_text("Starting Ray").wait_for(timeout=120_000)
    page.locator(STATUS).wait_for(timeout=240_000)
    # at least one trial finished: the progress counts it
    page.wait_for_function(PROGRESS_MATCHES, arg=f"trial [1-9]\\d* / {TOTAL}", timeout=300_000)
    assert 1 <= _trials_done(page) <= TOTAL
    assert "SGD" in page.locator(STATUS).inner_text() and "Adam" in page.locator(STATUS).inner_text()
    _shots(page, shots, "fair-running", at=BAR)

    # a refresh in the middle: the URL names the study, the page finds it again
    assert "train_fair_job=" in page.url
    page.reload()
    page.locator(".st-key-train_fair_start").wait_for()
    # the new session shows the study's settings, not the defaults
    for key, value in (("train_fair_trials", "2"), ("train_fair_steps", "60")):
        page.wait_for_function(INPUT_HOLDS, arg=[key, value], timeout=60_000)
    page.locator(".st-key-train_fair_bands_chart .js-plotly-plot").wait_for(timeout=480_000)
    wait_for_app(page)
    assert _trials_done(page) == TOTAL
    assert page.locator(BAR).first.inner_text().startswith("done")

    bands = page.evaluate(BANDS)
    filled = [t for t in bands if t["fill"] == "toself"]
    means = [t for t in bands if t["fill"] != "toself"]
    assert len(filled) == 2 and len(means) == 2, bands
    assert all("(2 seeds)" in t["name"] for t in means), bands
    assert all(t["n"] >= 3 for t in means), bands  # evaluations every 20 of 60 steps
    page.locator(".st-key-train_fair_sensitivity_chart .js-plotly-plot").wait_for()
    table = page.locator(".st-key-train_fair_best")
    table.wait_for()
    _shots(page, shots, "fair-progress", at=BAR)
    _shots(page, shots, "fair-results", at=".st-key-train_fair_bands_chart")
    _shots(page, shots, "fair-table", at=".st-key-train_fair_open")
    page.locator(".st-key-train_fair_export button").first.wait_for()

    # the tuned learning rates, read from the table
    tuned = {}
    for name, key in (("SGD", "sgd"), ("Adam", "adam")):
        row = table.locator("tr", has_text=name).first
        text = row.inner_text()
        match = re.search(r"lr=([0-9.e+-]+)", text)
        assert match, text
        tuned[key] = float(match.group(1))

    page.locator(".st-key-train_fair_open button").first.click()
    page.get_by_text("Run settings").wait_for()
    page.locator(".st-key-train_loss_chart").wait_for(timeout=240_000)
    assert "train_job=" in page.url and "train_mode=live" in page.url
    for key, lr in tuned.items():
        shown = float(page.locator(f".st-key-train_hp_{key}_lr input").input_value())
        assert shown == pytest.approx(lr, rel=6e-3), (key, shown, lr)
    assert page.locator(".st-key-train_steps input").input_value() == "60"
    page.wait_for_function(PROGRESS_MATCHES, arg="done · step 60 / 60", timeout=240_000)
    wait_for_app(page)
    _shots(page, shots, "fair-tuned-run")
