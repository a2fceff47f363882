"""The on-disk run store: sessions never see each other's unsaved runs, saved runs are shared,
a restart loses nothing, and a failed import leaves nothing behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.store import RUNS_DIR_ENV, RunStore, StoreError, clean_name, is_session_id, new_session_id
from tests.runs.test_bundles import assert_identical, rewrite, small_training_bundle

A, B = new_session_id(), new_session_id()


@pytest.fixture(scope="module")
def data() -> bytes:
    return small_training_bundle()[1]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_runs_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv(RUNS_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    assert RunStore().root == tmp_path / "runs"


def test_unsaved_runs_belong_to_their_session_until_saved(store: RunStore, data: bytes) -> None:
    info = store.add(data, session=A)
    assert not info.saved and info.kind == "training" and info.labels == ("sgd", "adam")
    assert [i.id for i in store.list(A)] == [info.id]
    assert store.list(B) == [] and store.list() == []
    for attempt in (
        lambda: store.load(info.id, B),
        lambda: store.data(info.id, B),
        lambda: store.rename(info.id, "mine now", session=B),
        lambda: store.delete(info.id, session=B),
        lambda: store.save(info.id, session=B),
    ):
        with pytest.raises(ValueError, match="Unknown run"):
            attempt()
    assert store.get(info.id, A).name == info.name  # untouched by B's attempts

    saved = store.save(info.id, session=A)
    assert saved.saved and saved.name == info.name
    assert [i.id for i in store.list(B)] == [info.id] == [i.id for i in store.list()]
    assert store.data(info.id) == data


def test_a_restart_finds_everything_and_renames_persist(store: RunStore, data: bytes) -> None:
    shared = store.save(store.add(data, session=A, name="shared run").id, session=A)
    unsaved = store.add(data, session=A, name="draft")
    store.rename(shared.id, "  renamed\tby\nteacher ", session=B)
    restarted = RunStore(store.root)
    names = {i.id: i.name for i in restarted.list(A)}
    assert names == {shared.id: "renamed by teacher", unsaved.id: "draft"}
    bundle = restarted.load(unsaved.id, A)
    original = store.load(shared.id)
    assert_identical(bundle.trainer.state_dict(), original.trainer.state_dict())


def test_delete_removes_one_run_and_nothing_else(store: RunStore, data: bytes) -> None:
    keep = store.add(data, session=A, name="keep")
    gone = store.add(data, session=A, name="gone")
    other = store.add(data, session=B, name="other session")
    store.delete(gone.id, session=A)
    assert [i.name for i in store.list(A)] == ["keep"] and [i.name for i in store.list(B)] == [
        "other session"
    ]
    with pytest.raises(ValueError, match="Unknown run"):
        store.load(gone.id, A)
    assert store.data(keep.id, A) == data == store.data(other.id, B)
    assert not any((store.root / "tmp").iterdir())


def test_a_failed_import_writes_nothing_and_loses_nothing(store: RunStore, data: bytes) -> None:
    first = store.add(data, session=A, name="first")
    before = {p: (store.root / p).read_bytes() for p in _files(store.root)}
    for bad in (data[:1000], b"not a zip", data.replace(b"manifest.json", b"manifest.jsoo")):
        with pytest.raises(SnapshotError):
            store.add(bad, session=A)
    assert {p: (store.root / p).read_bytes() for p in _files(store.root)} == before
    assert [i.id for i in store.list(A)] == [first.id]


def test_an_interrupted_write_leaves_no_partial_run(
    store: RunStore, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(StoreError, match="disk is full"):
        store.add(data, session=A)
    monkeypatch.undo()
    assert store.list(A) == [] and _files(store.root) == []


def test_ids_and_names_are_checked(store: RunStore, data: bytes) -> None:
    assert is_session_id(new_session_id()) and not is_session_id("../../etc") and not is_session_id("short")
    for session in ("../../etc/x" * 2, "a/b" * 8, ""):
        with pytest.raises(ValueError, match="Invalid session id"):
            store.list(session)
    for run_id in ("../saved", "0" * 31, "../../" + "0" * 32):
        with pytest.raises(ValueError, match="Invalid run id"):
            store.load(run_id, A)
    assert clean_name("a\x00b\r\nc" + "x" * 200) == "a b c" + "x" * 115
    with pytest.raises(ValueError, match="must not be empty"):
        clean_name(" \n ")
    info = store.add(data, session=A)
    with pytest.raises(ValueError, match="must not be empty"):
        store.rename(info.id, "   ", session=A)


def test_purge_removes_idle_scratch_areas_only(store: RunStore, data: bytes) -> None:
    old = store.add(data, session=A)
    fresh = store.add(data, session=B)
    shared = store.save(store.add(data, session=B).id, session=B)
    long_ago = time.time() - 40 * 24 * 3600
    for path in [store.root / "sessions" / A, *(store.root / "sessions" / A).rglob("*")]:
        os.utime(path, (long_ago, long_ago))
    assert store.purge() == 1
    assert store.list(A) == [store.get(shared.id)]
    assert {i.id for i in store.list(B)} == {fresh.id, shared.id}
    with pytest.raises(ValueError, match="Unknown run"):
        store.get(old.id, A)


# -- storage that fails cleanly, quotas (issue #21) ---------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only disk"), (errno.EACCES, "permission denied")],
)
def test_a_failing_disk_gives_one_clean_message_and_leaves_nothing(
    store: RunStore, data: bytes, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    real = Path.write_bytes

    def failing(self: Path, payload: bytes) -> int:
        if self.name == "bundle.zip":
            real(self, payload[: len(payload) // 2])  # half written, then the disk fails
            raise OSError(code, os.strerror(code), str(self))
        return real(self, payload)

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(StoreError) as raised:
        store.add(data, session=A)
    message = str(raised.value)
    assert reason in message and str(store.root) not in message and "/" not in message
    assert store.list(A) == [] and not any((store.root / "tmp").iterdir())


def test_a_failing_rename_leaves_no_partial_metadata(store: RunStore, data: bytes, monkeypatch) -> None:
    info = store.add(data, session=A)
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("meta.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(StoreError, match="disk is full"):
        store.rename(info.id, "new name", session=A)
    assert store.get(info.id, A).name == info.name
    assert not list(store.root.rglob(".meta-*"))


CHURN = """
import os, sys, time
from pathlib import Path
from dgs_core.runs.store import RunStore
root, source, session, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
done = 0
def counted(real):  # each file operation of the store; after the kill_at-th one, wait to be killed
    def call(*args, **kwargs):
        global done
        result = real(*args, **kwargs)
        done += 1
        if done == kill_at:
            print("paused", flush=True)
            time.sleep(120)
        return result
    return call
