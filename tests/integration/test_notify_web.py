"""Admin → Notifications over HTTP: the SMTP relay checked against a real server before it is
saved, alert channels checked by apprise, the outbox's failed messages, and the audit log."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
from litestar import Litestar

from appliance.audit.service import list_entries
from appliance.config import Settings
from appliance.notify import channels
from appliance.notify.delivery import deliver_due
from appliance.notify.messages import config_channel_key, queue_email
from appliance.notify.relay import RELAY_KEY
from appliance.notify.tables import AlertChannel, NotifySetting, OutboxMessage
from tests.conftest import FakeClock, make_client
from tests.integration.conftest import SMTP_PASSWORD, SMTP_USER
from tests.integration.flows import Admin, csrf_of, sign_in, submit
from tests.integration.test_clients import signed_in_owner
from tests.integration.test_sign_in import invite_photographer
from tests.receiver import TOKEN, Receiver
from tests.smtp import SmtpServer

PAGE = "/admin/notifications"
PASSWORD = SMTP_PASSWORD


async def post(client: httpx.AsyncClient, action: str, data: dict[str, str]) -> httpx.Response:
    return await submit(client, PAGE, data, action=f"{PAGE}{action}")


def relay_form(server: SmtpServer, **changes: str) -> dict[str, str]:
    return {
        "host": server.host,
        "port": str(server.port),
        "security": "none",
        "username": SMTP_USER,
        "password": PASSWORD,
        "mail_from": "studio@lumen.example",
        "mail_from_name": "Studio Lumen",
        **changes,
    }


async def stored_relay() -> dict[str, object] | None:
    row = (
        await NotifySetting.select(NotifySetting.value)
        .where(NotifySetting.key == RELAY_KEY)
        .output(load_json=True)
        .first()
        .run()
    )
    return row["value"] if row else None


async def audit_text() -> str:
    return json.dumps([[e.action, e.target, e.details] for e in await list_entries()])


async def test_relay_is_saved_only_after_a_real_login_and_the_password_never_shown(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, smtp_login_server: SmtpServer
) -> None:
    """A relay that accepts the login is saved and audited without the password; the page
    never shows the password, and saving again with it left empty keeps it."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, "/smtp", relay_form(smtp_login_server))
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}?done=smtp"
    stored = await stored_relay()
    assert stored is not None
    assert (stored["host"], stored["port"], stored["password"]) == (
        "127.0.0.1",
        smtp_login_server.port,
        PASSWORD,
    )
    page = await client.get(PAGE)
    assert "SMTP relay saved" in (await client.get(f"{PAGE}?done=smtp")).text
    assert PASSWORD not in page.text
    assert "A password is stored" in page.text
    assert page.headers["cache-control"] == "no-store"

    response = await post(
        client, "/smtp", relay_form(smtp_login_server, password="", mail_from_name="Lumen")
    )
    assert response.status_code == 303
    stored = await stored_relay()
    assert stored is not None and stored["password"] == PASSWORD
    assert stored["mail_from_name"] == "Lumen"

    entries = [e for e in await list_entries() if e.action == "notify.smtp.save"]
    assert len(entries) == 2
    assert entries[-1].details["host"] == "127.0.0.1"
    assert entries[-1].details["password_changed"] is True
    assert entries[0].details["password_changed"] is False
    assert PASSWORD not in await audit_text()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"port": "70000"}, "The port must be between 1 and 65535."),
        ({"port": "smtp"}, "The port must be a number"),
        ({"security": "ssl3"}, "Choose STARTTLS, TLS or no encryption."),
        ({"mail_from": "studio at lumen"}, "Enter the sender address as name@example.com."),
        ({"mail_from": "a@b.example\r\nBcc: x@y.example"}, "The sender address"),
        ({"host": "mail server.example"}, "is not a server name or address"),
        ({"host": ""}, "Enter the mail server"),
        ({"password": "wrong-password"}, "Not saved: authentication failed at 127.0.0.1:"),
        ({"security": "starttls"}, "does not offer STARTTLS"),
    ],
)
async def test_invalid_relay_settings_are_refused_with_the_reason_and_nothing_saved(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    smtp_login_server: SmtpServer,
    changes: dict[str, str],
    reason: str,
) -> None:
    """Each bad value gets a 400 naming what is wrong; no relay is stored or audited, and
    the password typed is not echoed."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, "/smtp", relay_form(smtp_login_server, **changes))
    assert response.status_code == 400
    assert reason in response.text
    assert await stored_relay() is None
    assert "notify.smtp.save" not in await audit_text()
    assert PASSWORD not in response.text and "wrong-password" not in response.text


async def test_a_relay_that_cannot_be_reached_is_refused_with_the_reason(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, smtp_login_server: SmtpServer
) -> None:
    """A stopped server: "could not connect to host:port: connection refused", nothing saved."""
    await signed_in_owner(client, admin, clock)
    smtp_login_server.stop()
    response = await post(client, "/smtp", relay_form(smtp_login_server))
    assert response.status_code == 400
    assert (
        f"could not connect to 127.0.0.1:{smtp_login_server.port}: connection refused"
        in response.text
    )
    assert await stored_relay() is None


async def test_a_relay_whose_certificate_is_not_trusted_is_refused(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """STARTTLS to a server with a self-signed certificate fails verification: refused with
    that reason, nothing saved."""
    await signed_in_owner(client, admin, clock)
    server = SmtpServer(credentials=(SMTP_USER, PASSWORD), starttls=True)
    server.start()
    try:
        response = await post(client, "/smtp", relay_form(server, security="starttls"))
    finally:
        server.stop()
    assert response.status_code == 400
    assert "its TLS certificate is not valid" in response.text
    assert await stored_relay() is None


async def test_test_email_goes_through_the_outbox_in_the_chosen_language(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    smtp_login_server: SmtpServer,
    settings: Settings,
) -> None:
    """The test e-mail is queued, audited with the domain only, and arrives in German with the
    studio's name once the worker delivers."""
    await signed_in_owner(client, admin, clock)
    refused = await post(client, "/test-email", {"to": "anna@example.org", "language": "de"})
    assert refused.status_code == 409 and "Set the SMTP relay first" in refused.text
    assert (await post(client, "/smtp", relay_form(smtp_login_server))).status_code == 303
    bad = await post(client, "/test-email", {"to": "not an address", "language": "de"})
    assert bad.status_code == 400 and "name@example.com" in bad.text
    response = await post(client, "/test-email", {"to": "anna@example.org", "language": "de"})
    assert response.status_code == 303
    assert (await deliver_due(settings, clock())).sent == 1
    [mail] = smtp_login_server.messages
    assert mail.recipients == ["anna@example.org"]
    assert mail.message["Subject"] == "Testnachricht von Studio Lumen"
    assert "owner hat diese Testnachricht" in mail.part("plain")
    assert "Studio Lumen" in mail.part("html")
    [entry] = [e for e in await list_entries() if e.action == "notify.email.test"]
    assert entry.details == {"domain": "example.org", "language": "de"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nosuch://token-abc/xyz", "apprise does not know the service “nosuch”"),
        ("tgram://not-a-bot-token", "apprise cannot use this URL"),
        ("discord://123456", "apprise cannot use this URL"),
        ("json:// spaced", "must not contain spaces"),
        ("just-text", "needs the form service://"),
        ("", "Enter the apprise URL of the channel."),
    ],
)
async def test_invalid_apprise_urls_are_refused_with_the_reason(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, url: str, reason: str
) -> None:
    """An URL apprise cannot use gets a 400 with apprise's reason; nothing is stored, and the
    URL typed is not shown back."""
    await signed_in_owner(client, admin, clock)
    response = await post(client, "/channels", {"name": "Phone", "url": url})
    assert response.status_code == 400
    assert reason in response.text
    assert await AlertChannel.count().run() == 0
    if url:
        assert url not in response.text


