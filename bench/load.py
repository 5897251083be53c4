"""Load on the real deployment (`forgetd serve` + `forgetd worker` as processes): a burst of
concurrent deletion requests (distinct files across a few models, some callers sharing an
Idempotency-Key) with pollers reading meanwhile, then a steady request rate.

Checks what callers must never see, whatever the load: a response >= 500, a lost request (a 2xx
for a request that was not stored, or a stored request whose caller got no 2xx), a duplicate
(two requests for one Idempotency-Key), or an accepted request that never completes.

    nice -n 15 python -m bench.load            # PostgreSQL + Redis (2 API processes), embedded
    python -m bench.load --scale 0.1           # a quick, smaller run

Writes bench/results/load.json. Needs PostgreSQL and Redis (FORGETD_BENCH_PG_URL,
FORGETD_BENCH_REDIS_URL) for the first part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from app.db.models import DeletionRequest
from app.embedded import Deployment, deployment

PG_ADMIN_URL = os.environ.get(
    "FORGETD_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FORGETD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
TERMINAL = {"completed", "failed", "rejected", "cancelled"}
# Small, quick models: the load is on the API, the worker only has to keep up.
MODEL = {"shards": 2, "slices": 1, "epochs_per_slice": 1, "image_size": 16, "batch_size": 64}


@dataclass(frozen=True)
class Call:
    body: dict[str, Any]
    key: str | None = None


@dataclass
class Outcome:
    status: int
    request_id: str | None
    seconds: float
    key: str | None
    error: str | None = None
    """The client-side error when no answer came (status 0)."""


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    poll_statuses: Counter[int] = field(default_factory=Counter)


def plan_calls(files: dict[int, list[str]], count: int, shared_every: int = 10) -> list[Call]:
    """``count`` POSTs (taking their files out of ``files``), one file each, round-robin over the models; every ``shared_every``-th
    distinct body is keyed and sent three times (three callers retrying one request); none
    with ``shared_every=0``."""
    calls: list[Call] = []
    pools = files  # consumed: the next plan names other files
    models = sorted(pools)
    index = 0
    while len(calls) < count:
        model = models[index % len(models)]
        body = {"model": model, "filenames": [pools[model].pop()]}
        if shared_every and index % shared_every == 0:
            key = f"load-{uuid.uuid4().hex}"
            calls += [Call(body, key)] * min(3, count - len(calls))
        else:
            calls.append(Call(body, None))
        index += 1
    random.Random(0).shuffle(calls)
    return calls


async def _post(client: httpx.AsyncClient, call: Call) -> Outcome:
    headers = {"Idempotency-Key": call.key} if call.key else {}
    started = time.perf_counter()
    try:
        response = await client.post("/v1/deletion-requests", json=call.body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(0, None, time.perf_counter() - started, call.key, type(exc).__name__)
    seconds = time.perf_counter() - started
    ok = response.status_code < 300
    return Outcome(response.status_code, response.json()["id"] if ok else None, seconds, call.key)


async def _poll(client: httpx.AsyncClient, load: Load, done: asyncio.Event) -> None:
    while not done.is_set():
        known = [o.request_id for o in load.outcomes if o.request_id]
        url = f"/v1/deletion-requests/{random.choice(known)}" if known else "/v1/deletion-requests"
        try:
            load.poll_statuses[(await client.get(url)).status_code] += 1
        except httpx.HTTPError:
            load.poll_statuses[0] += 1
        await asyncio.sleep(0.02)


def _client(deployed: Deployment, key: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=deployed.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
        limits=limits,
    )


async def _burst(deployed: Deployment, key: str, calls: list[Call], pollers: int) -> Load:
    load = Load()
    done = asyncio.Event()
    async with _client(deployed, key, len(calls) + pollers) as client:
        polling = [asyncio.create_task(_poll(client, load, done)) for _ in range(pollers)]

        async def one(call: Call) -> None:
            load.outcomes.append(await _post(client, call))

        await asyncio.gather(*(one(call) for call in calls))
        done.set()
        await asyncio.gather(*polling)
    return load


def burst(deployed: Deployment, key: str, calls: list[Call], pollers: int = 4) -> Load:
    """Every call at once (one connection each), with ``pollers`` readers meanwhile."""
    return asyncio.run(_burst(deployed, key, calls, pollers))


async def _steady(deployed: Deployment, key: str, calls: list[Call], rate: float) -> Load:
    load = Load()
    async with _client(deployed, key, 200) as client:
        tasks = []
        start = time.perf_counter()
        for index, call in enumerate(calls):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))

            async def one(call: Call = call) -> None:
                load.outcomes.append(await _post(client, call))

            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return load


def steady(deployed: Deployment, key: str, calls: list[Call], rate: float) -> Load:
    """One call every 1/``rate`` seconds, whatever the answers' latency (an open loop)."""
    return asyncio.run(_steady(deployed, key, calls, rate))


