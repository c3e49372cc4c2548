"""Optional authentication and the security headers of every response.

Public API (the app factory calls both on the Flask ``server``, after every callback is registered):

- :func:`install_auth` ``(server, settings=None, *, environ=None, exempt_paths=("/healthz",))`` ->
  :class:`AuthConfig`. Mode from ``Settings.dash_auth`` / ``DASH_AUTH``:

  - unset/empty/``none``: no authentication.
  - ``basic``: HTTP Basic against users from ``DASH_AUTH_USERS`` (``user:hash,user2:hash``) and/or
    the secret file ``Settings.dash_auth_users_file`` / ``DASH_AUTH_USERS_FILE`` (one ``user:hash``
    per line, ``#`` comments). Only salted hashes are accepted (Werkzeug format ``pbkdf2:sha256:N$salt$hex``
    or ``scrypt:...``); make one with ``python -m dashboard.auth hash``. Comparison is constant-time
    and unknown users cost the same as known ones; a successful check is remembered (as an HMAC under
    a per-process random key) so Dash's many callback requests do not each pay for PBKDF2.
  - ``cloudflare``: every request must carry a ``Cf-Access-Jwt-Assertion`` JWT signed RS256 by
    Cloudflare Access, with audience ``CF_ACCESS_AUD`` (comma-separated tags allowed) and issuer
    ``https://<CF_ACCESS_TEAM_DOMAIN>``. Keys come from ``CF_ACCESS_JWKS_FILE`` (a JWKS JSON file) or
    ``CF_ACCESS_JWKS_URL`` (default ``https://<team domain>/cdn-cgi/access/certs``, cached).
    ``CF_ACCESS_LEEWAY_S`` (default 30) is the allowed clock skew.

  Each knob is read from the ``Settings`` field of the same lower-case name when it exists and is
  set (``dash_auth``, ``dash_auth_users_file`` today), else from ``environ`` (default ``os.environ``).
  Paths in ``exempt_paths`` (``/healthz``) are always open. Failures answer 401 (basic) or 403
  (cloudflare; 503 when the JWKS URL cannot be fetched) with a fixed text; the authenticated identity is in ``flask.g.auth_user``.
  A misconfiguration raises :class:`core.errors.ConfigError` at install time (fail closed).
- :func:`install_security_headers` ``(server, csp_hashes=(), *, allow_unsafe_eval=False,
  connect_src=())``: Content-Security-Policy (``script-src 'self'`` plus Dash's ``app.csp_hashes()``
  (pass the list, or the bound method ``app.csp_hashes`` to evaluate it on the first response),
  ``style-src 'self' 'unsafe-inline'``, ``frame-ancestors 'none'``, nothing from other origins),
  ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``.
- :func:`hash_password` ``(password)`` -> a hash for ``DASH_AUTH_USERS``.

Secrets (passwords, hashes, tokens) never appear in logs, error messages, pages or reprs.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import flask
import jwt
from werkzeug.security import check_password_hash, generate_password_hash

from core.errors import ConfigError
from core.settings import Settings, value_problem

log = logging.getLogger(__name__)

CF_HEADER = "Cf-Access-Jwt-Assertion"
DEFAULT_EXEMPT_PATHS = ("/healthz",)
PASSWORD_HASH_METHOD = "pbkdf2:sha256:600000"  # noqa: S105 - an algorithm name, not a password
_HASH_PREFIXES = ("pbkdf2:", "scrypt:")
_REALM = "Cold Harbour"
_JWKS_TIMEOUT_S = 5


class AuthMode(StrEnum):
    NONE = "none"
    """No authentication (the default)."""
    BASIC = "basic"
    """HTTP Basic with hashed passwords."""
    CLOUDFLARE = "cloudflare"
    """Cloudflare Access JWT in the ``Cf-Access-Jwt-Assertion`` header."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Resolved authentication settings; secrets are kept out of ``repr``."""

    mode: AuthMode = AuthMode.NONE
    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    cf_audiences: tuple[str, ...] = ()
    cf_team_domain: str = ""
    cf_jwks_url: str | None = None
    cf_jwks_file: str | None = None
    cf_leeway_s: float = 30.0

    @property
    def cf_issuer(self) -> str:
        return f"https://{self.cf_team_domain}"


def hash_password(password: str) -> str:
    """A salted PBKDF2-SHA256 hash (600k iterations) for ``DASH_AUTH_USERS``."""
    if not password:
        raise ValueError("empty password")
    return generate_password_hash(password, method=PASSWORD_HASH_METHOD)


