"""docker-compose.yml: valid against the Compose Specification and wired as the stack needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.destinations import load_destinations
from tests.deploy.schemas import schema_errors

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("simulator", "manager", "ingester", "web")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose, "compose-spec") == []


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "web": {**compose["services"]["web"], "dependson": []}}}

    assert any("dependson" in error for error in schema_errors(broken, "compose-spec"))


def test_services_are_the_documented_set(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"db", "db-roles", "redis", *APP_SERVICES}


def test_db_is_timescaledb_with_a_named_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]

    assert db["image"].startswith("timescale/timescaledb:")
    [volume] = db["volumes"]
    name, _, target = volume.partition(":")
    assert name in compose["volumes"]
    assert target == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_optional_services_sit_behind_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]

    assert services["redis"]["profiles"] == ["redis"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert all("profiles" not in services[name] for name in ("db", "manager", "ingester", "web"))


@pytest.mark.parametrize(
    ("service", "command"),
    [("web", ["web"]), ("manager", ["manager"]), ("ingester", ["ingester"]), ("simulator", ["simulator"])],
)
def test_one_image_serves_every_role_and_the_command_decides(
    compose: dict[str, Any], service: str, command: list[str]
) -> None:
    spec = compose["services"][service]

    assert spec["image"] == compose["services"]["web"]["image"]
    assert spec["build"]["context"] == "."
    assert spec["command"][: len(command)] == command


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_point_at_the_db_service_and_only_workers_read_env(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]

    if service == "web":  # least privilege: tests/deploy/test_least_privilege.py
        assert "env_file" not in spec
    else:
        assert {"path": ".env", "required": False} in spec["env_file"]
    for name in ("POSTGRESQL_LIVE_CONN_STRING", "TIMESCALE_LIVE_CONN_STRING"):
        assert "@db:5432/" in spec["environment"][name]


@pytest.mark.parametrize("service", ["manager", "ingester", "web"])
def test_workers_and_web_wait_for_a_healthy_database(compose: dict[str, Any], service: str) -> None:
    depends_on = compose["services"][service]["depends_on"]

    assert depends_on["db"]["condition"] == "service_healthy"
    optional = {name: dep for name, dep in depends_on.items() if name in ("redis", "simulator")}
    assert all(dep.get("required") is False for dep in optional.values())  # profiles may be off


def test_web_publishes_port_5000_and_probes_healthz(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]

    assert web["environment"]["PORT"] == "5000"
    assert any(str(port).endswith(":5000") for port in web["ports"])
    assert web["healthcheck"]["test"][-2:] == ["healthcheck", "/healthz"]
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["manager", "ingester", "simulator"])
def test_http_less_roles_do_not_inherit_the_web_healthcheck(compose: dict[str, Any], service: str) -> None:
    assert compose["services"][service]["healthcheck"] == {"disable": True}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_source_is_mounted_and_watched_for_development(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]

    assert {"type": "bind", "source": ".", "target": "/app", "read_only": True} in spec["volumes"]
    watched = {entry["path"]: entry["action"] for entry in spec["develop"]["watch"]}
    if service in ("manager", "ingester"):
        assert watched["./workers"] == "restart"
        assert watched["./core"] == "restart"
    if service == "web":
        assert watched["./requirements.txt"] == "rebuild"
        assert spec["environment"]["WEB_RELOAD"].startswith("${WEB_RELOAD:-true")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ``${VAR}`` / ``${VAR:-default}`` substitution (the subset this file uses)."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def test_demo_destinations_load_and_point_at_the_simulator_service(compose: dict[str, Any], tmp_path: Path) -> None:
    content = interpolate(compose["configs"]["demo-destinations"]["content"], {})
    path = tmp_path / "destinations.demo.toml"
    path.write_text(content)

    destinations = load_destinations(path, environ={})

    assert [d.name for d in destinations] == ["Momentum", "Mean Reversion"]
    assert {d.base_url for d in destinations} == {"http://simulator:8765"}


def test_simulator_serves_the_demo_destinations_to_other_containers(compose: dict[str, Any]) -> None:
    simulator = compose["services"]["simulator"]
    [config] = [c for c in simulator["configs"] if c["source"] == "demo-destinations"]
    args = dict(a.split("=", 1) for a in simulator["command"][1:] if "=" in a)

    assert args["--destinations"] == config["target"]
    assert args["--host"] == "0.0.0.0"
    assert args["--zmq-url"].startswith("tcp://0.0.0.0:")
    assert "--all-destinations" in simulator["command"]  # base_url names the service, not 0.0.0.0
    port = interpolate(args["--port"], {})
    assert any(interpolate(str(p), {}).endswith(f":{port}") for p in simulator["ports"])
