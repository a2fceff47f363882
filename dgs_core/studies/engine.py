"""The Ray engine behind studies: an embedded local Ray, started once and reused, or a cluster.

>>> info = connect()                       # doctest: +SKIP
>>> info.address, info.workers             # doctest: +SKIP
('local', 2)

``connect(None)`` uses ``$RAY_ADDRESS`` when it is set, else starts Ray inside this process
(all cores, fewer when memory is short, no dashboard, bound to 127.0.0.1) with a warm trial
process per worker slot (:func:`runner_pool`). ``connect(address)``
joins a running cluster (``ray start --head`` on a machine, ``ray start --address=…`` on the
others); an address that does not answer raises a ``ParamError`` naming ``address``, and nothing
is left running. The code of ``dgs_core`` travels to the cluster's workers with the job
(Ray's ``py_modules``), so they need only the same Python packages installed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgs_core.params import ParamError
from dgs_core.studies.runners import RunnerPool

ADDRESS_ENV = "RAY_ADDRESS"
ADDRESS_LOCAL = "local"  # EngineInfo.address of the embedded Ray
# Memory, measured with bench/studies.py --page-target (Ray 2.60, moons): Ray's own processes
# (GCS, raylet, agents) hold about 0.6 GB resident once started, and each worker slot's warm
# runner, which imports torch and trains small models, about 0.5 GB (1.67 GB with 2 slots, after
# start-up and at the study's peak alike; an ASHA study's Tune processes add as much again).
# Fewer workers than cores when memory is short: a 4 GB laptop with 1.5 GB free gets 1.
RAY_BASE_BYTES = 640 << 20
WORKER_MEMORY_BYTES = 512 << 20
OBJECT_STORE_BYTES = 128 << 20  # studies pass small dicts; Ray's default takes 30% of the memory
CONNECT_TIMEOUT_S = 20.0
# Ray waits a fixed 30 s for its raylet to register; on a machine loaded by other work that can
# pass (seen here with a load average of 20-30 on 2 cores), and a second start usually succeeds.
START_ATTEMPTS = 2

_PACKAGE = Path(__file__).resolve().parents[1]  # dgs_core/
_lock = threading.Lock()
# Ray asks Linux to kill the processes it starts (GCS, raylet) when their parent dies
# (PR_SET_PDEATHSIG), and for Linux that parent is the *thread* that started them. A study's
# thread that started the embedded Ray took Ray down with it when it ended, and this process
# 60 s later (Ray's client gives up on its GCS and exits): the page server, after its first
# fair comparison. So the embedded Ray is started from one thread that lives as long as the
# process.
_starter = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgs-ray-start")


def _in_starter_thread(start: Callable[..., Any], **kwargs: Any) -> Any:
    return _starter.submit(start, **kwargs).result()


@dataclass(frozen=True)
class EngineInfo:
    """Where studies run: ``address`` ("local" for the embedded Ray) and its worker slots."""

    address: str
    workers: int


_current: EngineInfo | None = None
_pool: RunnerPool | None = None


def available_memory() -> int:
    """Bytes of memory available to new processes (Linux's MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def local_workers() -> int:
    """Worker slots for the embedded Ray: every core, fewer when the memory left after Ray's own
    processes cannot hold a trial process per core (at least 1)."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, (available_memory() - RAY_BASE_BYTES) // WORKER_MEMORY_BYTES))


def runner_pool() -> RunnerPool | None:
    """The embedded Ray's warm trial processes (:mod:`~dgs_core.studies.runners`); None before
    :func:`connect` and on a cluster."""
    return _pool


def current() -> EngineInfo | None:
    """Where studies run now; None until :func:`connect` has started or joined a Ray (a page
    shows "starting Ray…" meanwhile)."""
    return _current


def connect(address: str | None = None) -> EngineInfo:
    """Ray for studies: the cluster at ``address`` (or ``$RAY_ADDRESS``), else an embedded one.

    Reuses a connection already made to the same place; switching places shuts the old one down.
    """
    global _current, _pool
    import ray  # seconds to import: only when a study runs
    import ray.tune  # about a second more: paid with Ray's start-up, not by the first study

    wanted = address or os.environ.get(ADDRESS_ENV) or None
    if wanted is not None and not isinstance(wanted, str):
        raise ParamError(
            "address", wanted, f"Invalid address: {wanted!r} (must be host:port or ray://host:port)"
        )
    where = wanted or ADDRESS_LOCAL
    with _lock:
        if _current is not None and _current.address == where and ray.is_initialized():
            return _current
        if ray.is_initialized():
            ray.shutdown()
        _current, _pool = None, None
        if wanted is None:
            workers = local_workers()
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    _in_starter_thread(
                        ray.init,
                        num_cpus=workers,
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                        object_store_memory=OBJECT_STORE_BYTES,
                        _node_ip_address="127.0.0.1",
                        runtime_env={"env_vars": {"PYTHONPATH": str(_PACKAGE.parent)}},
                    )
                    break
                except Exception as exc:  # Ray raises a bare Exception when its node starts too slowly
                    ray.shutdown()
                    stop_left_behind(str(Path(ray.__file__).parent))
                    if attempt == START_ATTEMPTS:
                        raise RuntimeError(
                            f"The embedded Ray did not start ({START_ATTEMPTS} attempts): {exc}"
                        ) from exc
            _pool = RunnerPool(workers)
            _current = EngineInfo(address=where, workers=workers)
            return _current
        try:
            _check_reachable(wanted)
            _use_token_auth()
            with _loopback(_host(wanted) in ("127.0.0.1", "localhost")):
                ray.init(
                    address=wanted,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env={"py_modules": [str(_PACKAGE)]},
                )
            workers = int(ray.cluster_resources().get("CPU", 1))
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            if ray.is_initialized():
                ray.shutdown()
            raise ParamError(
                "address",
                wanted,
                f"Invalid address: {wanted!r} (no Ray cluster answered there: {exc})",
            ) from None
        _current = EngineInfo(address=where, workers=workers)
        return _current


def stop_left_behind(marker: str, grace_s: float = 5.0) -> int:
    """Stop this process's children whose command line holds ``marker``: SIGTERM, then SIGKILL
    for any still there after ``grace_s`` seconds; returns how many. A ``ray.init`` whose node
    does not come up in time (Ray waits 30 s for its raylet: a heavily loaded machine) raises
    before Ray keeps a handle on the processes it started, so ``ray.shutdown()`` cannot stop
    them; their command lines name Ray's package folder."""
    found = children_with(marker)
    for pid in found:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := set(children_with(marker)) & set(found)) and time.monotonic() < deadline:
        time.sleep(0.1)  # an ended child has no command line: it drops out of children_with
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(found)


