"""Per-class weight filters (memory matrices) for a frozen model: training, applying, storing.

Every ``Conv2d`` and ``Linear`` layer gets one filter entry per output channel (kernel) and
class, ``alpha[name]`` of shape ``[rows, out_channels]``, that multiplies the layer's weight
point-wise (broadcast over the kernel). Scaling an output channel's kernel scales that channel's
output before the bias, so during training each image can use its own row through a forward
hook (``(out - b) * alpha[c] + b``), and applying a row to the weights gives exactly the same
function. Biases and normalisation layers are not filtered.

This module imports torch: method and flow modules import it lazily.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.core.methods.weight_filtering import FilterTrainingConfig
from worker.unlearning import _ops
from worker.unlearning.base import ProgressFn, no_progress

# Keeps 1 / CE finite on an image the model already gets right with certainty.
_INVERSE_CE_EPS = 1e-3


@dataclass
class FilterSet:
    """Filter rows of one constituent: ``rows[layer][i]`` belongs to class ``classes[i]``."""

    classes: list[int]
    rows: dict[str, Tensor]

    def without(self, forgotten: Sequence[int]) -> FilterSet:
        """The rows of every class but ``forgotten`` (theirs have been used up)."""
        keep = [i for i, c in enumerate(self.classes) if c not in set(forgotten)]
        index = torch.tensor(keep, dtype=torch.long)
        return FilterSet(
            classes=[self.classes[i] for i in keep],
            rows={name: rows.index_select(0, index).clone() for name, rows in self.rows.items()},
        )

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"classes": list(self.classes), "rows": self.rows}, buffer)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes) -> FilterSet:
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return FilterSet(classes=[int(c) for c in data["classes"]], rows=dict(data["rows"]))


def filtered_layers(model: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _channel_shape(module: nn.Module, batch: int, ndim: int, channels: int) -> tuple[int, ...]:
    """How a ``[batch, channels]`` row broadcasts over the layer's output."""
    if isinstance(module, nn.Conv2d):
        return (batch, channels, *([1] * (ndim - 2)))
    return (batch, *([1] * (ndim - 2)), channels)