Path.write_bytes, Path.write_text = counted(Path.write_bytes), counted(Path.write_text)
os.rename, os.replace = counted(os.rename), counted(os.replace)
store, data = RunStore(root), Path(source).read_bytes()
for i in range(2):  # add and rename two runs; save the first, delete the second
    info = store.add(data, session=session)
    store.rename(info.id, f"run {i}", session=session)
    if i == 0:
        store.save(info.id, session=session)
    else:
        store.delete(info.id, session=session)
"""


def test_kill_9_during_store_writes_leaves_nothing_after_a_restart(tmp_path: Path, data: bytes) -> None:
    """Processes adding, renaming, saving and deleting runs are killed amid their writes; the
    server's start (``recover()``: the Runs page does it once per process) leaves no staging
    folder, no half-written metadata and no run that does not load."""
    source = tmp_path / "bundle.zip"
    source.write_bytes(data)
    # killed after this many file operations: the bundle is in a staging folder; a rename's
    # metadata is half-written; a deleted run is in the trash (the three start at once)
    children = {
        operations: subprocess.Popen(
            [sys.executable, "-c", CHURN, str(tmp_path / str(operations)), str(source), A, str(operations)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for operations in (1, 5, 16)
    }
    for operations, child in children.items():
        assert child.stdout.readline().strip() == "paused", operations
        child.kill()  # kill -9 right after that operation
        child.wait(timeout=30)
        root = tmp_path / str(operations)
        restarted = RunStore(root)
        restarted.recover()
        assert not (root / "tmp").exists() or not any((root / "tmp").iterdir()), operations
        assert not list(root.rglob(".meta-*")), operations
        runs = [*(root / "saved").glob("*"), *(root / "sessions").glob("*/*")]
        assert {d.name for d in runs} == {i.id for i in restarted.list(A)}  # every run folder is whole
        for info in restarted.list(A):
            assert restarted.load(info.id, A).kind == "training"
        assert restarted.add(data, session=A).name  # and the store works


def test_a_session_has_a_quota_of_runs_and_bytes(store: RunStore, data: bytes, monkeypatch) -> None:
    monkeypatch.setenv("DGS_LAB_MAX_SESSION_RUNS", "2")
    first = store.add(data, session=A)
    second = store.add(data, session=A, name="again")
    with pytest.raises(StoreError, match="DGS_LAB_MAX_SESSION_RUNS = 2"):
        store.add(data, session=A)
    store.add(data, session=B)  # another session has its own quota
    store.save(second.id, session=A)  # a saved run still counts for the session that saved it
    assert store.usage(A) == (2, first.size + second.size)
    monkeypatch.setenv("DGS_LAB_MAX_SESSION_RUNS", "20")
    monkeypatch.setenv("DGS_LAB_MAX_SESSION_MB", "1")
    with pytest.raises(StoreError, match="DGS_LAB_MAX_SESSION_MB"):
        store.add(rewrite(data, {"figures/index.html": b"x" * (1 << 20)}), session=A)
