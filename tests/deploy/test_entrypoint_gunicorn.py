"""entrypoint.sh with the real gunicorn and its exact arguments, serving a tiny stand-in WSGI app.

The stand-in lives at ``dashboard/app.py`` in a temporary directory (gunicorn imports from its
working directory first), so this checks the worker class, bind address, thread pool and graceful
SIGTERM path without needing the dashboard or a database.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.sh"
GUARD_S = 30

APP = """
import time

def server(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']
    if path == "/stream/events":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        def events():
            for n in range(600):
                yield f"data: {n}\\n\\n".encode()
                time.sleep(0.05)
        return events()
    start_response("404 Not Found", [])
    return [b""]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, dict[str, str]]]:
    (tmp_path / "dashboard").mkdir()
    (tmp_path / "dashboard" / "__init__.py").write_text("")
    (tmp_path / "dashboard" / "app.py").write_text(APP)
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PORT": str(port),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "GUNICORN_GRACEFUL_TIMEOUT_S": "2",
    }
    proc = subprocess.Popen(
        [str(ENTRYPOINT), "web"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, port, env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until_serving(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gunicorn did not start listening")


def test_gunicorn_holds_a_stream_open_while_serving_other_requests_then_drains_on_sigterm(
    web: tuple[subprocess.Popen[str], int, dict[str, str]],
) -> None:
    proc, port, env = web
    wait_until_serving(port, proc)
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    stream.request("GET", "/stream/events")
    response = stream.getresponse()
    first = response.read(9)

    probe = subprocess.run(
        [str(ENTRYPOINT), "healthcheck"], env=env, capture_output=True, text=True, timeout=GUARD_S, check=False
    )
    stream.close()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=GUARD_S)

    assert response.status == 200
    assert first == b"data: 0\n\n"
    assert probe.returncode == 0, probe.stderr  # answered while the stream held a thread
    assert proc.returncode == 0, output
    assert "Using worker: gthread" in output
    assert f"Listening at: http://0.0.0.0:{port}" in output
    assert "received SIGTERM" in output
