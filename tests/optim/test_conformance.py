"""The torch.optim contract, checked for every optimizer: a table in the spirit of torch's OptimizerInfo.

A researcher does ``from dgs_core.optim import Adan`` and drops it into a loop of their own:
they copy it, checkpoint it, hook it, schedule it, hand it parameters without gradients,
complex or half-precision parameters, ask it to maximize. Rows: every registered optimizer
(``registry.infos()``) and every optimizer class ``dgs_core.optim`` exports (one more row for
ExtraSGD's noise variant, whose generator is state of its own). Columns: one test per check.

Every row runs on the same small problem (a 0-d, a 1-d and a 2-d tensor; a quadratic loss),
with the registry's defaults except a learning rate large enough to see each step in half
precision. The fused checks use the same shapes, dtypes and hyperparameters in every test, so
the compiled kernels (``dgs_core.optim._compile``) are built once per process and shared.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

import dgs_core.optim
from dgs_core.optim import _compile, registry
from dgs_core.params import Param, ParamError

F32, F64 = torch.float32, torch.float64
SHAPES = [(), (3,), (2, 3)]
STEPS = 3


@dataclass(frozen=True)
class Row:
    """One optimizer of the table: how to build it, and what the checks need to know of it."""

    id: str
    cls: type[torch.optim.Optimizer]
    name: str | None = None  # registry name (None: built from the class)
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def ours(self) -> bool:
        """DGS Lab's class (torch's own are registered unchanged, SPEC §1.1)."""
        return self.cls.__module__.startswith("dgs_core.")

    @property
    def needs_closure(self) -> bool:
        return self.name is not None and registry.get(self.name).needs_closure

    def build(self, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
        if self.name is None:
            return self.cls(params, **{**self.hparams, **kwargs})
        return registry.create(self.name, params, **{**self.hparams, **kwargs})


def _check_hparams(info: registry.OptimizerInfo) -> dict[str, Any]:
    # Steps that float16 can resolve (the loss's curvature is at most 2, so these stay stable),
    # and some weight decay wherever there is one: maximize and the copies must carry it.
    hparams: dict[str, Any] = {"lr": 0.1}
    if info.cls is dgs_core.optim.LARS:
        hparams.update(lr=1.0, trust_coefficient=0.1)
    if "weight_decay" in info.defaults:
        hparams["weight_decay"] = 0.01
    if "extrapolation_lr" in info.defaults:
        hparams["extrapolation_lr"] = 0.1
    return hparams


def _rows() -> list[Row]:
    rows = [Row(info.name, info.cls, info.name, _check_hparams(info)) for info in registry.infos()]
    extrasgd = registry.get("extrasgd")
    rows.append(
        Row("extrasgd-noise", extrasgd.cls, "extrasgd", {**_check_hparams(extrasgd), "variant": "noise"})
    )
    registered = {row.cls for row in rows}
    for cls in _exported_optimizers():
        if cls not in registered:
            rows.append(Row(cls.__name__, cls))
    return rows


def _exported_optimizers() -> list[type[torch.optim.Optimizer]]:
    values = [getattr(dgs_core.optim, name) for name in dgs_core.optim.__all__]
    return [v for v in values if isinstance(v, type) and issubclass(v, torch.optim.Optimizer)]


ROWS = _rows()
OURS = [row for row in ROWS if row.ours]
# rows whose fused=True path is dgs_core.optim._compile.compiled (torch's fused kernels are C++)
COMPILED = [row for row in OURS if row.cls is not dgs_core.optim.AdAdaGrad]


def _ids(rows: list[Row]) -> list[str]:
    return [row.id for row in rows]


# -- the problem ---------------------------------------------------------------------------------


def _params(dtype: torch.dtype = F64, shapes: list[tuple[int, ...]] = SHAPES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g, dtype=F64).to(dtype).requires_grad_() for shape in shapes]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


def _values(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _loss(params: list[torch.Tensor]) -> torch.Tensor:
    """½ Σ a (x − 0.3)² over every real number of every tensor (a complex one through its
    ``view_as_real`` twin, so both get the same gradient), curvatures a in [0.5, 2]."""
    total = torch.zeros((), dtype=F64)
    for p in params:
        x = torch.view_as_real(p) if p.is_complex() else p
        a = torch.linspace(0.5, 2.0, x.numel(), dtype=x.dtype).reshape(x.shape)
        total = total + 0.5 * (a * (x - 0.3) ** 2).sum()
    return total


def _closure(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], sign: float = 1.0
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = sign * _loss(params)
        loss.backward()
        return loss

    return closure


def _run(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: int = STEPS, sign: float = 1.0
) -> None:
    for _ in range(steps):
        opt.step(_closure(opt, params, sign))


def _assert_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.detach(), y.detach()), (x, y)


def _assert_same_state(a: Any, b: Any, where: str = "state_dict") -> None:
    """Equal nested state: tensors bit for bit, everything else by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    return max(
        float((x.detach().double() - y.detach().double()).abs().max())
        for x, y in zip(before, after, strict=True)
    )