# --- configuration -------------------------------------------------------------------------------


def _parse_users(text: str, source: str) -> dict[str, str]:
    users: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split(",")]
    for number, entry in enumerate(entries, start=1):
        if not entry or entry.startswith("#"):
            continue
        user, sep, hashed = entry.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not sep or not user or not hashed:
            raise ConfigError(f"{source}: entry {number}: expected user:hash")
        if not hashed.startswith(_HASH_PREFIXES) or "$" not in hashed:
            # never echo the value: it may be a plaintext password
            raise ConfigError(
                f"{source}: user {user!r}: not a password hash (expected pbkdf2:... or scrypt:...; "
                "make one with: python -m dashboard.auth hash)"
            )
        users[user] = hashed
    return users


def _normalise_domain(raw: str) -> str:
    domain = raw.strip()
    for scheme in ("https://", "http://"):
        if domain.startswith(scheme):
            domain = domain[len(scheme):]
    return domain.rstrip("/")


def _lookup(settings: Settings | None, environ: Mapping[str, str]) -> Mapping[str, str]:
    """Each knob from the Settings field of the same (lower-case) name when it exists and is set,
    else from the environment (until every knob has a Settings field)."""
    names = ("DASH_AUTH", "DASH_AUTH_USERS", "DASH_AUTH_USERS_FILE", "CF_ACCESS_AUD", "CF_ACCESS_TEAM_DOMAIN",
             "CF_ACCESS_JWKS_URL", "CF_ACCESS_JWKS_FILE", "CF_ACCESS_LEEWAY_S")
    out: dict[str, str] = {}
    for name in names:
        value = getattr(settings, name.lower(), None) if settings is not None else None
        if value is None or value == "":
            value = environ.get(name)
        if value is not None and value != "":
            out[name] = str(value)
    return out


