"""The report of the SISA benchmark (:mod:`bench.sisa_deletion`): the result document built from
its measurements (speed-ups against the planner's prediction, throughput, accuracy, where each
deletion's wall time went) and the markdown tables printed at the end of a run."""

from __future__ import annotations

import statistics
from typing import Any


def predicted_speedup(shards: int, slices: int, k: int) -> float:
    from app.sisa.planner import predicted_sisa_speedup

    return predicted_sisa_speedup(shards, slices, k)


def summarise(
    parameters: dict[str, Any],
    training: dict[str, Any],
    deletions: list[dict[str, Any]],
    mono: dict[str, Any],
    plain: dict[str, Any],
) -> dict[str, Any]:
    """The result document of a full run; ``parameters`` names its set-up (shards, slices...)."""
    shards, slices = parameters["shards"], parameters["slices"]
    positions = position_speedups(deletions, shards, slices)
    # The average is over the cost of a deletion at a uniformly random position, i.e. a
    # ratio of mean times, not a mean of per-position ratios.
    average_predicted = shards * 3 * slices / (2 * slices + 1)
    return {
        "parameters": parameters,
        "targets": {
            "deletion_ratio_min": 0.8,
            "throughput_ratio_min": 0.9,
            "average_predicted_speedup": average_predicted,
        },
        "deletion": {
            "positions": positions,
            "average": average_speedups(positions, deletions, average_predicted),
            "runs": deletions,
            "breakdown": [
                {"slice": row["slice"], "method": m, **breakdown(row[m])}
                for row in deletions
                for m in ("sisa", "retrain")
            ],
        },
        "training": training,
        "throughput": throughput_summary(training, mono, plain),
        "accuracy": {
            "sisa_ensemble_test": training["test_accuracy"],
            "sisa_constituents_test": training["constituent_accuracy"],
            "sisa_after_deletions_test": training["final_accuracy"],
            "monolithic_test": mono["test_accuracy"],
            "monolithic_epochs": mono["epochs"],
            "plain_loop_test": plain["test_accuracy"],
        },
        "monolithic": mono,
        "plain_loop": plain,
    }


def position_speedups(
    deletions: list[dict[str, Any]], shards: int, slices: int
) -> list[dict[str, Any]]:
    """Per slice position: the measured speed-ups of sisa over retrain against the prediction."""
    positions = []
    for row in deletions:
        sisa, retrain, k = row["sisa"], row["retrain"], row["slice"]
        predicted = predicted_speedup(shards, slices, k)
        wall = retrain["wall_s"] / sisa["wall_s"]
        train = retrain["train_s"] / sisa["train_s"]
        positions.append(
            {
                "slice": k,
                "predicted": predicted,
                # The same ratio from the passes actually run (slices differ by a sample or two).
                "predicted_from_passes": retrain["sample_passes"] / sisa["sample_passes"],
                "sisa_wall_s": sisa["wall_s"],
                "retrain_wall_s": retrain["wall_s"],
                "sisa_train_s": sisa["train_s"],
                "retrain_train_s": retrain["train_s"],
                "sisa_fixed_s": sisa["wall_s"] - sisa["train_s"],
                "sisa_audit_s": sisa["phases"].get("audit_s"),
                "sisa_evaluation_s": sisa["phases"].get("evaluation_s"),
                "audit_share_wall": (sisa["phases"].get("audit_s") or 0.0) / sisa["wall_s"],
                "retrain_fixed_s": retrain["wall_s"] - retrain["train_s"],
                "speedup_wall": wall,
                "speedup_cpu": (retrain["cpu_s"] / sisa["cpu_s"])
                if sisa.get("cpu_s") and retrain.get("cpu_s")
                else None,
                "speedup_train": train,
                "ratio_wall": wall / predicted,
                "ratio_train": train / predicted,
            }
        )
    return positions


