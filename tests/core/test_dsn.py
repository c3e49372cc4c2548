from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dsn import parse_dsn
from core.errors import ConfigError

PASSWORDS = ["plain", "p@ss:w/rd", "with space", "100%sure", "q'uote\\back", "@:/% mixed ok"]


@pytest.mark.parametrize(
    ("dsn", "host", "port", "db", "user", "opts"),
    [
        ("postgresql+psycopg2://u:p@h:5433/db", "h", 5433, "db", "u", {}),
        ("postgresql+asyncpg://u@h/db", "h", 5432, "db", "u", {}),
        ("postgresql://u:p@db.example:6543/prod?sslmode=require", "db.example", 6543, "prod", "u", {"sslmode": "require"}),
        ("postgres://h", "h", 5432, "postgres", None, {}),
        ("host=h port=5434 dbname=d user=u password=p sslmode=verify-full", "h", 5434, "d", "u", {"sslmode": "verify-full"}),
        ("host=/var/run/postgresql dbname=d", "/var/run/postgresql", 5432, "d", None, {}),
    ],
)
def test_parses_every_form(dsn: str, host: str, port: int, db: str, user: str | None, opts: dict[str, str]) -> None:
    info = parse_dsn(dsn)
    assert (info.host, info.port, info.dbname, info.user, dict(info.options)) == (host, port, db, user, opts)


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("render", ["uri", "sqlalchemy_url", "asyncpg_dsn", "keyword_dsn"])
def test_round_trip_preserves_awkward_passwords(password: str, render: str) -> None:
    original = parse_dsn(f"host=h port=5432 dbname=d user=u password='{password.replace(chr(92), chr(92)*2).replace(chr(39), chr(92)+chr(39))}'")
    assert original.password == password
    again = parse_dsn(getattr(original, render)())
    assert again == original
    assert again.password == password


@settings(max_examples=150, deadline=None)
@given(
    user=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
    password=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=16),
    db=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
)
def test_round_trip_property(user: str, password: str, db: str) -> None:
    info = parse_dsn("postgresql://x@h/db").__class__("h.example", 5439, db, user, password, (("sslmode", "require"),))
    for text in (info.uri(), info.sqlalchemy_url(), info.keyword_dsn()):
        assert parse_dsn(text) == info


def test_password_never_in_repr_or_safe() -> None:
    info = parse_dsn("postgresql://bob:hunter2secret@h:5432/db")
    assert "hunter2secret" not in repr(info)
    assert "hunter2secret" not in info.safe()
    assert info.safe() == "bob@h:5432/db"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("", "DSN is empty"),
        ("mysql://u:secretpw@h/db", "not PostgreSQL"),
        ("postgresql://u:secretpw@h:notaport/db", "invalid port"),
        ("host=h port=abc", "port must be an integer"),
    ],
)
def test_bad_dsn_errors_do_not_echo_password(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_dsn(dsn)
    assert "secretpw" not in str(err.value)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg2://other@H/db", True),  # user and driver do not matter
        ("postgresql://u@h/db", "host=h port=5432 dbname=db user=x", True),
        ("postgresql://u@h/db", "postgresql://u@h/series", False),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5433/db", False),
        ("postgresql://u@h1/db", "postgresql://u@h2/db", False),
    ],
)
def test_same_database_compares_host_port_and_name(a: str, b: str, same: bool) -> None:
    from core.dsn import same_database

    assert same_database(a, b) is same