def load_auth_config(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> AuthConfig:
    """Resolve the auth mode and its parameters from settings and the environment."""
    env = _lookup(settings, os.environ if environ is None else environ)
    raw_mode = env.get("DASH_AUTH", "")
    try:
        mode = AuthMode(raw_mode.strip().lower() or "none")
    except ValueError:
        raise ConfigError(f"DASH_AUTH: expected basic, cloudflare or empty, got {raw_mode!r}") from None
    if mode is AuthMode.NONE:
        return AuthConfig()
    if mode is AuthMode.BASIC:
        users: dict[str, str] = {}
        if env.get("DASH_AUTH_USERS"):
            users.update(_parse_users(env["DASH_AUTH_USERS"], "DASH_AUTH_USERS"))
        users_file = env.get("DASH_AUTH_USERS_FILE")
        if users_file:
            path = Path(users_file)
            if not path.is_file():
                raise ConfigError(f"DASH_AUTH_USERS_FILE: {path} not found")
            users.update(_parse_users(path.read_text(encoding="utf-8"), str(path)))
        if not users:
            raise ConfigError("DASH_AUTH=basic needs users in DASH_AUTH_USERS or DASH_AUTH_USERS_FILE")
        return AuthConfig(mode=mode, users=users)
    audiences = tuple(a.strip() for a in env.get("CF_ACCESS_AUD", "").split(",") if a.strip())
    team = _normalise_domain(env.get("CF_ACCESS_TEAM_DOMAIN", ""))
    if not audiences:
        raise ConfigError("DASH_AUTH=cloudflare needs CF_ACCESS_AUD (the application's audience tag)")
    if not team:
        raise ConfigError("DASH_AUTH=cloudflare needs CF_ACCESS_TEAM_DOMAIN (e.g. myteam.cloudflareaccess.com)")
    jwks_file = env.get("CF_ACCESS_JWKS_FILE") or None
    jwks_url = None if jwks_file else (env.get("CF_ACCESS_JWKS_URL") or f"https://{team}/cdn-cgi/access/certs")
    try:
        leeway = float(env.get("CF_ACCESS_LEEWAY_S", "30"))
    except ValueError:
        raise ConfigError("CF_ACCESS_LEEWAY_S: expected a number of seconds") from None
    problem = value_problem("cf_access_leeway_s", leeway)  # NaN or a huge leeway: no expiry check at all
    if problem:
        raise ConfigError(f"CF_ACCESS_LEEWAY_S: {problem}")
    return AuthConfig(mode=mode, cf_audiences=audiences, cf_team_domain=team, cf_jwks_url=jwks_url,
                      cf_jwks_file=jwks_file, cf_leeway_s=leeway)


# --- basic ---------------------------------------------------------------------------------------


class _BasicVerifier:
    """Constant-time password checks with a per-process memo of successful ones."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._memo_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()
        # Unknown users are checked against a hash made like the real ones, so they take as long.
        method = next(iter(self._users.values()), PASSWORD_HASH_METHOD).split("$", 1)[0]
        self._dummy = generate_password_hash(secrets.token_hex(16), method=method)

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._memo_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def remembered(self, user: str, password: str) -> bool:
        """A check that succeeded before (no PBKDF2)."""
        remembered = self._verified.get(user)
        return remembered is not None and hmac.compare_digest(remembered, self._digest(user, password))

    def check(self, user: str, password: str) -> bool:
        digest = self._digest(user, password)
        if self.remembered(user, password):
            return True
        stored = self._users.get(user)
        ok = check_password_hash(stored or self._dummy, password) and stored is not None
        if ok:
            with self._lock:
                self._verified[user] = digest
        return ok


class FailureLimiter:
    """Bounds the password checks that failed: per client address and for the whole process.

    Each failed check costs ~0.13 s of PBKDF2, so unbounded guessing saturates the host. A client
    with :data:`FAILURES_PER_CLIENT` failures inside :data:`FAILURE_WINDOW_S`, or any client while
    the process has seen :data:`FAILURES_PER_PROCESS` in that window, is answered 429 without a check.
    Remembered successes (the verifier's memo) never reach the limiter.
    """

    def __init__(self, per_client: int = 10, per_process: int = 60, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client, self.per_process, self.window_s = per_client, per_process, window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._all: list[float] = []

    def _trim(self, stamps: list[float], now: float) -> list[float]:
        return [t for t in stamps if now - t < self.window_s]

    def retry_after_s(self, client: str) -> int | None:
        """Seconds to wait when ``client`` may not try now, else ``None``."""
        now = self._clock()
        with self._lock:
            self._all = self._trim(self._all, now)
            mine = self._trim(self._failures.get(client, []), now)
            if mine:
                self._failures[client] = mine
            else:
                self._failures.pop(client, None)
            blocking = mine if len(mine) >= self.per_client else self._all if len(self._all) >= self.per_process else None
            if blocking is None:
                return None
            return max(1, int(self.window_s - (now - blocking[0])) + 1)

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:  # a flood of addresses: forget the oldest half
                for key in list(self._failures)[:5_000]:
                    del self._failures[key]
            self._failures.setdefault(client, []).append(now)
            self._all.append(now)


def _basic_guard(config: AuthConfig) -> Callable[[], flask.Response | None]:
    verifier = _BasicVerifier(config.users)
    limiter = FailureLimiter()

    def guard() -> flask.Response | None:
        auth = flask.request.authorization
        client = flask.request.remote_addr or "?"
        if auth is not None and auth.type == "basic" and auth.username and auth.password is not None:
            if verifier.remembered(auth.username, auth.password):
                flask.g.auth_user = auth.username
                return None
            wait_s = limiter.retry_after_s(client)
            if wait_s is not None:
                return flask.Response("Too many failed sign-ins: wait and try again.\n", status=429,
                                      mimetype="text/plain", headers={"Retry-After": str(wait_s)})
            if verifier.check(auth.username, auth.password):
                flask.g.auth_user = auth.username
                return None
            limiter.failed(client)
            log.warning("basic auth rejected (from %s)", client)
        return flask.Response(
            "Authentication required.\n", status=401, mimetype="text/plain",
            headers={"WWW-Authenticate": f'Basic realm="{_REALM}", charset="UTF-8"'},
        )

    return guard


# --- cloudflare ----------------------------------------------------------------------------------


class _KeyUnavailable(Exception):
    """The signing keys could not be loaded (network or file problem)."""


class _CloudflareKeys:
    """RS256 public keys by ``kid`` from a JWKS file (re-read when it changes) or URL (cached)."""

    def __init__(self, config: AuthConfig) -> None:
        self._file = Path(config.cf_jwks_file) if config.cf_jwks_file else None
        self._client = (
            jwt.PyJWKClient(config.cf_jwks_url, cache_keys=True, lifespan=3600, timeout=_JWKS_TIMEOUT_S)
            if config.cf_jwks_url and not self._file else None
        )
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._keys: dict[str | None, Any] = {}
        if self._file is not None:
            self._load_file()
            if not self._keys:
                raise ConfigError(f"CF_ACCESS_JWKS_FILE: {self._file} holds no RSA signing key")

    def _load_file(self) -> None:
        assert self._file is not None
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._mtime:
                return
            jwks = jwt.PyJWKSet.from_json(self._file.read_text(encoding="utf-8"))
        except (OSError, jwt.PyJWKSetError, json.JSONDecodeError) as exc:
            if self._mtime is None:
                raise ConfigError(f"CF_ACCESS_JWKS_FILE: cannot load {self._file}: {type(exc).__name__}") from None
            raise _KeyUnavailable(type(exc).__name__) from None
        self._keys = {k.key_id: k.key for k in jwks.keys if k.key_type == "RSA"}
        self._mtime = mtime

    def key_for(self, token: str, kid: str | None) -> Any:
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError as exc:
                raise _KeyUnavailable(type(exc).__name__) from None
        with self._lock:
            if kid not in self._keys:
                self._load_file()
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            if kid not in self._keys:
                raise jwt.InvalidTokenError("unknown key id")
            return self._keys[kid]


def _cloudflare_guard(config: AuthConfig) -> Callable[[], flask.Response | None]:
    keys = _CloudflareKeys(config)

    def deny(reason: str, status: int = 403) -> flask.Response:
        log.warning("cloudflare access rejected: %s (from %s)", reason, flask.request.remote_addr)
        text = "Forbidden.\n" if status == 403 else "Authentication keys unavailable.\n"
        return flask.Response(text, status=status, mimetype="text/plain")

    def guard() -> flask.Response | None:
        token = flask.request.headers.get(CF_HEADER, "").strip()
        if not token:
            return deny("missing header")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256":
                return deny("algorithm not RS256")
            key = keys.key_for(token, header.get("kid"))
            claims = jwt.decode(
                token, key, algorithms=["RS256"], audience=list(config.cf_audiences), issuer=config.cf_issuer,
                leeway=config.cf_leeway_s, options={"require": ["exp", "iss", "aud"]},
            )
        except _KeyUnavailable as exc:
            return deny(f"keys unavailable ({exc})", status=503)
        except jwt.PyJWKClientError as exc:
            return deny(type(exc).__name__)
        except jwt.InvalidTokenError as exc:
            return deny(type(exc).__name__)
        flask.g.auth_user = str(claims.get("email") or claims.get("common_name") or claims.get("sub") or "")
        return None

    return guard


# --- installation --------------------------------------------------------------------------------


def install_auth(
    server: flask.Flask,
    settings: Settings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    exempt_paths: Iterable[str] = DEFAULT_EXEMPT_PATHS,
) -> AuthConfig:
    """Protect every route of ``server`` except ``exempt_paths``; returns the resolved config."""
    config = load_auth_config(settings, environ)
    if config.mode is AuthMode.NONE:
        log.info("dashboard authentication: none")
        return config
    guard = _basic_guard(config) if config.mode is AuthMode.BASIC else _cloudflare_guard(config)
    exempt = frozenset(exempt_paths)

    def before_request() -> flask.Response | None:
        if flask.request.path in exempt:
            return None
        return guard()

    server.before_request(before_request)
    log.info("dashboard authentication: %s", config.mode.value)
    return config


def build_csp(csp_hashes: Iterable[str] = (), *, allow_unsafe_eval: bool = False,
              connect_src: Iterable[str] = ()) -> str:
    """The Content-Security-Policy value (everything from our own origin; inline scripts by hash)."""
    script = ["'self'", *csp_hashes]
    if allow_unsafe_eval:
        script.append("'unsafe-eval'")
    directives = {
        "default-src": ["'self'"],
        "script-src": script,
        "style-src": ["'self'", "'unsafe-inline'"],  # Dash and its components set inline styles
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'", *connect_src],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def install_security_headers(
    server: flask.Flask,
    csp_hashes: Sequence[str] | Callable[[], Sequence[str]] = (),
    *,
    allow_unsafe_eval: bool = False,
    connect_src: Iterable[str] = (),
) -> None:
    """Add CSP, nosniff, frame and referrer headers to every response (existing values are kept)."""
    connect = tuple(connect_src)
    policy: list[str] = []

    def csp() -> str:
        if not policy:  # built once, on the first response, after every callback is registered
            hashes = csp_hashes() if callable(csp_hashes) else csp_hashes
            policy.append(build_csp(hashes, allow_unsafe_eval=allow_unsafe_eval, connect_src=connect))
        return policy[0]

    def after_request(response: flask.Response) -> flask.Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", csp())
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response

    server.after_request(after_request)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dashboard.auth hash``: read a password (twice on a terminal, once from a pipe), print its hash."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["hash"]:
        print("usage: python -m dashboard.auth hash", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
