"""Runs page in a real browser: a run trained in the Training lab is on the Runs page without a
download, opens back in its lab, compares with a second run (smoothed, one hover box, the one
real difference first); a refresh keeps the unsaved runs, another browser never sees them; an
uploaded bundle redraws the same curves."""

from __future__ import annotations

import numpy as np
import pytest

from dgs_core.runs import export_surface
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.viz.runs import surface_figures
from tests.e2e.conftest import wait_for_app
from tests.runs.test_bundles import small_training_bundle

pytestmark = pytest.mark.e2e

EMPTY = "No runs yet"
OVERLAY = ".st-key-runs_compare_overlay .js-plotly-plot"


def _plot(key: str) -> str:
    return f".st-key-{key} .js-plotly-plot"


def _batch_loss(page, key: str) -> list:
    """(steps, losses) of every "batch loss" trace of chart ``key``, once drawn."""
    selector = _plot(key)
    page.wait_for_function(
        f"() => {{ const gd = document.querySelector('{selector}');"
        " if (!gd || !gd._fullData) return false;"
        " const drawn = gd._fullData.filter(t => t.name === 'batch loss');"
        " return drawn.length > 0 && drawn.every(t => t.x && t.x.length > 0); }"
    )
    return page.locator(selector).evaluate(
        "gd => gd._fullData.filter(t => t.name === 'batch loss').map(t => [Array.from(t.x), Array.from(t.y)])"
    )


def _nav(page, title: str) -> None:
    """Go to a page through the sidebar (the same browser session, as a user does)."""
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    wait_for_app(page)


def _train(page, *, seed: int | None = None) -> None:
    """Train SGD and DGS for 40 steps in the Training lab (optionally with another seed)."""
    if seed is not None:
        box = page.locator(".st-key-train_seed input")
        box.fill(str(seed))
        box.press("Enter")
        wait_for_app(page)
    page.get_by_text("2 optimizer(s) × 40 steps").wait_for()
    page.locator(".st-key-train_pace").get_by_text("as fast as possible").click()  # not paced: 20 s
    wait_for_app(page)
    before = page.evaluate("() => new URL(location.href).searchParams.get('train_job')")
    page.locator(".st-key-train_start button").first.click()
    # the new run's job in the URL, then that run ended (an earlier run's Export button and
    # status may still be on screen right after the click)
    page.wait_for_function(
        "old => new URL(location.href).searchParams.get('train_job') !== old", arg=before, polling=250
    )
    page.wait_for_function(
        "() => document.querySelector(\"[data-testid='stProgress']\")?.innerText.startsWith('done')",
        polling=250,
        timeout=180_000,
    )
    page.locator(".st-key-train_export").wait_for(timeout=180_000)  # shown once the run has ended
    wait_for_app(page)


def _wait_selected(page, label: str) -> None:
    """Wait until the Run selectbox shows ``label`` (its value sits in the combobox's input)."""
    page.wait_for_function(
        "label => { const i = document.querySelector('.st-key-runs_selected input');"
        " return i && i.value === label; }",
        arg=label,
        polling=250,  # by time, not animation frames (a page that draws nothing gets none)
        timeout=120_000,
    )


