"""The class forgetting benchmark's comparison of every row with the retrain (speed-ups,
retained-accuracy gap, weight distance) and its markdown table."""

from __future__ import annotations

from typing import Any


def compare_with_retrain(rows: list[dict[str, Any]]) -> None:
    """Speed-ups over the retrain and the weight distance to the retrained model, in place."""
    import torch

    from worker.unlearning.metrics import layer_distances

    retrain = next((r for r in rows if r["label"] == "retrain"), None)
    if retrain is None:
        return
    reference = torch.load(retrain["weights"], weights_only=True)
    for r in rows:
        r["speedup_method"] = _ratio(retrain["method_seconds"], r["method_seconds"])
        r["speedup_request_cpu"] = _ratio(retrain["request_cpu_seconds"], r["request_cpu_seconds"])
        r["speedup_wall"] = _ratio(retrain["request_wall_seconds"], r["request_wall_seconds"])
        r["retained_minus_retrain_points"] = round(
            100 * (r["retained_accuracy"] - retrain["retained_accuracy"]), 2
        )
        state = torch.load(r["weights"], weights_only=True)
        r["weight_distance_to_retrain"] = _distance(layer_distances, state, reference)


def _ratio(reference: float, value: float) -> float | None:
    return round(reference / value, 2) if value > 0 else None


def _distance(layer_distances: Any, state: dict, reference: dict) -> dict[str, float]:
    """Relative l2 distance of all weights, as modules so layer_distances can compare them."""
    import math

    import torch

    def as_module(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        module = torch.nn.Module()
        for index, (name, tensor) in enumerate(sorted(tensors.items())):
            if tensor.is_floating_point() and "running" not in name:
                module.register_parameter(f"p{index}", torch.nn.Parameter(tensor.clone()))
        return module

    layers = layer_distances(as_module(state), as_module(reference))
    l2 = math.sqrt(sum(d["l2"] ** 2 for d in layers.values()))
    norm = math.sqrt(sum(float(t.double().norm()) ** 2 for t in reference.values()))
    return {"l2": round(l2, 4), "relative": round(l2 / norm, 4) if norm else 0.0}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset (class) | base train / test acc | method | forget acc "
        "| retained acc (Δ vs retrain) | test acc "
        "| MIA AUC after | request CPU s | speed-up (CPU) | method wall s | speed-up (wall) "
        "| request wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        scenario = result["scenario"]
        base = result["base"]
        fit = f"{100 * base['train_accuracy']:.1f}% / {100 * base['test']['accuracy']:.1f}%"
        for r in result["rows"]:
            mia = r["membership_inference_auc"] or {}
            auc = (mia.get("loss_threshold") or {}).get("after")
            lines.append(
                f"| {scenario['dataset']} ({scenario['forget']}) | {fit} | {r['label']} "
                f"| {100 * r['forget_accuracy']:.1f}% "
                f"| {100 * r['retained_accuracy']:.1f}% ({r['retained_minus_retrain_points']:+.1f}) "
                f"| {100 * r['test_accuracy']:.1f}% | {'-' if auc is None else f'{auc:.2f}'} "
                f"| {r['request_cpu_seconds']:.1f} | {r['speedup_request_cpu']}x "
                f"| {r['method_seconds']:.1f} | {r['speedup_method']}x "
                f"| {r['request_wall_seconds']:.1f} |"
            )
    return "\n".join(lines)
