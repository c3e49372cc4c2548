"""entrypoint.sh, run for real with stub ``cloudflared``/``gunicorn``/``python`` first on PATH."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.stubs import kill_leftovers, read_events, write_stubs

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.sh"

CF_ID = "cf-id-0d9c1f2e8b7a.access"
CF_SECRET = "cf-secret-Zq8#wX2!mN5$pL0"
PG_HOST = "pg.example.test"
TS_HOST = "ts.example.test"
GUARD_S = 20  # upper bound for anything to happen; a guard against hangs, not a timing assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    returncode: int
    output: str  # stdout + stderr
    events: list[dict[str, object]]

    def of(self, prog: str, what: str | None = None) -> list[dict[str, object]]:
        return [e for e in self.events if e["prog"] == prog and (what is None or e["what"] == what)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Harness:
    """Runs entrypoint.sh in a clean environment whose PATH starts with the stubs."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.events_file = tmp_path / "events.jsonl"
        write_stubs(self.bin)
        self.env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "STUB_EVENTS": str(self.events_file),
        }
        self.procs: list[subprocess.Popen[str]] = []

    def with_tunnels(self, **extra: str) -> dict[str, str]:
        return {
            "CF_ACCESS_CLIENT_ID": CF_ID,
            "CF_ACCESS_CLIENT_SECRET": CF_SECRET,
            "CF_ACCESS_PG_HOSTNAME": PG_HOST,
            "CF_ACCESS_TS_HOSTNAME": TS_HOST,
            **extra,
        }

    def events(self) -> list[dict[str, object]]:
        return read_events(self.events_file)

    def run(self, *args: str, **env: str) -> Result:
        done = subprocess.run(
            [str(ENTRYPOINT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=GUARD_S,
            check=False,
        )
        return Result(done.returncode, done.stdout + done.stderr, self.events())

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(ENTRYPOINT), *args],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # as a container's PID 1 starts: SIGINT at its default. A test run launched as a
            # background job (`make test &`) inherits SIGINT ignored, and a shell cannot trap a
            # signal that was ignored when it started.
            preexec_fn=_default_sigint,
        )
        self.procs.append(proc)
        return proc

    def wait_for_event(self, prog: str, what: str) -> None:
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            if any(e["prog"] == prog and e["what"] == what for e in self.events()):
                return
            time.sleep(0.02)
        raise AssertionError(f"no {prog}/{what} event within {GUARD_S}s: {self.events()}")

    def finish(self, proc: subprocess.Popen[str]) -> Result:
        output, _ = proc.communicate(timeout=GUARD_S)
        return Result(proc.returncode, output, self.events())

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kill_leftovers(self.events(), self.bin)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.cleanup()


def assert_no_secrets(result: Result) -> None:
    assert CF_SECRET not in result.output
    assert CF_ID not in result.output


# ---- the script itself ----------------------------------------------------------------------------