# -- the rows --------------------------------------------------------------------------------------


def test_every_exported_optimizer_class_is_a_row() -> None:
    assert set(_exported_optimizers()) <= {row.cls for row in ROWS}
    assert {row.name for row in ROWS} >= set(registry.names())


# -- copies and checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_copy_continues_identically(row: Row, how: str) -> None:
    params = _params()
    opt = row.build(params)
    _run(opt, params)
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy((params, opt))
    else:
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    _run(opt, params)
    _run(opt2, params2)
    _assert_equal(params, params2)
    _assert_same_state(opt.state_dict(), opt2.state_dict())


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_state_dict_into_a_fresh_optimizer_continues_identically(row: Row, fused: bool) -> None:
    switches = {"fused": True} if fused else {}
    params = _params()
    opt = row.build(params, **switches)
    _run(opt, params)
    saved, checkpoint = copy.deepcopy(opt.state_dict()), _values(params)
    _run(opt, params)

    resumed = _leaves(checkpoint)
    opt2 = row.build(resumed, **switches)
    opt2.load_state_dict(saved)
    _run(opt2, resumed)
    _assert_equal(params, resumed)
    _assert_same_state(opt.state_dict(), opt2.state_dict())


@pytest.mark.parametrize("row", OURS, ids=_ids(OURS))
def test_state_dict_saved_before_a_key_existed_loads_with_its_default(row: Row) -> None:
    # A checkpoint from before a group key was added (as maximize was) loads with its default.
    params = _params()
    opt = row.build(params)
    _run(opt, params)
    saved = copy.deepcopy(opt.state_dict())
    for group in saved["param_groups"]:
        del group["maximize"], group["weight_decay"]
    opt2 = row.build(_leaves(params), weight_decay=0.5)
    opt2.load_state_dict(saved)
    assert [(group["maximize"], group["weight_decay"]) for group in opt2.param_groups] == [(False, 0.5)]
    _run(opt2, opt2.param_groups[0]["params"])


# -- parameter groups and hooks -------------------------------------------------------------------


def _bad(spec: Param) -> Any:
    if spec.kind == "bool":
        return "yes"
    if spec.kind == "choice":
        return "no-such-choice"
    return spec.low - 1.0 if spec.low is not None else float("nan")


@pytest.mark.parametrize("row", OURS, ids=_ids(OURS))
def test_add_param_group_validates(row: Row) -> None:
    # torch's own classes validate in __init__ only: that is their contract, registered unchanged.
    params = _params()
    opt = row.build(params)
    info = registry.get(row.name)
    group_keys = set(opt.param_groups[0])
    cases: list[tuple[str, str, Any]] = [
        (spec.name, spec.name, _bad(spec)) for spec in info.hyperparams if spec.name in group_keys
    ]
    for arg, parts in info.tuple_args.items():
        good = opt.param_groups[0][arg]
        cases.append((parts[0], arg, (1.5, *good[1:])))  # every beta lies in [0, 1)
    cases.append(("maximize", "maximize", "yes"))
    for field_name, key, value in cases:
        extra = torch.zeros(2, dtype=F64, requires_grad=True)
        with pytest.raises(ParamError) as error:
            opt.add_param_group({"params": [extra], key: value})
        assert error.value.field == field_name, (key, value)
        assert len(opt.param_groups) == 1, f"the refused group ({key}={value!r}) was kept"

    extra = torch.zeros(2, dtype=F64, requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 0.05})
    if hasattr(opt, "propose_batch_size"):  # the batch-size family tests the new group at once
        opt.zero_grad()
        _loss([*params, extra]).backward()
        assert opt.propose_batch_size(torch.randn(4, sum(p.numel() for p in [*params, extra]))) is not None
    _run(opt, [*params, extra])
    assert _moved([torch.zeros(2, dtype=F64)], [extra]) > 0


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_step_hooks_fire_once_per_step(row: Row) -> None:
    # torch wraps each class's step once, when its first instance is made: make one of every
    # optimizer class this one derives from first, as a process that used them would have.
    for base in row.cls.__mro__:
        if issubclass(base, torch.optim.Optimizer) and base is not torch.optim.Optimizer:
            base([torch.zeros(1, requires_grad=True)])
    params = _params()
    opt = row.build(params)
    calls = {"pre": 0, "post": 0}
    opt.register_step_pre_hook(lambda *_: calls.__setitem__("pre", calls["pre"] + 1))
    opt.register_step_post_hook(lambda *_: calls.__setitem__("post", calls["post"] + 1))
    _run(opt, params)
    assert calls == {"pre": STEPS, "post": STEPS}


