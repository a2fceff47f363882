"""The flat-gradient contract: ``Diagnostics(..., flat_grads=buffer)`` where every ``p.grad`` is a
view of one buffer, in the optimizer's order (the Training lab's trainer keeps its gradients so)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dgs_core.diagnostics import Diagnostics, ReferenceDiagnostics, to_frame
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer


def _params() -> list[torch.Tensor]:
    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    return [w, b]


def _buffer_for(params: list[torch.Tensor], order: tuple[int, ...] | None = None) -> torch.Tensor:
    """One buffer with each p.grad a view of it, laid out in ``order`` (default: the params')."""
    order = tuple(range(len(params))) if order is None else order
    buffer = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype)
    views = dict(zip(order, buffer.split([params[i].numel() for i in order]), strict=True))
    for i, p in enumerate(params):
        p.grad = views[i].view(p.shape)
    return buffer


def _run(cls: type, flat: bool, *, grads: str = "before", steps: int = 12) -> list:
    params = _params()
    opt = torch.optim.Adam(params, lr=0.01)
    buffer = _buffer_for(params)
    kwargs = {"flat_grads": buffer} if flat else {}
    diag = cls(opt, [("w", params[0]), ("b", params[1])], every=5, keep="all", grads=grads, **kwargs)
    gen = torch.Generator().manual_seed(1)
    records = []
    for t in range(1, steps + 1):
        new = torch.randn(15, generator=gen, dtype=torch.float64)
        if grads == "before":
            buffer.copy_(new)  # in place: the views stay p.grad
            diag.before_step()
            opt.step()
        else:

            def closure(new: torch.Tensor = new) -> torch.Tensor:
                buffer.zero_()
                buffer.add_(new)  # as backward adds into the zeroed views
                return torch.zeros(())

            diag.before_step()
            opt.step(closure)
        if (record := diag.after_step(t)) is not None:
            records.append(record)
    return records


@pytest.mark.parametrize("grads", ["before", "after"])
def test_reading_the_buffer_gives_the_records_of_reading_each_gradient(grads):
    with_buffer, without = _run(Diagnostics, True, grads=grads), _run(Diagnostics, False, grads=grads)
    reference = _run(ReferenceDiagnostics, True, grads=grads)
    assert [r.step for r in with_buffer] == [r.step for r in without] == [1, 6, 11]
    pd.testing.assert_frame_equal(to_frame(with_buffer), to_frame(without), check_exact=True)
    pd.testing.assert_frame_equal(to_frame(with_buffer), to_frame(reference), rtol=1e-12)
    for a, b in zip(with_buffer, without, strict=True):
        for key, values in a.elements.items():
            torch.testing.assert_close(values, b.elements[key], rtol=0, atol=0)


def test_the_buffer_is_read_as_the_gradients_row():
    params = _params()
    buffer = _buffer_for(params)
    diag = Diagnostics(torch.optim.SGD(params, lr=0.1), flat_grads=buffer)
    assert diag._flat is buffer  # every tensor tracked whole, in the buffer's order: no gather
    params = [torch.randn(100, 30, requires_grad=True), torch.randn(3, requires_grad=True)]
    buffer = _buffer_for(params)
    diag = Diagnostics(torch.optim.SGD(params, lr=0.1), sample_size=64, flat_grads=buffer)
    assert diag._flat is None  # a sampled tensor: its elements are gathered from its view
    buffer.normal_()
    diag.before_step()
    diag.after_step(1)
    s = diag._tracked[0]
    torch.testing.assert_close(s.importance, 0.1 * params[0].grad.abs().reshape(-1)[s.index], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda params: _buffer_for(params, order=(1, 0)), "the gradient of w is not its slice"),
        (
            lambda params: torch.zeros(14, dtype=torch.float64),
            "Invalid flat_grads: 'tensor of shape \\(14,\\)'",
        ),
        (lambda params: _buffer_for(params).view(5, 3), "Invalid flat_grads: 'tensor of shape \\(5, 3\\)'"),
        (lambda params: torch.zeros(15, dtype=torch.float64), "the gradient of w is not its slice"),
    ],
)
@pytest.mark.parametrize("cls", [Diagnostics, ReferenceDiagnostics])
def test_a_buffer_that_breaks_the_contract_is_refused(cls, make, message):
    params = _params()
    buffer = make(params)
    with pytest.raises(ValueError, match=message):
        cls(torch.optim.SGD(params, lr=0.1), [("w", params[0]), ("b", params[1])], flat_grads=buffer)


@pytest.mark.parametrize("cls", [Diagnostics, ReferenceDiagnostics])
def test_a_replaced_gradient_raises_instead_of_reading_a_stale_buffer(cls):
    params = _params()
    opt = torch.optim.SGD(params, lr=0.1)
    diag = cls(opt, flat_grads=_buffer_for(params))
    diag.before_step()
    opt.step()
    diag.after_step(1)
    opt.zero_grad()  # set_to_none=True: p.grad is no longer a view of the buffer
    params[0].grad, params[1].grad = torch.ones(4, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"flat_grads: a p\.grad is no longer a view"):
        diag.before_step()


def test_the_trainer_passes_its_buffer():
    config = TrainConfig(
        task="moons", optimizers=["sgd"], steps=5, eval_every=5, task_params={"n_samples": 100}
    )
    lane = Trainer(config).lanes["sgd"]
    assert lane.grads is not None and lane.diagnostics._flat_grads is lane.grads
    assert lane.diagnostics._flat is lane.grads  # the lab's models are small: read as it is
