"""Registering backbones: fixed feature extractors trained on public data.

The API imports no torch, yet a file that is not a state_dict of the named architecture must
be refused with 422 at once. So the weights are checked synchronously in a separate Python
process (``python -m worker.backbones.check``): it loads them with ``weights_only=True`` into
the torchvision architecture and reports the feature size, or why they do not fit. A
torchvision spec (``torchvision:resnet18:IMAGENET1K_V1``) goes through the same check, which
fetches the weights through torchvision's weights API into ``TORCH_HOME`` (or finds them there).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.recipe import BackboneSpec, ModelRecipe
from app.core.store_namespaces import BACKBONES
from app.db.migrate import PROJECT_ROOT
from app.db.models import Backbone
from app.services.data_roots import clip
from app.services.errors import InvalidInput
from models_store import LocalStore

CHECK_MODULE = "worker.backbones.check"
CHECK_TIMEOUT_S = 300
TORCHVISION_PREFIX = "torchvision:"
_ARCH = re.compile(r"^[a-z0-9_]{1,64}$")
_WEIGHTS = re.compile(r"^[A-Za-z0-9_]{1,64}$")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class BackboneUpload:
    name: str
    architecture: str
    trained_on: str
    image_size: int | None
    mean: list[float] | None
    std: list[float] | None


def run_check(*args: str) -> dict[str, Any]:
    """The checker's verdict; a crash or a timeout is the service's fault, not the caller's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    completed = subprocess.run(
        [sys.executable, "-m", CHECK_MODULE, *args],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        cwd=PROJECT_ROOT,
        env=env,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"the backbone check failed: {completed.stderr.strip()[-500:]}")
    verdict: dict[str, Any] = json.loads(lines[-1])
    if not verdict.get("ok"):
        raise InvalidInput(str(verdict.get("error", "the weights were refused")))
    return verdict


def _check_architecture(architecture: str) -> None:
    if not _ARCH.match(architecture):
        raise InvalidInput(
            f"unknown architecture {clip(architecture)!r}: use a torchvision classification "
            "model name, e.g. resnet18"
        )


def _check_free_name(session: Session, name: str) -> None:
    if session.scalar(select(Backbone.id).where(Backbone.name == name)) is not None:
        raise InvalidInput(f"a backbone named {name!r} already exists")


def _discard(session: Session, store: LocalStore, sha256: str) -> None:
    """Drop refused bytes unless a registered backbone holds the same ones."""
    if session.scalar(select(Backbone.id).where(Backbone.sha256 == sha256)) is None:
        store.delete(BACKBONES, sha256)


def register_upload(
    session: Session, upload: BackboneUpload, data: bytes, store_root: Path
) -> Backbone:
    """Check and store an uploaded state_dict; the caller commits."""
    _check_free_name(session, upload.name)
    if upload.name.startswith(TORCHVISION_PREFIX):
        raise InvalidInput("names starting with 'torchvision:' are kept for torchvision specs")
    _check_architecture(upload.architecture)
    if not data:
        raise InvalidInput("the state_dict is empty")
    sha256 = hashlib.sha256(data).hexdigest()
    store = LocalStore(store_root)
    store.put(BACKBONES, sha256, data)
    try:
        verdict = run_check("upload", str(store.path(BACKBONES, sha256)), upload.architecture)
    except BaseException:
        _discard(session, store, sha256)
        raise
    small = verdict["stem"] == "small"
    backbone = Backbone(
        name=upload.name,
        architecture=upload.architecture,
        sha256=sha256,
        feature_dim=int(verdict["feature_dim"]),
        trained_on=upload.trained_on,
        image_size=upload.image_size or (32 if small else 224),
        mean=upload.mean or IMAGENET_MEAN,
        std=upload.std or IMAGENET_STD,
        stem=verdict["stem"],
        source="upload",
    )
    session.add(backbone)
    session.flush()
    return backbone