# -- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_parameters_without_gradient_are_untouched(row: Row) -> None:
    live = _params(shapes=[(3,), (2, 3)])
    idle = torch.randn(4, dtype=F64, requires_grad=True)  # not in the loss: its grad stays None
    frozen = torch.randn(4, dtype=F64)  # requires_grad=False
    start, live_start = _values([idle, frozen]), _values(live)
    opt = row.build([{"params": live}, {"params": [idle, frozen]}])
    _run(opt, live)
    assert idle.grad is None and frozen.grad is None
    _assert_equal([idle, frozen], start)
    assert _moved(live_start, live) > 0


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_zero_gradients_move_nothing_and_keep_the_state_finite(row: Row, dtype: torch.dtype) -> None:
    params = _params(dtype)
    start = _values(params)
    decay = {"weight_decay": 0.0} if "weight_decay" in row.hparams else {}
    opt = row.build(params, **decay)
    _run(opt, params, sign=0.0)
    _assert_equal(params, start)
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), state


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_step_returns_the_closures_loss(row: Row) -> None:
    params = _params()
    opt = row.build(params)
    returned: list[torch.Tensor] = []
    closure = _closure(opt, params)

    def recording_closure() -> torch.Tensor:
        returned.append(closure())
        return returned[-1]

    for _ in range(STEPS):
        assert opt.step(recording_closure) is returned[-1]
    if not row.needs_closure:  # closure() then step() is the same step
        other = _params()
        opt2 = row.build(other)
        for _ in range(STEPS):
            _closure(opt2, other)()
            assert opt2.step() is None
        _assert_equal(params, other)


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_maximize_equals_minimizing_the_negated_loss(row: Row) -> None:
    # maximize=True on −f takes exactly the steps that minimizing f takes
    maximizing, minimizing = _params(), _params()
    _run(row.build(maximizing, maximize=True), maximizing, sign=-1.0)
    _run(row.build(minimizing), minimizing)
    _assert_equal(maximizing, minimizing)
    assert _moved(_params(), minimizing) > 0


# -- dtypes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_complex_parameters_equal_their_real_twin(row: Row) -> None:
    g = torch.Generator().manual_seed(0)
    complex_params = [
        torch.randn(shape, generator=g, dtype=torch.complex128).requires_grad_() for shape in SHAPES
    ]
    twins = [torch.view_as_real(z.detach()).clone().requires_grad_() for z in complex_params]
    _run(row.build(complex_params), complex_params)
    _run(row.build(twins), twins)
    for z, twin in zip(complex_params, twins, strict=True):
        torch.testing.assert_close(torch.view_as_real(z.detach()), twin.detach(), rtol=1e-13, atol=1e-15)


# float16 keeps ~3 decimal digits, bfloat16 ~2: the tolerance is a few units in the last place
# of values of about 1 after three steps.
HALF_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=["float16", "bfloat16"])
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_half_precision_follows_float32(row: Row, dtype: torch.dtype) -> None:
    half = _params(dtype)
    start = [p.detach().float() for p in half]
    full = _leaves(start)  # the same (rounded) start in float32
    _run(row.build(half), half)
    _run(row.build(full), full)
    tolerance = HALF_TOLERANCE[dtype]
    assert _moved(start, full) > 4 * tolerance, "a step too small to compare"
    for h, f in zip(half, full, strict=True):
        assert h.dtype == dtype
        torch.testing.assert_close(h.detach().float(), f.detach(), rtol=0, atol=tolerance)


