"""config.example.toml stays in step with the Settings structs and documents every key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import SECRET_KEYS, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=")
_SECRET_FILE_KEYS = {f"{section}.{key}_file": f"{section}.{key}" for section, key in SECRET_KEYS}


def settings_keys(struct: type[msgspec.Struct] = Settings, prefix: str = "") -> set[str]:
    """Every leaf field of the settings structs as a dotted key."""
    keys: set[str] = set()
    for field in msgspec.structs.fields(struct):
        name = f"{prefix}{field.name}"
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            keys |= settings_keys(field.type, f"{name}.")
        else:
            keys.add(name)
    return keys


def flatten(table: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in table.items():
        if isinstance(value, dict):
            keys |= flatten(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def documented_key(key: str) -> str:
    """A ``<secret>_file`` entry documents the secret setting itself."""
    return _SECRET_FILE_KEYS.get(key, key)


def read_example() -> str:
    assert EXAMPLE.is_file(), f"{EXAMPLE.name} is missing next to pyproject.toml"
    return EXAMPLE.read_text(encoding="utf-8")


def test_settings_keys_walk_finds_nested_fields() -> None:
    """The walk over the settings structs yields dotted leaf keys such as server.port."""
    keys = settings_keys()
    assert {"server.port", "database.url", "security.secret_key", "logging.level"} <= keys
    assert "server" not in keys


def test_example_config_loads_without_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """config.example.toml is a valid configuration on its own."""
    read_example()
    monkeypatch.chdir(tmp_path)
    settings = load_settings(EXAMPLE, environ={})
    assert isinstance(settings, Settings)


def test_example_config_names_exactly_the_settings_fields() -> None:
    """Every setting appears in config.example.toml, and nothing else does."""
    example_text = read_example()
    example = {documented_key(key) for key in flatten(tomllib.loads(example_text))}
    expected = settings_keys()
    missing = sorted(expected - example)
    unknown = sorted(example - expected)
    assert not missing and not unknown, f"missing from example: {missing}; unknown: {unknown}"


def test_every_example_key_is_preceded_by_a_comment() -> None:
    """Each key line in config.example.toml has a comment line right above it."""
    example_text = read_example()
    lines = example_text.splitlines()
    section = ""
    seen: set[str] = set()
    undocumented: list[str] = []
    for number, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            section = f"{header.group(1)}."
            continue
        key = _KEY.match(line)
        if not key:
            continue
        dotted = f"{section}{key.group(1)}"
        seen.add(dotted)
        previous = next((text for text in reversed(lines[:number]) if text.strip()), "")
        if not previous.lstrip().startswith("#"):
            undocumented.append(f"line {number + 1}: {dotted}")
    assert seen == flatten(tomllib.loads(example_text)), "could not locate every key line"
    assert not undocumented, f"keys without a comment above them: {undocumented}"


CONFIGURATION_DOC = EXAMPLE.parent / "docs" / "configuration.md"
_DOC_SECTION = re.compile(r"^###\s+`\[([a-z_]+)\]`")
_CODE = re.compile(r"`([^`]*)`")


def documented_defaults(markdown: str) -> dict[str, Any]:
    """The keys and defaults of the tables under each "### `[section]`" heading of the docs.

    A row may name several keys (`a`, `b`) with one default for all or one default each.
    """
    documented: dict[str, Any] = {}
    section = ""
    for line in markdown.splitlines():
        heading = _DOC_SECTION.match(line)
        if heading:
            section = heading.group(1)
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not section or len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = _CODE.findall(cells[0])
        defaults = [tomllib.loads(f"v = {literal}")["v"] for literal in _CODE.findall(cells[1])]
        if len(defaults) == 1:
            defaults *= len(keys)
        assert len(defaults) == len(keys), f"docs/configuration.md: defaults of {keys} unclear"
        for key, default in zip(keys, defaults, strict=True):
            documented[f"{section}.{key}"] = default
    return documented


def example_defaults(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            values |= example_defaults(value, f"{prefix}{name}.")
        else:
            values[documented_key(f"{prefix}{name}")] = value
    return values


def test_configuration_doc_lists_every_key_with_the_example_default() -> None:
    """docs/configuration.md documents exactly the keys of config.example.toml, with the same
    defaults, so neither can change without the other."""
    example = example_defaults(tomllib.loads(read_example()))
    documented = documented_defaults(CONFIGURATION_DOC.read_text(encoding="utf-8"))
    missing = sorted(set(example) - set(documented))
    unknown = sorted(set(documented) - set(example))
    assert not missing and not unknown, f"not in the docs: {missing}; not a setting: {unknown}"
    wrong = {k: (documented[k], v) for k, v in example.items() if documented[k] != v}
    assert not wrong, f"docs default differs from config.example.toml (docs, example): {wrong}"


def test_doc_table_reader_sees_a_changed_default() -> None:
    """The reader of the docs' tables is precise enough to notice one changed default."""
    text = "### `[server]`\n\n| key | default | meaning |\n|---|---|---|\n"
    text += '| `host`, `port` | `"127.0.0.1"`, `8000` | where |\n| `a`, `b` | `""` | both |\n'
    assert documented_defaults(text) == {
        "server.host": "127.0.0.1",
        "server.port": 8000,
        "server.a": "",
        "server.b": "",
    }
    assert documented_defaults(text.replace("`8000`", "`9000`"))["server.port"] == 9000
