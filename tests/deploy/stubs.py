"""Stand-ins for ``cloudflared``, ``gunicorn`` and ``python`` that entrypoint.sh finds first on PATH.

Each stub appends one JSON line per event to ``$STUB_EVENTS`` so a test can read what ran, with which
arguments and environment, and in which order things started, stopped and drained.

cloudflared (``STUB_CLOUDFLARED_MODE``): ``listen`` (default; listens on the ``--url`` port after
``STUB_LISTEN_DELAY_S``), ``silent`` (never listens), ``crash`` (exits 3 at once), ``die-on-file``
(listens, then exits 4 once the file ``STUB_DIE_FILE`` exists).
gunicorn / python (``STUB_APP_MODE``): ``exit`` (default; exits with ``STUB_APP_EXIT``) or ``serve``
(runs until SIGTERM, then drains for a moment and exits 0). Both record whether the ports in
``STUB_CHECK_PORTS`` accepted connections when they started.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

_COMMON = r"""
import json, os, signal, socket, sys, time

def event(what, **extra):
    line = json.dumps({"prog": PROG, "what": what, "pid": os.getpid(), **extra})
    with open(os.environ["STUB_EVENTS"], "a") as fh:
        fh.write(line + "\n")

def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
        return True
    except OSError:
        return False
"""

_CLOUDFLARED = r"""
PROG = "cloudflared"

def on_term(signum, frame):
    event("term")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
argv = sys.argv[1:]
url = argv[argv.index("--url") + 1] if "--url" in argv else ""
mode = os.environ.get("STUB_CLOUDFLARED_MODE", "listen")
event("start", argv=argv,
      token_id=os.environ.get("TUNNEL_SERVICE_TOKEN_ID"),
      token_secret=os.environ.get("TUNNEL_SERVICE_TOKEN_SECRET"))
if mode == "crash":
    event("exit", status=3)
    sys.exit(3)
if mode == "silent":
    while True:
        time.sleep(0.05)
time.sleep(float(os.environ.get("STUB_LISTEN_DELAY_S", "0")))
host, port = url.rsplit(":", 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, int(port)))
server.listen(16)
server.settimeout(0.05)
event("listening", port=int(port))
die_file = os.environ.get("STUB_DIE_FILE", "")
while True:
    if mode == "die-on-file" and die_file and os.path.exists(die_file):
        event("exit", status=4)
        sys.exit(4)
    try:
        conn, _ = server.accept()
        conn.close()
    except socket.timeout:
        pass
"""

_APP = r"""
PROG = os.path.basename(sys.argv[0])
draining = False

def on_term(signum, frame):
    global draining
    draining = True

signal.signal(signal.SIGTERM, on_term)
ports = [p for p in os.environ.get("STUB_CHECK_PORTS", "").split(",") if p]
event("start", argv=sys.argv[1:], ports_open={p: port_open(p) for p in ports},
      env={k: os.environ.get(k) for k in ("PORT", "WEB_RELOAD")},
      token_in_env=sorted(k for k in ("CF_ACCESS_CLIENT_ID", "CF_ACCESS_CLIENT_SECRET") if k in os.environ))
if os.environ.get("STUB_APP_MODE", "exit") == "exit":
    sys.exit(int(os.environ.get("STUB_APP_EXIT", "0")))
while not draining:
    time.sleep(0.02)
event("term")
time.sleep(0.2)  # pretend to flush buffers and release locks
event("drained")
sys.exit(0)
"""


def write_stubs(bin_dir: Path) -> None:
    """Write executable ``cloudflared``, ``gunicorn`` and ``python`` stubs into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    # An absolute interpreter path: the ``python`` stub must not resolve to itself.
    shebang = f"#!{sys.executable}\n"
    for name, body in (("cloudflared", _CLOUDFLARED), ("gunicorn", _APP), ("python", _APP)):
        path = bin_dir / name
        path.write_text(shebang + _COMMON + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def read_events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill_leftovers(events: list[dict[str, object]], bin_dir: Path) -> list[int]:
    """SIGKILL stub processes (by recorded pid) still alive; returns the pids killed.

    A pid is only killed while its command line still names ``bin_dir``, so a recycled pid is safe.
    """
    killed = []
    for pid in {int(str(e["pid"])) for e in events if e.get("what") == "start"}:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(bin_dir).encode() not in cmdline:
            continue
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed
