""".env.example documents every variable the deployment files read and every setting."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
# Names a shell or Cloud Build provides; they are not configuration.
NOT_CONFIGURATION = {
    "entrypoint.sh": {"EPOCHREALTIME"},
    "docker-compose.yml": set(),
    "cloudbuild.yaml": {"PROJECT_ID", "BUILD_ID"},
}
_REFERENCE = re.compile(r"(?<!\$)\$\{?([A-Z_][A-Z0-9_]*)")


def documented() -> set[str]:
    """Names assigned in .env.example, including the commented Cloud Build substitutions."""
    return set(re.findall(r"^(?:# )?([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def referenced(path: Path) -> set[str]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    return set(_REFERENCE.findall(text))


def test_reference_pattern_finds_both_forms_and_skips_escapes() -> None:
    assert set(_REFERENCE.findall("a ${FOO:-x} $BAR $$BAZ ${lower} $1")) == {"FOO", "BAR"}


@pytest.mark.parametrize("name", sorted(NOT_CONFIGURATION))
def test_every_variable_referenced_is_documented(name: str) -> None:
    names = referenced(ROOT / name) - NOT_CONFIGURATION[name]

    assert names, f"found no variable references in {name}"
    assert names - documented() == set()


def test_every_setting_is_documented() -> None:
    settings = {f.name.upper() for f in fields(Settings)}

    assert settings - documented() == set()


def test_env_example_loads_to_the_default_settings() -> None:
    assert load_settings(environ={}, env_file=ENV_EXAMPLE) == Settings()


def test_env_example_holds_no_secret_values() -> None:
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )

    for name in (
        "CF_ACCESS_CLIENT_ID",
        "CF_ACCESS_CLIENT_SECRET",
        "POSTGRESQL_LIVE_CONN_STRING",
        "TIMESCALE_LIVE_CONN_STRING",
        "POSTGRESQL_LIVE_SQLALCHEMY",
        "TIMESCALE_LIVE_SQLALCHEMY",
    ):
        assert values[name] == "", name
