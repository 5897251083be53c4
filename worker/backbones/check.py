"""Validating a backbone in a process of its own, so the HTTP layer (which imports no torch)
can answer a bad upload with 422 at once: ``python -m worker.backbones.check upload PATH ARCH``
or ``... torchvision ARCH WEIGHTS``. Prints one JSON object: ``{"ok": true, ...}`` with what
the API records, or ``{"ok": false, "error": ...}`` saying why the weights are refused."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from worker.backbones.nets import BackboneRefusedError, build_network
from worker.flows.model_import import ImportRefusedError, _load_error, _unwrap_state_dict


def load_state(raw: bytes) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise BackboneRefusedError(
            "the file is not a torch state_dict loadable with weights_only=True "
            f"({_load_error(exc)})"
        ) from None
    try:
        return _unwrap_state_dict(loaded)
    except ImportRefusedError as exc:
        raise BackboneRefusedError(str(exc)) from None


def check_upload(path: Path, architecture: str) -> dict[str, Any]:
    state = load_state(path.read_bytes())
    net, stem = build_network(architecture, state)
    return {"feature_dim": int(net.feature_dim), "stem": stem}  # type: ignore[arg-type]


def _trained_on(architecture: str, weights: str, meta: dict[str, Any]) -> str:
    data = "ImageNet-1K" if weights.startswith("IMAGENET1K") else weights
    recipe = meta.get("recipe", "")
    return f"{data} (torchvision weights {architecture}:{weights}; recipe {recipe})"


def check_torchvision(architecture: str, weights_name: str) -> dict[str, Any]:
    """Fetch (or find in TORCH_HOME) torchvision's weights and check them like an upload."""
    try:
        enum = torchvision.models.get_model_weights(architecture)
        weights = enum[weights_name]
    except (ValueError, KeyError):
        raise BackboneRefusedError(
            f"torchvision has no weights {weights_name[:64]!r} for {architecture[:64]!r}"
        ) from None
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # offline, refused download, corrupt file
        raise BackboneRefusedError(
            f"cannot load torchvision weights {architecture}:{weights_name} into TORCH_HOME "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    net, stem = build_network(architecture, state)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    transforms = weights.transforms()
    return {
        "feature_dim": int(net.feature_dim),  # type: ignore[arg-type]
        "stem": stem,
        "path": str(cached),
        "image_size": int(transforms.crop_size[0]),
        "mean": [float(v) for v in transforms.mean],
        "std": [float(v) for v in transforms.std],
        "trained_on": _trained_on(architecture, weights_name, dict(weights.meta)),
    }


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "upload":
            result = check_upload(Path(argv[1]), argv[2])
        elif len(argv) == 3 and argv[0] == "torchvision":
            result = check_torchvision(argv[1], argv[2])
        else:
            print(json.dumps({"ok": False, "error": "usage: upload PATH ARCH | torchvision A W"}))
            return 2
    except BackboneRefusedError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 0
    print(json.dumps({"ok": True, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
