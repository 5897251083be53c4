"""`forgetd requests ...`: submit, watch, list and fetch reports of deletion requests over
HTTP, from any machine that can reach the API (no database or settings needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.client import ApiError, ForgetdClient

requests_cli = typer.Typer(
    no_args_is_help=True, help="Deletion requests over HTTP: submit, watch, list, report."
)
console = Console()

Url = Annotated[str, typer.Option("--url", envvar="FORGETD_URL", help="The API's base URL")]
Key = Annotated[
    str | None, typer.Option("--key", envvar="FORGETD_API_KEY", help="An API key (Bearer)")
]


def _fail(exc: ApiError) -> typer.Exit:
    console.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


@requests_cli.command("submit")
def submit(
    model: Annotated[str, typer.Option("--model", help="Model id or name")],
    file: Annotated[
        list[str] | None, typer.Option("--file", help="A file to forget (repeatable)")
    ] = None,
    class_name: Annotated[
        list[str] | None, typer.Option("--class", help="A class to forget (repeatable)")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Unlearning method (default: auto)")] = None,
    external_id: Annotated[str | None, typer.Option(help="Your ticket or subject id")] = None,
    deadline_days: Annotated[int | None, typer.Option(help="Days until it is due")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
    url: Url = "http://127.0.0.1:8000",
    key: Key = None,
) -> None:
    """Submit a request; prints its status and plan, and its id on the last line."""
    if bool(file) == bool(class_name):
        console.print("[red]give --file (one or more) or --class, not both[/red]")
        raise typer.Exit(2)
    try:
        with ForgetdClient(url, key) as client:
            body = client.submit(
                model,
                files=file,
                classes=class_name,
                method=method,
                external_id=external_id,
                deadline_days=deadline_days,
                idempotency_key=idempotency_key,
            )
    except ApiError as exc:
        raise _fail(exc) from None
    plan = body.get("plan") or {}
    console.print(
        f"{body['status']}: method {body['method']}, {plan.get('samples', '?')} sample(s), "
        f"due {body.get('due_at')}"
    )
    typer.echo(body["id"])


@requests_cli.command("watch")
def watch(
    request_id: Annotated[str, typer.Argument(help="The request's id")],
    url: Url = "http://127.0.0.1:8000",
    key: Key = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls")] = 1.0,
) -> None:
    """A progress bar until the request ends; exits 0 only when it completed."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(request_id[:8], total=100)

        def show(body: dict[str, Any]) -> None:
            percent = float((body.get("progress") or {}).get("percent", 0.0))
            progress.update(task, completed=percent, description=f"{body['status']:>16}")

        try:
            with ForgetdClient(url, key) as client:
                final = client.watch(request_id, show, interval_s=interval)
        except ApiError as exc:
            raise _fail(exc) from None
    console.print(f"{final['status']}: {final.get('status_reason') or ''}")
    raise typer.Exit(0 if final["status"] == "completed" else 1)


@requests_cli.command("list")
def list_requests(
    url: Url = "http://127.0.0.1:8000",
    key: Key = None,
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    overdue: Annotated[bool | None, typer.Option("--overdue/--on-time", help="By deadline")] = None,
    sort: Annotated[str | None, typer.Option(help="due_at, -due_at, created_at")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON page")] = False,
) -> None:
    """The requests, newest first (or by deadline)."""
    try:
        with ForgetdClient(url, key) as client:
            page = client.list(
                status=status,
                model=model,
                overdue=None if overdue is None else str(overdue).lower(),
                sort=sort,
                limit=limit,
            )
    except ApiError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table(title=f"{page['total']} deletion request(s)")
    for column in ("id", "model", "status", "method", "due", "overdue", "attempt"):
        table.add_column(column)
    for item in page["items"]:
        table.add_row(
            item["id"],
            str(item["model"]),
            item["status"],
            item["method"],
            str(item.get("due_at") or "-")[:19],
            "yes" if item.get("overdue") else "",
            str(item.get("attempt", 1)),
        )
    console.print(table)


@requests_cli.command("report")
def report(
    request_id: Annotated[str, typer.Argument(help="The request's id")],
    html: Annotated[Path | None, typer.Option("--html", help="Save the HTML report here")] = None,
    url: Url = "http://127.0.0.1:8000",
    key: Key = None,
) -> None:
    """Print the signed report (JSON), or save its HTML page with --html FILE."""
    try:
        with ForgetdClient(url, key) as client:
            if html is not None:
                html.write_text(client.report_html(request_id), encoding="utf-8")
                console.print(f"saved {html}")
                return
            typer.echo(json.dumps(client.report(request_id), indent=2))
    except ApiError as exc:
        raise _fail(exc) from None
