"""Guard rails on a new version before it is made current.

* Non-finite weights (every version, checked by the finalizer before evaluation): a constituent
  holding NaN or an infinity answers nothing sensible, so it never serves.
* Lineage (exact methods, :mod:`worker.flows.proof`): checked by the completion flow.
* Retained accuracy (approximate methods, file requests): the new version's test accuracy on
  the classes it keeps may fall at most ``max_retain_drop`` percentage points (a request
  option, default 10 for files) below its parent's on the same classes. Class requests are
  held to their targets on the validation split instead (:mod:`worker.flows.verify`). Exact methods (sisa, retrain) are not held to it:
  they are proven by their lineage, a retrain of a small model can honestly move accuracy by
  more, and refusing one would leave the data in the served model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.core.options import RequestOptions, parse_options
from app.db.models import DeletionRequest, Model, ModelVersion
from app.services.datasets import dataset_counts
from worker.constituents import CHECKPOINTS, final_checkpoints, fresh_constituent
from worker.flows.common import store
from worker.flows.proof import lineage_refusal
from worker.training.trainer import load_checkpoint
from worker.unlearning.base import Runner
from worker.unlearning.registry import get_method


class VersionRefusedError(RuntimeError):
    """A new version failed a guard rail; the message gives the figures (no file names)."""


def _non_finite(net: torch.nn.Module) -> list[str]:
    return [
        name
        for name, tensor in net.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def non_finite_refusal(session: Session, model: Model, version: ModelVersion) -> str | None:
    """None when every weight of every constituent is finite; otherwise which are not.

    A constituent reused unchanged (same key, same bytes) was checked when it was first made,
    so only the ones this version trained are loaded."""
    found = []
    for checkpoint in final_checkpoints(session, version, model.recipe.slices):
        if checkpoint.reused:
            continue
        net = fresh_constituent(model, checkpoint.shard)
        load_checkpoint(store().get(CHECKPOINTS, checkpoint.key), net, None, map_location="cpu")
        shard = checkpoint.shard
        names = _non_finite(net)
        if names:
            found.append(f"shard {shard}: {len(names)} tensor(s) ({', '.join(names[:5])})")
    if not found:
        return None
    return (
        f"version {version.number} holds non-finite weights (NaN or infinity), so it was not "
        f"made current: {'; '.join(found)}"
    )


def retained_accuracy(metrics: dict[str, Any], counts: dict[str, int]) -> float | None:
    """Test accuracy over the classes in ``counts``, rebuilt from a stored evaluation's
    per-class accuracies weighted by today's test images per class, so parent and child are
    compared on the same footing (None when that evaluation is missing)."""
    per_class = (metrics.get("test") or {}).get("per_class") or {}
    values = [(per_class.get(c), n) for c, n in counts.items()]
    present = [(a, n) for a, n in values if a is not None and n]
    total = sum(n for _, n in present)
    if not total:
        return None
    return float(sum(a * n for a, n in present) / total)


def retain_drop_refusal(
    session: Session,
    model: Model,
    version: ModelVersion,
    parent: ModelVersion,
    max_drop: float,
) -> str | None:
    """None when the retained classes' accuracy fell by at most ``max_drop`` points."""
    per_class = dataset_counts(session, model.dataset)["test"]["per_class"]
    retired = set(version.retired_classes)
    counts = {c: int(n) for c, n in per_class.items() if c not in retired}
    after = retained_accuracy(version.metrics or {}, counts)
    before = retained_accuracy(parent.metrics or {}, counts)
    if after is None or before is None:
        return None
    drop = 100.0 * (before - after)
    if drop <= max_drop:
        return None
    return (
        f"version {version.number} was not made current: its test accuracy on the retained "
        f"classes fell {drop:.1f} points, from {100 * before:.1f}% (version {parent.number}) to "
        f"{100 * after:.1f}%, more than max_retain_drop {max_drop:g}"
    )


def judge_new_version(
    session: Session, version: ModelVersion, requests: Sequence[DeletionRequest]
) -> str | None:
    """Why the batch's new version may not be made current, or None when it may.

    Exact methods must hold their lineage proof; approximate file batches must keep the
    retained classes' accuracy within the strictest ``max_retain_drop`` of their requests. (Its
    weights were found finite before it was evaluated.)"""
    model = session.get(Model, version.model_id)
    assert model is not None
    if get_method(version.method).runner == Runner.SISA:
        return lineage_refusal(session, version, [r.id for r in requests])
    if version.parent_id is None:
        return None
    parent = session.get(ModelVersion, version.parent_id)
    assert parent is not None
    if requests and all(r.target_kind == "classes" for r in requests):
        # Verified on the validation split (worker.flows.verify): the test split only reports.
        return None
    strictest = min(
        (parse_options(r.options).retain_drop_for(r.target_kind) for r in requests),
        default=RequestOptions().retain_drop_for("files"),
    )
    return retain_drop_refusal(session, model, version, parent, strictest)
