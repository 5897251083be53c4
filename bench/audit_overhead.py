"""Benchmark: what the audit report costs, and whether its attack agrees with a full retrain.

On a CIFAR-10 subset (100 train and 50 test images per class by default: small enough to
train four times on a crowded 2-core CPU), two identical SISA models (S=5, R=4, small_cnn, 32
px, same seed, same images) are trained, each in an in-process deployment of its own. The same
5 % of the training files (50), drawn at random, is then deleted from the first with ``sisa`` and from
the second with ``retrain`` (a forced full retrain of every constituent). Reported:

- the audit's share of the SISA deletion's wall time: the audit hook is timed around
  ``publish_report`` (everything: measuring, figures, signing, HTML, storing), and the report's
  own ``cost.audit_seconds`` is given beside it; the deletion without the audit is the deletion's
  wall time minus the hook's (the hook runs inline, so this is exact);
- the after-deletion attack AUCs of the SISA report and of the retrain report (same forgotten
  samples, same held-out samples, same attack seeds), their difference, and the before-deletion
  AUCs beside them. The audit's sampling and attack seeds derive from the forgotten samples'
  hashes, so both reports attack exactly the same samples the same way.

The report is about membership inference, so the base model must memorise, or its attacks have
nothing to find before or after a deletion. ``--recipe memorise`` (the default) is the service's
recommended small_cnn recipe (batch norm, one-cycle lr restarted per slice) without
augmentation, and 8 epochs per slice, so each constituent fits its shard clearly better than
unseen images; ``--recipe historical`` is the original recipe (no normalisation, constant lr
0.05, 2 epochs per slice), whose model stayed near 22% test accuracy. The base model's ensemble
accuracy on its own training images and on the test split is reported beside every result.

Usage (one torch thread: with two, a crowded machine spends its time in thread barriers):
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.audit_overhead
    .venv/bin/python -m bench.audit_overhead --train-per-class 100 --test-per-class 50  # smoke
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import PROJECT_ROOT, Service, in_process_service, subset, write_result

ATTACKS = ("loss_threshold", "logistic_regression")
QUARTER = 0.25
AUC_TOLERANCE = 0.05
_BULKY = (
    "request",
    "envelope",
    "victims",
    "final_artifacts",
    "command",
)  # kept out of the result file


def _memorise() -> dict[str, Any]:
    from app.core.recipe import RECOMMENDED

    return {**RECOMMENDED["small_cnn"], "augment": "none"}


# name -> (recipe fields of POST /v1/models, default epochs per slice)
RECIPES: dict[str, tuple[dict[str, Any], int]] = {
    "memorise": (_memorise(), 8),
    # The fields written out keep the original layers and constant lr, whatever the defaults.
    "historical": ({"lr": 0.05, "batch_size": 64, "schedule": "constant", "norm": "none"}, 2),
}


def _spec(name: str, dataset_id: int, epochs: int, recipe: str) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": dataset_id,
        "architecture": "small_cnn",
        "shards": 5,
        "slices": 4,
        "epochs_per_slice": epochs,
        "image_size": 32,
        "seed": 0,
        "aggregation": "mean_softmax",
        **RECIPES[recipe][0],
    }


def _base_fit(model_id: int) -> dict[str, float]:
    """The base model's ensemble accuracy on all its training images and on the test split
    (validation split left out, as in every reported test figure): how much it memorised, i.e.
    how much signal the membership attacks have."""
    import torch
    from sqlalchemy import select

    from app.db.models import Model, ModelVersion, Sample, SampleState
    from app.db.session import session_scope
    from app.repositories.samples import active_test_ids
    from app.settings import get_settings
    from worker.constituents import load_constituents
    from worker.flows.common import store
    from worker.samples import load_tensors, sample_rows
    from worker.training.evaluate import aggregate, predict_proba

    cpu = torch.device("cpu")
    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None
        version = session.get(ModelVersion, model.current_version_id)
        assert version is not None
        train_ids = session.scalars(
            select(Sample.id)
            .where(
                Sample.dataset_id == model.dataset_id,
                Sample.split == "train",
                Sample.state == SampleState.ACTIVE,
            )
            .order_by(Sample.sha256)
        ).all()
        nets = load_constituents(session, store(), model, version, cpu)
        fit = {}
        test_ids = active_test_ids(session, model.dataset_id)
        for split, ids in (("train", train_ids), ("test", test_ids)):
            rows = sample_rows(session, list(ids))
            size = model.recipe.image_size
            images, labels = load_tensors(get_settings(), model.dataset, rows, size)
            probas = [predict_proba(net, images, device=cpu) for net in nets]
            ensemble = aggregate(probas, model.recipe.aggregation)
            fit[f"{split}_accuracy"] = float((ensemble.argmax(1) == labels).float().mean())
    return fit


class _HookTimer:
    """Wraps the worker's audit hook and records how long each call took."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def install(self) -> None:
        import worker.audit.publish as publish

        inner: Callable[..., None] = publish.publish_report

        def timed(*args: Any) -> None:
            began = time.perf_counter()
            try:
                inner(*args)
            finally:
                self.seconds.append(time.perf_counter() - began)

        # worker.tasks looks the hook up by name on every batch, so the wrapper is picked up.
        publish.publish_report = timed  # type: ignore[assignment]


