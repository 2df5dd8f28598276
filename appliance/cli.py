"""The ``appliance`` command: run the whole appliance or one part, and admin tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import msgspec

from appliance.config import ConfigError, Settings, ensure_secret_key, load_settings
from appliance.db.embedded import EmbeddedPostgres, start_embedded
from appliance.edge import Edge, EdgeError, check_ports, find_caddy, plan_edge, server_env
from appliance.errors import ApplianceError
from appliance.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("appliance")
EMBEDDED_DATABASE = "appliance"


class Context(msgspec.Struct):
    config_path: str | None
    settings: Settings


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file (default: $APPLIANCE_CONFIG, then ./config.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Fotostudio Appliance."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    ctx.obj = Context(config_path=config_path, settings=settings)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[Settings, EmbeddedPostgres | None]]:
    """Settings with a database URL: the configured server, or the embedded one started here."""
    if settings.database.url:
        yield settings, None
        return
    embedded = start_embedded(settings.data_dir)
    try:
        dsn = asyncio.run(_ensure_database(embedded.dsn))
        db = msgspec.structs.replace(settings.database, url=dsn)
        yield msgspec.structs.replace(settings, database=db), embedded
    finally:
        embedded.stop()


async def _ensure_database(dsn: str) -> str:
    from appliance.db.engine import ensure_database

    return await ensure_database(dsn, EMBEDDED_DATABASE)


async def _migrate(settings: Settings, *, quiet: bool) -> list[str]:
    from appliance.db.engine import configure, run_migrations

    configure(settings.database.url)
    return await run_migrations(settings.database.url, quiet=quiet)


async def _prepare_storage(settings: Settings) -> None:
    """Create the bucket or folder if missing; an unusable store stops start-up in one line."""
    from appliance.storage import StorageError, open_store

    try:
        await open_store(settings).ensure_ready()
    except StorageError as exc:
        raise click.ClickException(f"storage: {exc}") from None


async def _setup_link(settings: Settings) -> str | None:
    from appliance.clock import utcnow
    from appliance.setup import service as setup

    token = await setup.issue_setup_token(settings, utcnow())
    if token is None:
        return None
    return f"{_base_url(settings)}/setup?token={token}"


def _base_url(settings: Settings) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host = settings.server.host
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - only to print a reachable link
        host = "127.0.0.1"
    return f"http://{host}:{settings.server.port}"


def _announce_setup(link: str | None) -> None:
    if link is None:
        return
    click.echo(
        "\n  Set-up is not finished. Open this link in a browser to start the wizard\n"
        f"  (its token works until set-up is finished, for at most a day):\n\n    {link}\n",
        err=True,
    )


def _plan_edge(
    settings: Settings, https_port: int | None, http_port: int | None
) -> tuple[Edge, str]:
    """Caddy's plan and binary; a problem stops ``up`` in one line, not in a restart loop."""
    try:
        edge = plan_edge(settings, https_port=https_port, http_port=http_port)
        caddy = find_caddy(settings.tls.caddy)
        check_ports(edge, caddy)
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    edge.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the CA's keys
    return edge, caddy


def _announce_edge(edge: Edge) -> None:
    click.echo(
        f"HTTPS through Caddy on port {edge.https_port} (port {edge.http_port} redirects to it); "
        f"the web server listens on 127.0.0.1:{edge.upstream_port} only",
        err=True,
    )
    if edge.mode == "lan":
        click.echo(
            "\n  Certificates come from this machine's own authority. Browsers warn until a\n"
            "  device trusts its root certificate (written at Caddy's first start):\n\n"
            f"    {edge.root_certificate}\n\n"
            "  Copy it to each computer, phone and tablet and install it as a trusted root\n"
            "  (docs/tls.md shows how on Windows, macOS, Linux, iOS and Android).\n",
            err=True,
        )