def _run_options(page) -> list[str]:
    page.locator(".st-key-runs_selected").click()
    page.get_by_role("option").first.wait_for()  # the list opens a moment after the click
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_lab_runs_reach_the_runs_page_reopen_and_compare(server, page, browser, tmp_path) -> None:
    page.goto(f"{server.url}/training")
    wait_for_app(page)
    page.locator(".st-key-train_optimizers [data-rac] button[aria-label='Remove Adam']").click()
    wait_for_app(page)
    steps = page.locator(".st-key-train_steps input")
    steps.fill("40")
    steps.press("Enter")
    wait_for_app(page)
    _train(page)
    trained = _batch_loss(page, "train_loss_chart")

    # On the Runs page at once, unsaved, with the lab's panels and the scrubber; nothing in the URL.
    _nav(page, "Runs")
    _wait_selected(page, "moons: sgd, dgs · 40 steps · unsaved")
    assert "session" not in page.url and "run=" not in page.url
    assert _batch_loss(page, "runs_loss_chart") == trained
    for key in ("runs_lr_chart", "runs_importance_chart", "runs_scaling_chart", "runs_boundary_chart"):
        page.locator(_plot(key)).wait_for()
    page.locator(".st-key-runs_selected").wait_for()
    assert page.locator("[class*='st-key-runs_step_'] input[type='range']").count() == 1
    page.screenshot(path=str(tmp_path / "runs_one.png"), full_page=True)

    # Open in its lab: the Training lab with the run's results, its scrubber and its settings.
    page.locator(".st-key-runs_open_lab button").first.click()
    wait_for_app(page)
    page.get_by_role("heading", name="Training lab").wait_for()
    assert _batch_loss(page, "train_loss_chart") == trained
    page.locator(".st-key-train_step input[type='range']").wait_for(state="attached", timeout=60_000)
    assert page.locator(".st-key-train_steps input").input_value() == "40"

    # A second run (another seed) and back to the Runs page: two runs, the reopened one not twice.
    _train(page, seed=1)
    _nav(page, "Runs")
    _wait_selected(page, "moons: sgd, dgs · 40 steps (2) · unsaved")
    assert len(_run_options(page)) == 2

    # A refresh keeps them (the cookie); another browser sees none of them.
    page.reload()
    wait_for_app(page)
    assert len(_run_options(page)) == 2
    other = browser.new_context().new_page()
    try:
        other.goto(f"{server.url}/runs")
        wait_for_app(other)
        other.get_by_text(EMPTY).wait_for()
        other.goto(page.url)  # the first browser's address: no access either
        wait_for_app(other)
        other.get_by_text(EMPTY).wait_for()
    finally:
        other.context.close()

    # Compare: smoothed curves coloured by optimizer, one hover box, the seed the one difference.
    page.get_by_role("tab", name="Compare").click()
    for _ in range(2):
        page.locator(".st-key-runs_compare input").first.click()
        page.get_by_role("option").first.click()
        page.keyboard.press("Escape")
        wait_for_app(page)
    page.locator(OVERLAY).wait_for(timeout=120_000)
    page.locator(".st-key-runs_compare_metric").click()
    page.get_by_role("option", name="mini-batch loss").click()
    wait_for_app(page)
    page.wait_for_function(  # one chart (the one drawn before the rerun gone), the chosen curve
        f"() => {{ const all = document.querySelectorAll('{OVERLAY}'); const gd = all[0];"
        " return all.length === 1 && gd.data && gd.data.length === 8"
        " && gd.layout.yaxis.title.text === 'mini-batch loss'; }",
        timeout=120_000,
    )
    figure = page.locator(OVERLAY).evaluate(
        "gd => ({hover: gd.layout.hovermode, traces: gd._fullData.map(t => ({name: t.name, "
        "color: t.line.color, dash: t.line.dash, opacity: t.opacity, y: Array.from(t.y)}))})"
    )
    assert figure["hover"] == "x unified"
    shown = [t for t in figure["traces"] if t["opacity"] == 1]
    raw = [t for t in figure["traces"] if t["opacity"] < 1]
    assert len(shown) == len(raw) == 4
    colors = {t["name"].split(" · ")[0]: t["color"] for t in shown}
    assert len(set(colors.values())) == 2  # one colour per optimizer, shared by both runs
    assert len({t["dash"] for t in shown}) == 2  # one line style per run
    for smooth, rough in zip(shown, raw, strict=True):
        assert np.std(np.diff(smooth["y"])) < np.std(np.diff(rough["y"]))
    rows = page.locator(".st-key-runs_compare_diff tbody tr th").all_inner_texts()
    assert rows == ["seed"], rows  # the one real difference, and nothing equal
    page.screenshot(path=str(tmp_path / "runs_compare.png"), full_page=True)
    for width, height in ((1366, 768), (1280, 720)):  # a laptop, a projector
        page.set_viewport_size({"width": width, "height": height})
        page.locator(".st-key-runs_compare_overlay").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / f"runs_compare_{width}.png"))
    assert page.query_selector("[data-testid='stException']") is None


def test_upload_a_training_bundle_and_see_the_same_curves(server, page, tmp_path) -> None:
    trainer, data = small_training_bundle(steps=20)
    path = tmp_path / "training-run.zip"
    path.write_bytes(data)
    page.goto(f"{server.url}/runs")
    wait_for_app(page)
    page.locator(".st-key-runs_upload input[type='file']").set_input_files(str(path))
    page.get_by_text("Imported “moons: sgd, adam · 20 steps”").wait_for(timeout=60_000)
    wait_for_app(page)
    curves = _batch_loss(page, "runs_loss_chart")
    assert len(curves) == 2
    for (steps, losses), result in zip(curves, trainer.results.values(), strict=True):
        np.testing.assert_array_equal(steps, result.metrics["step"].to_numpy())
        np.testing.assert_array_equal(losses, result.metrics["loss"].to_numpy())
    assert page.query_selector("[data-testid='stException']") is None


def test_a_surface_run_opens_back_in_the_surface_lab_with_its_timeline(server, page, tmp_path) -> None:
    config = SurfaceConfig(
        surface="rosenbrock", optimizers=("sgd", "adam"), steps=60, hparams={"adam": {"lr": 0.05}}
    )
    runs = config.simulate()
    path = tmp_path / "surface-run.zip"
    path.write_bytes(export_surface(runs, config, figures=surface_figures(runs)))
    page.goto(f"{server.url}/runs")
    wait_for_app(page)
    page.locator(".st-key-runs_upload input[type='file']").set_input_files(str(path))
    page.get_by_text("Imported").wait_for(timeout=60_000)
    wait_for_app(page)
    page.locator("[class*='st-key-runs_step_'] input[type='range']").wait_for(state="attached")  # a timeline
    page.locator(".st-key-runs_fig_paths .js-plotly-plot").wait_for()

    page.locator(".st-key-runs_open_lab button").first.click()
    wait_for_app(page)
    page.get_by_role("heading", name="Surface lab").wait_for()
    page.wait_for_function(  # the whole run, on its timeline: drawn to its last step, 60
        """() => { const root = document.querySelector('.st-key-surface_main .dgs-tl');
            return !!root && !!root.__timeline && root.__timeline.state().step === 60; }""",
        timeout=120_000,
    )
    assert "surface=rosenbrock" in page.url and "steps=60" in page.url
    page.wait_for_function(  # the sidebar holds the run's settings
        "() => { const i = document.querySelector('.st-key-surface_steps input');"
        " return i && i.value === '60'; }"
    )
    assert page.query_selector("[data-testid='stException']") is None
