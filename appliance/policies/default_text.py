"""The privacy policy a new appliance starts with, for admins to adapt before publishing.

It describes what this appliance does on the studio's own server: no hosting provider, no
tracking, sub-processors only where the studio configured them. The text uses the light markup
of :func:`appliance.policies.service.blocks`: ``# `` headings, ``- `` list items, blank lines
between paragraphs.
"""

from __future__ import annotations

__all__ = ["DEFAULT_POLICY", "DEFAULT_SUMMARY"]

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