def children_with(marker: str) -> list[int]:
    """This process's children whose command line holds ``marker`` (Linux's /proc; none
    elsewhere). A child that has ended and not been waited for has no command line."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if marker in command:
            found.append(int(entry))
    return found


def _use_token_auth() -> None:
    """Ray's clusters authenticate with a token (``ray start`` writes ``~/.ray/auth_token``), and
    a driver joining one sends it only in token mode, which Ray switches on by itself for the
    clusters it starts, not for those it joins: switch it on (Ray's own helper) when a token is
    at hand and ``RAY_AUTH_MODE`` does not say otherwise."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextlib.contextmanager
def _loopback(on: bool) -> Iterator[None]:
    """Ray rewrites a loopback address to this machine's network IP before connecting, where a
    head started with ``--node-ip-address=127.0.0.1`` does not answer. Ray's own switch for
    clusters on one machine (``ray_constants.ENABLE_RAY_CLUSTER``, read when the address is
    resolved) keeps it on loopback; it is set back right after connecting."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = before and not on
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0] or address


def _check_reachable(address: str) -> None:
    """A TCP connection to the cluster's head first: Ray itself retries an address that does
    not answer for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ParamError(
            "address", address, f"Invalid address: {address!r} (must be host:port or ray://host:port)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S / 4).close()
    except OSError as exc:
        raise ParamError(
            "address", address, f"Invalid address: {address!r} (no Ray cluster answered there: {exc})"
        ) from None


def shutdown() -> None:
    """Leave the cluster (or stop the embedded Ray)."""
    global _current, _pool
    import ray

    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _current, _pool = None, None