def _victims(root: Path, fraction: float, seed: int) -> list[str]:
    files = sorted(str(p.relative_to(root)) for p in (root / "train").rglob("*") if p.is_file())
    count = max(1, round(fraction * len(files)))
    return sorted(random.Random(seed).sample(files, count))


def _report(service: Service, request_id: str) -> dict[str, Any]:
    response = service.client.get(f"/v1/deletion-requests/{request_id}/report")
    response.raise_for_status()
    return response.json()


def _aucs(envelope: dict[str, Any], stage: str) -> dict[str, float | None]:
    attacks = envelope["report"]["membership_inference"]["attacks"]
    return {name: (attacks.get(name) or {}).get(stage, {}).get("auc") for name in ATTACKS}


def _ci(envelope: dict[str, Any], stage: str) -> dict[str, list[float | None]]:
    attacks = envelope["report"]["membership_inference"]["attacks"]
    return {name: attacks[name][stage]["auc_ci"] for name in ATTACKS if name in attacks}


def _final_artifacts(service: Service, model_id: int) -> list[str | None]:
    """artifact sha256 of each constituent's final checkpoint in the model's newest version."""
    from sqlalchemy import func, select

    from app.db.models import Checkpoint, ModelVersion
    from app.db.session import session_scope

    with session_scope() as session:
        version_id = session.scalar(
            select(ModelVersion.id)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.number.desc())
            .limit(1)
        )
        last = session.scalar(
            select(func.max(Checkpoint.slice)).where(Checkpoint.version_id == version_id)
        )
        return list(
            session.scalars(
                select(Checkpoint.artifact_sha256)
                .where(Checkpoint.version_id == version_id, Checkpoint.slice == last)
                .order_by(Checkpoint.shard)
            ).all()
        )


def _deletion(service: Service, timer: _HookTimer, payload: dict[str, Any]) -> dict[str, Any]:
    request, wall = service.forget(payload)
    if request["status"] != "completed":
        raise RuntimeError(f"deletion did not complete: {request['status_reason']}")
    envelope = _report(service, request["id"])
    hook = timer.seconds[-1]
    cost = envelope["report"]["cost"]
    return {
        "request": request,
        "envelope": envelope,
        "wall_s": wall,
        "audit_hook_s": hook,
        "audit_seconds_in_report": cost.get("audit_seconds"),
        "deletion_without_audit_s": wall - hook,
        "audit_share_of_deletion": hook / (wall - hook),
        # The strictest yardstick: the audit against the retraining compute alone.
        "train_seconds": cost.get("train_seconds"),
        "audit_share_of_training_compute": hook / cost["train_seconds"]
        if cost.get("train_seconds")
        else None,
        "samples_retrained": cost.get("samples_retrained"),
        "speedup": cost.get("speedup"),
    }


def _model_and_deletion(
    args: argparse.Namespace, tag: str, method: str, timer: _HookTimer
) -> dict[str, Any]:
    """Train one model in a deployment of its own and delete the benchmark's files from it.

    Each model gets its own home (database, store): two identical models in one deployment
    share content-addressed checkpoints, and one's deletion would purge the other's weights.
    """
    home = PROJECT_ROOT / ".data" / f"bench-audit-overhead-{tag}"
    with in_process_service(home, data_roots=[home / "cifar"]) as service:
        root = subset(
            "cifar10",
            home / "cifar",
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
        )
        dataset = service.register_dataset(root, "cifar")
        model, took = service.train_model(
            _spec(f"audit-{tag}", dataset["id"], args.epochs_per_slice, args.recipe)
        )
        fit = _base_fit(model["id"])
        victims = _victims(root, args.fraction, args.seed)
        print(f"{tag}: trained in {took:.0f} s, {fit}; deleting {len(victims)} files", flush=True)
        deletion = _deletion(
            service, timer, {"model": model["id"], "filenames": victims, "method": method}
        )
        deletion["training_wall_s"] = took
        deletion["test_accuracy_before"] = (model["metrics"].get("test") or {}).get("accuracy")
        deletion["base_model"] = fit
        deletion["final_artifacts"] = _final_artifacts(service, model["id"])
        deletion["victims"] = victims
    return deletion


ARMS = ("sisa", "retrain")


def _arm_path(tag: str) -> Path:
    return PROJECT_ROOT / ".data" / f"bench-audit-overhead-arm-{tag}.json"


