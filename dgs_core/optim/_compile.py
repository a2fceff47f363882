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
- :func:`check_switches` and :func:`use_foreach` — the ``foreach`` / ``fused`` /
  ``independent_rows`` switches, validated and resolved the same way for every optimizer.
- :func:`row_reduce` — a per-tensor reduction (mean, norm) or, with ``independent_rows``, one
  per row, shaped to broadcast against the tensor.

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
- Where compiling fails (no C++ compiler, a Python without dynamo support), the function runs
  eagerly from then on, with one warning; ``compile_stats()[name]["fallback"]`` is then 1.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from dgs_core.params import invalid

_CACHE: dict[Callable[..., Any], Callable[..., Any]] = {}
_STATS: dict[str, dict[str, float]] = {}


def _is_compile_error(error: Exception) -> bool:
    # imported here: torch._dynamo costs seconds to import, and only fused=True needs it
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    return isinstance(error, TorchDynamoException | CppCompileError | InvalidCxxCompiler)


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)``, built once per process, its compile time counted.

    A call that compiles adds its wall time (the compile plus that one run) to
    ``compile_stats()[fn.__name__]``; later calls cost the kernels plus dynamo's guard checks.
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
            out = inner(*args, **kwargs)
        except Exception as error:
            if not _is_compile_error(error):
                raise
            # raised while compiling, before the compiled code touched any tensor
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


def check_switches(values: dict[str, Any]) -> None:
    """Validate the implementation switches present in ``values`` (a constructor's or a group's).

    ``foreach``: None (choose: foreach on CUDA, the per-tensor loop elsewhere) or a bool;
    ``fused`` and ``independent_rows``: bool; ``foreach`` and ``fused`` not both True.
    """
    foreach = values.get("foreach")
    if foreach is not None and not isinstance(foreach, bool):
        raise invalid("foreach", foreach, "None, True or False")
    for name in ("fused", "independent_rows"):
        value = values.get(name, False)
        if not isinstance(value, bool):
            raise ValueError(f"Invalid {name}: {value!r} (must be True or False)")
    if foreach and values.get("fused", False):
        raise ValueError("Invalid fused: True (foreach=True and fused=True cannot be combined)")


def use_foreach(foreach: bool | None, tensors: list[torch.Tensor]) -> bool:
    """Resolve ``foreach=None`` like torch does: the multi-tensor path on CUDA only.

    On CPU the per-tensor loop is faster (measured in bench/optim_step.py): it finishes one
    tensor while its state is still in cache, where ``torch._foreach_*`` sweeps all tensors once
    per op.
    """
    if foreach is not None:
        return foreach
    return bool(tensors) and all(t.is_cuda for t in tensors)


def row_reduce(fn: Callable[..., torch.Tensor], x: torch.Tensor, rows: bool) -> torch.Tensor:
    """``fn(x)`` over the whole tensor, or with ``rows`` over each row ``x[i]``, shaped (N, 1, …).

    ``fn`` is a reduction taking ``dim`` (``torch.mean``, ``torch.linalg.vector_norm``). With
    ``rows`` the first dimension indexes independent problems (the batched 2-D simulator's
    starting points), so the result broadcasts against ``x``. A 0-d tensor has no rows.
    """
    if rows and x.ndim > 0:
        return fn(x.reshape(x.shape[0], -1), dim=1).view((-1,) + (1,) * (x.ndim - 1))
    return fn(x)
