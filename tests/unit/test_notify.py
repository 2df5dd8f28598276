"""The outbox's pure parts: relay form checks, message building, URL masking and redaction."""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from typing import Any

import jinja2
import jinja2.meta
import pytest

from appliance.errors import InvalidInput
from appliance.notify import channels
from appliance.notify.messages import TEMPLATES, config_channel_key, render_email
from appliance.notify.messages import _html as mail_html
from appliance.notify.relay import RelayForm, is_address, relay_from_form
from appliance.notify.smtp import Relay, TransportError, build_message, new_message_id
from appliance.privacy_requests.messages import CLIENT_KINDS, _alert_text, _staff_context
from appliance.privacy_requests.service import RequestRecord

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


ENGLISH_TEMPLATES = sorted(path.name for path in (TEMPLATES / "en").iterdir())
# What a German template may read that its English twin does not: values the one function
# building the context for both languages gives, rendered below from that function. The
# English admins' e-mail names the kind by its English label, the German one by its code.
GERMAN_ONLY = {"privacy_request_staff": {"kind_code"}}


def test_every_english_mail_template_has_a_german_twin() -> None:
    """The German folder holds exactly the English folder's templates, so no e-mail silently
    falls back to English for a German recipient."""
    german = sorted(path.name for path in (TEMPLATES / "de").iterdir())
    assert ENGLISH_TEMPLATES and german == ENGLISH_TEMPLATES


@pytest.mark.parametrize("name", ENGLISH_TEMPLATES)
def test_a_german_template_compiles_and_needs_nothing_the_english_one_lacks(name: str) -> None:
    """Each German template parses, declares its language, and uses only variables its
    English twin uses: its callers give both the same context, and a variable only the
    German one reads would fail to render (StrictUndefined) for German recipients only."""
    env = jinja2.Environment(autoescape=True)
    env.filters.update(mail_html.filters)  # "day" and "duration", which the e-mails use
    english = env.parse((TEMPLATES / "en" / name).read_text(encoding="utf-8"))
    german_source = (TEMPLATES / "de" / name).read_text(encoding="utf-8")
    german = env.parse(german_source)
    # Blocks are analysed on their own, so the macros a template defines at its top count as
    # undeclared inside its blocks; they are not the caller's context.
    own = {macro.name for macro in german.find_all(jinja2.nodes.Macro)}
    wanted = jinja2.meta.find_undeclared_variables(german) - own
    allowed = GERMAN_ONLY.get(name.rsplit(".", 1)[0], set())
    assert wanted <= jinja2.meta.find_undeclared_variables(english) | allowed
    if name.endswith(".html"):
        assert "{% block language %}de{% endblock %}" in german_source


def privacy_request(**changes: Any) -> RequestRecord:
    """Request #7 for a copy, received 2 February 2026 14:00 in Berlin, due 2 March 2026."""
    berlin = dt.timezone(dt.timedelta(hours=1))
    values: dict[str, Any] = {
        "id": 7,
        "client_id": 3,
        "kind": "copy",
        "status": "open",
        "received_at": dt.datetime(2026, 2, 2, 14, 0, tzinfo=berlin),
        "timezone": "Europe/Berlin",
        "deadline_at": dt.datetime(2026, 3, 3, 0, 0, tzinfo=berlin),
        "extended_at": None,
        "extended_by": "",
        "extension_reason": "",
        "alerted": 0,
        "answered_at": None,
        "answered_by": "",
        "answer_note": "",
        "export_id": None,
        "erasure_id": None,
        **changes,
    }
    return RequestRecord(**values)


def client_context(event: str, kind: str, reason: str = "", **changes: Any) -> dict[str, Any]:
    """What tell_client gives the template, for request #7 of ``kind`` (with ``changes``)."""
    request = privacy_request(kind=kind, **changes)
    return {
        "event": event,
        "name": "Anna Berg",
        "studio": "Studio Lumen",
        "studio_email": "hallo@lumen.example",
        "kind": kind,
        "asked_for": CLIENT_KINDS[kind],
        "received_on": request.received_on,
        "due_on": request.due_on,
        "reason": reason,
        "purge_on": dt.date(2026, 3, 9),
    }