async def test_channels_are_added_masked_switched_tested_and_removed_with_audit(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    receiver: Receiver,
    settings: Settings,
) -> None:
    """A channel is stored, shown only masked, switched off and on, tested through the
    outbox and removed; each step is audited and no entry or page carries its token."""
    await signed_in_owner(client, admin, clock)
    response = await post(
        client, "/channels", {"name": "Owner's phone", "url": receiver.alert_url()}
    )
    assert response.status_code == 303
    [channel] = await AlertChannel.select().run()
    assert channel["url"] == receiver.alert_url() and channel["enabled"]
    page = await client.get(PAGE)
    assert "Owner&#39;s phone" in page.text
    assert "json://…" in page.text or "json://127.0.0.1" in page.text
    assert TOKEN not in page.text

    channel_id = channel["id"]
    assert (await post(client, f"/channels/{channel_id}/disable", {})).status_code == 303
    switched = await AlertChannel.select(AlertChannel.enabled).first().run()
    assert switched is not None and switched["enabled"] is False
    assert (await post(client, f"/channels/{channel_id}/enable", {})).status_code == 303
    response = await post(client, "/channels/test", {"key": f"db:{channel_id}"})
    assert response.status_code == 303
    assert (await deliver_due(settings, clock())).sent == 1
    [message] = receiver.messages()
    assert message["title"] == "Test alert"
    assert "owner sent this test" in message["message"]

    assert (await post(client, f"/channels/{channel_id}/remove", {})).status_code == 303
    assert await AlertChannel.count().run() == 0
    gone = await post(client, f"/channels/{channel_id}/remove", {})
    assert gone.status_code == 404 and "no longer exists" in gone.text
    huge = await post(client, "/channels/99999999999/remove", {})
    assert huge.status_code == 404

    actions = [e.action for e in reversed(await list_entries())]
    assert [a for a in actions if a.startswith("notify.channel")] == [
        "notify.channel.add",
        "notify.channel.disable",
        "notify.channel.enable",
        "notify.channel.test",
        "notify.channel.remove",
    ]
    text = await audit_text()
    assert TOKEN not in text and "json" in text  # the service is named, the URL is not


