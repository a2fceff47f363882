"""Landscape lab in a real browser: train three optimizers on moons in the Training lab, follow
"Open the loss landscape", compute the exact plane (contours and surface with every path, the
interpolation, the sharpness table), switch to the PCA and the random planes, and export the
run with its landscapes (the download reads back with them).

Screenshots at 1366×768 (a laptop) and 1280×720 (a projector) go to $DGS_LAB_SHOTS (default:
the test's temporary directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dgs_core.runs.read import read_bundle
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e

STATUS = "[data-testid='stProgress']"
CONTOUR = ".st-key-landscape_contour_chart .js-plotly-plot"
AXIS = f"() => {{ const gd = document.querySelector('{CONTOUR}'); return gd && gd.layout.xaxis.title.text; }}"
SIZES = {"laptop": {"width": 1366, "height": 768}, "projector": {"width": 1280, "height": 720}}


def _click(page, key: str) -> None:
    page.locator(f".st-key-{key} button").first.click()


def _number(page, key: str, value: int) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def _compute_and_wait(page, axis: str, title: str) -> str:
    """Press Compute; wait for the job to finish and the contour to show the new plane (its x
    axis); the plane's title (what it is · how faithful) above the figures."""
    _click(page, "landscape_compute")
    try:
        page.wait_for_function(
            f"s => {{ const t = ({AXIS})(); return t && t.startsWith(s); }}", arg=axis, timeout=300_000
        )
        page.locator(STATUS).filter(has_text="done").wait_for(timeout=300_000)
    except Exception:
        print("status:", page.locator(STATUS).all_inner_texts(), "axis:", page.evaluate(AXIS))
        raise
    wait_for_app(page)
    page.mouse.move(5, 5)  # no tooltip over the screenshots
    return page.locator("[data-testid='stMarkdownContainer'] p", has_text=title).first.inner_text()


def _shots(page, folder: Path, name: str) -> None:
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        page.wait_for_timeout(1500)  # plotly redraws at the new width
        page.screenshot(path=str(folder / f"{name}-{size}.png"))
    page.set_viewport_size({"width": 1366, "height": 2200})  # the whole page, for review
    page.wait_for_timeout(1500)
    page.screenshot(path=str(folder / f"{name}-whole.png"))
    page.set_viewport_size({"width": 1600, "height": 3000})
    page.wait_for_timeout(1000)


def test_train_open_switch_planes_interpolate_and_export(server, page, tmp_path) -> None:
    shots = Path(os.environ.get("DGS_LAB_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)

    # Three optimizers (the defaults: SGD, Adam, DGS) on moons, a short run.
    page.goto(f"{server.url}/training")
    wait_for_app(page)
    _number(page, "train_steps", 150)
    page.get_by_text("3 optimizer(s) × 150 steps").wait_for()
    page.locator(".st-key-train_pace").get_by_text("as fast as possible").click()  # not paced: 20 s
    wait_for_app(page)
    _click(page, "train_start")
    page.locator(STATUS).filter(has_text="done").wait_for(timeout=180_000)
    link = page.get_by_role("link", name="Open the loss landscape")
    link.wait_for(timeout=60_000)
    link.click()

    # The landscape page finds the run; a smaller grid keeps the test short on 2 shared cores.
    page.get_by_text("Training lab: moons · sgd, adam, dgs · 150 steps (done)").wait_for(timeout=60_000)
    wait_for_app(page)
    _number(page, "landscape_resolution", 21)
    page.get_by_text("Press Compute to evaluate the loss on this plane.").wait_for()
    title = _compute_and_wait(page, "towards sgd", "Exact plane through the initial weights, sgd and adam")
    assert "exact at those three points" in title
    paths = page.locator(CONTOUR).evaluate("gd => gd.data.filter(t => t.type === 'scatter').map(t => t.name)")
    for label in ("sgd", "adam", "dgs"):
        assert label in paths and f"{label}: start" in paths and f"{label}: end" in paths, paths
    surface = page.locator(".st-key-landscape_surface_chart .js-plotly-plot").evaluate(
        "gd => gd.data.map(t => t.type)"
    )
    assert surface[0] == "surface" and surface.count("scatter3d") == 9, surface
    curve = page.locator(".st-key-landscape_interpolation_chart .js-plotly-plot").evaluate(
        "gd => gd._fullData.map(t => [t.name, t.y.length])"
    )
    assert curve == [["sgd → adam: training loss", 41], ["sgd → adam: validation loss", 41]], curve
    sharpness = page.locator(".st-key-landscape_sharpness_chart .js-plotly-plot").evaluate(
        "gd => gd.data[0].cells.values[0]"
    )
    assert [row.split(" ")[0] for row in sharpness] == ["sgd", "adam", "dgs"], sharpness
    assert page.query_selector("[data-testid='stException']") is None
    _shots(page, shots, "landscape-exact")

    # Switch planes: PCA of every path (explained variance in the title), then random directions.
    page.locator(".st-key-landscape_kind").get_by_text("PCA of the optimizers' paths").click()
    wait_for_app(page)
    title = _compute_and_wait(page, "PC 1 (", "PCA plane of every path")
    assert "explained variance" in title
    _shots(page, shots, "landscape-pca")
    page.locator(".st-key-landscape_kind").get_by_text("Filter-normalized random").click()
    wait_for_app(page)
    title = _compute_and_wait(page, "α (filter-normalized", "Filter-normalized random plane around sgd")
    assert "biases and norms left out" in title
    assert page.query_selector("[data-testid='stException']") is None

    # Export: the run's bundle with the three landscapes, read back.
    export = page.locator(".st-key-landscape_export button").first
    assert "3 landscape(s)" in export.inner_text()
    with page.expect_download(timeout=120_000) as download:
        export.click()
    bundle = read_bundle(download.value.path())
    assert bundle.kind == "training" and bundle.labels == ("sgd", "adam", "dgs")
    kinds = [grid.plane.spec.kind for grid in bundle.landscapes]
    assert sorted(kinds) == ["exact", "pca", "random"], kinds
    assert all(grid.complete and grid.losses["val"].shape == (21, 21) for grid in bundle.landscapes)
