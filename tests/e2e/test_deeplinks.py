"""Opening any page's own URL on a freshly started server shows the full app.

Streamlit 1.67 runs the first session of a fresh server in legacy multipage mode whenever a
folder named ``pages/`` sits beside the entry script; a deep link then gets a blocking
"Page not found" dialog. The page scripts therefore live in ``app_pages/``; this test guards it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import ROOT, StreamlitServer, wait_for_app

pytestmark = pytest.mark.e2e

APP_LINES = [ln for ln in (ROOT / "app.py").read_text().splitlines() if ln.strip().startswith("st.Page(")]
TITLES = [re.search(r'title="([^"]+)"', ln).group(1) for ln in APP_LINES]
# The default page is served at "/", its url_path is not a route of its own.
URL_PATHS = [re.search(r'url_path="([^"]+)"', ln).group(1) for ln in APP_LINES if "default=True" not in ln]


def test_no_legacy_pages_folder() -> None:
    assert not (ROOT / "pages").exists(), "a pages/ folder beside app.py breaks fresh-server deep links"
    assert Path(ROOT / "app_pages").is_dir()


@pytest.mark.parametrize("url_path", URL_PATHS)
def test_fresh_server_deep_link_shows_full_app(url_path: str, page, tmp_path) -> None:
    server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": str(tmp_path)})
    try:
        page.goto(f"{server.url}/{url_path}")
        wait_for_app(page)
        nav = page.wait_for_selector("[data-testid='stSidebarNav']")
        labels = nav.inner_text()
        for title in TITLES:
            assert title in labels
        page.wait_for_timeout(1500)
        body = page.inner_text("body")
        assert "Page not found" not in body
        assert "DGS Lab" in page.title()
        assert page.query_selector("[data-testid='stException']") is None
        # still on its own page (a page may add its state to the query string: Runs' session)
        assert urlsplit(page.url).path.rstrip("/").endswith(url_path)
    finally:
        server.stop()