async def test_failed_messages_are_listed_and_can_be_retried_or_discarded(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    smtp_login_server: SmtpServer,
    settings: Settings,
) -> None:
    """A mail refused for good shows up with its reason; "retry now" sends it once the cause
    is fixed, "discard" gives one up; both are audited, and other states are refused."""
    await signed_in_owner(client, admin, clock)
    assert (await post(client, "/smtp", relay_form(smtp_login_server))).status_code == 303
    smtp_login_server.refused.update({"gone@example.org", "later@example.org"})
    # An alert URL whose pieces are everyday words: the relay's reply is still shown whole.
    channels.remember(["json://user:here@redaction-check.invalid"])
    ids = []
    for to in ("gone@example.org", "later@example.org"):
        queued = await queue_email(
            to=to,
            template="test_message",
            context={"studio": "Studio Lumen", "sender": "x", "relay": "y"},
            language="en",
            source="test",
            now=clock(),
        )
        assert queued is not None
        ids.append(queued)
    assert (await deliver_due(settings, clock())).failed == 2
    page = await client.get(PAGE)
    assert page.text.count("550 5.1.1 No such user here") == 2
    assert 'id="count-failed">2<' in page.text

    smtp_login_server.refused.discard("later@example.org")
    assert (await post(client, f"/messages/{ids[1]}/retry", {})).status_code == 303
    assert (await post(client, f"/messages/{ids[0]}/discard", {})).status_code == 303
    assert (await deliver_due(settings, clock())).sent == 1
    assert [m.recipients for m in smtp_login_server.messages] == [["later@example.org"]]
    states = {
        row["id"]: row["state"]
        for row in await OutboxMessage.select(OutboxMessage.id, OutboxMessage.state).run()
    }
    assert states == {ids[0]: "discarded", ids[1]: "sent"}
    again = await post(client, f"/messages/{ids[1]}/retry", {})
    assert again.status_code == 404 and "nothing to retry" in again.text
    actions = [e.action for e in await list_entries()]
    assert "notify.message.retry" in actions and "notify.message.discard" in actions


