"""The appliance's image, checked without a Docker engine: the Dockerfile (pinned bases, a
non-root user, a health check, every pip install against the hashed lock) and the lock against
pyproject.toml's dependencies, each check shown to catch a broken copy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parents[2]
DOCKERFILE = REPOSITORY / "compose" / "Dockerfile"
LOCK = REPOSITORY / "compose" / "requirements.lock"


# --- the Dockerfile -----------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def dockerfile_problems(text: str) -> list[str]:
    steps = instructions(text)
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name, value)
    problems = []
    froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        tag = resolved.rpartition(":")[2]
        if ":" not in resolved or not re.match(r"\d+\.\d+\.\d+", tag):
            problems.append(f"FROM {image} ({resolved}) is not pinned to a full version")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last_from:]
    users = [rest for word, rest in final if word == "USER"]
    if not users or users[-1].split(":")[0] != "10001":
        problems.append(f"the final stage runs as {users[-1] if users else 'root'}, not 10001")
    if not any(word == "HEALTHCHECK" and "CMD" in rest for word, rest in final):
        problems.append("the final stage has no HEALTHCHECK")
    installs = [
        command.split()
        for word, rest in steps
        if word == "RUN"
        for command in rest.split("&&")
        if "pip install" in command
    ]
    if not any("compose/requirements.lock" in words for words in installs):
        problems.append("the lock is not installed")
    for words in installs:
        if words[-1] == "." and "--no-deps" in words:
            continue  # the appliance itself; its dependencies came from the lock
        if "--require-hashes" not in words:
            problems.append(f"{' '.join(words)}: installs without --require-hashes")
    entry = [rest for word, rest in final if word in {"ENTRYPOINT", "CMD"}]
    if entry != ['["tini", "--", "appliance"]', '["web"]']:
        problems.append(f"ENTRYPOINT/CMD are {entry}, not appliance web")
    return problems


def test_dockerfile_builds_a_pinned_non_root_image() -> None:
    """Pinned base images, the lock installed with hashes, a non-root user, a health check,
    and `appliance web` as the default command."""
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "runs as root"),
        ("USER 10001:10001\n", "", "runs as root"),
        (
            "ARG PYTHON_IMAGE=python:3.11.14-slim-trixie",
            "ARG PYTHON_IMAGE=python:3.11-slim",
            "not pinned",
        ),
        ("HEALTHCHECK", "# HEALTHCHECK", "no HEALTHCHECK"),
        ("--require-hashes --no-build-isolation", "--no-build-isolation", "--require-hashes"),
        ("--require-hashes --no-deps -r /tmp", "--no-deps -r /tmp", "setuptools.lock: installs"),
        ("--no-deps --no-build-isolation .", "--no-build-isolation .", "--require-hashes"),
        ("-r compose/requirements.lock", "-r compose/other.lock", "the lock is not installed"),
        ('CMD ["web"]', 'CMD ["worker"]', "not appliance web"),
    ],
)
def test_dockerfile_check_catches_a_broken_copy(old: str, new: str, expected: str) -> None:
    """Each Dockerfile check reports a copy broken the way it guards against."""
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


# --- the lock against pyproject.toml ------------------------------------------------------------


def lock_problems(pyproject: dict[str, Any], lock: str) -> list[str]:
    """Runtime dependencies the lock lacks, or pins outside their range; pins without hashes."""
    pinned = {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", lock, re.MULTILINE)
    }
    problems = []
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            problems.append(f"{requirement.name} is not in the lock")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(
                f"{requirement.name}=={pinned[name]} is outside {requirement.specifier}"
            )
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock):
        if re.match(r"[A-Za-z0-9._-]+==", block) and "--hash=sha256:" not in block:
            problems.append(f"{block.split()[0]} has no hash")
    return problems


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text())


def test_lock_covers_every_runtime_dependency() -> None:
    """Every dependency pyproject.toml names is pinned, within its range, with hashes; one
    added later without making the lock again fails here."""
    assert lock_problems(_pyproject(), LOCK.read_text()) == []


@pytest.fixture
def pyproject() -> dict[str, Any]:
    return _pyproject()


def test_lock_check_catches_a_dependency_added_later(pyproject: dict[str, Any]) -> None:
    """A new dependency, or a raised lower bound, that the lock does not have is reported."""
    pyproject["project"]["dependencies"] += ["sentry-sdk>=2", "msgspec>=99"]
    problems = lock_problems(pyproject, LOCK.read_text())
    assert "sentry-sdk is not in the lock" in problems
    assert any(p.startswith("msgspec==") and "outside >=99" in p for p in problems)


def test_lock_check_catches_a_pin_without_hash(pyproject: dict[str, Any]) -> None:
    """A pin someone added by hand, without its hash, is reported."""
    lock = LOCK.read_text() + "left-pad==1.0.0\n    # via nothing\n"
    assert "left-pad==1.0.0 has no hash" in lock_problems(pyproject, lock)
