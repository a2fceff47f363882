"""Real-browser fixtures: a fresh Streamlit server per test module and Debian's chromium.

The browser is Debian's ``/usr/bin/chromium`` driven by the ``playwright`` package
(never the playwright browser download: it fails here). Streamlit scrolls an inner
container, so pages use a tall viewport.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 3000}

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``streamlit run app.py`` on a free loopback port, healthy before use."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={self.port}",
            "--browser.gatherUsageStats=false",
        ]
        (ROOT / ".pytest_cache").mkdir(exist_ok=True)  # absent from a fresh clone
        self.log = open(ROOT / f".pytest_cache/streamlit-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("streamlit did not become healthy in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    """A freshly started server for this test module (its own runs directory)."""
    runs = tmp_path_factory.mktemp("runs")
    srv = StreamlitServer(env={"DGS_LAB_RUNS_DIR": str(runs)})
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    # playwright is imported lazily: the browser is an object
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]  # (reason above)
    pg = context.new_page()
    pg.set_default_timeout(90_000)  # 2 shared cores: plotly drawing alone can take tens of seconds
    yield pg
    context.close()


def wait_for_app(page: object) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator)."""
    # playwright is imported lazily: the page is an object
    page.wait_for_selector("[data-testid='stApp']")  # type: ignore[attr-defined]  # (reason above)
    # playwright is imported lazily: the page is an object
    page.wait_for_function(  # type: ignore[attr-defined]  # (reason above)
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')"
    )
