"""The real API in uvicorn subprocesses, and a burst of concurrent calls against it, for the
tests (and the bench) about what callers see under load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_api(log_path: Path, *, processes: int = 1, timeout_s: float = 90) -> Iterator[str]:
    """`forgetd serve` in a subprocess (the current environment's settings); yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    if processes > 1:
        argv += ["--processes", str(processes)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Outcome:
    """One call's result: its status, the request id it returned, and its latency."""

    status: int
    request_id: str | None
    seconds: float
    key: str | None = None
    body: str = ""


@dataclass
class Burst:
    outcomes: list[Outcome] = field(default_factory=list)

    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status >= 500 or o.status == 0]

    def accepted_ids(self) -> set[str]:
        return {o.request_id for o in self.outcomes if o.request_id and o.status < 300}


def post_all(
    url: str, key: str, bodies: list[tuple[dict[str, Any], str | None]], *, threads: int
) -> Burst:
    """POST every (body, Idempotency-Key) at once from ``threads`` threads."""

    def call(item: tuple[dict[str, Any], str | None]) -> Outcome:
        body, idem = item
        headers = {"Authorization": f"Bearer {key}"}
        if idem:
            headers["Idempotency-Key"] = idem
        started = time.perf_counter()
        try:
            response = httpx.post(
                f"{url}/v1/deletion-requests", json=body, headers=headers, timeout=120
            )
        except httpx.HTTPError as exc:
            return Outcome(0, None, time.perf_counter() - started, idem, repr(exc))
        elapsed = time.perf_counter() - started
        request_id = response.json().get("id") if response.status_code < 300 else None
        return Outcome(response.status_code, request_id, elapsed, idem, response.text[:300])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return Burst(list(pool.map(call, bodies)))


def poll_while(url: str, key: str, running: Callable[[], bool]) -> list[int]:
    """GET the request list until ``running()`` is false; returns the statuses seen."""
    statuses: list[int] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while running():
            try:
                statuses.append(client.get("/v1/deletion-requests?limit=20").status_code)
            except httpx.HTTPError:
                statuses.append(0)
            time.sleep(0.05)
    return statuses