FUSED_TOLERANCE = {F32: 1e-5, F64: 1e-12}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_fused_equals_eager(row: Row, dtype: torch.dtype) -> None:
    eager, fused = _params(dtype), _params(dtype)
    _run(row.build(eager), eager)
    _run(row.build(fused, fused=True), fused)
    tolerance = FUSED_TOLERANCE[dtype]
    for e, f in zip(eager, fused, strict=True):
        torch.testing.assert_close(f.detach(), e.detach(), rtol=tolerance, atol=tolerance)
    assert _moved(_params(dtype), eager) > 1e3 * tolerance


@pytest.mark.slow
@pytest.mark.parametrize("row", COMPILED, ids=_ids(COMPILED))
def test_compile_failure_falls_back_to_eager_once(row: Row, monkeypatch: pytest.MonkeyPatch) -> None:
    # A recompile limit of 1: the float32 run compiles (or reuses test_fused_equals_eager's
    # kernels), the bfloat16 run needs a second compile and hits the limit, which dynamo
    # raises under fullgraph=True. From then on the update runs eagerly, with one warning.
    # Fresh caches: the fallback is process-wide, and must not outlive this test.
    monkeypatch.setattr(_compile, "_CACHE", {})
    monkeypatch.setattr(_compile, "_STATS", {})
    runs = {}
    with torch._dynamo.config.patch(recompile_limit=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dtype in (F32, torch.bfloat16):
            fused, eager = _params(dtype), _params(dtype)
            opt = row.build(fused, fused=True)
            _run(opt, fused)
            _run(row.build(eager), eager)
            runs[dtype] = (fused, eager)
    fallbacks = [w for w in caught if "torch.compile failed" in str(w.message)]
    assert len(fallbacks) == 1, [str(w.message)[:200] for w in caught]
    assert all(stats["fallback"] == 1 for stats in _compile.compile_stats().values())
    fused, eager = runs[torch.bfloat16]  # eager from its first step: the same numbers
    _assert_equal(fused, eager)
    fused, eager = runs[F32]
    for f, e in zip(fused, eager, strict=True):
        torch.testing.assert_close(
            f.detach(), e.detach(), rtol=FUSED_TOLERANCE[F32], atol=FUSED_TOLERANCE[F32]
        )


# -- schedules -------------------------------------------------------------------------------------

SCHEDULER_STEPS = 6


def _one_cycle(opt: torch.optim.Optimizer) -> lr_scheduler.LRScheduler:
    return lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=SCHEDULER_STEPS)


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=SCHEDULER_STEPS),
    "OneCycleLR": _one_cycle,
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(
        opt, patience=0, factor=0.5, threshold=0.5
    ),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt,
        [lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2), lr_scheduler.ExponentialLR(opt, 0.8)],
        milestones=[2],
    ),
}


def _has_momentum(row: Row) -> bool:
    info = registry.get(row.name)
    return "momentum" in info.defaults or "momentum" in info.fixed or "betas" in info.tuple_args


SCHEDULE_CASES = [
    pytest.param(row, name, id=f"{row.id}-{name}")
    for row in ROWS
    for name in SCHEDULERS
    if name != "OneCycleLR" or _has_momentum(row)  # OneCycleLR cycles momentum or beta1 too
]
# the group values a scheduler writes
SCHEDULED = ("lr", "momentum", "betas")


@pytest.mark.parametrize(("row", "scheduler_name"), SCHEDULE_CASES)
def test_lr_schedulers_drive_the_optimizer(row: Row, scheduler_name: str) -> None:
    params = _params()
    opt = row.build(params)
    scheduler = SCHEDULERS[scheduler_name](opt)
    seen: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for _ in range(SCHEDULER_STEPS):
            seen.append({k: v for k, v in opt.param_groups[0].items() if k in SCHEDULED})
            loss = opt.step(_closure(opt, params))
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
                scheduler.step(float(loss.detach()) * 1.5 ** len(seen))  # a rising loss: the lr drops
            else:
                scheduler.step()
    assert len({values["lr"] for values in seen}) > 1, "the schedule never changed the lr"

    # The same steps with those values written by hand: the optimizer reads its groups at
    # every step and keeps no copy of them.
    by_hand = _params()
    opt2 = row.build(by_hand)
    for values in seen:
        opt2.param_groups[0].update(values)
        opt2.step(_closure(opt2, by_hand))
    _assert_equal(params, by_hand)
    # and the schedule changed the steps: without it they differ
    unscheduled = _params()
    _run(row.build(unscheduled), unscheduled, SCHEDULER_STEPS)
    assert _moved(unscheduled, params) > 0
