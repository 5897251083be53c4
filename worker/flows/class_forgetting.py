"""Approximate unlearning on each constituent of a version (UNSIR, adversarial, baselines).

`deletion.start_batch` lays out the new version with every parent checkpoint kept and each
constituent's final slot pending. Here one task per constituent loads the parent's final
weights, runs the request's method on them with the shard's own training data (forget = the
request's targets the shard trained on, retain = the rest of the shard), and stores the result
under a new content key. The other slots keep pointing at the parent's checkpoints: they record
what the constituent was trained on, which an approximate method does not change.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import (
    Checkpoint,
    Dataset,
    DeletionRequest,
    DeletionTarget,
    ManifestEntry,
    Model,
    ModelVersion,
    Sample,
    ShardStatus,
    VersionShard,
    VersionStatus,
)
from app.db.session import session_scope
from app.settings import get_settings
from worker.constituents import CHECKPOINTS, derived_seed, fresh_constituent
from worker.flows.common import device, is_stale, log, now, store, touch_model
from worker.flows.training import finalize_version
from worker.samples import load_tensors, sample_rows
from worker.training.trainer import checkpoint_bytes, load_checkpoint
from worker.unlearning.base import Runner, UnlearningInputs
from worker.unlearning.registry import Method, get_method, validate_config

# Method-specific results (losses, discriminator score, ...) keyed like the checkpoint they
# produced; forgetting_metrics gathers them into the version's metrics.
METHOD_RESULTS = "method_results"
PROGRESS_EVERY_S = 2.0
# Salt of the unlearning seed, so it never coincides with a training seed (seed, shard, slice).
_SEED_DOMAIN = 0x5EED


@dataclass(frozen=True)
class ShardJob:
    """Everything read from the database before the (long) method run."""

    version_id: int
    shard: int
    model: Model
    dataset: Dataset
    spec: Method
    method_config: dict[str, Any]
    parent_key: str
    parent_artifact: str | None
    new_key: str
    shard_ids: list[int]
    target_ids: frozenset[int]
    forget_classes: list[int]


def unlearned_key(parent_key: str, method: str, config: dict[str, Any], salt: str) -> str:
    """Content key of an unlearned constituent: the weights it started from, the method and its
    exact configuration, and the batch's salt (a re-run of the same batch lands on the same key,
    a later request never collides with it)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{parent_key}:{method}:{canonical}:{salt}".encode()).hexdigest()


class _ProgressWriter:
    """Throttled writes of the method's progress into the shard's row (the final slice)."""

    def __init__(self, version_id: int, model_id: int, shard: int, final_slice: int) -> None:
        self.version_id, self.model_id, self.shard = version_id, model_id, shard
        self.final_slice = final_slice
        self.last = 0.0

    def __call__(self, fraction: float, phase: str) -> None:
        moment = time.monotonic()
        if moment - self.last < PROGRESS_EVERY_S and fraction < 1.0:
            return
        self.last = moment
        with session_scope() as session:
            session.execute(
                update(VersionShard)
                .where(VersionShard.version_id == self.version_id, VersionShard.shard == self.shard)
                .values(
                    current_slice=self.final_slice,
                    slice_fraction=min(1.0, max(0.0, fraction)),
                    updated_at=now(),
                )
            )
            touch_model(session, self.model_id)


def _batch_requests(session: Session, version_id: int) -> list[DeletionRequest]:
    return list(
        session.scalars(
            select(DeletionRequest)
            .where(DeletionRequest.result_version_id == version_id)
            .order_by(DeletionRequest.created_at, DeletionRequest.id)
        ).all()
    )


def _shard_sample_ids(session: Session, version_id: int, shard: int) -> list[int]:
    """The shard's training samples in the canonical training order (slice, content hash), so
    the decoded-image cache written when the shard was trained is hit again."""
    return list(
        session.scalars(
            select(ManifestEntry.sample_id)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(ManifestEntry.version_id == version_id, ManifestEntry.shard == shard)
            .order_by(ManifestEntry.slice, Sample.sha256)
        ).all()
    )


def _final_checkpoint(session: Session, version_id: int, shard: int, slices: int) -> Checkpoint:
    checkpoint = session.scalar(
        select(Checkpoint).where(
            Checkpoint.version_id == version_id,
            Checkpoint.shard == shard,
            Checkpoint.slice == slices - 1,
        )
    )
    if checkpoint is None:
        raise RuntimeError(f"version {version_id} has no final checkpoint for shard {shard}")
    return checkpoint


