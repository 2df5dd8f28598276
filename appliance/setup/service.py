"""The first-run wizard and the studio's settings.

The wizard runs once: it needs the one-time setup token printed on the server's console (so a
neighbour on the LAN cannot claim the instance), saves the studio, creates the first admin,
enrols their authenticator and then closes for good.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from appliance.accounts import service as accounts
from appliance.accounts import throttle, two_factor
from appliance.audit import service as audit
from appliance.audit.service import Actor
from appliance.config import Settings, ThrottleSettings
from appliance.errors import Conflict, Forbidden, InvalidInput
from appliance.setup.tables import SetupToken, Studio
from appliance.tokens import new_token, same, token_digest
from appliance.validation import clean_email, clean_text

__all__ = [
    "StudioProfile",
    "WizardState",
    "check_token",
    "complete_setup",
    "create_setup_admin",
    "get_studio",
    "is_setup_complete",
    "issue_setup_token",
    "save_studio",
    "update_studio",
    "wizard_state",
]

_STUDIO_ID = 1


class StudioProfile(msgspec.Struct, frozen=True):
    name: str
    contact_email: str
    contact_phone: str
    require_2fa_for_all: bool
    setup_complete: bool


class WizardState(msgspec.Struct, frozen=True):
    """Where the wizard stands: the next step is the first one that is not done."""

    studio_saved: bool
    admin_id: int | None
    complete: bool

    @property
    def next_step(self) -> str:
        if self.complete:
            return "done"
        if not self.studio_saved:
            return "studio"
        if self.admin_id is None:
            return "admin"
        return "two-factor"


async def get_studio() -> StudioProfile | None:
    """The studio's settings; None before the wizard saved them."""
    row = await Studio.select().where(Studio.id == _STUDIO_ID).first().run()
    if row is None:
        return None
    return StudioProfile(
        name=row["name"],
        contact_email=row["contact_email"],
        contact_phone=row["contact_phone"],
        require_2fa_for_all=row["require_2fa_for_all"],
        setup_complete=row["setup_completed_at"] is not None,
    )


async def is_setup_complete() -> bool:
    return bool(
        await Studio.exists()
        .where(Studio.id == _STUDIO_ID)
        .where(Studio.setup_completed_at.is_not_null())
        .run()
    )


async def wizard_state() -> WizardState:
    """How far the wizard got (each step is saved as it is submitted)."""
    row = await Studio.select().where(Studio.id == _STUDIO_ID).first().run()
    if row is None:
        return WizardState(studio_saved=False, admin_id=None, complete=False)
    return WizardState(
        studio_saved=True,
        admin_id=row["setup_admin_id"],
        complete=row["setup_completed_at"] is not None,
    )


async def issue_setup_token(settings: Settings, now: dt.datetime) -> str | None:
    """A fresh one-time token (older unused ones stop working); None once set-up is complete."""
    if await is_setup_complete():
        return None
    token = new_token()
    async with SetupToken._meta.db.transaction(allow_nested=True):
        await SetupToken.delete().where(SetupToken.used_at.is_null()).run()
        await SetupToken.insert(
            SetupToken(
                token_hash=token_digest(token),
                created_at=now,
                expires_at=now + dt.timedelta(hours=settings.security.setup_token_hours),
            )
        ).run()
    return token


async def check_token(
    token: str,
    *,
    now: dt.datetime,
    address: str,
    rules: ThrottleSettings | None = None,
) -> None:
    """Raise Conflict once set-up is over, Forbidden (audited) for any but the live token.

    The right token is always accepted. Wrong ones count against the client address like
    failed sign-ins and get 429 when there are too many, so the audit log cannot be flooded;
    a page elsewhere that makes the installer's browser send junk tokens therefore cannot lock
    the real token out either.
    """
    if await is_setup_complete():
        raise Conflict("Set-up is already complete.")
    if token and len(token) <= 100:
        rows = (
            await SetupToken.select(SetupToken.token_hash)
            .where(SetupToken.used_at.is_null())
            .where(SetupToken.expires_at > now)
            .run()
        )
        if any(same(row["token_hash"], token_digest(token)) for row in rows):
            return
    await throttle.reserve([f"setup:{address[:64]}"], now, rules or ThrottleSettings())
    await audit.record(
        "setup.token",
        actor=audit.ANONYMOUS,
        outcome="failure",
        address=address,
        details={"reason": "wrong, used or expired setup token"},
        at=now,
    )
    raise Forbidden(
        "This setup token is not valid. Use the token printed by the server; "
        "`appliance setup-token` prints a new one.",
        field="token",
    )


def _clean_studio(name: str, contact_email: str, contact_phone: str) -> tuple[str, str, str]:
    name = clean_text(name, field="studio_name", max_length=120)
    contact_email = clean_email(contact_email, field="contact_email")
    contact_phone = clean_text(contact_phone, field="contact_phone", max_length=40, required=False)
    if contact_phone and not all(char.isdigit() or char in "+-() ./" for char in contact_phone):
        raise InvalidInput("Use digits, spaces and + - ( ) only.", field="contact_phone")
    return name, contact_email, contact_phone


