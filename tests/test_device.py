"""Device choice and small-tensor mode: thread count and denormal flushing restored, nesting."""

from __future__ import annotations

import threading

import pytest
import torch

from dgs_core.device import (
    available_devices,
    default_device,
    flush_denormal_enabled,
    resolve_device,
    small_tensor_mode,
)


@pytest.fixture
def flushing_cpu():
    """Skips where the CPU cannot flush denormals; leaves flushing off and the threads as found."""
    threads = torch.get_num_threads()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def test_available_devices(monkeypatch):
    devices = available_devices()
    assert devices[0] == "cpu" and default_device().type in devices
    assert ("cuda" in devices) == torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cuda" in available_devices()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == default_device()


def test_flush_probe_follows_the_setting(flushing_cpu):
    assert not flush_denormal_enabled()
    denormal = torch.tensor(1e-39, dtype=torch.float32)
    assert (denormal * 1.0).item() > 0.0
    torch.set_flush_denormal(True)
    assert flush_denormal_enabled()
    assert (denormal * 1.0).item() == 0.0
    torch.set_flush_denormal(False)
    assert not flush_denormal_enabled()


def test_mode_sets_one_thread_and_flushing_then_restores_both(flushing_cpu):
    torch.set_num_threads(2)
    with small_tensor_mode():
        assert torch.get_num_threads() == 1
        assert flush_denormal_enabled()
    assert torch.get_num_threads() == 2
    assert not flush_denormal_enabled()


def test_leaving_an_inner_block_keeps_the_outer_block_flushing(flushing_cpu):
    torch.set_num_threads(2)
    with small_tensor_mode():
        with small_tensor_mode():
            pass
        assert flush_denormal_enabled(), "the inner exit turned the outer block's flushing off"
        assert torch.get_num_threads() == 1
    assert not flush_denormal_enabled()
    assert torch.get_num_threads() == 2


def test_flushing_that_was_on_before_stays_on(flushing_cpu):
    torch.set_flush_denormal(True)
    with small_tensor_mode():
        pass
    assert flush_denormal_enabled()


def test_an_exception_restores_the_settings(flushing_cpu):
    torch.set_num_threads(2)
    with pytest.raises(KeyError), small_tensor_mode():
        raise KeyError("boom")
    assert torch.get_num_threads() == 2
    assert not flush_denormal_enabled()


def test_another_thread_leaving_its_block_does_not_touch_this_one(flushing_cpu):
    torch.set_num_threads(2)
    go = threading.Event()
    seen = {}

    def worker():
        go.wait(10)
        with small_tensor_mode():
            seen["inside"] = (torch.get_num_threads(), flush_denormal_enabled())
        seen["after"] = flush_denormal_enabled()

    thread = threading.Thread(target=worker)
    thread.start()  # outside the block: a new thread inherits its creator's FP flags
    with small_tensor_mode():
        go.set()
        thread.join(10)
        assert torch.get_num_threads() == 1
        assert flush_denormal_enabled()
    assert seen == {"inside": (1, True), "after": False}
    assert torch.get_num_threads() == 2
    assert not flush_denormal_enabled()
