"""Print the A and AAAA records of a name, asked of a DNS server directly, one a line.

install.sh runs this when neither dig nor host is installed: Python's own resolver
(getaddrinfo) reads /etc/hosts first, which names the server's own host 127.0.1.1 and may hold
a split-horizon address, so it could not tell what the internet sees.

Usage: python3 dns_query.py NAME [SERVER]; SERVER defaults to the first nameserver of
/etc/resolv.conf, FOTOSTUDIO_NAMESERVER=HOST:PORT overrides both (for the installer's tests).
Exit status 0 with no output when the name has no such records; 1 when no server answered.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import struct
import sys
from pathlib import Path

TYPES = {1: socket.AF_INET, 28: socket.AF_INET6}  # A, AAAA


def query(name: str, rtype: int) -> tuple[int, bytes]:
    """A recursive query for NAME's records of RTYPE: its id and its bytes."""
    ident = secrets.randbelow(0x10000)
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired
    labels = b"".join(bytes([len(p)]) + p for p in name.rstrip(".").encode("idna").split(b"."))
    return ident, header + labels + b"\0" + struct.pack("!HH", rtype, 1)


def skip_name(message: bytes, offset: int) -> int:
    """The offset after a (possibly compressed) name."""
    while True:
        length = message[offset]
        if length >= 0xC0:  # a pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def addresses(message: bytes, ident: int) -> list[str]:
    """The A and AAAA records in an answer's answer section."""
    got, flags, questions, answers = struct.unpack("!HHHH", message[:8])
    if got != ident or not flags & 0x8000:
        raise ValueError("not the answer to our question")
    if flags & 0x000F not in (0, 3):  # NOERROR, NXDOMAIN
        raise ValueError(f"the server answered with error {flags & 0x000F}")
    offset = 12
    for _ in range(questions):
        offset = skip_name(message, offset) + 4
    found = []
    for _ in range(answers):
        offset = skip_name(message, offset)
        rtype, _class, _ttl, length = struct.unpack("!HHIH", message[offset : offset + 10])
        offset += 10
        if rtype in TYPES:
            found.append(socket.inet_ntop(TYPES[rtype], message[offset : offset + length]))
        offset += length
    return found


def default_server() -> tuple[str, int]:
    override = os.environ.get("FOTOSTUDIO_NAMESERVER", "")
    if override:
        host, _, port = override.rpartition(":")
        return host, int(port)
    if len(sys.argv) > 2:
        return sys.argv[2], 53
    with Path("/etc/resolv.conf").open(encoding="utf-8") as conf:
        for line in conf:
            words = line.split()
            if words[:1] == ["nameserver"] and len(words) > 1:
                return words[1], 53
    return "127.0.0.1", 53


def main() -> int:
    name = sys.argv[1]
    host, port = default_server()
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    found: list[str] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        for rtype in TYPES:
            ident, message = query(name, rtype)
            try:
                sock.sendto(message, (host, port))
                found += addresses(sock.recv(4096), ident)
            except (OSError, ValueError, struct.error, IndexError) as exc:
                print(f"dns_query: no answer from {host} for {name}: {exc}", file=sys.stderr)
                return 1
    print("\n".join(sorted(set(found))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
