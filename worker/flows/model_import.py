"""Models trained elsewhere (``POST /v1/models/import``) become a monolithic version 1 here, so
that classes can be forgotten from them like from any other model."""

from __future__ import annotations

import hashlib
import io

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.recipe import ORIGINAL_NORM
from app.core.store_namespaces import CHECKPOINTS, IMPORTS
from app.db.models import Checkpoint, Model, ModelVersion, VersionStatus
from app.db.session import session_scope
from worker.constituents import fresh_constituent
from worker.flows.common import log, now, store
from worker.flows.shards import detach, load_model, mark_shard_done
from worker.flows.training import finalize_version
from worker.training.architectures import build_model
from worker.training.trainer import checkpoint_bytes


class ImportRefusedError(ValueError):
    """The uploaded file cannot be used as the model's weights; the message says why."""


def import_model(version_id: int) -> bool:
    """Validate and convert an imported state_dict, then evaluate version 1. True when this
    call made the model ready; failures raise ImportRefusedError (the task marks the model
    failed with the message)."""
    with session_scope() as session:
        version = session.get(ModelVersion, version_id)
        if version is None or version.status != VersionStatus.TRAINING:
            return False  # done already, or failed: nothing to redo
        model = load_model(session, version.model_id)
        key = _checkpoint_key(session, version_id)
        detach(session, model)
    blob_store = store()
    if not blob_store.exists(CHECKPOINTS, key):
        try:
            raw = blob_store.get(IMPORTS, key)
        except KeyError:
            raise ImportRefusedError(
                "the uploaded weights are no longer in the store; import the model again"
            ) from None
        try:
            net = _convert_state_dict(raw, model)
        except Exception:
            blob_store.delete(IMPORTS, key)  # a refused import leaves no copy of its bytes
            raise
        blob_store.put(CHECKPOINTS, key, checkpoint_bytes(net, None))
    artifact = hashlib.sha256(blob_store.get(CHECKPOINTS, key)).hexdigest()
    with session_scope() as session:
        session.execute(
            update(Checkpoint)
            .where(Checkpoint.version_id == version_id)
            .values(artifact_sha256=artifact, created_at=now())
        )
        mark_shard_done(session, version_id, 0, current_slice=1)
    # The checkpoint is now the one copy: the upload must not outlive a later class deletion.
    blob_store.delete(IMPORTS, key)
    ready = finalize_version(version_id)
    log.info("imported model %s: version %s evaluated", model.id, version_id)
    return ready is not None


def _checkpoint_key(session: Session, version_id: int) -> str:
    """The content key the API chose for the converted weights (one shard, one slice)."""
    key = session.scalar(
        select(Checkpoint.key).where(
            Checkpoint.version_id == version_id, Checkpoint.shard == 0, Checkpoint.slice == 0
        )
    )
    if key is None:
        raise RuntimeError(f"imported version {version_id} has no checkpoint slot")
    return key


def _convert_state_dict(raw: bytes, model: Model) -> torch.nn.Module:
    """The named architecture with the uploaded weights, outputs in the dataset's class order."""
    try:
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ImportRefusedError(
            "the file is not a torch state_dict loadable with weights_only=True "
            f"({_load_error(exc)})"
        ) from None
    state = _unwrap_state_dict(loaded)
    net = fresh_constituent(model, 0)
    imported = model.recipe.imported
    assert imported is not None  # set for every model registered through the import
    _reorder_outputs(state, net, imported.class_names, model.dataset.classes)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).replace("\n", " ")
        raise ImportRefusedError(
            f"the state_dict does not fit architecture {model.architecture!r} with "
            f"{len(model.dataset.classes)} classes and {model.dataset.channels} channel(s)"
            f"{_norm_hint(state, model)}: {detail[:1500]}"
        ) from None
    return net.eval()


def _norm_hint(state: dict[str, torch.Tensor], model: Model) -> str:
    """Weights trained with other normalisation layers (say with the recommended recipe's batch
    norm) fail on the layers the import asked for, which are the architecture's original ones
    when ``norm`` is left out. When another ``norm`` fits them, the refusal names it."""
    asked = model.recipe.training.norm or ORIGINAL_NORM.get(model.architecture)
    for norm in ("none", "batch", "group"):
        if norm == asked:
            continue
        try:
            candidate = build_model(
                model.architecture,
                num_classes=len(model.dataset.classes),
                in_channels=model.dataset.channels,
                image_size=model.recipe.image_size,
                norm=norm,
            )
            candidate.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError):
            continue  # does not fit, or an architecture without that option
        return (
            f" and norm {asked!r}; the weights fit it with norm {norm!r}: import them again "
            f'with "norm": "{norm}"'
        )
    return f" and norm {asked!r}" if asked else ""


def _load_error(exc: Exception) -> str:
    """The telling part of torch.load's error, without its advice to load unsafely."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict, or one under "state_dict"/"model" (common checkpoint shapes);
    drop DataParallel's "module." prefix."""
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise ImportRefusedError("the file holds no state_dict (a mapping of names to tensors)")
    not_tensors = sorted(str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ImportRefusedError(f"state_dict entries that are not tensors: {not_tensors[:10]}")
    prefix = "module."
    if all(str(k).startswith(prefix) for k in loaded):
        return {str(k)[len(prefix) :]: v for k, v in loaded.items()}
    return {str(k): v for k, v in loaded.items()}


def _reorder_outputs(
    state: dict[str, torch.Tensor],
    net: torch.nn.Module,
    imported_order: list[str],
    dataset_order: list[str],
) -> None:
    """Permute the output layer's rows so output i is the dataset's class i."""
    if list(imported_order) == list(dataset_order):
        return
    heads = [
        name
        for name, module in net.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features == len(dataset_order)
    ]
    if not heads:
        raise ImportRefusedError("cannot find the output layer to reorder the classes")
    head = heads[-1]
    perm = torch.tensor([imported_order.index(name) for name in dataset_order])
    for suffix in ("weight", "bias"):
        name = f"{head}.{suffix}"
        if name in state and state[name].shape[0] == len(dataset_order):
            state[name] = state[name][perm].clone()
