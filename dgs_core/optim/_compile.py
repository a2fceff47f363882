"""How an optimizer computes, shared by DGS Lab's optimizers (not what it computes).

- :func:`compiled` — the ``fused=True`` path: a process-wide cache of ``torch.compile`` applied
  to an optimizer's simple per-tensor update function (``_dgs_single``, ``_adan_single``,
  ``_lars_apply``); :func:`compile_stats` reports the one-time compile cost. Inductor fuses each
  tensor's chain of elementwise ops into one loop, so a purely elementwise update (Adan, LARS's
  apply) reads and writes each state tensor once per step. A per-tensor reduction (DGS's mean)
  costs a second read of its inputs: in the generated C++ each tensor's reduction loop runs just
  before that tensor's elementwise loop, so the second read comes from cache where the tensors
  are small enough (a 250×500 float32 pair is 1 MB).
- :func:`as_input` — a step-varying scalar as a 0-d tensor, so compiled code does not
  recompile when it changes.
- :func:`check_switches` and :func:`use_foreach` — the constructor arguments that are not
  hyperparameters (``foreach``, ``fused``, ``maximize``; and a group's ``independent_rows``
  key), validated and resolved the same way for every optimizer.
- Independent rows, the one place that knows them: the 2-D surface simulator steps N problems
  at once as row i of every tensor, so an optimizer's per-tensor reductions (DGS's mean, LARS's
  norms, AdaGrad-Norm's scalar, Adan's clip norm) must run per row. That is the parameter-group
  key ``independent_rows`` (no optimizer takes it as an argument): :func:`with_rows` sets it
  (``registry.create(..., independent_rows=True)`` calls it), :func:`rows_of` reads it, and
  :func:`row_reduce`, :func:`rows_view`, :func:`row_count` and :func:`row_ndim` are the
  reductions and shapes that an optimizer uses with it.

>>> import torch
>>> from dgs_core.optim._compile import compiled, compile_stats
>>> def axpy_(ys, xs, *, alpha):
...     for y, x in zip(ys, xs):
...         y.add_(x, alpha=alpha)
>>> compiled(axpy_)([torch.zeros(3)], [torch.ones(3)], alpha=2.0)  # doctest: +SKIP
>>> compile_stats()["axpy_"]["compiles"]  # doctest: +SKIP
1

Costs of ``fused=True``:

- The first call compiles: seconds to a minute on CPU (Inductor needs a C++ compiler there).
  Dynamo specialises Python floats at first, so the first call whose step-dependent floats
  (bias corrections, a scheduled lr) differ compiles once more with those floats as inputs;
  after that the kernels are reused. New shapes, dtypes or devices compile again. Every compile
  is counted in :func:`compile_stats`.
- The cache is keyed by the function object and lives as long as the process, so every
  optimizer instance shares the compiled kernels.
- Where compiling fails (no C++ compiler, a Python without dynamo support, dynamo's recompile
  limit: ``torch._dynamo.config.recompile_limit`` graphs per function, 8 by default, which
  ``fullgraph=True`` turns into an error), the function runs eagerly from then on, in every
  optimizer of the process, with one warning; ``compile_stats()[name]["fallback"]`` is then 1.
  Any exception raised by dynamo or inductor counts, whatever its class: it is raised while
  tracing or compiling, before the compiled code touches a tensor.
- 0-d tensors are handed to the compiled function as 1-element views: torch 2.13's compiled
  code drops in-place updates of 0-d float64 inputs (a scalar parameter, AdaGrad-Norm's b²),
  and a view of shape (1,) is written back. Every operand broadcasts the same either way.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from dgs_core.params import Param, invalid

_CACHE: dict[Callable[..., Any], Callable[..., Any]] = {}
_STATS: dict[str, dict[str, float]] = {}


def _is_compile_error(error: Exception) -> bool:
    """Raised by dynamo or inductor (tracing, guards, the recompile limit, code generation, the
    C++ compiler), not by the update itself. By module, not by class: their failures do not
    share one base class (``FailOnRecompileLimitHit`` derives from ``Exception`` alone)."""
    return any(cls.__module__.startswith(("torch._dynamo", "torch._inductor")) for cls in type(error).__mro__)


def _one_element_views(value: Any) -> Any:
    """``value`` with its 0-d tensors (or those of a list) as 1-element views."""
    if isinstance(value, torch.Tensor):
        return value.view(1) if value.dim() == 0 else value
    if isinstance(value, list):
        # a new list only when there is a 0-d tensor: building one per list cost DGS's fused
        # step at 40 tensors (bench/optim_step.py) about 0.1 ms more than this one pass
        for v in value:
            if isinstance(v, torch.Tensor) and v.dim() == 0:
                return [_one_element_views(x) for x in value]
    return value


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)``, built once per process, its compile time counted.

    A call that compiles adds its wall time (the compile plus that one run) to
    ``compile_stats()[fn.__name__]``; later calls cost the kernels plus dynamo's guard checks.
    ``fn`` updates tensors in place and returns None; its 0-d tensor arguments (alone or in a
    list) reach the compiled code as 1-element views, and any compile failure makes it run
    eagerly from then on (module docstring).
    """
    wrapper = _CACHE.get(fn)
    if wrapper is not None:
        return wrapper
    stats = _STATS.setdefault(fn.__name__, {"compiles": 0, "seconds": 0.0, "fallback": 0})
    try:
        inner = torch.compile(fn, fullgraph=True)
    except RuntimeError as error:  # a Python version dynamo does not support
        _fall_back(fn, stats, error)
        inner = fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if stats["fallback"]:
            return fn(*args, **kwargs)
        before = _graphs_compiled()
        start = time.perf_counter()
        try:
            out = inner(
                *(_one_element_views(a) for a in args),
                **{k: _one_element_views(v) for k, v in kwargs.items()},
            )
        except Exception as error:
            if not _is_compile_error(error):
                raise
            # raised while tracing or compiling, before the compiled code touched any tensor
            _fall_back(fn, stats, error)
            return fn(*args, **kwargs)
        new_graphs = _graphs_compiled() - before
        if new_graphs:
            stats["compiles"] += new_graphs
            stats["seconds"] += time.perf_counter() - start
        return out

    _CACHE[fn] = wrapper
    return wrapper


