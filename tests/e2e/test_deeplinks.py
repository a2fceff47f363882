"""Opening any page's own URL on a freshly started server shows the full app.

Before app.py first runs, Streamlit could treat files under pages/ as legacy pages and serve
them without app.py's page config and navigation; this guards the layout that prevents it.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import StreamlitServer, wait_for_app

pytestmark = pytest.mark.e2e

APP = open("app.py").read()
URL_PATHS = re.findall(r'url_path="([^"]+)"', APP)


@pytest.mark.parametrize("url_path", URL_PATHS)
def test_fresh_server_deep_link_shows_full_app(url_path: str, page, tmp_path) -> None:
    server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": str(tmp_path)})
    try:
        page.goto(f"{server.url}/{url_path}")
        wait_for_app(page)
        nav = page.wait_for_selector("[data-testid='stSidebarNav']")
        labels = nav.inner_text()
        for title in re.findall(r'st\.Page\([^)]*title="([^"]+)"', APP):
            assert title in labels
        assert "DGS Lab" in page.title()
        assert page.query_selector("[data-testid='stException']") is None
    finally:
        server.stop()
