"""Model definitions behind the architecture registry."""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class SmallCNN(nn.Module):
    """Three-conv CNN as in the SISA paper; size-agnostic thanks to adaptive pooling."""

    def __init__(self, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            # Adaptive pooling makes the head independent of the input size (8..64 px).
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    del image_size  # adaptive pooling handles any size >= 4
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)


def resnet18_small(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 adapted to 28-32 px inputs (CIFAR-style stem: 3x3 stride-1 conv, no maxpool)."""
    del image_size  # the stem change is what matters for small inputs
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Match torchvision's own conv init so the replaced stem is not the odd one out.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model
