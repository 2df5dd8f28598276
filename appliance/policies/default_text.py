"""The privacy policy a new appliance starts with, for admins to adapt before publishing, in
English and in German.

It describes what this appliance does on the studio's own server: no hosting provider, no
tracking, sub-processors only where the studio configured them. The text uses the light markup
of :func:`appliance.policies.service.blocks`: ``# `` headings, ``- `` list items, blank lines
between paragraphs. The German text says the same as the English one, in the terms of the
German version of the GDPR (DSGVO).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_DE",
    "DEFAULT_SUMMARY",
    "DEFAULT_SUMMARY_DE",
    "default_policy",
]

DEFAULT_SUMMARY = "The appliance's default text; the studio has not adapted it yet."

DEFAULT_POLICY = """\
# Who we are

This policy explains how our studio handles personal data in the system we use for our \
galleries, clients and bookings. The system runs on a server that the studio itself operates; \
the studio is responsible for your data. You find our contact details at the end of this page.

# What we collect

- About our clients: name, e-mail address, phone number and postal address when you give them \
to us, notes about your bookings, and the photos we take for you.
- About visitors of a gallery link: which photos you select or download, and the time and \
network address of each visit, kept to protect your gallery against misuse.
- About our staff: name, e-mail address, sign-in records and what they change, kept in an \
audit log that nobody can alter unnoticed.

We do not use advertising, tracking or analytics, and our pages load nothing from other \
companies' servers.

# Why we use it

- To deliver the photos and services you booked, and to talk to you about them.
- To keep the system secure: sign-in protection, audit records and backups.
- To meet legal duties, such as keeping invoices for as long as the law requires.

We never sell your data and never use it for anything but running our studio.

# Who else receives it

Your data stays on the studio's server. Where we use a service provider, for example to send \
e-mail or to keep an encrypted copy of our backups elsewhere, they are listed on our \
sub-processors page, with what they do and where. They act only on our instructions.

# How long we keep it

- Galleries and client records: as long as we work together, then deleted on request or when \
the gallery expires.
- Deleted data is removed from our systems within 30 days. Encrypted backups are replaced in \
turn and hold deleted data only until their retention period ends.
- Sign-in and audit records: as long as needed to show the system was used properly.

# How we protect it

- Every connection is encrypted (HTTPS).
- Passwords are stored only as salted hashes; administrators sign in with a second factor.
- Galleries are reached only through private links that can expire or be revoked.
- Backups are encrypted and their restoration is tested regularly.
- If a security incident affects your data, we inform the supervisory authority within 72 \
hours and tell you without undue delay when it puts you at risk.

# Your rights

You can ask us at any time for a copy of your data, to correct it, or to delete it; you can \
also object to a use of your data or ask us to restrict it. From any gallery link you can send \
such a request directly. We answer within one month. You may also complain to a data \
protection supervisory authority.

# Changes to this policy

When we change this policy we publish a new version here; earlier versions stay available on \
this page.
"""

DEFAULT_SUMMARY_DE = "Der Standardtext der Appliance; das Studio hat ihn noch nicht angepasst."

DEFAULT_POLICY_DE = """\
# Wer wir sind

Diese Datenschutzerklärung erläutert, wie unser Studio personenbezogene Daten in dem System \
verarbeitet, das wir für unsere Galerien, Kundinnen und Kunden sowie Buchungen nutzen. Das \
System läuft auf einem Server, den das Studio selbst betreibt; verantwortlich für Ihre Daten \
ist das Studio. Unsere Kontaktdaten finden Sie am Ende dieser Seite.

# Welche Daten wir erheben

- Von unseren Kundinnen und Kunden: Name, E-Mail-Adresse, Telefonnummer und Postanschrift, \
soweit Sie sie uns mitteilen, Notizen zu Ihren Buchungen und die Fotos, die wir für Sie \
aufnehmen.
- Von Besucherinnen und Besuchern eines Galerie-Links: welche Fotos Sie auswählen oder \
herunterladen sowie Zeitpunkt und IP-Adresse jedes Besuchs; diese speichern wir, um Ihre \
Galerie vor Missbrauch zu schützen.
- Von unseren Mitarbeitenden: Name, E-Mail-Adresse, Aufzeichnungen ihrer Anmeldungen und was \
sie ändern, festgehalten in einem Prüfprotokoll, das niemand unbemerkt verändern kann.

