"""Surface lab in a real browser: how fast the page answers a teacher's and a student's actions.

Starts ``streamlit run app.py`` (the README's command) on a free port, opens the Surface lab in
Debian's chromium (playwright, headless) with 8 optimizers on Rosenbrock (500 steps) and measures,
each ``--rounds`` times:

* first full render, warm: a new tab on the same link (the simulations and the timeline's
  payload cached by an earlier visit), from navigation start to every panel drawn; and to the
  page's title shown, Streamlit's own start (its scripts, the websocket, the session);
* a contour click → every panel redrawn: from the mouse press on the first panel to the first
  frame drawn from the new runs, every path starting at the clicked point (timed in the browser);
  beside it, the eight simulations from those starts timed alone in this process;
* Play: frames per second the timeline draws while ▶ play runs through the 500 steps;
* a timeline step: from the press on "1 ▶" to the frame drawn;
* one frame's drawing cost: 200 single steps in a row, the mean.

Targets (issue 15): render ≤ 2 s, click ≤ 0.5 s, Play ≥ 20 frames/s, step ≤ 50 ms. Prints the
median and the worst of each and the load average; every figure is from one run on a shared
machine.

Run:  .venv/bin/python bench/page_latency.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, StreamlitServer  # noqa: E402

OPTIMIZERS = "sgd,momentum,nesterov,adam,dgs,adan,lars,extrasgd"
TIMELINE = ".st-key-surface_main .dgs-tl"
LINK = f"/surface?opt={OPTIMIZERS}&steps=500"
# starts away from the default paths, inside Rosenbrock's [−2, 2] × [−1, 3]
CLICKS = [(-0.8, 1.8), (0.93, 2.2), (-1.47, 0.2)]

DRAWN = """([selector, n]) => { const root = document.querySelector(selector);
  return !!root && !!root.__timeline && root.__timeline.state().drawn.length === n; }"""
STARTED = """([selector, x, y]) => { const root = document.querySelector(selector);
  const s = root.__timeline.state(); const draws = root.__draws;
  return s.starts.length === 8 && s.starts.every(([a, b]) => Math.abs(a - x) < 0.03 && Math.abs(b - y) < 0.03)
    && draws.length > 0 && draws[draws.length - 1][0] >= s.loadedAt; }"""
FIRST_NEW_FRAME = """root => { const loaded = root.__timeline.state().loadedAt;
  return root.__draws.find(d => d[0] >= loaded)[0] - window.__down; }"""
WATCH = """root => { root.__draws.length = 0; document.addEventListener('mousedown',
  () => { window.__down = performance.now(); }, true); return true; }"""
FRAME_COST = """root => { const forward = root.querySelector('[data-act=forward]');
  root.querySelector('[data-act=first]').click(); const t = performance.now();
  for (let i = 0; i < 200; i++) forward.click();
  return (performance.now() - t) / 200; }"""


def _open(page, url: str) -> tuple[float, float]:
    """Seconds from navigation start to the page's title shown (Streamlit's own start: its
    scripts, the websocket, the session) and to every panel drawn."""
    page.goto(url, wait_until="commit")
    page.get_by_role("heading", name="Surface lab").wait_for(timeout=300_000)
    title = page.evaluate("performance.now()") / 1000
    page.wait_for_function(DRAWN, arg=[TIMELINE, 8], timeout=300_000, polling="raf")
    return title, page.evaluate("performance.now()") / 1000


def simulation_seconds(x: float, y: float) -> float:
    """The server's part of a click: the eight simulations from (x, y), timed here."""
    from dgs_core.surfaces.config import SurfaceConfig

    config = SurfaceConfig(optimizers=tuple(OPTIMIZERS.split(",")), steps=500, start=(x, y))
    config.simulate()  # imports and first calls
    started = time.perf_counter()
    config.simulate()
    return time.perf_counter() - started


def measure(rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": tempfile.mkdtemp()})
    out: dict[str, list[float]] = {"title": [], "render": [], "click": [], "fps": [], "step": [], "frame": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={**VIEWPORT, "height": 1600})
            warm = context.new_page()
            warm.set_default_timeout(300_000)
            _open(warm, server.url + LINK)  # cold: simulations and the payload cached
            for _ in range(rounds):
                page = context.new_page()
                page.set_default_timeout(300_000)
                title, drawn = _open(page, server.url + LINK)
                out["title"].append(title)
                out["render"].append(drawn)
                page.close()
            page = warm
            root = page.wait_for_selector(TIMELINE)
            root.evaluate(WATCH)
            for x, y in CLICKS[:rounds]:
                px, py = root.evaluate(f"root => root.__timeline.pixel(0, {x}, {y})")
                page.mouse.move(px, py)
                page.mouse.click(px, py)
                page.wait_for_function(STARTED, arg=[TIMELINE, x, y], polling="raf")
                out["click"].append(root.evaluate(FIRST_NEW_FRAME) / 1000)
                page.wait_for_timeout(500)
            for _ in range(rounds):
                root.evaluate(WATCH)
                root.evaluate("root => root.querySelector('[data-act=play]').click()")
                page.wait_for_function(
                    "root => { const s = root.__timeline.state(); return s.step === 500 && !s.playing; }",
                    arg=root,
                    polling=100,
                )
                times = root.evaluate("root => root.__draws.map(d => d[0])")
                out["fps"].append((len(times) - 1) / ((times[-1] - times[0]) / 1000))
            back = page.locator(f"{TIMELINE} [data-act=back]")
            for _ in range(rounds):
                root.evaluate(WATCH)
                back.click()
                page.wait_for_function("root => root.__draws.length > 0", arg=root, polling="raf")
                out["step"].append(root.evaluate("root => root.__draws[0][0] - window.__down") / 1000)
            out["frame"] = [root.evaluate(FRAME_COST) / 1000 for _ in range(rounds)]
            browser.close()
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    load = os.getloadavg()
    out = measure(args.rounds)
    out["simulation"] = [simulation_seconds(x, y) for x, y in CLICKS[: args.rounds]]
    end_load = os.getloadavg()
    print(f"Surface lab, 8 optimizers × 500 steps on Rosenbrock, {args.rounds} rounds each")
    rows = (
        ("first full render, warm", "render", "s", "≤ 2 s"),
        ("  of which: the page's title shown", "title", "s", "Streamlit's own start"),
        ("contour click → panels redrawn", "click", "s", "≤ 0.5 s"),
        ("  of which: the 8 simulations", "simulation", "s", "timed alone, in this process"),
        ("Play (frames per second)", "fps", "/s", "≥ 20 /s"),
        ("timeline step (the 1 ▶ button)", "step", "s", "≤ 0.05 s"),
        ("one frame's drawing (mean of 200)", "frame", "s", "≤ 0.05 s for 20 /s"),
    )
    for label, key, unit, target in rows:
        values = out[key]
        worst = min(values) if key == "fps" else max(values)
        print(
            f"  {label:34s} median {statistics.median(values):7.3f} {unit:2s} worst {worst:7.3f} {unit:2s}"
            f"  (target {target})"
        )
    print(
        f"load average (1, 5, 15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start, "
        f"{end_load[0]:.1f} {end_load[1]:.1f} {end_load[2]:.1f} at the end; "
        f"{time.perf_counter() - start:.0f} s in all"
    )


if __name__ == "__main__":
    main()