@pytest.mark.parametrize(
    ("event", "kind", "subject", "says"),
    [
        (
            "received",
            "copy",
            "Ihr Antrag auf eine Kopie Ihrer Daten ist bei uns eingegangen",
            "am 2. Februar 2026 erhalten. Wir beantworten ihn spätestens bis zum 2. März 2026.",
        ),
        (
            "extended",
            "correction",
            "Ihr Antrag auf Berichtigung Ihrer Daten: wir benötigen mehr Zeit",
            "vom 2. Februar 2026 benötigen wir mehr Zeit",
        ),
        (
            "refused",
            "deletion",
            "Ihr Antrag auf Löschung Ihrer Daten: unsere Antwort",
            "bei einer Datenschutz-Aufsichtsbehörde Beschwerde einzulegen",
        ),
        (
            "done",
            "deletion",
            "Ihr Antrag auf Löschung Ihrer Daten wurde umgesetzt",
            "am 9. März 2026 oder kurz danach endgültig gelöscht",
        ),
        (
            "done",
            "copy",
            "Ihr Antrag auf eine Kopie Ihrer Daten wurde umgesetzt",
            "den Link zum Herunterladen senden wir Ihnen gesondert",
        ),
    ],
)
def test_a_german_client_hears_about_their_privacy_request_in_german(
    event: str, kind: str, subject: str, says: str
) -> None:
    """The client's e-mail names the request, its days (in German month names) and the
    studio in German, with the reason they must be given, escaped in the HTML part."""
    context = client_context(event, kind, reason="Rechnungen <10 Jahre> aufbewahren")
    language, got_subject, text, html = render_email("privacy_request_client", "de", context)
    assert (language, got_subject) == ("de", subject)
    assert text.startswith("Guten Tag Anna Berg,") and says in text
    assert "Bei Fragen schreiben Sie uns an hallo@lumen.example." in text
    assert text.rstrip().endswith("Studio Lumen")
    assert '<html lang="de">' in html and f"<title>{subject}</title>" in html
    assert "Guten Tag Anna Berg," in html and "hallo@lumen.example" in html
    if event in ("extended", "refused"):
        assert "Begründung: Rechnungen <10 Jahre> aufbewahren" in text
        assert "Begründung: Rechnungen &lt;10 Jahre&gt; aufbewahren" in html
    else:
        assert "Begründung" not in text and "Rechnungen" not in text
    for english in ("Hello", "your", "February", "March"):
        assert english not in text and english not in html


@pytest.mark.parametrize(
    ("event", "subject", "ending"),
    [
        (
            "received",
            "Datenschutzanfrage #7 eingegangen (Datenkopie): Antwort bis zum 2. März 2026"
            " (Europe/Berlin)",
            "also bis zum Ablauf des 2. März 2026 (Europe/Berlin).",
        ),
        (
            "soon",
            "Datenschutzanfrage #7 (Datenkopie) ist am 2. März 2026 (Europe/Berlin) fällig,"
            " noch 5 Tage 0 h",
            "also bis zum Ablauf des 2. März 2026 (Europe/Berlin); es bleiben noch 5 Tage 0 h.",
        ),
        (
            "overdue",
            "Datenschutzanfrage #7 (Datenkopie) ist überfällig: sie war am 2. März 2026"
            " (Europe/Berlin) fällig",
            "also bis zum Ablauf des 2. März 2026 (Europe/Berlin); dieser Tag ist verstrichen.",
        ),
    ],
)
def test_german_admins_hear_about_a_privacy_request_in_german(
    event: str, subject: str, ending: str
) -> None:
    """The admins' e-mail, from the context the request's alerts are built from, names the
    request, its kind, the deadline under Art. 12 Abs. 3 DSGVO and the time left in German."""
    request = privacy_request()
    now = request.deadline_at - dt.timedelta(days=5)
    language, got_subject, text, html = render_email(
        "privacy_request_staff", "de", _staff_context(request, event, now)
    )
    assert (language, got_subject) == ("de", subject)
    assert "am 2026-02-02 14:00 CET (13:00 UTC) über einen Galerie-Link" in text
    assert (
        f"Art. 12 Abs. 3 DSGVO verlangt eine Antwort innerhalb eines Monats nach Eingang, {ending}"
        in text
    )
    assert "Admin → Privacy requests" in text and "Art. 12 Abs. 3 DSGVO" in html
    assert "<strong>2. März 2026 (Europe/Berlin)</strong>" in html
    for english in ("Hello", "days", "March", "copy"):
        assert english not in text and english not in html


