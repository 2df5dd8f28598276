"""``appliance privacy``: erasure work for studio IT at the server."""

from __future__ import annotations

import asyncio

import click

from appliance.cli import Context, database

__all__ = ["privacy"]


def _subject(text: str) -> tuple[str, int | None]:
    kind, _, number = text.partition(":")
    if text == "studio":
        return "studio", None
    if kind not in ("client", "staff") or not number.isdigit():
        raise click.BadParameter("client:ID, staff:ID or studio", param_hint="--subject")
    return kind, int(number)


@click.group()
def privacy() -> None:
    """Erasure: purge due requests, cut erased people out of existing backups."""


@privacy.command("rewrite-backups")
@click.option("--subject", required=True, help="client:ID, staff:ID or studio (already purged).")
@click.option("--no-prune", is_flag=True, help="Rewrite only; the next weekly prune frees space.")
@click.pass_obj
def rewrite_backups(obj: Context, subject: str, no_prune: bool) -> None:
    """Remove a purged person's photos from every recovery point of every repository."""
    from appliance.backups.restic import ResticError
    from appliance.db.engine import configure
    from appliance.errors import ApplianceError
    from appliance.privacy.ledger import rewrite_backups as rewrite

    kind, subject_id = _subject(subject)
    with database(obj.settings) as (settings, _):
        configure(settings.database.url)  # repositories added on the backups page live there
        try:
            done = asyncio.run(
                rewrite(settings, kind=kind, subject_id=subject_id, prune=not no_prune)
            )
        except (ApplianceError, ResticError) as exc:
            raise click.ClickException(str(exc)) from None
    for name, files in done.items():
        click.echo(f"{name}: {files} files cut out of every recovery point")
    if not done:
        click.echo("nothing to cut out: the erasure named no files")


@privacy.command("purge")
@click.pass_obj
def purge_now(obj: Context) -> None:
    """Run the daily purge now: every erasure whose grace period is over."""
    from appliance.clock import utcnow
    from appliance.db.engine import configure
    from appliance.privacy.purge import purge_due
    from appliance.storage import open_store

    with database(obj.settings) as (settings, _):
        configure(settings.database.url)
        finished = asyncio.run(purge_due(settings, open_store(settings), utcnow()))
    click.echo(f"{finished} erasure requests purged")