def _fall_back(fn: Callable[..., Any], stats: dict[str, float], error: Exception) -> None:
    stats["fallback"] = 1
    warnings.warn(f"torch.compile failed for {fn.__name__}; running it eagerly: {error}", stacklevel=3)


def compile_stats() -> dict[str, dict[str, float]]:
    """``{name: {"compiles": n, "seconds": wall time of the calls that compiled, "fallback": 0 or 1}}``."""
    return {name: dict(values) for name, values in _STATS.items()}


def as_input(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-d tensor with ``like``'s dtype and device.

    For a scalar that changes between steps (the lr under a schedule) and that an update would
    otherwise pass as ``alpha=`` or ``value=``: dynamo specialises such arguments, so the
    compiled update would recompile whenever the value changes. As a tensor operand
    (``p.addcmul_(buf, lr, value=-1.0)``) it is an input of the compiled code. Scalars used as
    operands (``x.mul_(c)``, ``x.add_(c)``) need no wrapping.
    """
    return torch.tensor(value, dtype=like.dtype, device=like.device)


MAXIMIZE = Param(
    "maximize", False, help="ascend the objective: gradients negated first (maximize f = minimize −f)"
)


def check_switches(values: Mapping[str, Any]) -> None:
    """Validate the switches present in ``values`` (a constructor's or a group's).

    ``foreach``: None (choose: foreach on CUDA, the per-tensor loop elsewhere) or a bool;
    ``fused``: bool; ``foreach`` and ``fused`` not both True; ``maximize``: bool; a group's
    ``independent_rows`` key (see :func:`rows_of`): bool.
    """
    foreach = values.get("foreach")
    if foreach is not None and not isinstance(foreach, bool):
        raise invalid("foreach", foreach, "None, True or False")
    fused = values.get("fused", False)
    if not isinstance(fused, bool):
        raise invalid("fused", fused, "True or False")
    if foreach and fused:
        raise invalid("fused", True, "False when foreach=True: the two cannot be combined")
    MAXIMIZE.validate(values.get("maximize", False))
    rows_of(values)


def use_foreach(foreach: bool | None, tensors: list[torch.Tensor]) -> bool:
    """Resolve ``foreach=None`` like torch does: the multi-tensor path on CUDA only.

    On CPU the per-tensor loop is faster (measured in bench/optim_step.py): it finishes one
    tensor while its state is still in cache, where ``torch._foreach_*`` sweeps all tensors once
    per op.
    """
    if foreach is not None:
        return foreach
    return bool(tensors) and all(t.is_cuda for t in tensors)


# -- independent rows ----------------------------------------------------------------------------

ROWS_KEY = "independent_rows"


def rows_of(group: Mapping[str, Any]) -> bool:
    """Whether row i of every tensor of ``group`` is a problem of its own (the group's
    ``independent_rows`` key; False when absent), validated."""
    rows = group.get(ROWS_KEY, False)
    if not isinstance(rows, bool):
        raise invalid(ROWS_KEY, rows, "True or False")
    return rows


def with_rows(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], rows: bool
) -> list[torch.Tensor] | list[dict[str, Any]]:
    """``params`` with every parameter group's ``independent_rows`` key set to ``rows``.

    Tensors become one group. A group that sets the key itself keeps its own value.
    """
    rows = rows_of({ROWS_KEY: rows})
    params = list(params)
    if not params or not isinstance(params[0], dict):
        return [{"params": params, ROWS_KEY: rows}]
    return [{ROWS_KEY: rows, **group} for group in params]


def row_reduce(fn: Callable[..., torch.Tensor], x: torch.Tensor, rows: bool) -> torch.Tensor:
    """``fn(x)`` over the whole tensor, or with ``rows`` over each row ``x[i]``, shaped (N, 1, …).

    ``fn`` is a reduction taking ``dim`` (``torch.mean``, ``torch.linalg.vector_norm``). With
    ``rows`` the first dimension indexes independent problems (the batched 2-D simulator's
    starting points), so the result broadcasts against ``x``. A 0-d tensor has no rows.
    """
    if rows and x.ndim > 0:
        return fn(x.reshape(x.shape[0], -1), dim=1).view((-1,) + (1,) * (x.ndim - 1))
    return fn(x)


def rows_view(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One value per row (shape (N,)) shaped (N, 1, …) to broadcast against ``x`` (N, …)."""
    return values.view((-1,) + (1,) * (x.ndim - 1))


def row_count(tensors: Iterable[torch.Tensor]) -> int:
    """The number of rows N that every tensor shares (its leading dimension).

    A ``ParamError`` naming ``independent_rows`` when they differ or a tensor is 0-d.
    """
    tensors = list(tensors)
    counts = {t.shape[0] if t.ndim else None for t in tensors}
    if len(counts) != 1 or None in counts:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise invalid(ROWS_KEY, True, f"used with tensors that share their leading dimension, not {shapes}")
    return counts.pop()  # type: ignore[return-value]  # None was refused above


def row_ndim(x: torch.Tensor, rows: bool) -> int:
    """The number of dimensions of one problem's part of ``x``: a row of an (N, d) tensor is 1-D."""
    return x.ndim - 1 if rows and x.ndim > 0 else x.ndim