def test_entrypoint_is_an_executable_strict_bash_script() -> None:
    text = ENTRYPOINT.read_text()

    assert os.access(ENTRYPOINT, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "set -x" not in text


def test_entrypoint_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required for this test: apt-get install -y shellcheck (make test installs it)"

    done = subprocess.run([shellcheck, "--shell=bash", str(ENTRYPOINT)], capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stdout + done.stderr


# ---- without secrets: one warning, no tunnels -------------------------------------------------------


def test_without_secrets_warns_once_and_serves_web_with_gunicorn(harness: Harness) -> None:
    result = harness.run()

    assert result.returncode == 0, result.output
    assert result.output.count("WARNING") == 1
    assert "CF_ACCESS_CLIENT_ID" in result.output
    assert result.of("cloudflared") == []
    [start] = result.of("gunicorn", "start")
    argv = start["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:5000"
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    assert int(argv[argv.index("--threads") + 1]) >= 16
    assert argv[-1] == "dashboard.app:server"
    assert "--reload" not in argv


@pytest.mark.parametrize(
    ("env", "bind", "reload"),
    [
        ({"PORT": "8123"}, "0.0.0.0:8123", False),
        ({"WEB_RELOAD": "true"}, "0.0.0.0:5000", True),
        ({"WEB_RELOAD": "1"}, "0.0.0.0:5000", True),
        ({"WEB_RELOAD": "false"}, "0.0.0.0:5000", False),
        ({"WEB_RELOAD": ""}, "0.0.0.0:5000", False),
    ],
)
def test_web_honours_port_and_web_reload(harness: Harness, env: dict[str, str], bind: str, reload: bool) -> None:
    result = harness.run("web", **env)

    assert result.returncode == 0, result.output
    [start] = result.of("gunicorn", "start")
    argv = start["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--bind") + 1] == bind
    assert ("--reload" in argv) is reload


@pytest.mark.parametrize(("env", "name"), [({"WEB_RELOAD": "maybe"}, "WEB_RELOAD"), ({"PORT": "http"}, "PORT")])
def test_web_rejects_bad_values_naming_the_variable(harness: Harness, env: dict[str, str], name: str) -> None:
    result = harness.run("web", **env)

    assert result.returncode != 0
    assert name in result.output
    assert result.of("gunicorn") == []


def test_extra_web_arguments_reach_gunicorn_before_the_app(harness: Harness) -> None:
    result = harness.run("web", "--log-level", "debug")

    [start] = result.of("gunicorn", "start")
    argv = start["argv"]
    assert isinstance(argv, list)
    assert argv[-3:] == ["--log-level", "debug", "dashboard.app:server"]


@pytest.mark.parametrize(
    ("args", "argv"),
    [
        (["workers"], ["-m", "workers"]),
        (["ingester"], ["-m", "workers", "ingester"]),
        (["manager"], ["-m", "workers", "manager"]),
        (["workers", "backfill", "--destination", "main"], ["-m", "workers", "backfill", "--destination", "main"]),
        (["simulator", "--port", "8000"], ["-m", "simulator", "--port", "8000"]),
        (["python", "-m", "scripts.anything"], ["-m", "scripts.anything"]),
    ],
)
def test_roles_run_the_matching_python_module(harness: Harness, args: list[str], argv: list[str]) -> None:
    result = harness.run(*args)

    assert result.returncode == 0, result.output
    [start] = result.of("python", "start")
    assert start["argv"] == argv
    assert result.of("gunicorn") == []


def test_exit_status_of_the_command_is_the_container_exit_status(harness: Harness) -> None:
    result = harness.run("manager", STUB_APP_EXIT="7")

    assert result.returncode == 7
    assert "manager exited with status 7" in result.output


# ---- with secrets: tunnels first ----------------------------------------------------------------------


def test_tunnels_listen_on_15433_and_15434_before_the_command_starts(harness: Harness) -> None:
    env = harness.with_tunnels(STUB_LISTEN_DELAY_S="0.5", STUB_CHECK_PORTS="15433,15434")

    result = harness.run("web", **env)

    assert result.returncode == 0, result.output
    starts = result.of("cloudflared", "start")
    assert sorted(s["argv"] for s in starts) == sorted(  # type: ignore[type-var]
        [
            ["access", "tcp", "--hostname", PG_HOST, "--url", "127.0.0.1:15433"],
            ["access", "tcp", "--hostname", TS_HOST, "--url", "127.0.0.1:15434"],
        ]
    )
    assert all(s["token_id"] == CF_ID and s["token_secret"] == CF_SECRET for s in starts)
    [app] = result.of("gunicorn", "start")
    assert app["ports_open"] == {"15433": True, "15434": True}
    assert len(result.of("cloudflared", "term")) == 2  # stopped once the command exited
    assert "WARNING" not in result.output
    assert_no_secrets(result)


def test_secrets_never_reach_a_command_line_or_the_output(harness: Harness) -> None:
    pg, ts = free_port(), free_port()
    env = harness.with_tunnels(CF_ACCESS_PG_LOCAL_PORT=str(pg), CF_ACCESS_TS_LOCAL_PORT=str(ts))

    result = harness.run("ingester", **env)

    assert result.returncode == 0, result.output
    for start in result.of("cloudflared", "start"):
        assert CF_ID not in " ".join(start["argv"])  # type: ignore[arg-type]
        assert CF_SECRET not in " ".join(start["argv"])  # type: ignore[arg-type]
    assert_no_secrets(result)


@pytest.mark.parametrize(("role", "prog"), [("web", "gunicorn"), ("manager", "python")])
def test_the_service_token_never_reaches_the_command(harness: Harness, role: str, prog: str) -> None:
    env = harness.with_tunnels(CF_ACCESS_PG_LOCAL_PORT=str(free_port()), CF_ACCESS_TS_LOCAL_PORT=str(free_port()))

    result = harness.run(role, **env)

    assert result.returncode == 0, result.output
    assert all(s["token_id"] == CF_ID for s in result.of("cloudflared", "start"))  # cloudflared got it
    [app] = result.of(prog, "start")
    assert app["token_in_env"] == []  # the command did not


def test_timescale_tunnel_is_skipped_without_its_hostname(harness: Harness) -> None:
    pg = free_port()
    env = harness.with_tunnels(CF_ACCESS_PG_LOCAL_PORT=str(pg), CF_ACCESS_TS_HOSTNAME="")

    result = harness.run("manager", **env)

    assert result.returncode == 0, result.output
    [start] = result.of("cloudflared", "start")
    assert start["argv"] == ["access", "tcp", "--hostname", PG_HOST, "--url", f"127.0.0.1:{pg}"]
    assert "CF_ACCESS_TS_HOSTNAME not set" in result.output


@pytest.mark.parametrize(
    ("present", "missing", "value"),
    [
        ("CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET", CF_ID),
        ("CF_ACCESS_CLIENT_SECRET", "CF_ACCESS_CLIENT_ID", CF_SECRET),
    ],
)
def test_half_a_service_token_is_an_error_naming_the_missing_half(
    harness: Harness, present: str, missing: str, value: str
) -> None:
    result = harness.run("web", **{present: value, "CF_ACCESS_PG_HOSTNAME": PG_HOST})

    assert result.returncode != 0
    assert f"{missing} is not set" in result.output
    assert value not in result.output
    assert result.events == []


def test_secrets_without_a_postgresql_hostname_is_an_error(harness: Harness) -> None:
    result = harness.run("web", **harness.with_tunnels(CF_ACCESS_PG_HOSTNAME=""))

    assert result.returncode != 0
    assert "CF_ACCESS_PG_HOSTNAME is not set" in result.output
    assert result.events == []
    assert_no_secrets(result)


def test_port_wait_is_bounded_and_fails_clearly(harness: Harness) -> None:
    pg, ts = free_port(), free_port()
    env = harness.with_tunnels(
        CF_ACCESS_PG_LOCAL_PORT=str(pg),
        CF_ACCESS_TS_LOCAL_PORT=str(ts),
        CF_ACCESS_TUNNEL_WAIT_S="1",
        STUB_CLOUDFLARED_MODE="silent",
    )

    result = harness.run("web", **env)

    assert result.returncode == 1
    assert f"did not accept connections on 127.0.0.1:{pg} within 1s" in result.output
    assert result.of("gunicorn") == []
    assert len(result.of("cloudflared", "term")) == 2  # no tunnel is left behind
    assert_no_secrets(result)


def test_a_tunnel_that_exits_during_the_wait_fails_at_once_with_its_status(harness: Harness) -> None:
    env = harness.with_tunnels(
        CF_ACCESS_PG_LOCAL_PORT=str(free_port()),
        CF_ACCESS_TS_HOSTNAME="",
        CF_ACCESS_TUNNEL_WAIT_S="600",
        STUB_CLOUDFLARED_MODE="crash",
    )

    result = harness.run("web", **env)

    assert result.returncode == 1
    assert "PostgreSQL tunnel (cloudflared) exited with status 3" in result.output
    assert result.of("gunicorn") == []


def test_a_local_port_already_in_use_is_refused(harness: Harness) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = harness.with_tunnels(CF_ACCESS_PG_LOCAL_PORT=str(port), CF_ACCESS_TS_HOSTNAME="")

        result = harness.run("web", **env)

    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.output
    assert result.of("cloudflared") == []


# ---- signals and supervision -------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "prog"), [("web", "gunicorn"), ("ingester", "python")])
def test_sigterm_is_forwarded_and_the_command_drains(harness: Harness, role: str, prog: str) -> None:
    proc = harness.start(role, STUB_APP_MODE="serve")
    harness.wait_for_event(prog, "start")

    proc.send_signal(signal.SIGTERM)
    result = harness.finish(proc)

    assert result.returncode == 0, result.output
    assert [e["what"] for e in result.of(prog)] == ["start", "term", "drained"]
    assert "received SIGTERM" in result.output


def test_sigint_reaches_the_command_as_sigterm(harness: Harness) -> None:
    proc = harness.start("manager", STUB_APP_MODE="serve")
    harness.wait_for_event("python", "start")

    proc.send_signal(signal.SIGINT)
    result = harness.finish(proc)

    assert result.returncode == 0, result.output
    assert [e["what"] for e in result.of("python")] == ["start", "term", "drained"]


def test_tunnels_stop_only_after_the_command_has_drained(harness: Harness) -> None:
    env = harness.with_tunnels(
        CF_ACCESS_PG_LOCAL_PORT=str(free_port()), CF_ACCESS_TS_LOCAL_PORT=str(free_port()), STUB_APP_MODE="serve"
    )
    proc = harness.start("manager", **env)
    harness.wait_for_event("python", "start")

    proc.send_signal(signal.SIGTERM)
    result = harness.finish(proc)

    assert result.returncode == 0, result.output
    order = [(e["prog"], e["what"]) for e in result.events if e["what"] in ("drained", "term")]
    assert order[:2] == [("python", "term"), ("python", "drained")]
    assert sorted(order[2:]) == [("cloudflared", "term"), ("cloudflared", "term")]
    assert_no_secrets(result)


def test_a_tunnel_dying_stops_the_command_and_fails_the_container(harness: Harness, tmp_path: Path) -> None:
    die_file = tmp_path / "die"
    env = harness.with_tunnels(
        CF_ACCESS_PG_LOCAL_PORT=str(free_port()),
        CF_ACCESS_TS_HOSTNAME="",
        STUB_CLOUDFLARED_MODE="die-on-file",
        STUB_DIE_FILE=str(die_file),
        STUB_APP_MODE="serve",
    )
    proc = harness.start("web", **env)
    harness.wait_for_event("gunicorn", "start")

    die_file.touch()
    result = harness.finish(proc)

    assert result.returncode == 1
    assert "PostgreSQL tunnel exited with status 4" in result.output
    assert [e["what"] for e in result.of("gunicorn")] == ["start", "term", "drained"]


# ---- healthcheck -----------------------------------------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        try:
            self.wfile.write(b'{"ok": true}')
        except ConnectionError:
            pass  # the probe hangs up after the status line, as it may

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"paths": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_healthcheck_passes_on_200_from_healthz(harness: Harness, health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server

    result = harness.run("healthcheck", PORT=str(port))

    assert result.returncode == 0, result.output
    assert handler.paths == ["/healthz"]
    assert "WARNING" not in result.output  # no tunnel logic for a probe


@pytest.mark.parametrize("status", [503, 500])
def test_healthcheck_fails_on_an_error_status(
    harness: Harness, health_server: tuple[int, type[_Health]], status: int
) -> None:
    port, handler = health_server
    handler.status = status

    result = harness.run("healthcheck", PORT=str(port))

    assert result.returncode == 1
    assert str(status) in result.output


def test_healthcheck_fails_when_nothing_listens(harness: Harness) -> None:
    port = free_port()

    result = harness.run("healthcheck", PORT=str(port))

    assert result.returncode == 1
    assert f"nothing accepts connections on 127.0.0.1:{port}" in result.output
