"""The run store: snapshot bundles kept on disk, so a refresh or a server restart loses nothing.

Embedded, nothing to start: a directory, ``$DGS_LAB_RUNS_DIR`` or ``./runs`` by default::

    runs/
      saved/<run id>/bundle.zip, meta.json          saved runs: shared by every browser session
      sessions/<session id>/<run id>/…              unsaved runs: one browser session's scratch
      tmp/                                          half-written runs (never listed)

Saved runs are shared on purpose: a teacher saves runs once and every student's browser
lists them (and may rename or delete them). Unsaved runs (an upload, a resumed run) live in
the scratch area of the browser session that made them, keyed by a random session id: no
other session can list, read, rename, save or delete them, since every lookup goes through
the caller's own session directory. The app keeps a browser's session id in Streamlit's
session state and a first-party cookie, never in a URL (``app_pages/parts/run_list.py``): a
refresh finds the same scratch area, a link to a page gives no access to it.

Writes are atomic: a run is written under ``tmp/`` and renamed into place (one ``rename``
on one file system), metadata is replaced with ``os.replace``, and a deleted run is renamed
out of sight before it is removed. A bundle is checked completely
(:func:`dgs_core.runs.read.read_bundle`) before anything is written, a new run always gets a
fresh id, and nothing ever writes over an existing bundle: a failed import leaves no trace
and loses nothing.

Storage that fails cleanly: a full, read-only or forbidden disk raises :class:`StoreError`, one
message without server paths, and leaves nothing half-written (a write's staging folder is
removed on failure; :meth:`RunStore.recover`, called when a server starts, removes what a killed
process left). Each browser session has a quota of stored runs and bytes
(:mod:`dgs_core.limits`); the runs a session saved count against it too.

>>> store = RunStore("/tmp/dgs-runs-doctest")
>>> session = new_session_id()
>>> [info.name for info in store.list(session)]   # saved runs + this session's unsaved ones
[]
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dgs_core.limits import server_limits
from dgs_core.params import invalid
from dgs_core.runs.bundle import Bundle
from dgs_core.runs.read import read_bundle

RUNS_DIR_ENV = "DGS_LAB_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
MAX_NAME = 120
SCRATCH_MAX_AGE_S = 30 * 24 * 3600  # unsaved runs of sessions idle this long are removed
_TMP_MAX_AGE_S = 3600  # leftovers of an interrupted write
_SESSION = re.compile(r"[A-Za-z0-9_-]{16,64}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class StoreError(ValueError):
    """The run store cannot do what was asked (full, read-only, over a quota); the message
    names the reason, never a server path."""


_OS_REASONS = {
    errno.ENOSPC: "the server's disk is full",
    errno.EDQUOT: "the server's disk quota is used up",
    errno.EROFS: "the run store is on a read-only disk",
    errno.EACCES: "the server may not write to the run store (permission denied)",
    errno.EPERM: "the server may not write to the run store (operation not permitted)",
}


@contextlib.contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """OSError → :class:`StoreError` saying what failed and why, without the server's paths."""
    try:
        yield
    except OSError as exc:
        reason = _OS_REASONS.get(
            exc.errno or 0, f"a storage error ({errno.errorcode.get(exc.errno or 0, 'unknown')})"
        )
        raise StoreError(f"Could not {action}: {reason}. Nothing was changed.") from None


def new_session_id() -> str:
    """A fresh, unguessable browser-session id (URL-safe)."""
    return secrets.token_urlsafe(18)


def is_session_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_SESSION.fullmatch(value))


def _check_session(session: str) -> str:
    if not is_session_id(session):
        raise ValueError(f"Invalid session id: {session!r} (16 to 64 letters, digits, '-' or '_')")
    return session


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"Invalid run id: {run_id!r}")
    return run_id


def clean_name(name: Any) -> str:
    """A display name: printable, one line, at most :data:`MAX_NAME` characters, not empty."""
    if not isinstance(name, str):
        raise invalid("name", name, "text")
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in name).split())[:MAX_NAME]
    if not cleaned:
        raise ValueError("Invalid name: '' (must not be empty)")
    return cleaned


