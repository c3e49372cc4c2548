"""Dockerfile, read as a list of instructions (no Docker engine here): stages, layering, user, probe."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined, comments dropped, each tagged with its stage."""
    instructions: list[Instruction] = []
    stage = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)$", args, re.IGNORECASE)
            stage = match.group(1) if match else args
        instructions.append(Instruction(stage, keyword, " ".join(args.split())))
    assert not pending, "dangling line continuation"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def in_stage(instructions: list[Instruction], stage: str) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage]


def test_parser_reads_continuations_and_stages() -> None:
    parsed = parse_dockerfile("FROM a AS one\n# c\nRUN x \\\n  # inner\n  && y\nFROM b AS two\nUSER 1\n")

    assert parsed == [
        Instruction("one", "FROM", "a AS one"),
        Instruction("one", "RUN", "x && y"),
        Instruction("two", "FROM", "b AS two"),
        Instruction("two", "USER", "1"),
    ]


def test_multi_stage_on_slim_python_311(instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    args = {i.args.split("=")[0]: i.args.split("=", 1)[1] for i in instructions if i.keyword == "ARG" and "=" in i.args}

    assert [f.stage for f in froms] == ["cloudflared", "assets", "build", "runtime"]
    for stage in ("build", "runtime"):
        [base] = [f.args.split()[0] for f in froms if f.stage == stage]
        assert base == "python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}"
    assert args["PYTHON_VERSION"] == "3.11"
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", args["CLOUDFLARED_VERSION"])  # pinned, not :latest


def test_dashboard_assets_come_from_the_npm_package_json(instructions: list[Instruction]) -> None:
    assets = [(i.keyword, i.args) for i in in_stage(instructions, "assets")]
    assert ("COPY", "package.json ./") in assets
    assert any(k == "RUN" and a.startswith("npm install") for k, a in assets)
    runtime = [(i.keyword, i.args) for i in in_stage(instructions, "runtime")]
    assert ("COPY", "--from=assets /assets/node_modules /app/node_modules") in runtime


def test_dependencies_install_from_requirements_before_the_source_is_copied(instructions: list[Instruction]) -> None:
    build = in_stage(instructions, "build")
    keywords = [(i.keyword, i.args) for i in build]

    copy_req = keywords.index(("COPY", "requirements.txt /tmp/requirements.txt"))
    install = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and "pip install -r /tmp/requirements.txt" in a)
    assert copy_req < install
    assert not any(k == "COPY" and a.startswith(". ") for k, a in keywords)  # no source in the deps stage
    runtime = in_stage(instructions, "runtime")
    venv = next(n for n, i in enumerate(runtime) if i.keyword == "COPY" and "--from=build" in i.args)
    source = next(n for n, i in enumerate(runtime) if i.keyword == "COPY" and i.args.startswith(". "))
    assert venv < source


def test_runtime_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in in_stage(instructions, "runtime") if i.keyword == "USER"]

    assert users, "runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert any("useradd" in i.args and f"--uid {user}" in i.args for i in in_stage(instructions, "runtime"))


def test_healthcheck_probes_healthz_through_the_entrypoint(instructions: list[Instruction]) -> None:
    [health] = [i.args for i in in_stage(instructions, "runtime") if i.keyword == "HEALTHCHECK"]

    options, _, command = health.partition("CMD ")
    assert json.loads(command) == ["/app/entrypoint.sh", "healthcheck", "/healthz"]
    assert "--timeout=" in options
    assert "--interval=" in options


def test_entrypoint_and_default_command(instructions: list[Instruction]) -> None:
    runtime = in_stage(instructions, "runtime")
    [entrypoint] = [i.args for i in runtime if i.keyword == "ENTRYPOINT"]
    [cmd] = [i.args for i in runtime if i.keyword == "CMD"]

    assert json.loads(entrypoint) == ["/app/entrypoint.sh"]
    assert json.loads(cmd) == ["web"]
    assert any(i.keyword == "COPY" and i.args == "--chmod=0755 entrypoint.sh /app/entrypoint.sh" for i in runtime)
    assert any(i.keyword == "COPY" and i.args.startswith("--from=cloudflared ") for i in runtime)
    assert "EXPOSE" in {i.keyword for i in runtime}


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}

    assert {".env", "destinations.local.toml", ".git", ".venv", ".coldharbour"} <= ignored
    assert "requirements.txt" not in ignored
    assert "entrypoint.sh" not in ignored
