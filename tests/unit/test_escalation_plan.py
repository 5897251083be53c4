"""The order in which a class request escalates: its method's declared overrides, each on top
of the configuration it asked for, then an exact retrain, then nothing."""

from __future__ import annotations

from app.core.methods.base import Miss
from app.db.models import DeletionRequest
from worker.flows.verify import _next_step


def _advance(
    request: DeletionRequest, misses: frozenset[Miss] = frozenset(Miss)
) -> tuple[str, dict, int] | None:
    step = _next_step(request, misses)
    if step is not None:
        method, config, index = step
        request.plan = {
            **request.plan,
            "requested": request.plan.get("requested")
            or {"method": request.method, "method_config": dict(request.method_config)},
            "escalation_step": index,
        }
        request.method, request.method_config = method, config
    return step


def test_unsir_escalates_through_its_plan_then_retrain() -> None:
    request = DeletionRequest(
        method="unsir", method_config={"noise_repeats": 6}, plan={}, options={}
    )
    first = _advance(request)
    assert first is not None and first[0] == "unsir" and first[2] == 1
    assert first[1]["repair_epochs"] == 4 and first[1]["impair_lr"] == 0.004
    assert first[1]["noise_repeats"] == 6  # the request's own configuration is kept
    second = _advance(request)
    assert second is not None and second[1]["impair_lr"] == 0.006
    assert second[1]["repair_epochs"] == 4 and second[1]["noise_repeats"] == 6
    third = _advance(request)
    assert third is not None and third[0] == "retrain"
    assert _advance(request) is None  # nothing after an exact retrain


def test_a_step_meant_for_another_miss_is_skipped() -> None:
    """UNSIR's longer repair is for any miss; its harder impair only for a forgotten class
    that kept too much."""
    forget_only = frozenset({Miss.FORGET})
    request = DeletionRequest(method="unsir", method_config={}, plan={}, options={})
    first = _advance(request, forget_only)
    assert first is not None and first[2] == 1 and first[1]["repair_epochs"] == 4
    second = _advance(request, forget_only)
    assert second is not None and second[0] == "unsir" and second[2] == 2
    assert second[1]["impair_lr"] == 0.006

    retain_only = frozenset({Miss.RETAIN})
    request = DeletionRequest(method="unsir", method_config={}, plan={}, options={})
    first = _advance(request, retain_only)
    assert first is not None and first[1]["repair_epochs"] == 4 and first[1]["impair_lr"] == 0.004
    second = _advance(request, retain_only)  # the harder impair is skipped: on to the retrain
    assert second is not None and second[0] == "retrain" and second[2] == 3
    assert _advance(request, retain_only) is None


def test_no_plan_goes_straight_to_retrain_and_escalate_false_stops() -> None:
    request = DeletionRequest(method="finetune", method_config={}, plan={}, options={})
    step = _next_step(request)
    assert step is not None and step[0] == "retrain"
    stopped = DeletionRequest(
        method="unsir", method_config={}, plan={}, options={"escalate": False}
    )
    assert _next_step(stopped) is None


def test_every_approximate_class_method_follows_its_served_plan_to_retrain() -> None:
    """What GET /v1/methods shows as a method's plan is what a missed request runs: each
    declared step (a configuration that differs from the method's defaults, or it would only
    repeat the attempt), then the exact retrain, then nothing."""
    from app.core.methods.base import Target
    from app.core.methods.registry import all_methods

    approximate = [s for s in all_methods() if not s.exact and Target.CLASSES in s.targets]
    assert {"kodge", "salun", "unsir", "ssd"} <= {s.name for s in approximate}
    for spec in approximate:
        plan = spec.describe()["escalation_plan"]
        assert plan[-1]["method"] == "retrain", spec.name
        defaults = spec.config_model().model_dump(mode="json")
        request = DeletionRequest(method=spec.name, method_config=defaults, plan={}, options={})
        for expected in plan:
            step = _advance(request)
            assert step is not None and step[0] == expected["method"], spec.name
            if expected["method"] == spec.name:
                assert step[1] != defaults, spec.name
                assert all(step[1][k] == v for k, v in expected["config"].items()), spec.name
        assert _advance(request) is None, spec.name
    assert all(not s.escalation_plan() for s in all_methods() if s.exact)