async def save_studio(
    token: str,
    *,
    name: str,
    contact_email: str,
    contact_phone: str,
    address: str,
    now: dt.datetime,
) -> None:
    """Wizard step one: the studio's name and contact (may be repeated until set-up ends)."""
    await check_token(token, now=now, address=address)
    name, contact_email, contact_phone = _clean_studio(name, contact_email, contact_phone)
    values: dict[Any, Any] = {
        Studio.name: name,
        Studio.contact_email: contact_email,
        Studio.contact_phone: contact_phone,
        Studio.updated_at: now,
    }
    async with Studio._meta.db.transaction(allow_nested=True):
        if await Studio.exists().where(Studio.id == _STUDIO_ID).run():
            await Studio.update(values).where(Studio.id == _STUDIO_ID).run()
        else:
            await Studio.insert(
                Studio(
                    id=_STUDIO_ID,
                    name=name,
                    contact_email=contact_email,
                    contact_phone=contact_phone,
                    updated_at=now,
                )
            ).run()
        await audit.record(
            "setup.studio",
            actor=Actor(id=None, name="setup"),
            address=address,
            details={"name": name},
            at=now,
        )


async def create_setup_admin(
    token: str,
    *,
    username: str,
    email: str,
    display_name: str,
    password: str,
    confirm: str,
    address: str,
    settings: Settings,
    now: dt.datetime,
) -> accounts.StaffMember:
    """Wizard step two: the first admin. Only one is ever created by the wizard."""
    await check_token(token, now=now, address=address)
    state = await wizard_state()
    if not state.studio_saved:
        raise Conflict("Save the studio's details first.")
    if state.admin_id is not None:
        raise Conflict("The first admin account already exists; continue with two-factor set-up.")
    if password != confirm:
        raise InvalidInput("The two passwords differ.", field="confirm")
    studio = await get_studio()
    async with Studio._meta.db.transaction(allow_nested=True):
        member = await accounts.create_user(
            username=username,
            email=email,
            display_name=display_name,
            role="admin",
            password=password,
            settings=settings,
            now=now,
            actor=Actor(id=None, name="setup"),
            address=address,
            extra_words=(studio.name,) if studio else (),
        )
        claimed = (
            await Studio.update({Studio.setup_admin_id: member.id})
            .where(Studio.id == _STUDIO_ID)
            .where(Studio.setup_admin_id.is_null())
            .returning(Studio.id)
            .run()
        )
        if not claimed:
            raise Conflict("The first admin account already exists.")
    return member


async def complete_setup(token: str, *, code: str, address: str, now: dt.datetime) -> list[str]:
    """Wizard step three: confirm the authenticator, close the wizard, return recovery codes.

    All in one transaction: the wizard is closed exactly when the admin can sign in with 2FA.
    """
    await check_token(token, now=now, address=address)
    state = await wizard_state()
    if state.admin_id is None:
        raise Conflict("Create the first admin account first.")
    # The code is checked first, outside the transaction, so a wrong code's audit entry stays.
    step = await two_factor.check_enrolment_code(state.admin_id, code, address=address, now=now)
    async with Studio._meta.db.transaction(allow_nested=True):
        codes = await two_factor.enable_totp(state.admin_id, step, address=address, now=now)
        closed = (
            await Studio.update({Studio.setup_completed_at: now, Studio.updated_at: now})
            .where(Studio.id == _STUDIO_ID)
            .where(Studio.setup_completed_at.is_null())
            .returning(Studio.id)
            .run()
        )
        if not closed:
            raise Conflict("Set-up is already complete.")
        await SetupToken.update({SetupToken.used_at: now}).where(SetupToken.used_at.is_null()).run()
        await audit.record(
            "setup.complete",
            actor=Actor(id=state.admin_id, name="setup"),
            address=address,
            at=now,
        )
    return codes


async def update_studio(
    *,
    name: str,
    contact_email: str,
    contact_phone: str,
    require_2fa_for_all: bool,
    actor: accounts.StaffMember,
    address: str,
    now: dt.datetime,
) -> StudioProfile:
    """The admin settings page: studio details and the 2FA-for-everyone policy."""
    name, contact_email, contact_phone = _clean_studio(name, contact_email, contact_phone)
    before = await get_studio()
    if before is None:
        raise Conflict("Finish the set-up first.")
    async with Studio._meta.db.transaction(allow_nested=True):
        await (
            Studio.update(
                {
                    Studio.name: name,
                    Studio.contact_email: contact_email,
                    Studio.contact_phone: contact_phone,
                    Studio.require_2fa_for_all: require_2fa_for_all,
                    Studio.updated_at: now,
                }
            )
            .where(Studio.id == _STUDIO_ID)
            .run()
        )
        after = await get_studio()
        assert after is not None
        changed = {
            key: {"from": getattr(before, key), "to": getattr(after, key)}
            for key in ("name", "contact_email", "contact_phone", "require_2fa_for_all")
            if getattr(before, key) != getattr(after, key)
        }
        await audit.record(
            "settings.change",
            actor=actor.actor,
            target="studio",
            address=address,
            details=changed,
            at=now,
        )
    return after
