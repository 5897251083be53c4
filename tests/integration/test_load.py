"""Under load, on the real processes (`forgetd serve` with 2 API processes, `forgetd worker`)
over PostgreSQL and Redis: 100 concurrent deletion requests across 2 models, some callers
sharing an Idempotency-Key, with pollers reading meanwhile. No response >= 500, no request
lost, none duplicated, and the worker completes every accepted one."""

from __future__ import annotations

from pathlib import Path

from app.embedded import deployment
from bench.load import burst, plan_calls, stored_requests, train_models, verdict, wait_completed
from tests.conftest import make_subset


def test_a_burst_of_requests_is_served_stored_once_and_completed(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    roots = [
        make_subset(tmp_path / "data" / f"animals-{index}", train_per_class=20, test_per_class=8)
        for index in range(2)
    ]
    env = {
        "FORGETD_DATABASE_URL": postgres_url,
        "FORGETD_BROKER_URL": redis_url,
        "FORGETD_RESULT_BACKEND": redis_url,
        "FORGETD_DATA_ROOTS": str(tmp_path / "data"),
    }
    with deployment(tmp_path / "home", env=env, api_processes=2) as deployed:
        files = train_models(deployed, roots)
        calls = plan_calls(files, 100)
        assert len({c.key for c in calls if c.key}) >= 5  # shared keys are part of the load
        load = burst(deployed, deployed.api_key, calls, pollers=4)
        stored = stored_requests(postgres_url)
        seen = verdict(load.outcomes, calls, stored)
        assert seen["server_errors"] == 0, seen
        assert seen["lost"] == 0 and seen["duplicated"] == 0, seen
        assert seen["stored"] == seen["distinct_requests"], seen
        assert set(seen["statuses"]) <= {200, 202}, seen
        assert load.poll_statuses and set(load.poll_statuses) <= {200}, load.poll_statuses
        done = wait_completed(deployed, postgres_url, set(stored), timeout_s=900)
    assert done["states"] == {"completed": len(stored)}, done
