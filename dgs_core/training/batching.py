"""Per-sample gradients of a model, for the batch-size tests (:mod:`dgs_core.optim.adadagrad`).

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