def _claim(session: Session, version_id: int, shard: int) -> ShardJob | bool:
    """Mark the shard running and read what its run needs; True/False when there is nothing
    to run (done already / owned by a live task or the version failed)."""
    settings = get_settings()
    state = session.get(VersionShard, (version_id, shard))
    version = session.get(ModelVersion, version_id)
    if state is None or version is None or version.status == VersionStatus.FAILED:
        return False
    if state.status == ShardStatus.DONE:
        return True
    if state.status == ShardStatus.RUNNING and not is_stale(
        state.updated_at, settings.stale_task_after_s
    ):
        log.info("version %s shard %s is being unlearned elsewhere", version_id, shard)
        return False
    if version.parent_id is None:
        raise RuntimeError(f"version {version_id} has no parent to unlearn from")
    model = session.get(Model, version.model_id)
    assert model is not None
    dataset = session.get(Dataset, model.dataset_id)
    assert dataset is not None
    model.dataset = dataset
    spec = get_method(version.method)
    if spec.runner != Runner.MODEL:
        raise RuntimeError(f"method {spec.name!r} is not run on constituents in memory")
    requests = _batch_requests(session, version_id)
    if not requests:
        raise RuntimeError(f"version {version_id} has no deletion request")
    # Coalescing never mixes methods, so the first request's configuration is the batch's.
    config = validate_config(spec.name, requests[0].method_config).model_dump(mode="json")
    parent_final = _final_checkpoint(session, version.parent_id, shard, model.recipe.slices)
    parent_key = parent_final.key
    shard_ids = _shard_sample_ids(session, version.parent_id, shard)
    targets = set(
        session.scalars(
            select(DeletionTarget.sample_id).where(
                DeletionTarget.request_id.in_([r.id for r in requests])
            )
        ).all()
    )
    classes = dataset.classes
    forget_classes = sorted({classes.index(c) for r in requests for c in r.target_classes})
    state.status = ShardStatus.RUNNING
    state.updated_at = now()
    job = ShardJob(
        version_id=version_id,
        shard=shard,
        model=model,
        dataset=dataset,
        spec=spec,
        method_config=config,
        parent_key=parent_key,
        parent_artifact=parent_final.artifact_sha256,
        new_key=unlearned_key(parent_key, spec.name, config, version.checkpoint_salt),
        shard_ids=shard_ids,
        target_ids=frozenset(targets.intersection(shard_ids)),
        forget_classes=forget_classes,
    )
    session.expunge(model)
    session.expunge(dataset)
    return job


def unlearn_shard(version_id: int, shard: int) -> bool:
    """Run the version's method on one constituent; True when the constituent is done."""
    with session_scope() as session:
        job = _claim(session, version_id, shard)
    if isinstance(job, bool):
        return job
    if not job.target_ids:
        # This constituent never trained on anything the request names: it already is the
        # model without that data, so it is kept as it is (exact for this shard).
        _keep_parent_constituent(job)
        return True
    began = time.perf_counter()
    outcome = _run_method(job)
    _record(job, outcome, time.perf_counter() - began)
    log.info(
        "version %s shard %s unlearned with %s in %.1fs (%s forget, %s retain samples given)",
        version_id,
        shard,
        job.spec.name,
        outcome.method_seconds,
        outcome.given.forget,
        outcome.given.retain,
    )
    return True


@dataclass(frozen=True)
class Given:
    """How many training samples the method was handed (its "samples touched")."""

    forget: int
    retain: int


def _load_inputs(
    job: ShardJob, net: torch.nn.Module, dev: torch.device
) -> tuple[UnlearningInputs, Given]:
    settings = get_settings()
    with session_scope() as session:
        rows = sample_rows(session, job.shard_ids)
    images, labels = load_tensors(settings, job.dataset, rows, job.model.recipe.image_size)
    is_target = torch.tensor([r.sample_id in job.target_ids for r in rows], dtype=torch.bool)
    forget_images, forget_labels = images[is_target], labels[is_target]
    if not job.spec.reads_forget_images:
        # Zero-glance methods get nothing of the forgotten data, by construction.
        forget_images, forget_labels = forget_images[:0], forget_labels[:0]
    retain_images, retain_labels = images[~is_target], labels[~is_target]
    inputs = UnlearningInputs(
        model=net,
        forget_images=forget_images,
        forget_labels=forget_labels,
        retain_images=retain_images,
        retain_labels=retain_labels,
        num_classes=len(job.dataset.classes),
        forget_classes=list(job.forget_classes),
        device=dev,
        seed=derived_seed(job.model.recipe.seed, job.shard, _SEED_DOMAIN),
        progress=_ProgressWriter(
            job.version_id, job.model.id, job.shard, job.model.recipe.slices - 1
        ),
    )
    return inputs, Given(forget=int(forget_images.shape[0]), retain=int(retain_images.shape[0]))


@dataclass(frozen=True)
class Outcome:
    details: dict[str, Any]
    given: Given
    method_seconds: float
    """The method's run alone, like train_shard's train_seconds (loading excluded), so the two
    compare."""