@dataclass(frozen=True)
class RunInfo:
    """What the run list shows, from a run's ``meta.json`` (no need to open the bundle)."""

    id: str
    name: str
    kind: str
    saved: bool
    created: str  # when the run was exported (the manifest's time)
    stored: str  # when it entered the store
    size: int  # bytes of the bundle
    labels: tuple[str, ...]
    description: str  # "moons · 500 steps" / "rosenbrock · 300 steps"
    owner: str = ""  # a digest of the session that stored it (quotas count saved runs too)


class RunStore:
    """Saved and per-session unsaved runs under ``root`` (default ``$DGS_LAB_RUNS_DIR`` or ``runs``)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root or os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR).resolve()
        self._saved = self.root / "saved"
        self._sessions = self.root / "sessions"
        self._tmp = self.root / "tmp"

    # -- reading --------------------------------------------------------------------------------

    def list(self, session: str | None = None) -> list[RunInfo]:
        """Saved runs and, with ``session``, that session's unsaved ones; newest first."""
        dirs = [self._saved]
        if session is not None:
            dirs.append(self._sessions / _check_session(session))
        infos = []
        for directory in dirs:
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                info = self._info(entry)
                if info is not None:
                    infos.append(info)
        return sorted(infos, key=lambda i: (i.stored, i.id), reverse=True)

    def get(self, run_id: str, session: str | None = None) -> RunInfo:
        info = self._info(self._locate(run_id, session))
        if info is None:
            raise ValueError(f"Unknown run: {run_id} (its metadata is unreadable)")
        return info

    def bundle_path(self, run_id: str, session: str | None = None) -> Path:
        """The stored ``bundle.zip`` (read-only: never write to it)."""
        return self._locate(run_id, session) / "bundle.zip"

    def data(self, run_id: str, session: str | None = None) -> bytes:
        return self.bundle_path(run_id, session).read_bytes()

    def load(self, run_id: str, session: str | None = None) -> Bundle:
        """The run's bundle, read and checked again (the file on disk is not trusted either)."""
        return read_bundle(self.bundle_path(run_id, session))

    # -- writing --------------------------------------------------------------------------------

    def add(
        self, data: bytes, *, session: str, name: str | None = None, bundle: Bundle | None = None
    ) -> RunInfo:
        """Check ``data`` and keep it as an unsaved run of ``session``.

        Raises :class:`~dgs_core.runs.archive.SnapshotError` for a bad bundle, before anything
        is written. ``bundle``: the already-read bundle of ``data``, to skip reading it again.
        """
        session = _check_session(session)
        self._check_quota(session, len(data))
        bundle = bundle if bundle is not None else read_bundle(data)
        run_id = uuid.uuid4().hex
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        info = RunInfo(
            id=run_id,
            name=clean_name(name if name is not None else bundle.name),
            kind=bundle.kind,
            saved=False,
            created=str(bundle.manifest["created"]),
            stored=now,
            size=len(data),
            labels=tuple(bundle.labels),
            description=_describe(bundle),
            owner=_owner(session),
        )
        with _storage_errors("store the run"):
            staging = self._staging()
            try:
                (staging / "bundle.zip").write_bytes(data)
                _write_meta(staging, info)
                target = self._sessions / session
                target.mkdir(parents=True, exist_ok=True)
                os.rename(staging, target / run_id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return info

    def usage(self, session: str) -> tuple[int, int]:
        """(runs, bytes) that count against ``session``'s quota: its unsaved runs and the runs
        it saved."""
        owner = _owner(_check_session(session))
        mine = [i for i in self.list(session) if not i.saved or i.owner == owner]
        return len(mine), sum(i.size for i in mine)

    def _check_quota(self, session: str, size: int) -> None:
        limits = server_limits()
        runs, used = self.usage(session)
        if runs + 1 > limits.max_session_runs:
            raise StoreError(
                f"Could not store the run: this session keeps {runs} runs, the most a session may keep "
                f"($DGS_LAB_MAX_SESSION_RUNS = {limits.max_session_runs}). Delete one first."
            )
        if used + size > limits.max_session_mb << 20:
            raise StoreError(
                f"Could not store the run: {(used + size) / 2**20:.1f} MB would exceed this session's "
                f"{limits.max_session_mb} MB ($DGS_LAB_MAX_SESSION_MB). Delete a run first."
            )

    def save(self, run_id: str, *, session: str) -> RunInfo:
        """Make an unsaved run of ``session`` a saved (shared) run."""
        source = self._sessions / _check_session(session) / _check_run_id(run_id)
        if not source.is_dir():
            if (self._saved / run_id).is_dir():
                return self.get(run_id)
            raise ValueError(f"Unknown run: {run_id} (deleted, or unsaved in another session)")
        info = self._info(source)
        if info is None:
            raise ValueError(f"Unknown run: {run_id} (its metadata is unreadable)")
        with _storage_errors("save the run"):
            self._saved.mkdir(parents=True, exist_ok=True)
            _write_meta(source, _replace(info, saved=True, owner=_owner(session)))
            os.rename(source, self._saved / run_id)
        return self.get(run_id)

    def rename(self, run_id: str, name: str, *, session: str | None = None) -> RunInfo:
        directory = self._locate(run_id, session)
        info = self._info(directory)
        if info is None:
            raise ValueError(f"Unknown run: {run_id} (its metadata is unreadable)")
        renamed = _replace(info, name=clean_name(name))
        with _storage_errors("rename the run"):
            _write_meta(directory, renamed)
        return renamed

    def delete(self, run_id: str, *, session: str | None = None) -> None:
        directory = self._locate(run_id, session)
        with _storage_errors("delete the run"):
            trash = self._staging()
            try:
                os.replace(directory, trash / "run")  # gone from every list at once
            finally:
                shutil.rmtree(trash, ignore_errors=True)

    def purge(self, *, scratch_max_age_s: float = SCRATCH_MAX_AGE_S) -> int:
        """Remove unsaved runs of sessions idle longer than ``scratch_max_age_s`` and stale
        half-written ones; returns how many directories went."""
        now, removed = time.time(), 0
        for parent, age in ((self._sessions, scratch_max_age_s), (self._tmp, _TMP_MAX_AGE_S)):
            if not parent.is_dir():
                continue
            for entry in parent.iterdir():
                try:
                    newest = max([entry.stat().st_mtime, *(p.stat().st_mtime for p in entry.rglob("*"))])
                except OSError:
                    continue
                if now - newest > age:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed

    def recover(self) -> int:
        """Remove what an interrupted process left: every staging folder and every half-written
        ``meta.json``. Call it when a server starts (nothing else writes then); returns the count."""
        removed = 0
        if self._tmp.is_dir():
            for entry in self._tmp.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        for parent in (self._saved, *(self._sessions.iterdir() if self._sessions.is_dir() else ())):
            if parent.is_dir():
                for partial in parent.glob("*/.meta-*.json"):
                    partial.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- helpers -------------------------------------------------------------------------------

    def _staging(self) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        path = self._tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    def _locate(self, run_id: str, session: str | None) -> Path:
        run_id = _check_run_id(run_id)
        candidates = [self._saved / run_id]
        if session is not None:
            candidates.append(self._sessions / _check_session(session) / run_id)
        for path in candidates:
            if (path / "bundle.zip").is_file():
                return path
        raise ValueError(f"Unknown run: {run_id} (deleted, or unsaved in another session)")

    def _info(self, directory: Path) -> RunInfo | None:
        if not _RUN_ID.fullmatch(directory.name):
            return None
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            info = RunInfo(**{**meta, "labels": tuple(meta["labels"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None  # half-deleted or damaged: not listed
        return _replace(info, id=directory.name, saved=directory.parent == self._saved)


def _replace(info: RunInfo, **changes: Any) -> RunInfo:
    return RunInfo(**{**asdict(info), **changes})


def _write_meta(directory: Path, info: RunInfo) -> None:
    text = json.dumps({**asdict(info), "labels": list(info.labels)}, indent=1, ensure_ascii=False)
    partial = directory / f".meta-{uuid.uuid4().hex}.json"
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, directory / "meta.json")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _owner(session: str) -> str:
    """A digest of a session id: stored with a saved run, so a quota can count it without the
    secret itself being written to disk."""
    return hashlib.sha256(f"dgs-lab-run-owner:{session}".encode()).hexdigest()[:24]


def _describe(bundle: Bundle) -> str:
    config = bundle.config
    where = config.get("task") if bundle.kind == "training" else config.get("surface")
    return f"{where} · {bundle.steps} steps"