def test_an_extended_privacy_request_tells_german_admins_of_the_longer_deadline() -> None:
    """After an extension the admins read that the month was extended by two more."""
    request = privacy_request(extended_at=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    _, _, text, html = render_email(
        "privacy_request_staff", "de", _staff_context(request, "received", request.received_at)
    )
    assert "nach Eingang (um weitere zwei Monate verlängert), also bis zum Ablauf" in text
    assert "(um weitere zwei Monate verlängert)" in html


BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ENGLISH_MONTHS = (
    "January February March April May June July August September October November December"
)
GERMAN_MONTHS = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember"


@pytest.mark.parametrize("month", range(1, 13))
def test_privacy_request_e_mails_name_each_month_in_the_readers_language(month: int) -> None:
    """A request received on the 15th of ``month`` and due on the 15th of the next: the German
    e-mails name both months in German (März, Dezember; April as in English), the English
    ones in English, for the client and for the admins."""
    due_month, due_year = month % 12 + 1, 2026 + (month == 12)
    changes = {
        "received_at": dt.datetime(2026, month, 15, 10, 0, tzinfo=BERLIN),
        "deadline_at": dt.datetime(due_year, due_month, 16, 0, 0, tzinfo=BERLIN),
    }
    english, german = ENGLISH_MONTHS.split(), GERMAN_MONTHS.split()
    client = client_context("received", "copy", **changes)
    staff = _staff_context(privacy_request(**changes), "received", changes["received_at"])

    _, _, text, html = render_email("privacy_request_client", "de", client)
    received, due = f"15. {german[month - 1]} 2026", f"15. {german[due_month - 1]} {due_year}"
    assert f"am {received} erhalten. Wir beantworten ihn spätestens bis zum {due}." in text
    assert f"<strong>{due}</strong>" in html
    _, subject, text, html = render_email("privacy_request_staff", "de", staff)
    assert subject.endswith(f": Antwort bis zum {due} (Europe/Berlin)")
    assert f"also bis zum Ablauf des {due} (Europe/Berlin)." in text
    assert f"<strong>{due} (Europe/Berlin)</strong>" in html
    for number in (month, due_month):
        if english[number - 1] != german[number - 1]:
            assert english[number - 1] not in text + html

    _, _, text, _ = render_email("privacy_request_client", "en", client)
    received, due = f"15 {english[month - 1]} 2026", f"15 {english[due_month - 1]} {due_year}"
    assert f"on {received}. We answer it by {due} at the latest." in text
    _, subject, text, html = render_email("privacy_request_staff", "en", staff)
    assert (
        subject
        == f"Privacy request #7 received (a copy of the data): answer by {due} (Europe/Berlin)"
    )
    assert f"by the end of {due} (Europe/Berlin)." in text
    assert f"<strong>{due} (Europe/Berlin)</strong>" in html


@pytest.mark.parametrize(
    ("left", "german", "english"),
    [
        (dt.timedelta(days=5), "5 Tage 0 h", "5 days 0 h"),
        (dt.timedelta(hours=100, minutes=59), "4 Tage 4 h", "4 days 4 h"),
        (dt.timedelta(days=3), "72 h 0 min", "72 h 0 min"),
        (dt.timedelta(minutes=59, seconds=59), "59 min", "59 min"),
    ],
)
def test_admins_read_the_time_left_in_their_language(
    left: dt.timedelta, german: str, english: str
) -> None:
    """The time left before the deadline reads in days from 100 hours on ("Tage" in German),
    in hours and minutes below; the English e-mail's subject is the alert's title."""
    request = privacy_request()
    context = _staff_context(request, "soon", request.deadline_at - left)
    _, subject, text, html = render_email("privacy_request_staff", "de", context)
    assert subject == (
        f"Datenschutzanfrage #7 (Datenkopie) ist am 2. März 2026 (Europe/Berlin) fällig,"
        f" noch {german}"
    )
    assert f"(Europe/Berlin); es bleiben noch {german}." in text
    assert f"es bleiben noch {german}." in html
    _, subject, text, html = render_email("privacy_request_staff", "en", context)
    assert subject == (
        f"Privacy request #7 (a copy of the data) is due 2 March 2026 (Europe/Berlin),"
        f" {english} left"
    )
    assert subject == _alert_text(context)[0]
    assert f"by the end of 2 March 2026 (Europe/Berlin); {english} are left." in text
    assert f"<strong>2 March 2026 (Europe/Berlin)</strong>; {english} are left." in html


@pytest.mark.parametrize(
    ("event", "kind", "subject", "says"),
    [
        (
            "received",
            "copy",
            "We received your request for a copy of your data",
            "we received your request for a copy of your data on 2 February 2026."
            " We answer it by 2 March 2026 at the latest.",
        ),
        (
            "extended",
            "correction",
            "Your request for a correction of your data: we need more time",
            "we need more time for your request for a correction of your data of 2 February"
            " 2026. We answer it by 2 March 2026 at the latest.",
        ),
        (
            "done",
            "deletion",
            "Your request for the deletion of your data was carried out",
            "we have carried out your request for the deletion of your data of 2 February 2026."
            " Your share links no longer work",
        ),
    ],
)
def test_an_english_client_hears_about_their_privacy_request_in_english(
    event: str, kind: str, subject: str, says: str
) -> None:
    """The client's English e-mail names what they asked for and its days in English."""
    language, got_subject, text, html = render_email(
        "privacy_request_client", "en", client_context(event, kind)
    )
    assert (language, got_subject) == ("en", subject)
    assert text.startswith("Hello Anna Berg,") and says in text
    assert "2 February 2026" in html
    assert ("<strong>2 March 2026</strong>" in html) == (event != "done")


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


@pytest.mark.parametrize(
    ("language", "overdue", "running"),
    [
        ("en", "overdue by 5 days 2 h", "(10 h 30 min left)"),
        ("de", "seit 5 Tage 2 h überfällig", "(noch 10 h 30 min)"),
    ],
)
def test_the_security_deadline_mail_words_the_time_left_in_its_language(
    language: str, overdue: str, running: str
) -> None:
    """The context carries seconds, so a German admin never reads "5 days" in German text."""
    base = {
        "incident_id": 3,
        "kind": "breach",
        "hours": 72,
        "detected": "2026-03-01 10:00 UTC",
        "deadline": "2026-03-04 10:00 UTC",
    }
    late = {**base, "overdue": True, "left_seconds": 5 * 86400 + 2 * 3600 + 59}
    soon = {**base, "overdue": False, "left_seconds": 10 * 3600 + 30 * 60}
    for context, wanted in ((late, overdue), (soon, running)):
        chosen, _, text, html = render_email("security_deadline", language, context)
        assert chosen == language
        assert wanted in text and wanted in html
    if language == "de":
        assert "days" not in render_email("security_deadline", "de", late)[2]
