"""dashboard.auth: no auth, HTTP Basic with hashed users, Cloudflare Access JWT (RS256 against a
JWKS file or URL), /healthz exempt, security headers with Dash's CSP hashes, no secret leaks."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dash
import flask
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.security import generate_password_hash

from core.errors import ConfigError
from core.settings import Settings
from dashboard.auth import (
    CF_HEADER,
    AuthMode,
    build_csp,
    hash_password,
    install_auth,
    install_security_headers,
    load_auth_config,
)

PASSWORD = "correct horse battery staple"
FAST_METHOD = "pbkdf2:sha256:1000"  # tests only: production hashes use 600k iterations
AUD = "aud-tag-0123456789abcdef"
TEAM = "coldharbour.cloudflareaccess.com"


def make_app() -> flask.Flask:
    app = flask.Flask("auth-test")
    app.add_url_rule("/", "index", lambda: "home page")
    app.add_url_rule("/healthz", "healthz", lambda: {"ok": True})
    app.add_url_rule("/_dash-update-component", "cb", lambda: "callback", methods=["POST"])
    return app


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- no auth / configuration ---------------------------------------------------------------------


def test_no_auth_when_unset() -> None:
    app = make_app()
    config = install_auth(app, Settings(), environ={})
    assert config.mode is AuthMode.NONE
    assert app.test_client().get("/").status_code == 200


@pytest.mark.parametrize(("env", "message"), [
    ({"DASH_AUTH": "kerberos"}, "DASH_AUTH: expected"),
    ({"DASH_AUTH": "basic"}, "needs users"),
    ({"DASH_AUTH": "basic", "DASH_AUTH_USERS": "alice:hunter2"}, "not a password hash"),
    ({"DASH_AUTH": "basic", "DASH_AUTH_USERS": "alice"}, "expected user:hash"),
    ({"DASH_AUTH": "basic", "DASH_AUTH_USERS_FILE": "/nonexistent/users"}, "not found"),
    ({"DASH_AUTH": "cloudflare", "CF_ACCESS_TEAM_DOMAIN": TEAM}, "CF_ACCESS_AUD"),
    ({"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": AUD}, "CF_ACCESS_TEAM_DOMAIN"),
    ({"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": AUD, "CF_ACCESS_TEAM_DOMAIN": TEAM,
      "CF_ACCESS_JWKS_FILE": "/nonexistent/jwks.json"}, "cannot load"),
])
def test_misconfiguration_fails_closed_without_echoing_secrets(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        install_auth(make_app(), Settings(), environ=env)
    assert "hunter2" not in str(info.value)


def test_settings_take_precedence_over_environment(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"# operators\nalice:{generate_password_hash(PASSWORD, method=FAST_METHOD)}\n")
    config = load_auth_config(Settings(dash_auth="basic", dash_auth_users_file=str(users)), environ={})
    assert config.mode is AuthMode.BASIC
    assert set(config.users) == {"alice"}
    assert "pbkdf2" not in repr(config)


def test_hash_password_is_salted_pbkdf2() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("pbkdf2:sha256:600000$")
    assert first != second
    assert PASSWORD not in first


# --- basic ---------------------------------------------------------------------------------------


@pytest.fixture
def basic_app(tmp_path: Path) -> flask.Flask:
    users_file = tmp_path / "users.secret"
    users_file.write_text(f"carol:{generate_password_hash('file-pass', method=FAST_METHOD)}\n")
    env = {
        "DASH_AUTH": "basic",
        "DASH_AUTH_USERS": f"alice:{generate_password_hash(PASSWORD, method=FAST_METHOD)},"
                           f"bob:{generate_password_hash('other', method='scrypt:1024:8:1')}",
        "DASH_AUTH_USERS_FILE": str(users_file),
    }
    app = make_app()
    install_auth(app, Settings(), environ=env)
    return app


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    (basic("alice", PASSWORD), 200),
    (basic("bob", "other"), 200),
    (basic("carol", "file-pass"), 200),
    (basic("alice", "wrong"), 401),
    (basic("alice", ""), 401),
    (basic("mallory", PASSWORD), 401),
    (basic("alice", PASSWORD.upper()), 401),
    ({"Authorization": "Bearer abc"}, 401),
    ({"Authorization": "Basic !!!notbase64"}, 401),
])
def test_basic_auth(basic_app: flask.Flask, headers: dict[str, str], status: int) -> None:
    response = basic_app.test_client().get("/", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "home page" not in response.get_data(as_text=True)


def test_basic_auth_protects_callbacks_but_not_healthz(basic_app: flask.Flask) -> None:
    client = basic_app.test_client()
    assert client.post("/_dash-update-component").status_code == 401
    assert client.post("/_dash-update-component", headers=basic("alice", PASSWORD)).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_remembered_success_does_not_admit_a_wrong_password(basic_app: flask.Flask) -> None:
    client = basic_app.test_client()
    assert client.get("/", headers=basic("alice", PASSWORD)).status_code == 200
    assert client.get("/", headers=basic("alice", PASSWORD)).status_code == 200
    assert client.get("/", headers=basic("alice", PASSWORD + "x")).status_code == 401
    assert client.get("/", headers=basic("bob", PASSWORD)).status_code == 401


def test_basic_failures_log_no_secret(basic_app: flask.Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = basic_app.test_client().get("/", headers=basic("alice", "s3cret-guess"))
    assert response.status_code == 401
    assert "rejected" in caplog.text
    assert "s3cret-guess" not in caplog.text
    assert "s3cret-guess" not in response.get_data(as_text=True)
    assert "pbkdf2" not in caplog.text


# --- cloudflare ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, Any]:
    """Signing key and a second, unrelated key (for bad signatures)."""
    return (rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwks_json(private_key: Any, kid: str = "key-1") -> str:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return json.dumps({"keys": [jwk]})


def sign(private_key: Any, *, kid: str = "key-1", aud: str = AUD, iss: str = f"https://{TEAM}",
         exp_in_s: int = 300, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"aud": [aud], "iss": iss, "iat": now, "exp": now + exp_in_s, "email": "ops@example.com",
               "sub": "user-1", **claims}
    return jwt.encode(payload, private_key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def cf_env(tmp_path: Path, rsa_keys: tuple[Any, Any]) -> dict[str, str]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(jwks_json(rsa_keys[0]))
    return {"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": AUD, "CF_ACCESS_TEAM_DOMAIN": f"https://{TEAM}/",
            "CF_ACCESS_JWKS_FILE": str(jwks), "CF_ACCESS_LEEWAY_S": "5"}


@pytest.fixture
def cf_app(cf_env: dict[str, str]) -> flask.Flask:
    app = make_app()
    app.add_url_rule("/whoami", "whoami", lambda: flask.g.auth_user)
    install_auth(app, Settings(), environ=cf_env)
    return app


def test_cloudflare_valid_token(cf_app: flask.Flask, rsa_keys: tuple[Any, Any]) -> None:
    response = cf_app.test_client().get("/whoami", headers={CF_HEADER: sign(rsa_keys[0])})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "ops@example.com"


@pytest.mark.parametrize("case", ["expired", "wrong_aud", "wrong_issuer", "bad_signature", "missing_header",
                                  "garbage", "unknown_kid", "hs256", "no_exp"])
def test_cloudflare_rejects(cf_app: flask.Flask, rsa_keys: tuple[Any, Any], case: str,
                            caplog: pytest.LogCaptureFixture) -> None:
    good, other = rsa_keys
    tokens = {
        "expired": lambda: sign(good, exp_in_s=-3600),
        "wrong_aud": lambda: sign(good, aud="someone-elses-app"),
        "wrong_issuer": lambda: sign(good, iss="https://evil.cloudflareaccess.com"),
        "bad_signature": lambda: sign(other),
        "missing_header": lambda: "",
        "garbage": lambda: "not.a.jwt",
        "unknown_kid": lambda: sign(good, kid="key-2"),
        "hs256": lambda: jwt.encode({"aud": AUD, "iss": f"https://{TEAM}", "exp": int(time.time()) + 60},
                                    "k" * 32, algorithm="HS256", headers={"kid": "key-1"}),
        "no_exp": lambda: jwt.encode({"aud": AUD, "iss": f"https://{TEAM}"}, good, algorithm="RS256",
                                     headers={"kid": "key-1"}),
    }
    token = tokens[case]()
    caplog.set_level(logging.DEBUG)
    headers = {CF_HEADER: token} if token else {}
    response = cf_app.test_client().get("/", headers=headers)
    assert response.status_code == 403
    assert "home page" not in response.get_data(as_text=True)
    if token:
        assert token not in caplog.text
        assert token not in response.get_data(as_text=True)


def test_cloudflare_healthz_is_exempt(cf_app: flask.Flask) -> None:
    assert cf_app.test_client().get("/healthz").status_code == 200


def test_cloudflare_key_rotation_in_file(cf_app: flask.Flask, cf_env: dict[str, str],
                                         rsa_keys: tuple[Any, Any]) -> None:
    client = cf_app.test_client()
    new_key = rsa_keys[1]
    token = sign(new_key, kid="key-2")
    assert client.get("/", headers={CF_HEADER: token}).status_code == 403
    path = Path(cf_env["CF_ACCESS_JWKS_FILE"])
    path.write_text(jwks_json(new_key, kid="key-2"))
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))  # a distinct mtime even on coarse clocks
    assert client.get("/", headers={CF_HEADER: token}).status_code == 200


@pytest.fixture
def jwks_server(rsa_keys: tuple[Any, Any]) -> Iterator[str]:
    body = jwks_json(rsa_keys[0]).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cdn-cgi/access/certs"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_cloudflare_keys_from_url(jwks_server: str, rsa_keys: tuple[Any, Any]) -> None:
    app = make_app()
    install_auth(app, Settings(), environ={"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": AUD,
                                          "CF_ACCESS_TEAM_DOMAIN": TEAM, "CF_ACCESS_JWKS_URL": jwks_server})
    client = app.test_client()
    assert client.get("/", headers={CF_HEADER: sign(rsa_keys[0])}).status_code == 200
    assert client.get("/", headers={CF_HEADER: sign(rsa_keys[1])}).status_code == 403
    assert client.get("/", headers={CF_HEADER: sign(rsa_keys[0], aud="x")}).status_code == 403


def test_cloudflare_default_jwks_url_is_the_team_domain() -> None:
    config = load_auth_config(None, {"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": f"{AUD}, second",
                                     "CF_ACCESS_TEAM_DOMAIN": TEAM})
    assert config.cf_jwks_url == f"https://{TEAM}/cdn-cgi/access/certs"
    assert config.cf_audiences == (AUD, "second")
    assert config.cf_issuer == f"https://{TEAM}"


# --- security headers ----------------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_security_headers_on_a_flask_app() -> None:
    app = make_app()
    install_security_headers(app, ["'sha256-abc='"])
    response = app.test_client().get("/")
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["script-src"] == ["'self'", "'sha256-abc='"]
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp["default-src"] == ["'self'"]
    assert "'unsafe-eval'" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "unsafe-eval" in build_csp(allow_unsafe_eval=True)


def test_security_headers_apply_to_error_responses_too(basic_app: flask.Flask) -> None:
    install_security_headers(basic_app)
    response = basic_app.test_client().get("/")
    assert response.status_code == 401
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_dash_inline_scripts_are_allowed_by_their_hashes() -> None:
    app = dash.Dash("csp-test")
    app.layout = dash.html.Div([dash.html.Button("go", id="b"), dash.html.Div(id="out")])
    app.clientside_callback("function(n) { return n; }", dash.Output("out", "children"),
                            dash.Input("b", "n_clicks"))
    install_security_headers(app.server, csp_hashes=app.csp_hashes)
    response = app.server.test_client().get("/")
    # scripts inside HTML comments (Dash's IE-only warning) never run
    page = re.sub(r"<!--.*?-->", "", response.get_data(as_text=True), flags=re.S)
    script_src = csp_directives(response.headers["Content-Security-Policy"])["script-src"]
    inline = [body for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
              if "src=" not in attrs and "application/json" not in attrs and body.strip()]
    assert inline, "expected Dash's inline renderer script"
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    assert set(app.csp_hashes()) <= set(script_src)


def test_hash_command_reads_a_piped_password(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from werkzeug.security import check_password_hash

    from dashboard.auth import main

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["hash"]) == 0
    printed = capsys.readouterr().out.strip()
    assert check_password_hash(printed, PASSWORD)
    assert main(["nope"]) == 2


def test_cloudflare_unreachable_jwks_url_is_503(rsa_keys: tuple[Any, Any]) -> None:
    import socket

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app()
    install_auth(app, Settings(), environ={"DASH_AUTH": "cloudflare", "CF_ACCESS_AUD": AUD,
                                          "CF_ACCESS_TEAM_DOMAIN": TEAM,
                                          "CF_ACCESS_JWKS_URL": f"http://127.0.0.1:{port}/certs"})
    response = app.test_client().get("/", headers={CF_HEADER: sign(rsa_keys[0])})
    assert response.status_code == 503
    assert "home page" not in response.get_data(as_text=True)
