"""A class on one server: many sessions open the labs and change widgets while some train.

Starts ``streamlit run app.py`` on a free loopback port and, at once:

* ``--browsers`` real browsers (Debian's chromium, headless) open the Training lab, set a long
  run and press Start: they are the sessions that train; each one's first full render (from
  the navigation to the Start button on screen) is timed, and after ``--window`` seconds its
  Stop (from the click to "stopped" on screen, timed in the browser);
* ``--clients`` websocket clients (Streamlit's own protocol, as the browser speaks it) open the
  other labs in turns; each one's first full render (from the request to the script's end) is
  timed, then ``--changes`` widget changes (a number input of the page set to a new value, from
  the request to the script's end) where the page has a number input.

It prints the median and 95th percentile of each, the failures, and the server's memory (its
process and its training workers, resident). Figures depend on the machine's load: run it on a
quiet machine.

Run:  .venv/bin/python bench/classroom.py [--clients 25] [--browsers 5] [--window 20] [--changes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import websockets  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, StreamlitServer  # noqa: E402
from tests.e2e.test_training_e2e import STOP_LATENCY  # noqa: E402

# the pages the websocket clients open in turns; on those without a number input they only render
CLIENT_PAGES = ("surface", "annealing", "surface", "landscape", "lessons")
TIMEOUT_S = 180.0
IDLE = """() => { const s = document.querySelector('[data-testid="stStatusWidget"]');
  return !!document.querySelector('[data-testid="stApp"]') && (!s || !s.innerText.includes('Running')); }"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def server_memory_mb(pid: int) -> tuple[float, float]:
    """(the server's resident MB, its child processes' — the training workers — together)."""
    children = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children += _rss_mb(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return _rss_mb(pid), children


async def _until_finished(ws, widgets: list | None = None) -> None:
    """Read the server's messages until the script run ends (noting the number inputs)."""
    while True:
        message = ForwardMsg()
        message.ParseFromString(await ws.recv())
        kind = message.WhichOneof("type")
        if widgets is not None and kind == "delta" and message.delta.WhichOneof("type") == "new_element":
            element = message.delta.new_element
            if element.WhichOneof("type") == "number_input" and element.number_input.id:
                widgets.append(element.number_input)
        if kind == "script_finished":
            return


async def client(port: int, page: str, changes: int, results: dict[str, list]) -> None:
    """One websocket session: the page's first render, then ``changes`` widget changes."""
    url = f"ws://127.0.0.1:{port}/_stcore/stream"
    try:
        async with websockets.connect(url, subprotocols=["streamlit"], max_size=None) as ws:
            request = BackMsg()
            request.rerun_script.page_name = page
            started = time.perf_counter()
            await ws.send(request.SerializeToString())
            widgets: list = []
            await asyncio.wait_for(_until_finished(ws, widgets), TIMEOUT_S)
            results["client_render"].append(time.perf_counter() - started)
            for i in range(changes if widgets else 0):
                widget = widgets[0]
                change = BackMsg()
                change.rerun_script.page_name = page
                state = change.rerun_script.widget_states.widgets.add()
                state.id = widget.id
                value = widget.default + (i + 1) * (widget.step or 1)
                if widget.data_type == widget.INT:
                    state.int_value = int(value)
                else:
                    state.double_value = float(value)
                started = time.perf_counter()
                await ws.send(change.SerializeToString())
                await asyncio.wait_for(_until_finished(ws), TIMEOUT_S)
                results["widget_change"].append(time.perf_counter() - started)
                await asyncio.sleep(1.0)
    except Exception as exc:  # counted and shown: a failure is a result here
        results["failures"].append(f"client {page}: {type(exc).__name__}: {exc}")


async def trainer(context, url: str, window: float, results: dict[str, list]) -> None:
    """One browser session in the Training lab: first render, a long run, Stop."""
    page = await context.new_page()
    try:
        started = time.perf_counter()
        await page.goto(f"{url}/training", timeout=TIMEOUT_S * 1000)
        await page.get_by_text("Run settings").wait_for(timeout=TIMEOUT_S * 1000)
        await page.wait_for_function(IDLE, timeout=TIMEOUT_S * 1000)
        results["browser_render"].append(time.perf_counter() - started)
        steps = page.locator(".st-key-train_steps input")
        await steps.fill("20000")
        await steps.press("Enter")
        await page.get_by_text("× 20000 steps").first.wait_for(timeout=TIMEOUT_S * 1000)
        await page.wait_for_function(IDLE, timeout=TIMEOUT_S * 1000)
        await page.locator(".st-key-train_start button").first.click()
        await (
            page.locator("[data-testid='stProgress']")
            .get_by_text("running")
            .wait_for(timeout=TIMEOUT_S * 1000)
        )
        await asyncio.sleep(window)
        results["stop"].append(await page.evaluate(STOP_LATENCY) / 1000)
    except Exception as exc:
        status = await page.locator("[data-testid='stProgress']").all_inner_texts()
        results["failures"].append(f"browser: {type(exc).__name__}: {str(exc).splitlines()[0]} (status: {status})")
    finally:
        await page.close()


def _summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(values)
    return f"{name}: n={len(values)} median {median:.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s"


async def measure(server: StreamlitServer, args: argparse.Namespace) -> dict[str, list]:
    from playwright.async_api import async_playwright

    results: dict[str, list] = {
        k: [] for k in ("client_render", "widget_change", "browser_render", "stop", "failures")
    }
    peak = [0.0, 0.0]

    async def watch_memory() -> None:
        while True:
            peak[:] = [max(a, b) for a, b in zip(peak, server_memory_mb(server.proc.pid), strict=True)]
            await asyncio.sleep(1.0)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = [await browser.new_context(viewport=VIEWPORT) for _ in range(args.browsers)]
        memory = asyncio.create_task(watch_memory())
        tasks = [trainer(c, server.url, args.window, results) for c in contexts]
        tasks += [
            client(server.port, CLIENT_PAGES[i % len(CLIENT_PAGES)], args.changes, results)
            for i in range(args.clients)
        ]
        await asyncio.gather(*tasks)
        memory.cancel()
        await browser.close()
    results["memory"] = peak
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=25)
    parser.add_argument("--browsers", type=int, default=5)
    parser.add_argument("--window", type=float, default=20.0, help="seconds the runs train before Stop")
    parser.add_argument("--changes", type=int, default=5, help="widget changes per websocket client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": runs})
        try:
            results = asyncio.run(measure(server, args))
        finally:
            server.stop()
    print(f"{args.clients} websocket clients + {args.browsers} browsers (training), window {args.window:g} s")
    for name in ("client_render", "browser_render", "widget_change", "stop"):
        print(_summary(name, results[name]))
    print(_summary("first render (all)", results["client_render"] + results["browser_render"]))
    server_mb, workers_mb = results["memory"]
    print(f"peak memory: server {server_mb:.0f} MB, training workers {workers_mb:.0f} MB (resident)")
    print(f"failures: {len(results['failures'])}")
    for failure in results["failures"]:
        print("  " + failure)


if __name__ == "__main__":
    main()
