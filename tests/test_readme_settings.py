"""The README's Configuration table names every setting ``core/settings.py`` defines."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from core.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def configuration_table_names(text: str) -> set[str]:
    """Upper-case names in backticks in the first column of the tables under ``## Configuration``."""
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("|") and line.count("|") >= 3:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def test_the_parser_reads_only_the_first_column_of_the_configuration_section() -> None:
    text = ("## Intro\n| `ELSEWHERE` | x | y |\n\n## Configuration\n\n| Variable | Default | Meaning |\n|---|---|---|\n"
            "| `ONE`, `TWO` | `5` | uses `NOT_A_ROW_NAME` |\n\n## Tests\n| `AFTER` | x | y |\n")
    assert configuration_table_names(text) == {"ONE", "TWO"}


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    documented = configuration_table_names(README.read_text())
    missing = sorted(f.name.upper() for f in fields(Settings) if f.name.upper() not in documented)
    assert not missing, f"add a row to README.md's Configuration table for: {', '.join(missing)}"


def test_the_compose_read_only_role_settings_are_documented() -> None:
    documented = configuration_table_names(README.read_text())
    assert {"DASHBOARD_DB_USER", "DASHBOARD_DB_PASSWORD"} <= documented
