"""The outbox's pure parts: relay form checks, message building, URL masking and redaction."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from appliance.errors import InvalidInput
from appliance.notify import channels
from appliance.notify.messages import config_channel_key, render_email
from appliance.notify.relay import RelayForm, is_address, relay_from_form
from appliance.notify.smtp import Relay, TransportError, build_message, new_message_id

STORED = Relay(
    host="mail.example.com", username="studio", password="stored-pass", mail_from="a@b.de"
)


def form(**changes: str) -> RelayForm:
    values = {
        "host": "mail.example.com",
        "port": "587",
        "security": "starttls",
        "username": "studio",
        "password": "",
        "mail_from": "studio@lumen.example",
        "mail_from_name": "Studio Lumen",
        **changes,
    }
    return RelayForm(**values)


def test_an_empty_password_keeps_the_stored_one() -> None:
    """Leaving the password empty keeps the one stored; typing one replaces it."""
    assert relay_from_form(form(), STORED).password == "stored-pass"
    assert relay_from_form(form(password="new"), STORED).password == "new"


def test_no_user_means_no_password_is_kept() -> None:
    """Without a user there is no login, so no password is stored either."""
    assert relay_from_form(form(username=""), STORED).password == ""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"port": "0"}, "port"),
        ({"port": "65536"}, "port"),
        ({"port": "5x"}, "port"),
        ({"security": "ssl"}, "security"),
        ({"host": "-bad-.example"}, "host"),
        ({"host": "a b"}, "host"),
        ({"mail_from": "x@y"}, "mail_from"),
        ({"mail_from": "Studio <x@y.de>"}, "mail_from"),
        ({"mail_from_name": "Studio\nBcc: x@y.de"}, "mail_from_name"),
    ],
)
def test_bad_relay_values_are_refused_naming_the_field(changes: dict[str, str], field: str) -> None:
    """Each bad value raises InvalidInput naming its field."""
    with pytest.raises(InvalidInput) as caught:
        relay_from_form(form(**changes), STORED)
    assert caught.value.field == field


def test_addresses_that_could_inject_headers_are_not_addresses() -> None:
    """Only a plain address passes."""
    assert is_address("anna@example.org")
    assert not is_address("anna@example.org\r\nBcc: x@y.de")
    assert not is_address("anna@example.org, ben@example.org")


def test_a_message_has_both_parts_its_language_and_its_message_id() -> None:
    """Text and HTML alternatives, From with the name, the stored Message-ID and the language."""
    relay = Relay(host="h", mail_from="studio@lumen.example", mail_from_name="Studio Lumen")
    message_id = new_message_id(relay)
    assert message_id.endswith("@lumen.example>")
    message = build_message(
        relay,
        recipient="anna@example.org",
        subject="Hallo",
        text="Text ä",
        html="<p>HTML ä</p>",
        language="de",
        message_id=message_id,
        date=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
    )
    assert message["From"] == "Studio Lumen <studio@lumen.example>"
    assert message["Message-ID"] == message_id
    assert message["Content-Language"] == "de"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and "Text ä" in plain.get_content()
    assert html is not None and "<p>HTML ä</p>" in html.get_content()


def test_unknown_languages_fall_back_to_english() -> None:
    """A language without templates gets the English ones."""
    language, subject, _, _ = render_email(
        "test_message", "fr", {"studio": "Lumen", "sender": "x", "relay": "y"}
    )
    assert (language, subject) == ("en", "Test message from Lumen")


def test_channel_urls_are_masked_and_their_keys_reveal_nothing() -> None:
    """Only a plain host survives masking; a token where the host goes is hidden."""
    assert (
        channels.mask_url("ntfys://ntfy.example.com/topic-secret") == "ntfys://ntfy.example.com/…"
    )
    assert channels.mask_url("tgram://123456:AAHdqTcv/987") == "tgram://…"
    key = config_channel_key("json://h.example/very-secret")
    assert key.startswith("config:") and "secret" not in key


def test_apprise_log_records_never_carry_a_remembered_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record of apprise naming a remembered URL or its token is masked."""
    channels.remember(["json://hooks.example/tok-9f8e7d6c"])
    with caplog.at_level(logging.WARNING, logger="apprise"):
        logging.getLogger("apprise").warning("failed: json://hooks.example/tok-9f8e7d6c")
        logging.getLogger("apprise").warning("token tok-9f8e7d6c refused")
    assert "tok-9f8e7d6c" not in caplog.text
    assert caplog.text.count("[redacted]") == 2


