"""Model definitions behind the architecture registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torchvision
from torch import nn

Norm = Literal["none", "batch", "group"]


def norm_layer(norm: Norm) -> Callable[[int], nn.Module]:
    """A factory of normalisation layers over ``channels`` feature maps.

    Batch norm is exact under SISA: its batch statistics depend only on the batch, whose make-up
    is fixed by (seed, epoch), and its running statistics are buffers saved in the checkpoint.
    Group norm (groups of 8 channels, at most 32 groups) is there for tiny batches.
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda channels: nn.GroupNorm(min(32, max(1, channels // 8)), channels)
    if norm == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown normalisation {norm!r}; use 'none', 'batch' or 'group'")


class SmallCNN(nn.Module):
    """Three-conv CNN as in the SISA paper; size-agnostic thanks to adaptive pooling.

    With ``norm="none"`` the module layout (and so the state_dict) is the original one, so
    models stored before normalisation existed still load and train as before.
    """

    def __init__(self, *, num_classes: int, in_channels: int, norm: Norm = "none") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [in_channels, 32, 64, 128]
        for i in range(3):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, padding=1))
            if norm != "none":
                layers.append(norm_layer(norm)(widths[i + 1]))
            layers.append(nn.ReLU(inplace=True))
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        # Adaptive pooling makes the head independent of the input size (8..64 px).
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn(
    *, num_classes: int, in_channels: int, image_size: int, norm: Norm | None = None
) -> nn.Module:
    del image_size  # adaptive pooling handles any size >= 4
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, norm=norm or "none")


def resnet18_small(
    *, num_classes: int, in_channels: int, image_size: int, norm: Norm | None = None
) -> nn.Module:
    """ResNet-18 adapted to 28-32 px inputs (CIFAR-style stem: 3x3 stride-1 conv, no maxpool)."""
    del image_size  # the stem change is what matters for small inputs
    model = torchvision.models.resnet18(
        weights=None, num_classes=num_classes, norm_layer=norm_layer(norm or "batch")
    )
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Match torchvision's own conv init so the replaced stem is not the odd one out.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model
