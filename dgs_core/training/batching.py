"""Per-sample and per-group gradients of a model: the batch-size tests (:mod:`dgs_core.optim.adadagrad`)
and AdaScale SGD's gain ratio (:mod:`dgs_core.optim.adascale`).

``per_sample_grads(model, loss_fn, x, y)`` returns ``{name: (n, *param.shape)}``, one gradient
per example of the batch, by ``torch.func`` (``vmap`` of ``grad`` through ``functional_call``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def per_sample_grads(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Per-example gradients ``{name: tensor of shape (n, *param.shape)}`` via torch.func.

    ``vmap(grad(loss))`` over the batch dimension of ``inputs`` and ``targets`` (dimension 0;
    a tuple of ``inputs`` is passed as the model's positional arguments), with the model
    called through ``functional_call``
    on its current parameters and buffers. ``loss_fn(output, target)`` receives a batch of
    one example (the leading dimension kept) and must return a scalar, as a mean-reduced
    loss does. Only parameters with ``requires_grad`` appear, in ``named_parameters()`` order.

    Works for MLPs, CNNs and transformers. Not for BatchNorm in training mode (its batch
    statistics mix the examples and it writes running statistics in place): use eval mode,
    GroupNorm/LayerNorm, or ``torch.func.replace_all_batch_norm_modules_``. Dropout draws a
    different mask per example (``randomness="different"``), like a real batch.
    ``chunk_size`` bounds memory by processing that many examples at a time.

    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    >>> grads = per_sample_grads(model, nn.functional.cross_entropy, x, y)
    >>> grads["weight"].shape
    torch.Size([5, 2, 3])
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_of_one(trainable: dict[str, Tensor], x: Tensor | tuple[Tensor, ...], y: Tensor) -> Tensor:
        args = tuple(t.unsqueeze(0) for t in (x if isinstance(x, tuple) else (x,)))
        output = functional_call(model, ({**trainable, **frozen}, buffers), args)
        return loss_fn(output, y.unsqueeze(0))

    per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different", chunk_size=chunk_size)
    return per_example(params, inputs, targets)


def group_grads(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor | tuple[Tensor, ...],
    targets: Tensor,
    groups: int,
) -> dict[str, Tensor]:
    """The mean gradient of each of ``groups`` equal groups of the batch: ``{name: (groups, *param.shape)}``.

    Group i is examples ``i·m … (i + 1)·m − 1`` with m = ⌊n / groups⌋ (a remainder of fewer than
    ``groups`` examples is left out); its gradient is that of ``loss_fn`` on the group, so with a
    mean-reduced loss it is the mean of the group's per-example gradients (:func:`per_sample_grads`
    grouped, which the tests check). Computed by ``torch.func`` in one ``vmap`` over the groups,
    with the same caveats as :func:`per_sample_grads` (no BatchNorm in training mode). For AdaScale
    SGD's :meth:`~dgs_core.optim.adascale.AdaScaleSGD.measure_gain`.

    >>> import torch
    >>> model = nn.Linear(3, 2)
    >>> x, y = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    >>> group_grads(model, nn.functional.cross_entropy, x, y, groups=4)["weight"].shape
    torch.Size([4, 2, 3])
    """
    n = targets.shape[0]
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= n:
        raise ValueError(f"Invalid groups: {groups!r} (must be an integer in [1, {n}], the batch size)")
    size = n // groups

    def grouped(t: Tensor) -> Tensor:
        return t[: groups * size].reshape(groups, size, *t.shape[1:])

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_of_group(trainable: dict[str, Tensor], x: Tensor | tuple[Tensor, ...], y: Tensor) -> Tensor:
        args = x if isinstance(x, tuple) else (x,)
        return loss_fn(functional_call(model, ({**trainable, **frozen}, buffers), args), y)

    xs = tuple(grouped(t) for t in inputs) if isinstance(inputs, tuple) else grouped(inputs)
    return vmap(grad(loss_of_group), in_dims=(None, 0, 0), randomness="different")(
        params, xs, grouped(targets)
    )
