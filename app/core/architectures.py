"""Names of the architectures the worker can build (the builders live in ``worker.training``)."""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = ("resnet18", "small_cnn")


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES)
