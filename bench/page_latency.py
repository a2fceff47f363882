"""Surface lab in a real browser: how fast the page answers a teacher's and a student's actions.

Starts ``streamlit run app.py`` (the README's command) on a free port, opens the Surface lab in
Debian's chromium (playwright, headless) with 8 optimizers on Rosenbrock (500 steps) and measures,
each ``--rounds`` times:

* first full render, warm: a new tab on the same link (the simulations and the figure cached
  by an earlier visit), from navigation start to the timeline figure drawn with its frames;
* a contour click → every panel redrawn: from the click to every panel's start at the new point
  (timed in the browser);
* Play: frames per second the browser animates (``plotly_animatingframe`` events over a
  play-through of the run's frames at the ▶ play speed);
* a timeline step: a click on the in-figure slider to the paths redrawn (``plotly_animated``);
* Plotly's cost per frame on this figure, outside Streamlit: the page's figure copied into a
  plain div drawn by the plotly.js that the plotly package ships, then ``Plotly.animate`` timed
  over its own frames and over frames that move one marker only — the least a frame of a figure
  this size costs, whatever the frames carry.

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
MAIN = ".st-key-surface_main .js-plotly-plot"
LINK = f"/surface?opt={OPTIMIZERS}&steps=500"
# starts on the first panel's click grid (31 × 31 over [−2, 2] × [−1, 3]) away from the paths
CLICKS = [(-2 + 9 * 4 / 30, -1 + 21 * 4 / 30), (-2 + 22 * 4 / 30, -1 + 24 * 4 / 30), (-2 + 4 * 4 / 30, 0.2)]

DRAWN = """selector => { const gd = document.querySelector(selector);
  return !!gd && !!gd._fullData && !!gd._transitionData && gd._transitionData._frames.length > 0; }"""
STARTS = """([selector, x, y]) => { const gd = document.querySelector(selector);
  if (!gd || !gd._fullData) return false; const s = gd._fullData.filter(t => t.name === 'start');
  return s.length === 8 && s.every(t => Math.abs(t.x[0] - x) < 1e-6 && Math.abs(t.y[0] - y) < 1e-6); }"""
WATCH = """gd => { window.__frames = []; window.__animated = [];
  gd.on('plotly_animatingframe', e => window.__frames.push([performance.now(), e.name]));
  gd.on('plotly_animated', () => window.__animated.push(performance.now()));
  document.addEventListener('mousedown', () => { window.__down = performance.now(); }, true);
  return true; }"""


def _open(page, url: str) -> float:
    """Seconds from navigation start to the figure drawn with its frames, and the app idle."""
    page.goto(url, wait_until="commit")
    page.wait_for_function(DRAWN, arg=MAIN, timeout=300_000, polling="raf")
    return page.evaluate("performance.now()") / 1000


FRAME_COST = """async () => {
  const src = document.querySelector('SELECTOR');
  const div = document.createElement('div'); div.style.width = src.offsetWidth + 'px';
  document.body.appendChild(div);
  const frames = src._transitionData._frames.map(f => JSON.parse(JSON.stringify(f)));
  const layout = JSON.parse(JSON.stringify(src.layout));
  const data = JSON.parse(JSON.stringify(src.data));
  const timeAll = async (list) => { const out = [];
    for (const f of list) { const t = performance.now();
      await Plotly.animate(div, [f.name], {frame: {duration: 0, redraw: false},
                                           transition: {duration: 0}, mode: 'immediate'});
      out.push(performance.now() - t); }
    return out; };
  await Plotly.newPlot(div, data, layout, {}); await Plotly.addFrames(div, frames);
  const picked = frames.filter((_, i) => i % Math.ceil(frames.length / 20) === 0);
  const own = await timeAll(picked);
  Plotly.purge(div);
  const one = frames.map(f => ({name: f.name, data: [f.data[1]], traces: [f.traces[1]]}));
  await Plotly.newPlot(div, data, layout, {}); await Plotly.addFrames(div, one);
  const marker = await timeAll(picked.map(f => one.find(o => o.name === f.name)));
  div.remove();
  return [own, marker]; }""".replace("SELECTOR", MAIN)


def _frame_cost(page) -> tuple[list[float], list[float]]:
    """Plotly.animate's milliseconds per frame on a copy of the page's figure (see FRAME_COST)."""
    import plotly

    page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
    own, marker = page.evaluate(FRAME_COST)
    return [ms / 1000 for ms in own], [ms / 1000 for ms in marker]


def _click_point(page, x: float, y: float) -> tuple[float, float]:
    return page.wait_for_selector(MAIN).evaluate(
        f"""gd => {{ const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const r = gd.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p({x}), r.top + ya._offset + ya.l2p({y})]; }}"""
    )


def measure(rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    (ROOT / ".pytest_cache").mkdir(exist_ok=True)  # StreamlitServer's log
    server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": tempfile.mkdtemp()})
    out: dict[str, list[float]] = {"render": [], "click": [], "fps": [], "step": [], "frame": [], "floor": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={**VIEWPORT, "height": 1600})
            warm = context.new_page()
            warm.set_default_timeout(300_000)
            _open(warm, server.url + LINK)  # cold: simulations and the figure cached
            for _ in range(rounds):
                page = context.new_page()
                page.set_default_timeout(300_000)
                out["render"].append(_open(page, server.url + LINK))
                page.close()
            page = warm
            page.wait_for_selector(MAIN).evaluate(WATCH)
            for x, y in CLICKS[:rounds]:
                px, py = _click_point(page, x, y)
                page.mouse.move(px, py)
                page.mouse.click(px, py)
                page.wait_for_function(STARTS, arg=[MAIN, round(x, 4), round(y, 4)], polling="raf")
                out["click"].append(page.evaluate("performance.now() - window.__down") / 1000)
                page.wait_for_timeout(500)
            gd = page.wait_for_selector(MAIN)
            for _ in range(rounds):
                gd.evaluate(WATCH)
                page.locator(f"{MAIN} .updatemenu-button", has_text="▶ play").click()
                page.wait_for_function(
                    "n => window.__frames.length > 0 && window.__frames[window.__frames.length - 1][1] === n",
                    arg="500",
                    polling=100,
                )
                times = [t for t, _ in page.evaluate("window.__frames")]
                out["fps"].append((len(times) - 1) / ((times[-1] - times[0]) / 1000))
            rail = page.locator(f"{MAIN} .slider-rail-rect").bounding_box()
            for i in range(rounds):
                gd.evaluate(WATCH)
                where = 0.1 + 0.3 * i
                page.mouse.click(rail["x"] + where * rail["width"], rail["y"] + rail["height"] / 2)
                page.wait_for_function("() => window.__animated.length > 0", polling="raf")
                out["step"].append(page.evaluate("window.__animated[0] - window.__down") / 1000)
            out["frame"], out["floor"] = _frame_cost(page)
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
    end_load = os.getloadavg()
    print(f"Surface lab, 8 optimizers × 500 steps on Rosenbrock, {args.rounds} rounds each")
    rows = (
        ("first full render, warm", "render", "s", "≤ 2 s"),
        ("contour click → panels redrawn", "click", "s", "≤ 0.5 s"),
        ("Play (frames per second)", "fps", "/s", "≥ 20 /s"),
        ("timeline step (slider click)", "step", "s", "≤ 0.05 s"),
        ("plotly.js: one of its frames", "frame", "s", "≤ 0.05 s for 20 /s"),
        ("plotly.js: a frame moving 1 marker", "floor", "s", "what frames cannot beat"),
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
