"""The project's Streamlit settings that keep a live Training lab responsive (bench/page_live.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"


def test_no_full_gc_after_every_script_run_and_no_module_rescans() -> None:
    config = tomllib.loads(CONFIG.read_text())
    # A full gc.collect() after every fragment run, and a re-scan of every imported module on
    # every run, each starved the training thread and the server (measured in bench/page_live.py).
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["fileWatcherType"] == "none"