def _torchvision(session: Session, spec: str, store_root: Path) -> Backbone:
    parts = spec.split(":")
    if len(parts) != 3 or not _ARCH.match(parts[1]) or not _WEIGHTS.match(parts[2]):
        raise InvalidInput(
            f"backbone {clip(spec)!r} is not a torchvision spec like "
            "'torchvision:resnet18:IMAGENET1K_V1'"
        )
    verdict = run_check("torchvision", parts[1], parts[2])
    data = Path(verdict["path"]).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    LocalStore(store_root).put(BACKBONES, sha256, data)
    backbone = Backbone(
        name=spec,
        architecture=parts[1],
        sha256=sha256,
        feature_dim=int(verdict["feature_dim"]),
        trained_on=verdict["trained_on"],
        image_size=int(verdict["image_size"]),
        mean=verdict["mean"],
        std=verdict["std"],
        stem=verdict["stem"],
        source=spec,
    )
    session.add(backbone)
    session.flush()
    return backbone


def find_backbone(session: Session, ref: str) -> Backbone | None:
    if ref.isdigit() and ref.isascii() and int(ref) < 2**31:
        found = session.get(Backbone, int(ref))
        if found is not None:
            return found
    return session.scalar(select(Backbone).where(Backbone.name == ref))


def resolve_backbone(session: Session, ref: str, store_root: Path) -> Backbone:
    """A registered backbone by id or name; a torchvision spec is registered on first use."""
    found = find_backbone(session, ref)
    if found is not None:
        return found
    if ref.startswith(TORCHVISION_PREFIX):
        return _torchvision(session, ref, store_root)
    raise InvalidInput(f"backbone {clip(ref)!r} is not registered (see GET /v1/backbones)")


def backbone_spec(backbone: Backbone) -> BackboneSpec:
    """The copy of the backbone a model's recipe records."""
    return BackboneSpec(
        id=backbone.id,
        name=backbone.name,
        architecture=backbone.architecture,
        sha256=backbone.sha256,
        feature_dim=backbone.feature_dim,
        trained_on=backbone.trained_on,
        image_size=backbone.image_size,
        mean=[float(v) for v in backbone.mean],
        std=[float(v) for v in backbone.std],
        stem=backbone.stem,
    )


def backbone_view(backbone: Backbone) -> dict[str, Any]:
    return {
        "id": backbone.id,
        "name": backbone.name,
        "architecture": backbone.architecture,
        "sha256": backbone.sha256,
        "feature_dim": backbone.feature_dim,
        "trained_on": backbone.trained_on,
        "image_size": backbone.image_size,
        "mean": backbone.mean,
        "std": backbone.std,
        "stem": backbone.stem,
        "source": backbone.source,
        "created_at": backbone.created_at,
    }


LAST_STAGE_FAMILIES = ("resnet", "resnext", "wide_resnet")


@dataclass(frozen=True)
class HeadsChoice:
    """What ``POST /v1/models`` says about heads on a backbone."""

    backbone: str
    head: str
    tune: str
    architecture_given: bool


def heads_recipe(
    session: Session, choice: HeadsChoice, recipe: ModelRecipe, store_root: Path
) -> tuple[ModelRecipe, str]:
    """The recipe of per-shard heads on the backbone, and the model's architecture label."""
    if choice.architecture_given:
        raise InvalidInput("give either architecture (trained from scratch) or backbone, not both")
    if recipe.training.augment != "none":
        raise InvalidInput("heads train on cached features: augment must be 'none'")
    if recipe.training.norm is not None:
        raise InvalidInput("norm applies to models trained from scratch, not to heads")
    backbone = resolve_backbone(session, choice.backbone, store_root)
    if choice.tune == "last_block" and not backbone.architecture.startswith(LAST_STAGE_FAMILIES):
        raise InvalidInput(
            f"tune=last_block needs a resnet-family backbone; {backbone.architecture!r} "
            "supports tune=head"
        )
    updated = recipe.model_copy(
        update={
            "backbone": backbone_spec(backbone),
            "head": choice.head,
            "tune": choice.tune,
            "image_size": backbone.image_size,
        }
    )
    return ModelRecipe.model_validate(
        updated.model_dump()
    ), f"{backbone.architecture}+{choice.head}"
