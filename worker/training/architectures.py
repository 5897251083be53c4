"""Registry of model architectures by name.

Must stay torch-free at import time: the HTTP API imports this module only to validate names.
Builders therefore import ``worker.training.nets`` (and with it torch) lazily when called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from torch import nn

    from worker.training.nets import Norm as nets_Norm


class Builder(Protocol):
    def __call__(
        self, *, num_classes: int, in_channels: int, image_size: int, norm: str | None = None
    ) -> nn.Module: ...


class UnknownArchitectureError(ValueError, KeyError):
    """Raised for an unregistered architecture name; both a ValueError and a KeyError."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr-quote the message.
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, Builder] = {}


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; a duplicate name is a ValueError."""
    if not name or name.strip() != name:
        raise ValueError(f"invalid architecture name {name!r}")

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def architecture_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(
    name: str, *, num_classes: int, in_channels: int, image_size: int, norm: str | None = None
) -> nn.Module:
    """Instantiate a registered architecture. Init is deterministic under the caller's seed.

    ``norm`` picks the normalisation layers ("none", "batch", "group"); None keeps the
    architecture's original ones."""
    builder = _REGISTRY.get(name)
    if builder is None:
        known = ", ".join(architecture_names())
        raise UnknownArchitectureError(f"unknown architecture {name!r}; known: {known}")
    _check_dims(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    if norm is None:  # builders registered elsewhere need not know about normalisation
        return builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    return builder(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, norm=norm
    )


def _check_dims(*, num_classes: int, in_channels: int, image_size: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")


def _norm(norm: str | None) -> nets_Norm | None:
    if norm not in (None, "none", "batch", "group"):
        raise ValueError(f"unknown normalisation {norm!r}; use 'none', 'batch' or 'group'")
    return cast("nets_Norm | None", norm)


@register_architecture("small_cnn")
def _small_cnn(
    *, num_classes: int, in_channels: int, image_size: int, norm: str | None = None
) -> nn.Module:
    from worker.training import nets

    return nets.small_cnn(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, norm=_norm(norm)
    )


@register_architecture("resnet18")
def _resnet18(
    *, num_classes: int, in_channels: int, image_size: int, norm: str | None = None
) -> nn.Module:
    from worker.training import nets

    return nets.resnet18_small(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, norm=_norm(norm)
    )
