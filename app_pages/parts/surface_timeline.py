"""The Surface lab's timeline: a canvas drawn and played in the browser (no build step).

The payload is :func:`dgs_core.viz.surface.timeline_data`; the drawing and the controls are
``surface_timeline.js`` (with ``surface_timeline.css``) beside this file, registered as a
Streamlit component. Playing, stepping and scrubbing never reach the server; a click on a map
reaches ``on_start(x, y)`` and reruns the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from dgs_core.viz.surface import OPENING_LABEL

HERE = Path(__file__).parent
HTML = f"""<div class="dgs-tl" tabindex="0" data-step="">
  <div class="dgs-tl-legend"></div>
  <canvas class="dgs-tl-canvas"></canvas>
  <div class="dgs-tl-tip" hidden></div>
  <div class="dgs-tl-controls">
    <button data-act="first" title="to step 0 (Home)">⏮</button>
    <button data-act="back" title="one step back (←)">◀ 1</button>
    <button data-act="play" title="play or pause (space)">▶ play</button>
    <button data-act="forward" title="one step forward (→)">1 ▶</button>
    <button data-act="last" title="to the last step (End)">⏭</button>
    <button data-act="opening" title="replay the first steps slowly: where overshoots happen">
      {OPENING_LABEL}</button>
    <select class="dgs-tl-speed" title="speed of ▶ play"></select>
    <input class="dgs-tl-slider" type="range" min="0" max="0" step="1" value="0" aria-label="step">
    <span class="dgs-tl-readout"></span>
  </div>
</div>"""

_component = st.components.v2.component(
    "dgs_lab.surface_timeline",
    html=HTML,
    css=(HERE / "surface_timeline.css").read_text(encoding="utf-8"),
    js=(HERE / "surface_timeline.js").read_text(encoding="utf-8"),
    isolate_styles=False,  # in the page's DOM: the browser tests and the benchmark read it
)


def start_from_event(value: Any) -> tuple[float, float] | None:
    """The point of a click the browser sent: two finite numbers, else None (it is untrusted)."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return float(value[0]), float(value[1])


def timeline(
    data: dict[str, Any], *, key: str, on_start: Callable[[float, float], None], font: int = 12
) -> None:
    """Show the timeline of ``data`` with its text at ``font`` px; a click on a map calls
    ``on_start(x, y)`` before the rerun."""

    def clicked() -> None:
        point = start_from_event(getattr(st.session_state.get(key), "start", None))
        if point is not None:
            on_start(*point)

    _component(data={**data, "font": font}, key=key, on_start_change=clicked)