async def test_page_says_why_mail_waits_when_no_relay_is_set(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """Without a relay, the page says e-mail waits and how many."""
    await signed_in_owner(client, admin, clock)
    await queue_email(
        to="anna@example.org",
        template="test_message",
        context={"studio": "", "sender": "x", "relay": "y"},
        language="en",
        source="test",
        now=clock(),
    )
    page = await client.get(PAGE)
    assert "No SMTP relay is set" in page.text
    assert "1 e-mail is waiting" in page.text


async def test_the_page_is_for_admins_only(
    client: httpx.AsyncClient, app: Litestar, admin: Admin, clock: FakeClock
) -> None:
    """Signed out, the page sends to the sign-in; a photographer gets 403 for the page and
    for every change, and nothing is stored."""
    response = await client.get(PAGE)
    assert response.status_code in (302, 303) and response.headers["location"] == "/login"
    path = await invite_photographer(client, admin, clock)
    async with make_client(app, "192.0.2.20") as pia:
        password = "velvet compass orchard 77 river"
        joined = await submit(
            pia,
            path,
            {"username": "pia", "display_name": "Pia", "password": password, "confirm": password},
        )
        assert joined.status_code == 200
        assert (await sign_in(pia, "pia", password)).headers["location"] == "/"
        assert (await pia.get(PAGE)).status_code == 403
        token = csrf_of((await pia.get("/account")).text)
        for action, data in (
            ("/channels", {"name": "x", "url": "json://h.example/t"}),
            ("/smtp", {"host": "mail.example.com", "port": "587"}),
            ("/messages/1/discard", {}),
        ):
            forged = await pia.post(f"{PAGE}{action}", data={**data, "_csrf": token})
            assert forged.status_code == 403, action
    assert await AlertChannel.count().run() == 0
    assert await stored_relay() is None


async def test_the_stored_password_is_not_sent_to_another_server(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock, smtp_login_server: SmtpServer
) -> None:
    """Pointing the relay at another server with the password left empty is refused, asking
    for the password again; the other server never sees a login, and nothing is saved. A
    login without encryption to a server on the network is refused too."""
    other = SmtpServer(credentials=(SMTP_USER, PASSWORD))
    other.start()
    try:
        await signed_in_owner(client, admin, clock)
        assert (await post(client, "/smtp", relay_form(smtp_login_server))).status_code == 303
        before = await stored_relay()
        response = await post(
            client, "/smtp", relay_form(smtp_login_server, port=str(other.port), password="")
        )
        assert response.status_code == 400
        assert "Enter the password again" in response.text
        assert await stored_relay() == before
        response = await post(
            client, "/smtp", relay_form(smtp_login_server, host="mail.example.com")
        )
        assert response.status_code == 400
        assert "clear text" in response.text
        assert await stored_relay() == before
    finally:
        other.stop()
    assert other.messages == []


async def test_all_failed_messages_can_be_retried_at_once_with_audit(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    smtp_login_server: SmtpServer,
    settings: Settings,
) -> None:
    """After the cause is fixed, "retry all failed" sends every failed message again, once,
    and the audit log counts them; with nothing failed it says so."""
    await signed_in_owner(client, admin, clock)
    assert (await post(client, "/smtp", relay_form(smtp_login_server))).status_code == 303
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    smtp_login_server.refused.update(recipients)
    for to in recipients:
        await queue_email(
            to=to,
            template="test_message",
            context={"studio": "Studio Lumen", "sender": "x", "relay": "y"},
            language="en",
            source="test",
            now=clock(),
        )
    assert (await deliver_due(settings, clock())).failed == 3
    assert "Retry all 3 failed" in (await client.get(PAGE)).text
    smtp_login_server.refused.clear()
    response = await post(client, "/messages/retry-failed", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"{PAGE}?done=retry-failed"
    assert (await deliver_due(settings, clock())).sent == 3
    assert sorted(r for m in smtp_login_server.messages for r in m.recipients) == recipients
    [entry] = [e for e in await list_entries() if e.action == "notify.message.retry_all"]
    assert entry.details == {"emails": 3, "alerts": 0}
    again = await post(client, "/messages/retry-failed", {})
    assert again.status_code == 404 and "No message has failed" in again.text


async def test_a_message_left_sending_by_a_stopped_worker_can_be_discarded(
    client: httpx.AsyncClient, admin: Admin, clock: FakeClock
) -> None:
    """A row still "sending" under a live lease cannot be discarded; once its lease ran out
    the page offers to discard it, and that is audited."""
    await signed_in_owner(client, admin, clock)
    message = OutboxMessage(
        kind="email",
        recipient="anna@example.org",
        subject="Stuck",
        state="sending",
        attempts=1,
        claim_token="gone",
        next_attempt_at=clock(),
        created_at=clock(),
    )
    await message.save().run()

    async def lease_in(seconds: int) -> None:
        await OutboxMessage.raw(
            "UPDATE outbox_message SET claimed_until = clock_timestamp() + {} * interval '1 s'",
            seconds,
        )

    await lease_in(300)
    refused = await post(client, f"/messages/{message.id}/discard", {})
    assert refused.status_code == 404
    await lease_in(-1)
    page = await client.get(PAGE)
    assert "its worker stopped" in page.text
    assert f"/messages/{message.id}/discard" in page.text
    assert (await post(client, f"/messages/{message.id}/discard", {})).status_code == 303
    [row] = await OutboxMessage.select(OutboxMessage.state, OutboxMessage.claim_token).run()
    assert row == {"state": "discarded", "claim_token": ""}
    assert "notify.message.discard" in [e.action for e in await list_entries()]


async def test_channels_list_the_backups_urls_and_the_last_alert_actually_sent(
    client: httpx.AsyncClient,
    admin: Admin,
    clock: FakeClock,
    app: Litestar,
    receiver: Receiver,
) -> None:
    """The backups' own alert URLs are listed (masked) and can be tested; "last delivered"
    counts sent alerts only, not a discarded one."""
    settings: Settings = app.state.settings
    backup_url = receiver.alert_url("backup-hook-secret")
    app.state.settings = msgspec.structs.replace(
        settings, backups=msgspec.structs.replace(settings.backups, alert_urls=[backup_url])
    )
    try:
        await signed_in_owner(client, admin, clock)
        channel = AlertChannel(name="Pager", url=receiver.alert_url(), created_at=clock())
        await channel.save().run()
        await (
            OutboxMessage(
                kind="alert",
                channel=f"db:{channel.id}",
                subject="Discarded",
                state="discarded",
                next_attempt_at=clock(),
                created_at=clock(),
                sent_at=clock(),
            )
            .save()
            .run()
        )
        page = await client.get(PAGE)
        assert "From the backups settings" in page.text
        assert "backup-hook-secret" not in page.text
        assert "never" in page.text.split("Pager", 1)[1].split("</tr>", 1)[0]
        key = config_channel_key(backup_url)
        assert (await post(client, "/channels/test", {"key": key})).status_code == 303
        assert (await deliver_due(app.state.settings, clock())).sent == 1
        assert [m["title"] for m in receiver.messages()] == ["Test alert"]
    finally:
        app.state.settings = settings
