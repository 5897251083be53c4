"""The constituent of a heads model: the backbone's fixed part, then what a shard trains.

The fixed part is held outside the module's registered children, so it is not in the
constituent's parameters (no optimiser, no unlearning method can change it), not in its
state_dict (a checkpoint holds the head only) and stays in eval mode; it still moves with
``.to(device)`` and gradients still flow through it to the input (methods that optimise inputs).
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

import torch
from torch import nn

from app.core.recipe import ModelRecipe
from app.core.store_namespaces import BACKBONES
from models_store import LocalStore
from worker.backbones.nets import Extractor, build_network, split_extractor

MLP_HIDDEN = 512

# Features of the input batches seen while one task evaluates and audits a version: each
# constituent of a heads model shares the backbone, so its features are computed once per
# batch, not once per constituent. Held only for the task (see :func:`feature_memo`), never
# across tasks, so no erased image's features outlive the task that erases it.
_MEMO: ContextVar[dict[tuple[int, str], torch.Tensor] | None] = ContextVar(
    "feature_memo", default=None
)


@contextmanager
def feature_memo() -> Iterator[None]:
    """Share the fixed features of identical input batches within this block."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def clear_feature_memo() -> None:
    memo = _MEMO.get()
    if memo is not None:
        memo.clear()


class HeadNet(nn.Module):
    """Images in [-1, 1] -> backbone preprocessing -> fixed features -> trained part."""

    def __init__(
        self, frozen: nn.Module, trainable: nn.Module, mean: list[float], std: list[float]
    ) -> None:
        super().__init__()
        self._fixed = (frozen,)  # a tuple: not a registered child (see the module docstring)
        self._norm = (
            torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
        )
        self.trainable = trainable

    @property
    def frozen(self) -> nn.Module:
        return self._fixed[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the embedding cache stores for an input batch (model input in [-1, 1])."""
        x = (x + 1.0) / 2.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean, std = self._norm
        return self.frozen((x - mean) / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memo = _MEMO.get()
        if memo is None or torch.is_grad_enabled():  # methods may need gradients to the input
            return self.trainable(self.features(x))
        digest = hashlib.blake2b(x.detach().cpu().contiguous().numpy().tobytes())
        digest.update(str(tuple(x.shape)).encode())
        key = (id(self.frozen), digest.hexdigest())
        if key not in memo:
            memo[key] = self.features(x)
        return self.trainable(memo[key])

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> HeadNet:
        self.frozen._apply(fn, recurse)
        self._norm = (fn(self._norm[0]), fn(self._norm[1]))
        return super()._apply(fn, recurse)  # type: ignore[return-value]


def load_backbone_state(store: LocalStore, sha256: str) -> dict[str, torch.Tensor]:
    from worker.backbones.check import load_state

    return load_state(store.get(BACKBONES, sha256))


@lru_cache(maxsize=4)
def _extractor(store_root: str, sha256: str, architecture: str, last_block: bool) -> Extractor:
    state = load_backbone_state(LocalStore(store_root), sha256)  # type: ignore[arg-type]
    net, _ = build_network(architecture, state)
    return split_extractor(net, int(net.feature_dim), last_block=last_block)  # type: ignore[arg-type]


def extractor(store: LocalStore, recipe: ModelRecipe) -> Extractor:
    """The backbone split for the recipe's tuning; loaded once per process and shared, since
    its fixed part never changes."""
    spec = recipe.backbone
    assert spec is not None
    return _extractor(str(store.root), spec.sha256, spec.architecture, recipe.tune == "last_block")


def build_head(recipe: ModelRecipe, num_classes: int) -> nn.Module:
    """The per-shard part, at the initial weights of the caller's seed."""
    spec = recipe.backbone
    assert spec is not None
    if recipe.head == "mlp":
        head: nn.Module = nn.Sequential(
            nn.Linear(spec.feature_dim, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, num_classes)
        )
    else:
        head = nn.Linear(spec.feature_dim, num_classes)
    return head


def head_net(store: LocalStore, recipe: ModelRecipe, num_classes: int, seed: int) -> HeadNet:
    """A fresh constituent: the shared fixed part, a copy of the last stage for
    tune=last_block, and a head initialised from ``seed`` (after the backbone is loaded, so a
    warm or cold backbone cache gives the same head)."""
    from worker.training.trainer import seed_everything

    parts = extractor(store, recipe)
    spec = recipe.backbone
    assert spec is not None
    seed_everything(seed)
    head = build_head(recipe, num_classes)
    trainable = (
        nn.Sequential(copy.deepcopy(parts.last_block), head)
        if parts.last_block is not None
        else nn.Sequential(head)
    )
    return HeadNet(parts.frozen, trainable, spec.mean, spec.std)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, tensor.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


@torch.no_grad()
def head_proba(
    net: HeadNet, features: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Softmax probabilities [N, K] (CPU, float32) of the trained part on cached features."""
    net.eval()
    chunks = [
        torch.softmax(net.trainable(batch.to(device)).float(), dim=1).cpu()
        for batch in features.split(batch_size)
    ]
    return torch.cat(chunks)
