"""What one script run of each page costs the page server, alone on an idle server.

A Streamlit page is a script the server runs again for every visit and every widget change, in
its one interpreter; a class's sessions queue for that interpreter (``bench/classroom.py``), so
these costs bound what one server can serve. Starts ``streamlit run app.py`` on a free 127.0.0.1
port, then, for each page the class bench opens (Home, Lessons, Surface, Annealing, Training
lab), one websocket session (Streamlit's own protocol, ``bench.classroom.Client``):

* the first visit of the page on this server (its modules imported, its caches empty), then
* ``--reruns`` widget changes, the class bench's own (presenter mode on and off; a new seed on
  the Surface and Training labs: a new seed is new simulations on the Surface lab, the first
  time it is asked for, and a cache hit afterwards).

For each: the wall time from the request to ``script_finished``, the CPU seconds the server's
interpreter used meanwhile (its own threads; nothing else runs on it) and the bytes it sent.
Reported with the load average: on a busy machine the wall times grow, the CPU seconds less.

Run:  .venv/bin/python bench/page_scripts.py [--reruns 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.classroom import PAGES, Client  # noqa: E402
from bench.proc import cpu_seconds  # noqa: E402
from tests.e2e.conftest import StreamlitServer  # noqa: E402


async def one_page(url: str, pid: int, page: str, key: str, values: list | None, reruns: int) -> list:
    """[(wall s, server CPU s, bytes)] for the first visit, then each widget change."""
    out = []
    async with Client(url, page) as client:
        for k in range(reruns + 1):
            widget = None
            if k:
                widget = (key, (k % 2 == 1) if values is None else values[(k - 1) % len(values)])
            cpu, received = cpu_seconds(pid)[0], client.received
            wall = await client.run(widget)
            out.append((wall, cpu_seconds(pid)[0] - cpu, client.received - received))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=8, help="widget changes per page")
    args = parser.parse_args()
    load = os.getloadavg()
    server = StreamlitServer(env={"DGS_LAB_RUNS_DIR": tempfile.mkdtemp()})
    try:
        results = {
            page or "home": asyncio.run(one_page(server.url, server.proc.pid, page, key, values, args.reruns))
            for page, key, values in PAGES
        }
    finally:
        server.stop()
    end_load = os.getloadavg()
    print(f"One script run per page, alone on the server ({args.reruns} widget changes each)")
    print(f"  {'page':10s} {'first visit (wall, server CPU, sent)':38s} a change (median; worst CPU)")
    for page, runs in results.items():
        (wall, cpu, sent), rest = runs[0], runs[1:]
        walls, cpus, sents = (list(column) for column in zip(*rest, strict=True))
        print(
            f"  {page:10s} {wall:5.2f} s, {cpu:5.2f} s, {sent / 1e6:5.2f} MB{'':12s}"
            f"{statistics.median(walls):5.2f} s, {statistics.median(cpus):5.2f} s "
            f"({max(cpus):4.2f} s), {statistics.median(sents) / 1e6:5.2f} MB"
        )
    print(
        f"load average (1, 5, 15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start, "
        f"{end_load[0]:.1f} {end_load[1]:.1f} {end_load[2]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