def average_speedups(
    positions: list[dict[str, Any]], deletions: list[dict[str, Any]], average_predicted: float
) -> dict[str, Any]:
    """Speed-ups of a deletion at a uniformly random position: ratios of mean times."""
    mean = statistics.fmean
    avg_wall = mean(p["retrain_wall_s"] for p in positions) / mean(
        p["sisa_wall_s"] for p in positions
    )
    avg_train = mean(p["retrain_train_s"] for p in positions) / mean(
        p["sisa_train_s"] for p in positions
    )
    cpu_runs = [(r["sisa"].get("cpu_s"), r["retrain"].get("cpu_s")) for r in deletions]
    avg_cpu = (
        mean(c[1] for c in cpu_runs) / mean(c[0] for c in cpu_runs)
        if all(a and b for a, b in cpu_runs)
        else None
    )
    audit = [r["sisa"]["phases"].get("audit_s") or 0.0 for r in deletions]
    return {
        "predicted": average_predicted,
        # The audit's share of a sisa deletion's wall time (means over positions).
        "audit_share_wall": mean(audit) / mean(p["sisa_wall_s"] for p in positions),
        "sisa_audit_s": mean(audit),
        "sisa_fixed_s": mean(p["sisa_fixed_s"] for p in positions),
        "retrain_fixed_s": mean(p["retrain_fixed_s"] for p in positions),
        "speedup_wall": avg_wall,
        "speedup_train": avg_train,
        "ratio_wall": avg_wall / average_predicted,
        "ratio_train": avg_train / average_predicted,
        "speedup_cpu": avg_cpu,
    }


def throughput_summary(
    training: dict[str, Any], mono: dict[str, Any], plain: dict[str, Any]
) -> dict[str, Any]:
    """Sample passes per second of SISA and of one model via the service, against the plain loop."""
    passes = training["sample_passes"]
    shard_wall = training["train_s"]
    return {
        "sisa_sample_passes": passes,
        "plain_sample_passes": plain["sample_passes"],
        "plain_loop_s": plain["loop_s"],
        "plain_passes_per_s": plain["sample_passes"] / plain["loop_s"],
        # Three views of SISA's time, from narrowest to widest.
        "sisa_train_s": training["train_s"],
        "sisa_train_shard_wall_s": shard_wall,
        "sisa_end_to_end_s": training["wall_s"],
        "sisa_passes_per_s_train": passes / training["train_s"],
        "sisa_passes_per_s_train_shard": passes / shard_wall,
        "sisa_passes_per_s_end_to_end": passes / training["wall_s"],
        "ratio_train": (passes / training["train_s"]) / (plain["sample_passes"] / plain["loop_s"]),
        "ratio_train_shard": (passes / shard_wall) / (plain["sample_passes"] / plain["loop_s"]),
        "ratio_end_to_end": (passes / training["wall_s"])
        / (plain["sample_passes"] / plain["loop_s"]),
        "mono_service_passes_per_s_train": mono["sample_passes"] / mono["train_s"],
        "ratio_mono_service": (mono["sample_passes"] / mono["train_s"])
        / (plain["sample_passes"] / plain["loop_s"]),
        "plain_foreign_cpu": plain.get("foreign_cpu"),
        "interleaved": plain.get("interleaved"),
        "sisa_foreign_cpu": training.get("foreign_cpu"),
    }


