"""Building a backbone's feature extractor from a torchvision architecture and a state_dict,
and the constituent of a heads model: the fixed extractor, then the part trained per shard.

The extractor is the architecture without its last linear layer (its classifier), so a
backbone trained for any number of classes can be registered. A resnet whose state_dict has a
3x3 first convolution gets the small-image stem it was trained with (3x3 stride 1, no max-pool).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torchvision
from torch import nn


class BackboneRefusedError(ValueError):
    """The weights cannot serve as a backbone of that architecture; the message says why."""


def known_architectures() -> list[str]:
    """torchvision's classification models (not detection, segmentation, video...)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


@dataclass
class Extractor:
    """A backbone split where the per-shard training starts."""

    frozen: nn.Module
    """Input -> cached features (never trained)."""
    last_block: nn.Module | None
    """The last stage, pooled and flattened (trained per shard with tune=last_block)."""
    feature_dim: int


def _last_linear(net: nn.Module) -> str:
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise BackboneRefusedError("the architecture has no linear classifier layer to replace")
    return names[-1]


def _set_module(net: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


def _small_stem(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    conv1 = getattr(net, "conv1", None)
    weight = state.get("conv1.weight")
    if not isinstance(conv1, nn.Conv2d) or weight is None or weight.ndim != 4:
        return "standard"
    if tuple(weight.shape[-2:]) != (3, 3) or conv1.kernel_size == (3, 3):
        return "standard"
    net.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    if hasattr(net, "maxpool"):
        net.maxpool = nn.Identity()
    return "small"


def build_network(architecture: str, state: Mapping[str, torch.Tensor]) -> tuple[nn.Module, str]:
    """The architecture with ``state`` loaded and its classifier replaced by the identity; and
    its stem ("small" or "standard"). Raises BackboneRefusedError when the weights do not fit."""
    if architecture not in known_architectures():
        raise BackboneRefusedError(
            f"unknown architecture {architecture[:64]!r}: use a torchvision classification "
            "model name, e.g. resnet18"
        )
    net = torchvision.models.get_model(architecture, weights=None)
    stem = _small_stem(net, state)
    classifier = _last_linear(net)
    linear = net.get_submodule(classifier)
    assert isinstance(linear, nn.Linear)
    _set_module(net, classifier, nn.Identity())
    kept = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    try:
        net.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise BackboneRefusedError(
            f"the state_dict does not fit architecture {architecture!r}: {detail[:1200]}"
        ) from None
    net.feature_dim = linear.in_features  # type: ignore[assignment]
    return net.eval(), stem


def split_extractor(net: nn.Module, feature_dim: int, *, last_block: bool) -> Extractor:
    """The frozen part and, for ``last_block``, the last stage to train per shard (resnets)."""
    for p in net.parameters():
        p.requires_grad_(False)
    if not last_block:
        return Extractor(frozen=net.eval(), last_block=None, feature_dim=feature_dim)
    if not hasattr(net, "layer4"):
        raise BackboneRefusedError("tune=last_block needs a resnet-family backbone")
    children = dict(net.named_children())
    names = list(children)
    cut = names.index("layer4")
    frozen = nn.Sequential(*(children[n] for n in names[:cut])).eval()
    tail = nn.Sequential(children["layer4"], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for p in tail.parameters():
        p.requires_grad_(True)
    return Extractor(frozen=frozen, last_block=tail, feature_dim=feature_dim)