Wir setzen keine Werbung, kein Tracking und keine Analysewerkzeuge ein, und unsere Seiten laden \
nichts von Servern anderer Unternehmen.

# Wofür wir sie verwenden

- Um die Fotos und Leistungen zu erbringen, die Sie gebucht haben, und um mit Ihnen darüber zu \
sprechen.
- Um das System sicher zu halten: Schutz der Anmeldung, Prüfprotokolle und Datensicherungen.
- Um gesetzliche Pflichten zu erfüllen, etwa Rechnungen so lange aufzubewahren, wie es das \
Gesetz verlangt.

Wir verkaufen Ihre Daten nie und verwenden sie ausschließlich für den Betrieb unseres Studios.

# Wer sie außerdem erhält

Ihre Daten bleiben auf dem Server des Studios. Setzen wir einen Dienstleister ein, etwa für den \
Versand von E-Mails oder um eine verschlüsselte Kopie unserer Datensicherungen an einem anderen \
Ort aufzubewahren, ist er auf unserer Seite der Auftragsverarbeiter („Sub-processors“) \
aufgeführt, mit seiner Aufgabe und dem Ort der Verarbeitung. Diese Dienstleister handeln \
ausschließlich nach unseren Weisungen.

# Wie lange wir sie speichern

- Galerien und Kundendaten: solange wir zusammenarbeiten; danach werden sie auf Ihren Antrag \
hin oder mit Ablauf der Galerie gelöscht.
- Gelöschte Daten werden innerhalb von 30 Tagen aus unseren Systemen entfernt. Verschlüsselte \
Datensicherungen werden nach und nach ersetzt und enthalten gelöschte Daten nur bis zum Ende \
ihrer Aufbewahrungsfrist.
- Anmelde- und Prüfprotokolle: so lange, wie sie nötig sind, um die ordnungsgemäße Nutzung des \
Systems nachzuweisen.

# Wie wir sie schützen

- Jede Verbindung ist verschlüsselt (HTTPS).
- Passwörter speichern wir nur als gesalzene Hashwerte; Administratorinnen und Administratoren \
melden sich mit einem zweiten Faktor an.
- Galerien sind nur über private Links erreichbar, die ablaufen oder widerrufen werden können.
- Datensicherungen sind verschlüsselt, und ihre Wiederherstellung wird regelmäßig getestet.
- Betrifft ein Sicherheitsvorfall Ihre Daten, melden wir ihn binnen 72 Stunden der \
Aufsichtsbehörde und benachrichtigen Sie unverzüglich, wenn er ein Risiko für Sie mit sich \
bringt.

# Ihre Rechte

Sie können jederzeit Auskunft über Ihre Daten und eine Kopie davon, ihre Berichtigung oder ihre \
Löschung verlangen; außerdem können Sie einer Verarbeitung Ihrer Daten widersprechen oder die \
Einschränkung der Verarbeitung verlangen. Über jeden Galerie-Link können Sie einen solchen \
Antrag direkt an uns richten. Wir antworten innerhalb eines Monats. Sie haben außerdem das \
Recht auf Beschwerde bei einer Datenschutz-Aufsichtsbehörde.

# Änderungen dieser Datenschutzerklärung

Wenn wir diese Datenschutzerklärung ändern, veröffentlichen wir hier eine neue Version; frühere \
Versionen bleiben auf dieser Seite abrufbar.
"""


def default_policy(language: str) -> tuple[str, str]:
    """``(body, summary)`` of the default text in ``language``; English unless it is German."""
    if language == "de":
        return DEFAULT_POLICY_DE, DEFAULT_SUMMARY_DE
    return DEFAULT_POLICY, DEFAULT_SUMMARY