def run_arm(args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One model and its deletion (``tag`` is also the method), in a deployment of its own."""
    timer = _HookTimer()
    timer.install()
    arm = _model_and_deletion(args, tag, tag, timer)
    arm["command"] = " ".join(sys.argv)
    return arm


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both arms in this process, or (``--merge``) the arms that ``--arm`` runs left behind:
    the two are independent, so on a crowded machine they can run side by side."""
    if args.merge:
        sisa, retrain = (json.loads(_arm_path(tag).read_text()) for tag in ARMS)
    else:
        sisa, retrain = (run_arm(args, tag) for tag in ARMS)
    if sisa["victims"] != retrain["victims"]:
        raise RuntimeError("the two models were not asked to forget the same files")
    return _summary(args, sisa, retrain)


def _summary(
    args: argparse.Namespace, sisa: dict[str, Any], retrain: dict[str, Any]
) -> dict[str, Any]:
    s_env, r_env = sisa["envelope"], retrain["envelope"]
    same_samples = (
        s_env["report"]["request"]["target"]["sample_sha256"]
        == r_env["report"]["request"]["target"]["sample_sha256"]
    )
    after_s, after_r = _aucs(s_env, "after"), _aucs(r_env, "after")
    gaps = {
        name: abs(after_s[name] - after_r[name])  # type: ignore[operator]
        for name in ATTACKS
        if after_s[name] is not None and after_r[name] is not None
    }
    lineage = s_env["report"]["lineage"]
    mi = s_env["report"]["membership_inference"]
    return {
        "setup": {
            "dataset": "cifar10 subset",
            "train_per_class": args.train_per_class,
            "test_per_class": args.test_per_class,
            "recipe_name": args.recipe,
            "model": _spec("-", 0, args.epochs_per_slice, args.recipe),
            "deleted_files": len(sisa["victims"]),
            "deleted_fraction": args.fraction,
            "seed": args.seed,
        },
        # Both models are trained identically; the attacks' signal is visible in this gap.
        "base_model": sisa["base_model"],
        "base_models_identical": sisa["base_model"] == retrain["base_model"],
        "arm_commands": {"sisa": sisa.get("command"), "retrain": retrain.get("command")},
        "sisa": {k: v for k, v in sisa.items() if k not in _BULKY},
        "retrain": {k: v for k, v in retrain.items() if k not in _BULKY},
        "audit_share_of_sisa_deletion": sisa["audit_share_of_deletion"],
        "audit_within_a_quarter": sisa["audit_share_of_deletion"] <= QUARTER,
        "auc": {
            "before_sisa_model": _aucs(s_env, "before"),
            "before_retrain_model": _aucs(r_env, "before"),
            "after_sisa": after_s,
            "after_retrain": after_r,
            "after_sisa_ci": _ci(s_env, "after"),
            "after_retrain_ci": _ci(r_env, "after"),
            "abs_difference_after": gaps,
            "within_tolerance": bool(gaps) and max(gaps.values()) <= AUC_TOLERANCE,
            "tolerance": AUC_TOLERANCE,
            "n_members": mi["attacks"]["loss_threshold"]["after"]["n_members"],
            "n_nonmembers": mi["attacks"]["loss_threshold"]["after"]["n_nonmembers"],
        },
        "reference_model_test_after": {
            k: (mi.get("reference_model_test") or {}).get(k)
            for k in ("fraction_flagged", "expected_fraction_flagged", "mean_percentile", "status")
        },
        "same_forgotten_samples": same_samples,
        "final_checkpoints_bit_identical": sisa["final_artifacts"] == retrain["final_artifacts"],
        "sisa_lineage": {k: lineage.get(k) for k in ("status", "retrained_shards")},
        "sisa_report_sha256": s_env["integrity"]["sha256"],
        "retrain_report_sha256": r_env["integrity"]["sha256"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="memorise")
    parser.add_argument(
        "--epochs-per-slice", type=int, help="default: the recipe's (memorise 8, historical 2)"
    )
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="audit_overhead", help="result file name")
    parser.add_argument("--arm", choices=ARMS, help="run one arm only and keep it for --merge")
    parser.add_argument("--merge", action="store_true", help="summarise the two --arm runs")
    args = parser.parse_args()
    if args.epochs_per_slice is None:
        args.epochs_per_slice = RECIPES[args.recipe][1]
    if args.arm:
        _arm_path(args.arm).write_text(json.dumps(run_arm(args, args.arm), default=str))
        print(f"wrote {_arm_path(args.arm)}")
        return
    began = time.perf_counter()
    result = run(args)
    if not args.merge:
        result["benchmark_wall_s"] = time.perf_counter() - began
    path = write_result(args.name, result)
    fit = result["base_model"]
    print(
        f"base model ({args.recipe}): {100 * fit['train_accuracy']:.1f}% train, "
        f"{100 * fit['test_accuracy']:.1f}% test accuracy"
    )
    print(
        f"audit {result['sisa']['audit_hook_s']:.1f} s on a {result['sisa']['wall_s']:.1f} s "
        f"deletion: +{100 * result['audit_share_of_sisa_deletion']:.1f} % "
        f"(limit {100 * QUARTER:.0f} %); after-deletion AUC sisa {result['auc']['after_sisa']} "
        f"vs retrain {result['auc']['after_retrain']}; before {result['auc']['before_sisa_model']}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
