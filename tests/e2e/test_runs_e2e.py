"""Runs page in a real browser: upload a training-lab bundle and see the same curves; a refresh
keeps the unsaved run, another browser session does not see it.

The bundle is made the way the Training lab's download button makes it
(:func:`dgs_core.snapshots.export_training` on the page's trainer); the Training lab's own
browser test covers clicking that button.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import wait_for_app
from tests.runs.test_bundles import small_training_bundle

pytestmark = pytest.mark.e2e

LOSS_CHART = ".st-key-runs_fig_loss .js-plotly-plot"
# The drawn traces: plotly.js decodes numpy's typed arrays ({dtype, bdata} in gd.data) into _fullData.
BATCH_LOSS = (
    "gd => gd._fullData.filter(t => t.name === 'batch loss').map(t => [Array.from(t.x), Array.from(t.y)])"
)


def _batch_loss(page) -> list:
    """(steps, losses) of every "batch loss" trace, once the chart has drawn them."""
    page.wait_for_function(
        f"() => {{ const gd = document.querySelector('{LOSS_CHART}');"
        " if (!gd || !gd._fullData) return false;"
        " const drawn = gd._fullData.filter(t => t.name === 'batch loss');"
        " return drawn.length > 0 && drawn.every(t => t.x && t.x.length > 0 && t.y && t.y.length > 0); }"
    )
    return page.locator(LOSS_CHART).evaluate(BATCH_LOSS)


def test_upload_a_training_bundle_and_see_the_same_curves(server, page, browser, tmp_path) -> None:
    trainer, data = small_training_bundle(steps=20)
    path = tmp_path / "training-run.zip"
    path.write_bytes(data)

    page.goto(f"{server.url}/runs")
    wait_for_app(page)
    page.get_by_text("No runs yet").wait_for()
    assert "session=" in page.url  # the session id lives in the URL, so a refresh keeps it

    page.locator(".st-key-runs_upload input[type='file']").set_input_files(str(path))
    page.get_by_text("Imported “moons: sgd, adam · 20 steps”").wait_for(timeout=60_000)
    wait_for_app(page)
    curves = _batch_loss(page)
    assert len(curves) == 2
    for (steps, losses), result in zip(curves, trainer.results.values(), strict=True):
        frame = result.metrics
        np.testing.assert_array_equal(steps, frame["step"].to_numpy())
        np.testing.assert_array_equal(losses, frame["loss"].to_numpy())
    assert page.query_selector("[data-testid='stException']") is None
    page.locator(".st-key-runs_fig_loss").screenshot(path=str(tmp_path / "runs_loss.png"))

    page.reload()  # a browser refresh loses nothing
    wait_for_app(page)
    assert [c[1] for c in _batch_loss(page)] == [c[1] for c in curves]

    other = browser.new_context().new_page()  # another browser session: no unsaved runs of ours
    try:
        other.goto(f"{server.url}/runs")
        wait_for_app(other)
        other.get_by_text("No runs yet").wait_for()
    finally:
        other.context.close()
