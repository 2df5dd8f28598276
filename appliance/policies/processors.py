"""The sub-processors page, derived from what is configured rather than written by hand.

A service outside the studio's server that receives personal data is a sub-processor: the SMTP
relay that carries e-mail, a backup repository off the premises, an object store run by a
cloud provider, a payment provider. Each is shown with its purpose and host only: never a user
name, password, key, bucket or path.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

import msgspec

from appliance.backups import repositories
from appliance.config import Settings
from appliance.notify.relay import effective_relay, is_loopback

__all__ = ["PROVIDERS", "Processor", "Processors", "host_of", "list_processors"]

# restic repositories whose location names a bucket or container, not a host (``b2:bucket:/p``,
# ``gs:bucket:/p``...): the provider is the processor, and the bucket name is never shown.
PROVIDERS = {
    "b2": "Backblaze B2",
    "azure": "Microsoft Azure",
    "gs": "Google Cloud Storage",
    "swift": "OpenStack Swift",
    "rclone": "rclone remote",
}


class Processor(msgspec.Struct, frozen=True):
    purpose: str
    host: str
    configured_in: str  # where an admin changes it
    region: str = ""


class Processors(msgspec.Struct, frozen=True):
    email: list[Processor]
    backups: list[Processor]
    storage: list[Processor]
    payments: list[Processor]  # no payment provider can be configured yet

    @property
    def count(self) -> int:
        return len(self.email) + len(self.backups) + len(self.storage) + len(self.payments)


def host_of(url: str) -> str:
    """The host of a URL or restic repository location, lower-case, without user, password,
    port, bucket or path; "" when there is none (a local folder). For a repository at a
    provider that is named by bucket (:data:`PROVIDERS`), the provider's name.

    Handles ``https://h/``, ``s3:https://h/bucket``, ``s3:h/bucket``, ``rest:https://u:p@h/``,
    ``sftp:user@h:/path``, ``sftp://user@h:22//path`` and ``b2:``, ``azure:``, ``gs:``,
    ``swift:``, ``rclone:`` repositories.
    """
    text = url.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or text.startswith(("/", ".", "~")):
        return ""
    if scheme.lower() in PROVIDERS:
        return PROVIDERS[scheme.lower()]
    if scheme in ("s3", "rest"):
        if "://" not in rest:  # s3:host/bucket
            rest = "//" + rest
        text = rest
    elif scheme == "sftp" and not rest.startswith("//"):
        # sftp:user@host:/path: the part before the first colon after the user
        authority = rest.rsplit("@", 1)[-1]
        if authority.startswith("["):
            return authority[1:].partition("]")[0].lower()
        return authority.partition(":")[0].lower()
    try:
        host = urllib.parse.urlsplit(text).hostname
    except ValueError:
        return ""
    return (host or "").lower()


def _outside(host: str) -> bool:
    """True for a host that may be another company's: not this machine, not a private
    address, not a single-label name (a container of the bundle such as ``minio``)."""
    if host in PROVIDERS.values():
        return True  # an rclone remote may be local, but nothing here can tell: listed
    if not host or is_loopback(host):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host.rstrip(".") and not host.endswith((".local", ".internal", ".lan"))
    return address.is_global


async def list_processors(settings: Settings) -> Processors:
    """Every configured service outside the studio's server that receives personal data."""
    email = []
    relay = await effective_relay(settings)
    relay_host = relay.host.strip().strip("[]").lower()
    if relay_host and _outside(relay_host):
        where = "Admin → Notifications" if relay.from_page else "the settings file"
        email.append(
            Processor(
                purpose="Delivers the studio's e-mail: share links, notices and reminders.",
                host=relay_host,
                configured_in=where,
            )
        )
    backups = []
    for target in await repositories.targets(settings):
        host = host_of(target.repository.url)
        if not _outside(host):
            continue
        region = target.repository.env.get("AWS_DEFAULT_REGION", "")
        backups.append(
            Processor(
                purpose="Keeps an encrypted copy of the backups (restic: the provider sees "
                "only encrypted data).",
                host=host,
                configured_in="Admin → Backups" if target.from_admin else "the settings file",
                region=region,
            )
        )
    storage = []
    if settings.storage.backend == "s3":
        host = host_of(settings.storage.endpoint)
        if _outside(host):
            storage.append(
                Processor(
                    purpose="Stores the photos and documents (originals and previews).",
                    host=host,
                    configured_in="the settings file",
                    region=settings.storage.region,
                )
            )
    return Processors(
        email=_unique(email), backups=_unique(backups), storage=_unique(storage), payments=[]
    )


def _unique(found: list[Processor]) -> list[Processor]:
    """One row per host and purpose: two repositories at one provider are one processor."""
    return list({(p.host, p.purpose): p for p in found}.values())
