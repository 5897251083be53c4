"""The `forgetd` command line: serve, worker, migrate, keys, demo, verify-report."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from app.client_cli import requests_cli
from app.db.models import Role
from app.settings import SettingsError, get_settings

cli = typer.Typer(add_completion=False, help="forgetd: machine unlearning as a service.")
keys_cli = typer.Typer(no_args_is_help=True, help="API keys: create, list, revoke.")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(requests_cli, name="requests")


def _settings_or_exit():  # type: ignore[no-untyped-def]
    try:
        return get_settings()
    except SettingsError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _prepare(migrate: bool) -> None:
    settings = _settings_or_exit()
    settings.ensure_folders()
    # The embedded database migrates itself; a shared PostgreSQL is migrated once by
    # `forgetd migrate` (a one-off job in docker-compose), never by every replica.
    if migrate or settings.is_embedded_db:
        from app.db.migrate import upgrade_to_head

        upgrade_to_head(settings.database_url)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Run database migrations first")] = False,
    processes: Annotated[
        int, typer.Option(min=1, max=64, help="API processes sharing the port (uvicorn workers)")
    ] = 1,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    _prepare(migrate)
    uvicorn.run(
        "app.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        workers=processes if processes > 1 else None,
    )


@cli.command()
def worker(
    beat: Annotated[bool, typer.Option(help="Also run the periodic sweep scheduler")] = True,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    queues: Annotated[str, typer.Option(help="Comma-separated queues")] = "celery",
) -> None:
    """Run one worker process (one per GPU): solo pool, prefetch 1, late acks."""
    _prepare(False)
    settings = _settings_or_exit()
    # The worker is its own program (torch, the flows): the CLI starts it by module name and
    # never imports it, so the API side stays free of worker code.
    argv = [sys.executable, "-m", "celery", "--app", "worker.celery_app:celery_app", "worker"]
    argv += ["--pool=solo", "--concurrency=1", f"--loglevel={loglevel}", "-Q", queues]
    if beat:
        argv += ["--beat", "--schedule", str(settings.home / "celerybeat-schedule")]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@cli.command()
def migrate() -> None:
    """Upgrade the database to the newest schema (alembic upgrade head)."""
    _prepare(True)
    typer.echo("database is at the newest schema")


@keys_cli.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="What the key may do", case_sensitive=False)],
    name: Annotated[str, typer.Option(help="Who or what holds the key")] = "",
) -> None:
    """Create a key; it is printed once, alone on the last line, and stored only as a hash."""
    from app.db.session import session_scope
    from app.services.api_keys import create_key

    _prepare(False)
    with session_scope() as session:
        row, key = create_key(session, role=role, name=name[:200])
        key_id = row.id
    typer.echo(f"API key {key_id} ({role.value}) created; it is not shown again:", err=True)
    typer.echo(key)


@keys_cli.command("list")
def keys_list() -> None:
    """Every key: id, role, name, prefix, created, last used, revoked."""
    from app.db.session import session_scope
    from app.services.api_keys import list_keys

    _prepare(False)
    with session_scope() as session:
        rows = list_keys(session)

    def when(moment: datetime | None) -> str:
        return moment.isoformat(" ", "seconds")[:19] if moment else "-"

    typer.echo(
        f"{'id':>4}  {'role':<9}  {'prefix':<10}  {'created':<19}  {'last used':<19}  "
        f"{'revoked':<19}  name"
    )
    for row in rows:
        typer.echo(
            f"{row.id:>4}  {row.role:<9}  {row.prefix:<10}  {when(row.created_at):<19}  "
            f"{when(row.last_used_at):<19}  {when(row.revoked_at):<19}  {row.name}"
        )


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (keys list)")]) -> None:
    """Revoke a key: every later call with it gets 401."""
    from app.db.session import session_scope
    from app.services.api_keys import revoke_key
    from app.services.errors import NotFound

    _prepare(False)
    try:
        with session_scope() as session:
            revoke_key(session, key_id)
    except NotFound as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"API key {key_id} revoked")


@cli.command()
def demo(
    datasets: Annotated[
        Path | None,
        typer.Option(help="Folder holding animal-mnist.tar.gz, or an unpacked ImageFolder"),
    ] = None,
    home: Annotated[Path | None, typer.Option(help="Folder for this demo's state")] = None,
    port: Annotated[int, typer.Option(help="Port for the demo's API")] = 8765,
) -> None:
    """Start an embedded API and worker, train a SISA model on Animal-MNIST and forget data."""
    from app.demo import run_demo

    raise typer.Exit(run_demo(datasets=datasets, home=home, port=port))


@cli.command("verify-report")
def verify_report(
    file: Annotated[Path, typer.Argument(help="Report JSON (or a JSON list: a chain)")],
    public_key: Annotated[
        Path | None, typer.Option(help="PEM public key; default: this deployment's key")
    ] = None,
    head: Annotated[
        Path | None,
        typer.Option(
            help="The signed chain head (GET /v1/audit-chain/head): the chain must reach it"
        ),
    ] = None,
    partial: Annotated[
        bool,
        typer.Option(
            help="The list is a stretch of the chain, not the chain from its first report"
        ),
    ] = False,
) -> None:
    """Check a report's signature and hash chain offline. Exits non-zero on any change.

    A list is checked as the whole chain: it must start at the genesis report, each report
    linking to the one before and numbered one more; with --head it must also reach the signed
    head, so a report dropped at either end or in the middle is reported.
    """
    from app.audit.verify import verify_file

    problems = verify_file(file, public_key, head_path=head, partial=partial)
    if problems:
        for problem in problems:
            typer.secho(f"FAIL: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    what = "signature and hash chain verified"
    if head is not None:
        what += ", up to the signed head"
    typer.secho(f"OK: {what}", fg=typer.colors.GREEN)


def main() -> None:
    try:
        cli()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