def test_apprise_reasons_are_given_for_unusable_urls() -> None:
    """check_url says why: unknown service, unparsable, bad form; "" for a good URL."""
    assert channels.check_url("json://127.0.0.1:8080/hook") == ""
    assert "does not know the service" in channels.check_url("zzz://x")
    assert "cannot use this URL" in channels.check_url("tgram://x")
    assert "needs the form" in channels.check_url("nothing")


@pytest.mark.parametrize(
    "changes",
    [
        {"host": "mail.attacker.example"},
        {"port": "2525"},
        {"security": "tls"},
        {"username": "someone-else"},
    ],
)
def test_the_stored_password_is_only_reused_for_the_same_relay(changes: dict[str, str]) -> None:
    """Another server, port, encryption or user needs the password typed again: the stored
    one is never handed to a server it was not saved for. Typed again, it is taken."""
    with pytest.raises(InvalidInput) as caught:
        relay_from_form(form(**changes), STORED)
    assert caught.value.field == "password"
    assert "Enter the password again" in caught.value.message
    assert relay_from_form(form(**changes, password="typed"), STORED).password == "typed"
    assert relay_from_form(form(host="MAIL.example.com"), STORED).password == "stored-pass"


@pytest.mark.parametrize("host", ["mail.example.com", "192.168.1.10", "10.0.0.1"])
def test_a_login_without_encryption_is_refused_except_on_this_machine(host: str) -> None:
    """Security "none" with a user would send the password in clear text over the network."""
    with pytest.raises(InvalidInput) as caught:
        relay_from_form(form(host=host, security="none", password="pw"), STORED)
    assert caught.value.field == "security"
    assert "clear text" in caught.value.message
    assert relay_from_form(form(host=host, security="none", username=""), STORED).username == ""


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"])
def test_a_login_without_encryption_to_this_machine_is_allowed(host: str) -> None:
    relay = relay_from_form(form(host=host, security="none", password="pw"), STORED)
    assert (relay.security, relay.password) == ("none", "pw")


def test_line_breaks_in_subject_and_sender_name_become_one_space() -> None:
    """No kind of line break (U+2028, U+2029, U+0085, \\v, \\f, \\r) survives into a header."""
    relay = Relay(host="h", mail_from="studio@lumen.example", mail_from_name="A\u2029B\rC")
    message = build_message(
        relay,
        recipient="anna@example.org",
        subject="My picks\u2028Bcc: x@y.de\x85\v\f\r\nend",
        text="t",
        html="",
        language="en",
        message_id=new_message_id(relay),
        date=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
    )
    assert message["Subject"] == "My picks Bcc: x@y.de end"
    assert message["From"] == "A B C <studio@lumen.example>"
    assert message["Bcc"] is None
    assert "\u2028" not in message.as_string()


@pytest.mark.parametrize("recipient", ["", "anna", "anna@example.org\u2028Bcc: x@y.de", "a@b@c.de"])
def test_a_recipient_that_is_no_address_is_a_permanent_failure(recipient: str) -> None:
    relay = Relay(host="h", mail_from="studio@lumen.example")
    with pytest.raises(TransportError) as caught:
        build_message(
            relay,
            recipient=recipient,
            subject="s",
            text="t",
            html="",
            language="en",
            message_id=new_message_id(relay),
            date=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
        )
    assert caught.value.permanent
    assert "is not an e-mail address" in caught.value.message