@contextlib.contextmanager
def per_sample_filters(model: nn.Module, current: dict[str, Tensor]) -> Iterator[None]:
    """While active, each layer's output for image ``i`` is scaled by ``current[name][i]``
    (``[batch, out_channels]``, set by the caller before each forward pass)."""

    def hook(name: str):  # type: ignore[no-untyped-def]
        def scale(module: nn.Module, _inputs: object, out: Tensor) -> Tensor:
            alpha = current[name]
            shape = _channel_shape(module, out.shape[0], out.dim(), alpha.shape[1])
            bias = getattr(module, "bias", None)
            if bias is None:
                return out * alpha.view(shape)
            b = bias.view(_channel_shape(module, 1, out.dim(), alpha.shape[1]))
            return (out - b) * alpha.view(shape) + b

        return scale

    handles = [m.register_forward_hook(hook(n)) for n, m in filtered_layers(model).items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def apply_filters(model: nn.Module, filters: FilterSet, classes: Sequence[int]) -> None:
    """Multiply every filtered layer's weight by the rows of ``classes`` (in place)."""
    layers = filtered_layers(model)
    if set(layers) != set(filters.rows):
        raise ValueError("the filters were trained for another architecture (layers differ)")
    missing = [c for c in classes if c not in filters.classes]
    if missing:
        raise ValueError(f"no filter rows for classes {missing}")
    for name, module in layers.items():
        alpha = torch.ones_like(filters.rows[name][0])
        for c in classes:
            alpha = alpha * filters.rows[name][filters.classes.index(c)]
        shape = (alpha.shape[0], *([1] * (module.weight.dim() - 1)))
        module.weight.mul_(alpha.to(module.weight.device, module.weight.dtype).view(shape))


def _pair_classes(
    labels: Tensor, num_classes: int, config: FilterTrainingConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: the class to unlearn (its own with probability ``forget_fraction``, another
    otherwise), a second class (or -1) filtered with it, and whether the image's own class is
    among them."""
    labels = labels.cpu()
    n = labels.shape[0]
    own = torch.rand(n, generator=gen) < config.forget_fraction
    shift = torch.randint(1, num_classes, (n,), generator=gen)
    first = torch.where(own, labels, (labels + shift) % num_classes)
    paired = torch.rand(n, generator=gen) < config.pair_fraction
    second_shift = torch.randint(1, num_classes, (n,), generator=gen)
    second = torch.where(paired, (first + second_shift) % num_classes, torch.full_like(first, -1))
    return first, second, own | (second == labels)


def _rows(alpha: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """Each image's filter: its first class's row, times its second class's row if any."""
    rows = alpha[first]
    has_second = second >= 0
    if bool(has_second.any()):
        extra = torch.ones_like(rows)
        extra[has_second] = alpha[second[has_second]]
        rows = rows * extra
    return rows


def _keep_targets(parent_logits: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """The frozen model's logits with each image's filtered class(es) at ``-inf``."""
    target = parent_logits.clone()
    rows = torch.arange(target.shape[0], device=target.device)
    target[rows, first] = float("-inf")
    has_second = second >= 0
    target[rows[has_second], second[has_second]] = float("-inf")
    return target


def _loss(
    logits: Tensor,
    y: Tensor,
    own: Tensor,
    used: list[Tensor],
    config: FilterTrainingConfig,
    keep_targets: Tensor | None = None,
) -> Tensor:
    ce = F.cross_entropy(logits, y, reduction="none")
    if not bool((~own).any()):
        keep = ce.sum() * 0
    elif keep_targets is None:
        keep = ce[~own].mean()
    else:
        keep = _ops.distill_kl(logits[~own], keep_targets[~own], config.distill_temperature)
    unlearn = (1.0 / (ce[own] + _INVERSE_CE_EPS)).mean() if bool(own.any()) else ce.sum() * 0
    # The rows this batch used, pulled towards 1 (l1: most entries stay exactly there).
    reg = torch.stack([(1.0 - a).abs().mean() for a in used]).mean()
    return keep + config.lambda_unlearn * unlearn + config.lambda_reg * reg


def filter_epochs(n_images: int, config: FilterTrainingConfig) -> int:
    """``config.epochs``, or more where that many passes over ``n_images`` make fewer than
    ``config.min_steps`` optimizer steps."""
    per_epoch = _ops.steps_per_epoch(min(n_images, config.max_samples), config.batch_size)
    if per_epoch == 0:
        return config.epochs
    return max(config.epochs, math.ceil(config.min_steps / per_epoch))


def train_filters(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    config: FilterTrainingConfig,
    device: torch.device,
    seed: int,
    progress: ProgressFn = no_progress,
) -> FilterSet:
    """Train one filter row per class for the frozen ``model`` (left unchanged, in its mode)."""
    _ops.require(images, labels, "training", "weight filter training")
    if num_classes < 2:
        raise ValueError("weight filters need at least two classes")
    gen = _ops.seed_all(seed)
    if images.shape[0] > config.max_samples:
        pick = torch.randperm(images.shape[0], generator=gen)[: config.max_samples]
        images, labels = images[pick], labels[pick]
    # the unfiltered model's view of every image, once (the model is frozen)
    parent_logits = (
        _ops.logits_without(model, images, [], device) if config.keep_target == "parent" else None
    )
    layers = filtered_layers(model)
    alpha = {
        name: torch.ones(
            num_classes,
            m.out_channels if isinstance(m, nn.Conv2d) else m.out_features,
            device=device,
            requires_grad=True,
        )
        for name, m in layers.items()
    }
    optimizer = torch.optim.Adam(list(alpha.values()), lr=config.lr)
    epochs = filter_epochs(images.shape[0], config)
    steps = epochs * _ops.steps_per_epoch(images.shape[0], config.batch_size)
    schedule = _ops.cosine_schedule(optimizer, steps) if config.lr_schedule == "cosine" else None
    # A report per step: callers throttle, and a long training keeps its heartbeat.
    report = _ops.Progress(progress, steps, reports=steps)
    report.start("filters")
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    current: dict[str, Tensor] = {}
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with _ops.eval_mode(model), per_sample_filters(model, current):
            for _ in range(epochs):
                for idx in _ops.batch_indices(images.shape[0], config.batch_size, gen):
                    x, y = _ops.load_batch(images, labels, idx, device)
                    first, second, own = _pair_classes(y, num_classes, config, gen)
                    first, second, own = first.to(device), second.to(device), own.to(device)
                    keep_targets = (
                        None
                        if parent_logits is None
                        else _keep_targets(parent_logits[idx.to(device)], first, second)
                    )
                    for name, a in alpha.items():
                        current[name] = _rows(a, first, second)
                    loss = _loss(model(x), y, own, list(current.values()), config, keep_targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if schedule is not None:
                        schedule.step()
                    with torch.no_grad():
                        for a in alpha.values():
                            a.clamp_(0.0, 1.0)
                    report.advance("filters")
    finally:
        for p, wanted in frozen:
            p.requires_grad_(wanted)
    report.finish()
    return FilterSet(
        classes=list(range(num_classes)),
        rows={name: a.detach().cpu() for name, a in alpha.items()},
    )
