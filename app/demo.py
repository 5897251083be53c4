"""`forgetd demo`: a real embedded deployment (API + worker processes) driven over HTTP.

It registers Animal-MNIST, trains a small SISA model, asks it to forget a few elephant images,
shows progress while it waits, and prints what was retrained, the accuracies and the times.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from platformdirs import user_data_dir
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.client import TERMINAL, ForgetdClient
from app.db.migrate import PROJECT_ROOT
from app.embedded import Deployment, deployment

ARCHIVE = "animal-mnist.tar.gz"
console = Console()

DEMO_MODEL = {
    "architecture": "small_cnn",
    "shards": 4,
    "slices": 4,
    "epochs_per_slice": 3,
    "image_size": 28,
    "seed": 7,
    "aggregation": "mean_softmax",
    # No optimisation fields: the architecture's recommended recipe (batch norm, one-cycle lr
    # restarted per slice, horizontal flips, which keep an animal silhouette's label).
}


def _find_source(explicit: Path | None) -> Path:
    candidates = (
        [explicit]
        if explicit
        else [Path.cwd() / "../shared/datasets", PROJECT_ROOT / "../shared/datasets"]
    )
    for candidate in candidates:
        if candidate and (candidate / ARCHIVE).is_file():
            return (candidate / ARCHIVE).resolve()
        if candidate and (candidate / "train").is_dir():
            return candidate.resolve()
    raise SystemExit(f"cannot find {ARCHIVE}; pass --datasets FOLDER")


def _materialise(source: Path, data_root: Path) -> Path:
    """A private copy of the images: the service erases forgotten files from it."""
    target = data_root / "animal-mnist"
    if source.is_dir():
        shutil.copytree(source, target)
        return target
    with tarfile.open(source) as archive:
        archive.extractall(data_root, filter="data")
    return target


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.text}")
    return response.json()


def _poll(
    deployed: Deployment, client: httpx.Client, url: str, done: set[str], label: str
) -> dict[str, Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=100, detail="")
        while True:
            body = _check(client.get(url))
            state = body.get("progress") or {}
            shards = state.get("shards") or []
            detail = ", ".join(
                f"shard {s['shard']}: slice {s['slice'] if s['slice'] is not None else '-'}"
                for s in shards
                if s.get("status") != "done"
            )
            progress.update(
                task, completed=state.get("percent", 0.0), detail=f"{body['status']} {detail}"
            )
            if body["status"] in done:
                progress.update(task, completed=100)
                return body
            deployed.check_alive()
            time.sleep(1.0)


def _accuracy_table(title: str, before: dict[str, Any], after: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("class")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, value in before["per_class"].items():
        later = after["per_class"].get(name)
        table.add_row(name, f"{value:.3f}", "-" if later is None else f"{later:.3f}")
    table.add_row("[b]all[/b]", f"{before['accuracy']:.3f}", f"{after['accuracy']:.3f}")
    return table


def run_demo(*, datasets: Path | None, home: Path | None, port: int) -> int:
    source = _find_source(datasets)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    home = (home or Path(user_data_dir("forgetd", appauthor=False)) / f"demo-{stamp}").resolve()
    home.mkdir(parents=True, exist_ok=True)
    console.rule(f"forgetd demo (state in {home})")
    root = _materialise(source, home / "data")
    # Always the embedded set-up, whatever the shell's environment says.
    with (
        deployment(home, env={"FORGETD_SWEEP_INTERVAL_S": "15"}, port=port) as deployed,
        deployed.client(timeout=60) as client,
    ):
        return _scenario(deployed, client, root)


def _scenario(deployed: Deployment, client: httpx.Client, root: Path) -> int:
    began = time.monotonic()
    dataset = _check(client.post("/v1/datasets", json={"name": "animal-mnist", "root": str(root)}))
    console.print(
        f"registered dataset [b]{dataset['name']}[/b]: {dataset['counts']['train']['total']} train, "
        f"{dataset['counts']['test']['total']} test images, classes {dataset['classes']}"
    )
    spec = {"name": "animals-sisa", "dataset": dataset["id"], **DEMO_MODEL}
    created = client.post("/v1/models", json=spec)
    model = _check(created)
    console.print(
        f"training {spec['shards']} shards x {spec['slices']} slices "
        f"({spec['architecture']}), Location: {created.headers['location']}"
    )
    model = _poll(deployed, client, f"/v1/models/{model['id']}", {"ready", "failed"}, "training")
    if model["status"] != "ready":
        console.print(f"[red]training failed: {model['status_reason']}[/red]")
        return 1
    trained_in = time.monotonic() - began
    before = model["metrics"]
    console.print(
        f"model ready in {trained_in:.0f} s: test accuracy {before['test']['accuracy']:.3f}"
    )

    elephants = sorted((root / "train" / "elephant").iterdir())[:3]
    names = [f"elephant/{p.name}" for p in elephants]
    console.print(f"asking to forget {len(names)} elephant images: {names}")
    api = ForgetdClient(deployed.base_url, deployed.api_key)
    request = api.submit(
        str(model["id"]),
        files=names,
        external_id="demo-subject-1",
        idempotency_key="demo-subject-1",
    )
    plan = request["plan"]
    console.print(
        "plan: retrain shards "
        + ", ".join(
            f"{p['shard']} from slice {p['restart_slice']}" for p in plan["affected_shards"]
        )
        + f"; untouched shards {plan['untouched_shards']}; predicted speed-up over a full retrain "
        f"{plan['predicted_speedup']:.1f}x"
    )
    started = time.monotonic()
    request = _follow(deployed, api, request["id"])
    took = time.monotonic() - started
    if request["status"] != "completed":
        console.print(f"[red]deletion {request['status']}: {request['status_reason']}[/red]")
        return 1
    model = _check(client.get(f"/v1/models/{model['id']}"))
    after = model["metrics"]
    cost = after["cost"]
    console.print(
        f"deletion completed in {took:.1f} s: version {request['base_version']} -> "
        f"{request['result_version']}; retrained shards {cost['retrained_shards']} "
        f"({cost['sample_passes']} sample passes, {cost['train_seconds']:.1f} s of training)"
    )
    console.print(_accuracy_table("test accuracy per class", before["test"], after["test"]))
    gone = [name for name, p in zip(names, elephants, strict=True) if not p.exists()]
    console.print(f"files erased from storage: {len(gone)}/{len(names)}")
    _save_report(deployed, api, request)
    if _forget_class(deployed, client, model["id"], "elephant") != 0:
        return 1
    console.print(f"demo finished in {time.monotonic() - began:.0f} s")
    return 0


def _forget_class(deployed: Deployment, client: httpx.Client, model_id: int, name: str) -> int:
    """Forget a whole class with UNSIR and show where its images are now predicted."""
    console.rule(f"forgetting the class {name!r} with unsir")
    api = ForgetdClient(deployed.base_url, deployed.api_key)
    created = api.submit(str(model_id), classes=[name], method="unsir")
    started = time.monotonic()
    request = _follow(deployed, api, created["id"])
    if request["status"] != "completed":
        console.print(
            f"[red]class forgetting {request['status']}: {request['status_reason']}[/red]"
        )
        return 1
    model = _check(client.get(f"/v1/models/{model_id}"))
    forgetting = model["metrics"].get("forgetting") or {}
    forget, retain = forgetting.get("forget", {}), forgetting.get("retain", {})
    console.print(
        f"forgot {name!r} in {time.monotonic() - started:.1f} s; retired classes: "
        f"{model['retired_classes']}"
    )
    console.print(
        f"{name} test accuracy {forget.get('before', 0):.3f} -> {forget.get('after', 0):.3f}; "
        f"other classes {retain.get('before', 0):.3f} -> {retain.get('after', 0):.3f}"
    )
    after = (forgetting.get("forget_prediction_distribution") or {}).get("after", {})
    shares = sorted(after.items(), key=lambda item: -item[1])[:3]
    console.print(
        f"{name} images are now predicted as: "
        + ", ".join(f"{label} {share:.0%}" for label, share in shares)
    )
    _save_report(deployed, api, request)
    return 0


def _follow(deployed: Deployment, api: ForgetdClient, request_id: str) -> dict[str, Any]:
    """`forgetd requests watch`, in process: a progress bar until the request ends."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("forgetting", total=100)

        def show(body: dict[str, Any]) -> None:
            deployed.check_alive()
            percent = float((body.get("progress") or {}).get("percent", 0.0))
            progress.update(task, completed=percent, description=f"{body['status']:>12}")

        final = api.watch(request_id, show)
        assert final["status"] in TERMINAL
        return final


def _save_report(deployed: Deployment, api: ForgetdClient, request: dict[str, Any]) -> None:
    """The HTML report, saved beside the demo's state (the server is gone when it ends)."""
    if not request.get("report_url"):
        return
    folder = deployed.home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request['id']}.html"
    path.write_text(api.report_html(request["id"]), encoding="utf-8")
    console.print(f"audit report saved: {path}")