def stored_requests(database_url: str) -> dict[str, tuple[str | None, str]]:
    """Every stored request: id -> (idempotency key, status)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(DeletionRequest.id, DeletionRequest.idempotency_key, DeletionRequest.status)
            ).all()
    finally:
        engine.dispose()
    return {row[0]: (row[1], row[2]) for row in rows}


def verdict(outcomes: list[Outcome], calls: list[Call], stored: dict[str, Any]) -> dict[str, Any]:
    """What callers saw against what was stored: errors, lost requests, duplicates."""
    accepted = {o.request_id for o in outcomes if o.request_id}
    ids_per_key: dict[str, set[str]] = {}
    for outcome in outcomes:
        if outcome.key and outcome.request_id:
            ids_per_key.setdefault(outcome.key, set()).add(outcome.request_id)
    distinct_calls = len({(str(c.body), c.key) for c in calls})
    return {
        "calls": len(calls),
        "statuses": dict(sorted(Counter(o.status for o in outcomes).items())),
        "server_errors": sum(1 for o in outcomes if o.status >= 500 or o.status == 0),
        "no_answer": dict(Counter(o.error for o in outcomes if o.error)),
        "lost": len(accepted - set(stored)) + len(set(stored) - accepted),
        "duplicated": sum(len(ids) - 1 for ids in ids_per_key.values())
        + max(0, len(stored) - distinct_calls),
        "stored": len(stored),
        "distinct_requests": distinct_calls,
    }


def latency(outcomes: list[Outcome]) -> dict[str, float]:
    seconds = sorted(o.seconds for o in outcomes)
    if not seconds:
        return {}
    cut = statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "p50_ms": round(1000 * cut[49], 1),
        "p99_ms": round(1000 * cut[98], 1),
        "max_ms": round(1000 * seconds[-1], 1),
        "mean_ms": round(1000 * statistics.fmean(seconds), 1),
    }


def train_models(deployed: Deployment, roots: list[Path]) -> dict[int, list[str]]:
    """A dataset and a ready model for each root (model id -> the files its requests name).

    One dataset per model: a file erased for one model is gone from disk, so two models
    trained on one folder would not be independent (the other still holds the file)."""
    ids: dict[int, list[str]] = {}
    with deployed.client(timeout=300) as client:
        for index, root in enumerate(roots):
            dataset = client.post("/v1/datasets", json={"name": f"load-{index}", "root": str(root)})
            assert dataset.status_code == 201, dataset.text
            spec = {"name": f"load-{index}", "dataset": dataset.json()["id"], **MODEL}
            created = client.post("/v1/models", json=spec)
            assert created.status_code == 202, created.text
            files = (p for p in (root / "train").rglob("*") if p.is_file())
            ids[created.json()["id"]] = sorted(str(p.relative_to(root)) for p in files)
        for model_id in ids:
            model = deployed.wait_until(client, f"/v1/models/{model_id}", {"ready", "failed"})
            assert model["status"] == "ready", model
    return ids


def wait_completed(
    deployed: Deployment, database_url: str, ids: set[str], timeout_s: float
) -> dict[str, Any]:
    """Wait until every request in ``ids`` is terminal; returns how they ended and when."""
    start = time.monotonic()
    while True:
        stored = stored_requests(database_url)
        states = Counter(stored[i][1] if i in stored else "missing" for i in ids)
        if set(states) <= TERMINAL or time.monotonic() - start > timeout_s:
            return {"states": dict(states), "seconds": round(time.monotonic() - start, 1)}
        deployed.check_alive()
        time.sleep(2)


@contextmanager
def fresh_postgres() -> Iterator[str]:
    name = f"forgetd_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _database_url(deployed: Deployment) -> str:
    return deployed.env.get("FORGETD_DATABASE_URL") or f"sqlite:///{deployed.home / 'forgetd.db'}"


def run_scenario(
    work: Path,
    env: dict[str, str],
    *,
    api_processes: int,
    models: int,
    burst_calls: int,
    steady_rate: float = 0,
    steady_seconds: float = 0,
    completion_timeout_s: float = 1800,
) -> dict[str, Any]:
    """Train ``models`` models, then a burst, then (optionally) a steady rate, then wait for
    the worker to complete every accepted request."""
    from bench.harness import subset

    steady_calls = int(steady_rate * steady_seconds)
    per_class = (burst_calls + steady_calls) // (10 * models) + 10
    roots = [
        subset(
            "animal-mnist",
            work / "data" / f"load-{index}",
            train_per_class=per_class,
            test_per_class=10,
            seed=index,
        )
        for index in range(models)
    ]
    env = {**env, "FORGETD_DATA_ROOTS": str(work / "data")}
    result: dict[str, Any] = {"api_processes": api_processes, "models": models}
    with deployment(work / "home", env=env, workers=1, api_processes=api_processes) as deployed:
        started = time.monotonic()
        files = train_models(deployed, roots)
        result["training_s"] = round(time.monotonic() - started, 1)
        database_url = _database_url(deployed)
        calls = plan_calls(files, burst_calls)
        load = burst(deployed, deployed.api_key, calls)
        stored = stored_requests(database_url)
        result["burst"] = {
            **verdict(load.outcomes, calls, stored),
            "latency": latency(load.outcomes),
            "poll_statuses": dict(load.poll_statuses),
        }
        accepted = {o.request_id for o in load.outcomes if o.request_id}
        if steady_calls:
            calls = plan_calls(files, steady_calls, shared_every=0)
            paced = steady(deployed, deployed.api_key, calls, steady_rate)
            later = {k: v for k, v in stored_requests(database_url).items() if k not in stored}
            result["steady"] = {
                "rate_per_s": steady_rate,
                "seconds": steady_seconds,
                **verdict(paced.outcomes, calls, later),
                "latency": latency(paced.outcomes),
            }
            accepted |= {o.request_id for o in paced.outcomes if o.request_id}
        accepted.discard(None)
        result["completion"] = wait_completed(
            deployed, database_url, {i for i in accepted if i}, completion_timeout_s
        )
    return result


def main() -> None:
    from bench.harness import write_result

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument(
        "--completion-timeout", type=float, default=900, help="seconds to wait for the worker"
    )
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="forgetd-load-") as tmp:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        with fresh_postgres() as url:
            env = {
                "FORGETD_DATABASE_URL": url,
                "FORGETD_BROKER_URL": REDIS_URL,
                "FORGETD_RESULT_BACKEND": REDIS_URL,
            }
            figures["postgres_redis"] = run_scenario(
                Path(tmp) / "pg",
                env,
                api_processes=2,
                models=3,
                burst_calls=int(1000 * args.scale),
                steady_rate=50,
                steady_seconds=args.steady_seconds * args.scale,
                completion_timeout_s=args.completion_timeout,
            )
        if not args.skip_embedded:
            figures["embedded"] = run_scenario(
                Path(tmp) / "embedded",
                {},
                api_processes=1,
                models=2,
                burst_calls=int(300 * args.scale),
                completion_timeout_s=args.completion_timeout,
            )
    path = write_result("load", {"scale": args.scale, **figures})
    print(path.read_text())


if __name__ == "__main__":
    main()
