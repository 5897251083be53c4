"""Running an API and a worker as child processes: the demo, the benchmarks and the
end-to-end tests use the same real deployment a user starts by hand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICE_ENV_NAMES = (
    "FORGETD_DATABASE_URL",
    "DATABASE_URL",
    "FORGETD_BROKER_URL",
    "BROKER_URL",
    "FORGETD_RESULT_BACKEND",
    "RESULT_BACKEND",
    "FORGETD_DATA_ROOTS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    home: Path
    base_url: str
    env: dict[str, str]
    api_key: str = ""
    """An admin key minted for whoever drives this deployment."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client for the API, authenticated with the admin key."""
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def mint_key(self, role: str, name: str = "") -> str:
        return mint_key(self.env, role, name)

    def kill(self, name: str) -> None:
        """SIGKILL a process, as a crash or an OOM kill would."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=30)

    def start_worker(self, name: str = "worker", *, beat: bool = True) -> None:
        args = ["worker"] if beat else ["worker", "--no-beat"]
        self.processes[name] = _spawn(args, self.env, self.home / f"{name}.log", append=True)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.home / f"{name}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{tail}")

    def wait_until(
        self, client: httpx.Client, url: str, done: set[str], timeout_s: float = 600
    ) -> dict:
        """Poll a resource until its `status` is in `done`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            body = client.get(url).json()
            if body.get("status") in done:
                return body
            self.check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"{url} did not reach {sorted(done)} in {timeout_s} s")


def mint_key(env: Mapping[str, str], role: str, name: str = "") -> str:
    """A new API key from `forgetd keys create` (the key is the last line it prints)."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--role", role, "--name", name],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"forgetd keys create failed: {result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def _spawn(
    args: list[str], env: Mapping[str, str], log: Path, *, append: bool = False
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=dict(env),
        stdout=log.open("ab" if append else "wb"),
        stderr=subprocess.STDOUT,
    )


@contextmanager
def deployment(
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    workers: int = 1,
    api_processes: int = 1,
    start_timeout_s: float = 120,
) -> Iterator[Deployment]:
    """Migrate, then start `forgetd serve` and `workers` x `forgetd worker`; stop them after.

    Without `env` overrides this is the embedded set-up (SQLite + SQLite broker) under `home`.
    """
    home.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV_NAMES}
    full_env.update({"FORGETD_HOME_DIR": str(home), **(env or {})})
    migrate = _spawn(["migrate"], full_env, home / "migrate.log")
    if migrate.wait(timeout=start_timeout_s) != 0:
        raise RuntimeError((home / "migrate.log").read_text(errors="replace")[-3000:])
    port = port or free_port()
    deployed = Deployment(
        home=home,
        base_url=f"http://127.0.0.1:{port}",
        env=full_env,
        api_key=mint_key(full_env, "admin", "embedded deployment"),
    )
    serve = ["serve", "--port", str(port), "--processes", str(api_processes)]
    deployed.processes["api"] = _spawn(serve, full_env, home / "api.log")
    for index in range(workers):
        # Only the first worker runs the sweep scheduler, as in docker-compose.
        deployed.start_worker("worker" if index == 0 else f"worker{index}", beat=index == 0)
    try:
        _wait_for_health(deployed, start_timeout_s)
        yield deployed
    finally:
        for process in deployed.processes.values():
            process.terminate()
        for process in deployed.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_health(deployed: Deployment, timeout_s: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        deployed.check_alive()
        try:
            if httpx.get(f"{deployed.base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the API did not become healthy")
