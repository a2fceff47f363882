"""Small models for the training lab: an MLP, a residual CNN and a tiny causal transformer.

All three map a batch of inputs to class logits ``(N, num_classes)`` and contain no
BatchNorm and no dropout, so a per-sample gradient taken with ``torch.func`` (vmap over
single examples) is the true gradient of that example's loss: the AdAdaGrad batch tests
depend on it. Normalisation is GroupNorm (CNN) or LayerNorm (transformer).

Sizes are presets ("tiny", "small", "medium") that any field can override:

>>> from dgs_core.training.tasks import make_task
>>> task = make_task("moons", n_samples=100)
>>> model = build_model(task, {"size": "small", "hidden": 24})
>>> model(task.x_train[:5]).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dgs_core.params import Param, ParamError, ParamSet, invalid
from dgs_core.training.tasks import Task, get_task_info

SIZES = ("tiny", "small", "medium")

# Presets per model family; kept small so a step takes about a millisecond on two CPU cores.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mlp": {
        "tiny": {"hidden": 16, "depth": 2, "activation": "tanh"},
        "small": {"hidden": 32, "depth": 2, "activation": "tanh"},
        "medium": {"hidden": 64, "depth": 3, "activation": "tanh"},
    },
    "cnn": {
        "tiny": {"channels": 8, "blocks": 1},
        "small": {"channels": 16, "blocks": 2},
        "medium": {"channels": 32, "blocks": 3},
    },
    "transformer": {
        "tiny": {"d_model": 32, "heads": 2, "layers": 1},
        "small": {"d_model": 64, "heads": 4, "layers": 1},
        "medium": {"d_model": 128, "heads": 4, "layers": 2},
    },
}

# Every field a model may override, as Param specs (the presets are their defaults' sizes).
FIELDS = ParamSet(
    (
        Param("size", "small", choices=SIZES, help="the preset"),
        Param("hidden", 32, low=1, high=1024, integer=True, help="MLP: units per hidden layer"),
        Param("depth", 2, low=1, high=8, integer=True, help="MLP: hidden layers"),
        Param("activation", "tanh", choices=("tanh", "relu", "gelu"), help="MLP: activation"),
        Param("channels", 16, low=2, high=256, integer=True, help="CNN: channels"),
        Param("blocks", 2, low=0, high=8, integer=True, help="CNN: residual blocks"),
        Param("d_model", 64, low=4, high=512, integer=True, help="transformer: width"),
        Param("heads", 4, low=1, high=16, integer=True, help="transformer: attention heads"),
        Param("layers", 1, low=1, high=8, integer=True, help="transformer: blocks"),
    )
)


def resolve_model_params(task_name: str, model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset named by ``model["size"]`` (default "small") updated by the other fields.

    Raises ``ValueError`` naming an unknown size, an unknown field or an out-of-range value.
    """
    family = get_task_info(task_name).model
    model = dict(model or {})
    size = FIELDS["size"].validate(model.pop("size", "small"))
    params = dict(PRESETS[family][size])
    unknown = sorted(set(model) - set(params))
    if unknown:
        raise ParamError(
            str(unknown[0]),
            unknown[0],
            f"Invalid model parameter for {family}: {unknown[0]!r} "
            f"(must be one of size, {', '.join(params)})",
        )
    params.update(model)
    params = {key: FIELDS[key].validate(value) for key, value in params.items()}
    if family == "transformer" and params["d_model"] % params["heads"]:
        raise invalid("heads", params["heads"], f"a divisor of d_model={params['d_model']}")
    return params


def build_model(task: Task, model: Mapping[str, Any] | None = None) -> nn.Module:
    """The model for ``task`` (its family from the task registry) at the requested size.

    Initialised from torch's global RNG: seed it (or fork it) first for a reproducible init.
    """
    params = resolve_model_params(task.name, model)
    family = task.info.model
    if family == "mlp":
        return MLP(task.input_shape[0], task.num_classes, **params)
    if family == "cnn":
        return ResidualCNN(task.input_shape[0], task.num_classes, **params)
    assert task.vocab_size is not None  # the registry pairs "transformer" with sequence tasks
    return TinyTransformer(task.vocab_size, task.input_shape[0], task.num_classes, **params)


_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


class MLP(nn.Sequential):
    """``depth`` hidden layers of width ``hidden`` with an activation, then a linear head."""

    def __init__(self, in_dim: int, out_dim: int, *, hidden: int, depth: int, activation: str) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: statistics per example keep per-sample gradients exact.
    return nn.GroupNorm(min(4, channels), channels)


class ResidualBlock(nn.Module):
    """x + GN(conv(ReLU(GN(conv(x))))), then ReLU (He et al. 2016's basic block, GN for BN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = _group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(out)))


class ResidualCNN(nn.Module):
    """Stem conv → ``blocks`` residual blocks → 2×2 average pool → linear head."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), _group_norm(channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(4 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.head(x.flatten(1))


class CausalSelfAttention(nn.Module):
    """Multi-head attention with a causal mask, written out so torch.func can vmap it."""

    def __init__(self, d_model: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4× GELU MLP."""

    def __init__(self, d_model: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, seq_len)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Token + position embeddings → ``layers`` causal blocks → LN → head on the last token."""

    def __init__(
        self, vocab_size: int, seq_len: int, num_classes: int, *, d_model: int, heads: int, layers: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        self.blocks = nn.Sequential(*(TransformerBlock(d_model, heads, seq_len) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        x = self.norm(self.blocks(x))
        return self.head(x[:, -1])