@cli.command()
@click.option(
    "--tls/--no-tls",
    "tls",
    default=None,
    help="Run Caddy in front of the web server for HTTPS (default: tls.enabled).",
)
@click.option(
    "--https-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Caddy's HTTPS port (default: tls.https_port; 443 as root, else 8443).",
)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Caddy's HTTP port, which redirects to HTTPS (default: tls.http_port; 80 or 8080).",
)
@click.pass_obj
def up(obj: Context, tls: bool | None, https_port: int | None, http_port: int | None) -> None:
    """Run the whole appliance on this machine (embedded database unless configured)."""
    from appliance.supervisor import Child, Supervisor, child_argv, child_env

    settings = obj.settings
    configure_logging(settings.logging.level)
    edge, caddy = None, ""
    if settings.tls.enabled if tls is None else tls:
        edge, caddy = _plan_edge(settings, https_port, http_port)
        settings = msgspec.structs.replace(settings, server=edge.server_behind(settings.server))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_secret_key(settings)  # made once here, before two children race to make it
    if settings.backups.enabled:
        from appliance.backups.repositories import ensure_password

        # Made at the first start, so the backups page can ask an admin to store it at once.
        ensure_password(settings)
    with database(settings) as (resolved, _):

        async def prepare() -> str | None:
            await _migrate(resolved, quiet=True)
            await _prepare_storage(resolved)
            return await _setup_link(resolved)

        link = asyncio.run(prepare())
        address = edge.https_url if edge else _base_url(resolved)
        click.echo(f"Fotostudio Appliance on {address}", err=True)
        if edge:
            _announce_edge(edge)
        _announce_setup(link)
        env = child_env(resolved.database.url, obj.config_path)
        children = [
            Child("web", child_argv("web", "--no-migrate", "--no-setup-token")),
            Child("worker", child_argv("worker")),
        ]
        if edge:
            env |= server_env(resolved.server)  # the user's settings file stays as it is
            children.append(Child("caddy", edge.caddy_argv(caddy), env=edge.caddy_env()))
        Supervisor(children, env).run()


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option("--port", type=int, default=None, help="Port (default: server.port).")
@click.option("--migrate/--no-migrate", default=True, help="Run pending migrations first.")
@click.option(
    "--setup-token/--no-setup-token",
    default=True,
    help="Print a setup link while set-up is unfinished.",
)
@click.pass_obj
def web(obj: Context, host: str | None, port: int | None, migrate: bool, setup_token: bool) -> None:
    """Run the web server alone (as the web container does)."""
    import uvicorn

    from appliance.app import create_app

    log_config = configure_logging(obj.settings.logging.level)
    server = msgspec.structs.replace(
        obj.settings.server,
        host=host or obj.settings.server.host,
        port=port or obj.settings.server.port,
    )
    with database(msgspec.structs.replace(obj.settings, server=server)) as (settings, _):
        if migrate or setup_token:

            async def prepare() -> str | None:
                if migrate:
                    await _migrate(settings, quiet=True)
                await _prepare_storage(settings)
                return await _setup_link(settings) if setup_token else None

            _announce_setup(asyncio.run(prepare()))
        app = create_app(settings)
        uvicorn.run(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_config=log_config,
            # Forwarding headers are handled by our own middleware, only for trusted proxies.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )


@cli.command()
@click.pass_obj
def worker(obj: Context) -> None:
    """Run the background worker alone (as the worker container does)."""
    from appliance.db.engine import configure
    from appliance.monitoring.loop import MonitorLoop
    from appliance.notify.delivery import DeliveryLoop
    from appliance.worker import JobLoop, make_huey

    configure_logging(obj.settings.logging.level)
    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        huey = make_huey(settings)
        jobs = JobLoop(settings)
        jobs.start()
        outbox = DeliveryLoop(settings)
        outbox.start()
        monitor = MonitorLoop(settings)
        monitor.start()
        backups = None
        if settings.backups.enabled:
            from appliance.backups.service import BackupLoop

            backups = BackupLoop(settings)
            backups.start()
        consumer = huey.create_consumer(workers=settings.queue.workers, periodic=True)
        try:
            consumer.run()  # returns on SIGTERM / SIGINT
        finally:
            jobs.stop()
            outbox.stop()
            monitor.stop()
            if backups is not None:
                backups.stop()


@cli.command()
@click.option(
    "--storage/--no-storage",
    default=True,
    help="Then make sure the object store is ready: its bucket or folder exists.",
)
@click.pass_obj
def migrate(obj: Context, storage: bool) -> None:
    """Apply pending database migrations (under a lock, safe to run twice)."""
    configure_logging(obj.settings.logging.level)
    with database(obj.settings) as (settings, _):

        async def prepare() -> list[str]:
            ran = await _migrate(settings, quiet=True)
            # The compose bundle's one-shot migrate service is the only step before web and
            # worker start (web runs with --no-migrate), so the bucket is made here.
            if storage:
                await _prepare_storage(settings)
            return ran

        ran = asyncio.run(prepare())
    click.echo(f"applied {len(ran)} migration(s)" if ran else "database is up to date")


@cli.command("setup-token")
@click.pass_obj
def setup_token(obj: Context) -> None:
    """Print a fresh one-time setup link (older ones stop working)."""
    from appliance.db.engine import configure

    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        link = asyncio.run(_setup_link(settings))
    if link is None:
        raise click.ClickException("set-up is already complete")
    click.echo(link)


@cli.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@click.pass_obj
def audit_verify(obj: Context) -> None:
    """Check the hash chain; exit 1 and name the first altered or removed entry if broken."""
    from appliance.audit.service import verify_chain
    from appliance.db.engine import configure

    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        report = asyncio.run(verify_chain())
    if report.intact:
        click.echo(f"audit log intact: {report.checked} entries verified")
        return
    click.echo(
        f"audit log BROKEN at entry {report.first_bad_seq}: {report.problem} "
        f"({report.checked} entries before it verified)",
        err=True,
    )
    sys.exit(1)


@cli.group()
def staff() -> None:
    """Staff accounts, for studio IT with access to the server."""


@staff.command("reset")
@click.argument("username")
@click.option("--reset-2fa", is_flag=True, help="Also remove the authenticator (re-enrol).")
@click.pass_obj
def staff_reset(obj: Context, username: str, reset_2fa: bool) -> None:
    """Print a one-time password reset link for USERNAME (e.g. the only admin is locked out)."""
    from appliance.accounts import invitations
    from appliance.accounts import service as accounts
    from appliance.audit.service import Actor
    from appliance.clock import utcnow
    from appliance.db.engine import configure

    async def reset(settings: Settings) -> str:
        member = await accounts.find_member(username)
        if member is None:
            raise click.ClickException(f"no staff account named {username!r}")
        try:
            token = await invitations.start_reset(
                member.id,
                reset_2fa=reset_2fa,
                actor=Actor(id=None, name="cli"),
                address="console",
                settings=settings,
                now=utcnow(),
            )
        except ApplianceError as exc:  # an account being erased, say: its reason, no trace
            raise click.ClickException(exc.message) from None
        return f"{_base_url(settings)}/reset/{token}"

    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        click.echo(asyncio.run(reset(settings)))


@staff.command("unblock")
@click.argument("username")
@click.pass_obj
def staff_unblock(obj: Context, username: str) -> None:
    """Lift the sign-in block of USERNAME (failed attempts from anywhere are forgotten)."""
    from appliance.accounts import throttle
    from appliance.db.engine import configure

    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        asyncio.run(throttle.clear(throttle.account_key(username)))
    click.echo(f"sign-in failures of {username!r} forgotten")


@cli.command("check-config")
@click.pass_obj
def check_config(obj: Context) -> None:
    """Load and validate the settings, then say where data lives."""
    click.echo(f"configuration OK; data folder: {Path(obj.settings.data_dir)}")


def _add_domain_commands() -> None:
    from appliance.backups import commands
    from appliance.monitoring.commands import status
    from appliance.monitoring.healthcheck import healthcheck
    from appliance.privacy.commands import privacy

    for command in (
        commands.backup,
        commands.drill,
        commands.restore,
        commands.upgrade_check,
        status,
        healthcheck,
        privacy,
    ):
        cli.add_command(command)


_add_domain_commands()


def main() -> None:
    # Files the appliance creates (queue, keys, logs) are private to its user by default.
    os.umask(0o077)
    cli(prog_name="appliance")