def _run_method(job: ShardJob) -> Outcome:
    """Unlearn the parent's constituent and store it under the new key (idempotent: the key is
    the same for a re-run, and a present blob is by construction the right one)."""
    blob_store = store()
    dev = device()
    net = fresh_constituent(job.model, job.shard)
    load_checkpoint(blob_store.get(CHECKPOINTS, job.parent_key), net, None, map_location="cpu")
    net = net.to(dev)
    inputs, given = _load_inputs(job, net, dev)
    assert job.spec.run is not None
    config = job.spec.config_model.model_validate(job.method_config)
    began = time.perf_counter()
    result = job.spec.run(inputs, config)
    seconds = time.perf_counter() - began
    net.eval()
    # No optimizer state: an unlearned final slot is never a point that training resumes from.
    blob_store.put(CHECKPOINTS, job.new_key, checkpoint_bytes(net.cpu(), None))
    return Outcome(details=result.details, given=given, method_seconds=seconds)


def _record(job: ShardJob, outcome: Outcome, total_seconds: float) -> None:
    artifact = hashlib.sha256(store().get(CHECKPOINTS, job.new_key)).hexdigest()
    summary = {
        "method": job.spec.name,
        "config": job.method_config,
        "shard": job.shard,
        "method_seconds": outcome.method_seconds,
        "total_seconds": total_seconds,
        "forget_samples": len(job.target_ids),
        "forget_samples_given": outcome.given.forget,
        "retain_samples_given": outcome.given.retain,
        "details": outcome.details,
    }
    store().put(
        METHOD_RESULTS, job.new_key, json.dumps(summary, sort_keys=True, default=str).encode()
    )
    slices = job.model.recipe.slices
    with session_scope() as session:
        session.execute(
            update(Checkpoint)
            .where(
                Checkpoint.version_id == job.version_id,
                Checkpoint.shard == job.shard,
                Checkpoint.slice == slices - 1,
            )
            .values(key=job.new_key, artifact_sha256=artifact, reused=False, created_at=now())
        )
        session.execute(
            update(VersionShard)
            .where(VersionShard.version_id == job.version_id, VersionShard.shard == job.shard)
            .values(
                status=ShardStatus.DONE,
                current_slice=slices,
                slice_fraction=0.0,
                train_seconds=outcome.method_seconds,
                samples_trained=outcome.given.forget + outcome.given.retain,
                updated_at=now(),
            )
        )
        touch_model(session, job.model.id)


def _keep_parent_constituent(job: ShardJob) -> None:
    slices = job.model.recipe.slices
    with session_scope() as session:
        session.execute(
            update(Checkpoint)
            .where(
                Checkpoint.version_id == job.version_id,
                Checkpoint.shard == job.shard,
                Checkpoint.slice == slices - 1,
            )
            .values(key=job.parent_key, artifact_sha256=job.parent_artifact, reused=True)
        )
        session.execute(
            update(VersionShard)
            .where(VersionShard.version_id == job.version_id, VersionShard.shard == job.shard)
            .values(status=ShardStatus.DONE, restart_slice=slices, updated_at=now())
        )
    log.info(
        "version %s shard %s holds none of the forgotten samples: constituent kept",
        job.version_id,
        job.shard,
    )


# --------------------------------------------------------------------------- imported models
# A model trained elsewhere (POST /v1/models/import) becomes a monolithic version 1 here, so
# that classes can be forgotten from it like from any other model.

IMPORTS = "imports"  # where the API left the uploaded bytes (app.services.imports.IMPORTS)


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
        model = session.get(Model, version.model_id)
        assert model is not None
        dataset = session.get(Dataset, model.dataset_id)
        assert dataset is not None
        model.dataset = dataset
        key = _final_checkpoint(session, version_id, 0, 1).key
        session.expunge(model)
        session.expunge(dataset)
    blob_store = store()
    if not blob_store.exists(CHECKPOINTS, key):
        try:
            raw = blob_store.get(IMPORTS, key)
        except KeyError:
            raise ImportRefusedError(
                "the uploaded weights are no longer in the store; import the model again"
            ) from None
        net = _convert_state_dict(raw, model)
        blob_store.put(CHECKPOINTS, key, checkpoint_bytes(net, None))
    artifact = hashlib.sha256(blob_store.get(CHECKPOINTS, key)).hexdigest()
    with session_scope() as session:
        session.execute(
            update(Checkpoint)
            .where(Checkpoint.version_id == version_id)
            .values(artifact_sha256=artifact, created_at=now())
        )
        session.execute(
            update(VersionShard)
            .where(VersionShard.version_id == version_id)
            .values(status=ShardStatus.DONE, current_slice=1, updated_at=now())
        )
    # The checkpoint is now the one copy: the upload must not outlive a later class deletion.
    blob_store.delete(IMPORTS, key)
    ready = finalize_version(version_id)
    log.info("imported model %s: version %s evaluated", model.id, version_id)
    return ready is not None


def _convert_state_dict(raw: bytes, model: Model) -> torch.nn.Module:
    """The named architecture with the uploaded weights, outputs in the dataset's class order."""
    import io

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
            f"{len(model.dataset.classes)} classes and {model.dataset.channels} channel(s): "
            f"{detail[:1500]}"
        ) from None
    return net.eval()


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
