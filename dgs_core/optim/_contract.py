"""The parts of torch.optim's contract that DGS Lab's optimizers share (tests/optim/test_conformance.py).

- :class:`KeepsAttributes` — an optimizer's own attributes survive ``copy.deepcopy`` and
  ``pickle``; a state saved before a hyperparameter existed loads with its default.
- :func:`unhooked` — a base class's ``step`` called from a subclass's, without running the
  step hooks a second time.
- :func:`real` — a complex parameter is stepped as its ``torch.view_as_real`` twin.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch


class KeepsAttributes:
    """Mixin (before ``torch.optim.Optimizer`` in the bases): copies and pickles keep ``_attributes``.

    torch's ``Optimizer.__getstate__`` keeps ``defaults``, ``state`` and ``param_groups`` only,
    so a copy of an optimizer with attributes of its own (DGS's loss history, ExtraSGD's seed
    and noise generators, the batch-size controller of AdAdaGrad) lost them, and its next
    ``step()`` raised AttributeError. A class names those attributes in ``_attributes``; torch's
    ``__setstate__`` restores every key it is given.

    ``__setstate__`` also gives every parameter group the defaults it lacks (torch's
    ``load_state_dict`` calls it too): a state saved before a key existed (``maximize``) loads
    with that key's default, as torch's own optimizers do key by key.
    """

    _attributes: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]  # mixin: super() is the torch Optimizer
        state.update({name: getattr(self, name) for name in self._attributes})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # our defaults, before torch's __setstate__ adds its own ("differentiable") to them
        defaults = dict(state.get("defaults", getattr(self, "defaults", {})))
        super().__setstate__(state)  # type: ignore[misc]  # mixin: super() is the torch Optimizer
        # mixin: param_groups is the torch Optimizer's
        for group in self.param_groups:  # type: ignore[attr-defined]  # (reason above)
            for key, value in defaults.items():
                group.setdefault(key, value)


def unhooked(step: Callable[..., Any]) -> Callable[..., Any]:
    """``super().step`` without torch's step-hook wrapper, for a subclass's ``step`` to call.

    torch wraps each optimizer class's ``step`` to run the ``register_step_pre_hook`` /
    ``register_step_post_hook`` hooks, the first time an instance of that class is made
    (``Optimizer._patch_step_function`` marks the wrapper ``hooked``). A subclass whose ``step``
    calls its base's would run every hook twice once the base class had been instantiated in
    the process; the subclass's own wrapper runs them once, around the whole step.
    """
    if getattr(step, "hooked", False):
        # hooked: torch's wrapper of a bound method
        return functools.partial(step.__wrapped__, step.__self__)  # type: ignore[attr-defined]  # (reason above)
    return step


def real(tensor: torch.Tensor) -> torch.Tensor:
    """A complex tensor as its ``torch.view_as_real`` twin (shape (…, 2), sharing its memory); a
    real tensor as itself.

    DGS Lab's optimizers step a complex parameter as the pair of real numbers each of its
    elements is, as torch's Adam, Adagrad and SGD do: the update, the state (kept in the twin's
    shape and real dtype) and every per-tensor reduction (DGS's mean, LARS's norms and
    ``exclude_1d``, AdaGrad-Norm's ‖g‖, Adan's clip norm) are those of the real twin. A
    complex tensor of shape (3,) therefore counts as 2-D for LARS's ``exclude_1d``.
    """
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor
