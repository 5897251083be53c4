"""The `forgetd` command line: serve, worker, migrate, demo, verify-report."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.settings import SettingsError, get_settings

cli = typer.Typer(add_completion=False, help="forgetd: machine unlearning as a service.")


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
) -> None:
    """Run the HTTP API."""
    import uvicorn

    _prepare(migrate)
    uvicorn.run("app.api.main:create_app", factory=True, host=host, port=port, log_level="info")


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
) -> None:
    """Check a report's signature and hash chain offline. Exits non-zero on any change."""
    from app.audit.verify import verify_file

    problems = verify_file(file, public_key)
    if problems:
        for problem in problems:
            typer.secho(f"FAIL: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho("OK: signature and hash chain verified", fg=typer.colors.GREEN)


def main() -> None:
    try:
        cli()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
