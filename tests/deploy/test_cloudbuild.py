"""cloudbuild.yaml: valid Cloud Build config that builds, pushes and deploys with secrets by reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.schemas import schema_errors

ROOT = Path(__file__).resolve().parents[2]
SECRET_ENV = (
    "POSTGRESQL_LIVE_CONN_STRING",
    "TIMESCALE_LIVE_CONN_STRING",
    "CF_ACCESS_CLIENT_ID",
    "CF_ACCESS_CLIENT_SECRET",
)
# Substitutions Cloud Build itself provides.
BUILTINS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "SHORT_SHA",
    "COMMIT_SHA",
    "REPO_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REVISION_ID",
    "TRIGGER_NAME",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    return document


def step(build: dict[str, Any], step_id: str) -> dict[str, Any]:
    [found] = [s for s in build["steps"] if s.get("id") == step_id]
    return found


def flag(args: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


def test_cloudbuild_matches_the_cloud_build_schema(build: dict[str, Any]) -> None:
    assert schema_errors(build, "cloudbuild") == []


def test_steps_build_then_push_then_deploy(build: dict[str, Any]) -> None:
    assert [s["id"] for s in build["steps"]] == ["build", "push", "deploy-web", "deploy-workers"]
    assert step(build, "build")["args"][0] == "build"
    assert step(build, "push")["waitFor"] == ["build"]
    assert step(build, "deploy-web")["waitFor"] == ["push"]
    assert step(build, "deploy-workers")["waitFor"] == ["push"]


def test_deploys_use_the_image_that_was_built_and_pushed(build: dict[str, Any]) -> None:
    build_args = step(build, "build")["args"]
    tags = {a.split("=", 1)[1] for a in build_args if a.startswith("--tag=")}
    assert step(build, "push")["args"] == ["push", "--all-tags", "${_IMAGE}"]
    for deploy in ("deploy-web", "deploy-workers"):
        assert flag(step(build, deploy)["args"], "--image") in tags
    assert set(build["images"]) == tags


def test_web_is_a_cloud_run_service_and_workers_a_worker_pool(build: dict[str, Any]) -> None:
    web = step(build, "deploy-web")["args"]
    workers = step(build, "deploy-workers")["args"]

    assert web[:2] == ["run", "deploy"]
    assert flag(web, "--args") == "web"
    assert flag(web, "--port") == "5000"
    assert workers[:4] == ["beta", "run", "worker-pools", "deploy"]
    assert flag(workers, "--args") == "workers"


@pytest.mark.parametrize("deploy", ["deploy-web", "deploy-workers"])
def test_dsns_and_access_token_come_from_secret_manager(build: dict[str, Any], deploy: str) -> None:
    args = step(build, deploy)["args"]
    secrets = dict(item.split("=", 1) for item in flag(args, "--set-secrets").split(","))
    env_vars = dict(item.split("=", 1) for item in flag(args, "--set-env-vars").split(","))

    for name in SECRET_ENV:
        assert re.fullmatch(r"\$\{_SECRET_\w+\}:(latest|\d+)", secrets[name]), secrets[name]
        assert name not in env_vars  # a secret is never a plain environment variable
    if deploy == "deploy-workers":  # the web gets no destinations file (tests/deploy/test_least_privilege.py)
        assert secrets[env_vars["DESTINATIONS_FILE"]].startswith("${_SECRET_DESTINATIONS}:")
    assert {"CF_ACCESS_PG_HOSTNAME", "CF_ACCESS_TS_HOSTNAME"} <= set(env_vars)


def test_every_substitution_used_is_defined_or_built_in(build: dict[str, Any]) -> None:
    text = (ROOT / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", text))

    assert used - set(build["substitutions"]) - BUILTINS == set()
    assert all(name.startswith("_") for name in build["substitutions"])  # user-defined must start with _


def test_no_secret_value_or_secret_substitution_in_build_steps(build: dict[str, Any]) -> None:
    build_args = " ".join(step(build, "build")["args"])

    assert "SECRET" not in build_args
    assert "CONN_STRING" not in build_args
    assert "availableSecrets" not in build
    assert "secretEnv" not in str(build["steps"])