def breakdown(run: dict[str, Any]) -> dict[str, float]:
    """Where one deletion's wall time went, from the request's recorded phase timings."""
    phases: dict[str, Any] = run["phases"]
    recorded = ("queued_s", "claim_s", "evaluation_s", "audit_s", "erasure_s")
    parts = {name.removesuffix("_s"): float(phases.get(name, 0.0)) for name in recorded}
    parts["retrain"] = float(sum(phases.get("retrain_s", {}).values()))
    parts["other_worker"] = float(phases.get("total_s", 0.0)) - sum(parts.values())
    parts["api"] = run["api_s"]
    return parts


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    """The result as markdown tables: speed-ups, wall-time breakdown, throughput, accuracy."""
    sections = [
        _speedup_table(result["deletion"]),
        _breakdown_table(result["deletion"]["runs"]),
        _throughput_table(result["throughput"]),
        _accuracy_table(result["accuracy"], result["parameters"]),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


def _speedup_table(deletion: dict[str, Any]) -> list[str]:
    lines = [
        "| slice k | predicted | sisa wall s | retrain wall s | speed-up wall | ratio | "
        "sisa train s | retrain train s | speed-up train | ratio | speed-up CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in deletion["positions"]:
        lines.append(
            f"| {p['slice']} | {p['predicted']:.2f} | {p['sisa_wall_s']:.2f} | "
            f"{p['retrain_wall_s']:.2f} | {p['speedup_wall']:.2f} | {p['ratio_wall']:.2f} | "
            f"{p['sisa_train_s']:.2f} | {p['retrain_train_s']:.2f} | "
            f"{p['speedup_train']:.2f} | {p['ratio_train']:.2f} | {_num(p['speedup_cpu'])} |"
        )
    a = deletion["average"]
    lines.append(
        f"| average | {a['predicted']:.2f} | | | {a['speedup_wall']:.2f} | {a['ratio_wall']:.2f} "
        f"| | | {a['speedup_train']:.2f} | {a['ratio_train']:.2f} | {_num(a['speedup_cpu'])} |"
    )
    lines.append(
        f"\nsisa deletion: mean fixed cost {a['sisa_fixed_s']:.2f} s (retrain's "
        f"{a['retrain_fixed_s']:.2f} s), audit {a['sisa_audit_s']:.2f} s = "
        f"{100 * a['audit_share_wall']:.1f}% of its wall time"
    )
    return lines


def _breakdown_table(runs: list[dict[str, Any]]) -> list[str]:
    parts = list(breakdown(runs[0]["sisa"]))
    lines = [
        "| deletion | wall s | " + " | ".join(parts) + " | other CPU |",
        "|---" * (len(parts) + 3) + "|",
    ]
    for row in runs:
        for method in ("sisa", "retrain"):
            run = row[method]
            cells = " | ".join(f"{v:.2f}" for v in breakdown(run).values())
            lines.append(
                f"| k={row['slice']} {method} | {run['wall_s']:.2f} | {cells} | "
                f"{run.get('foreign_cpu', float('nan')):.2f} |"
            )
    return lines


def _throughput_table(t: dict[str, Any]) -> list[str]:
    return [
        "| throughput (sample passes/s) | value | vs plain loop |",
        "|---|---|---|",
        f"| plain loop (other processes' CPU share {t['plain_foreign_cpu']}) | "
        f"{t['plain_passes_per_s']:.0f} | 1.00 |",
        f"| SISA, training loops (VersionShard.train_seconds) | "
        f"{t['sisa_passes_per_s_train']:.0f} | {t['ratio_train']:.2f} |",
        f"| SISA, train_shard wall (+ decode, checkpoints) | "
        f"{t['sisa_passes_per_s_train_shard']:.0f} | {t['ratio_train_shard']:.2f} |",
        f"| SISA, end to end (+ manifest, evaluation) | "
        f"{t['sisa_passes_per_s_end_to_end']:.0f} | {t['ratio_end_to_end']:.2f} |",
        f"| one model via the service, training loop (S=1, R=1) | "
        f"{t['mono_service_passes_per_s_train']:.0f} | {t['ratio_mono_service']:.2f} |",
        f"| (other processes' CPU share during SISA training: {t['sisa_foreign_cpu']}) | | |",
        f"| interleaved A/B: plain loop (other CPU {t['interleaved'].get('foreign_cpu')}) | "
        f"{t['interleaved']['plain_passes_per_s']:.0f} | 1.00 |",
        f"| interleaved A/B: SISA slices with train_epochs + checkpoint | "
        f"{t['interleaved']['sisa_passes_per_s']:.0f} | {t['interleaved']['ratio']:.2f} |",
    ]


def _accuracy_table(acc: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    shards, slices = parameters["shards"], parameters["slices"]
    return [
        "| test accuracy | value |",
        "|---|---|",
        f"| SISA ensemble (S={shards}, R={slices}) | {acc['sisa_ensemble_test']:.3f} |",
        f"| SISA constituents (mean) | {acc['sisa_constituents_test']:.3f} |",
        f"| SISA ensemble after the {2 * slices} deletions | {acc['sisa_after_deletions_test']:.3f} |",
        f"| one model, same budget ({acc['monolithic_epochs']} epochs, via the service) | "
        f"{acc['monolithic_test']:.3f} |",
        f"| plain loop, same budget | {acc['plain_loop_test']:.3f} |",
    ]
