from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from core.destinations import (
    SLUG_MAX_LEN,
    closed_channel,
    closed_trades_table,
    equity_table,
    load_destinations,
    mask_secret,
    open_trades_table,
    pos_channel,
    slugify,
)
from core.errors import ConfigError

GOOD = """
[[destinations]]
name = "Momentum Live"
key_id = "PKLIVEKEY00001234"
secret_key = "liveSECRETvalue999"
base_url = "live"
initial_deposit = 25000

[[destinations]]
name = "Mean Reversion (paper)"
key_id_env = "MR_KEY"
secret_key = "${MR_SECRET}"
base_url = "http://127.0.0.1:8765"
enabled = false
price_feed = { zmq_endpoints = ["tcp://127.0.0.1:5556"], stale_after_s = 5 }
"""


def _write(tmp_path: Path, text: str, name: str = "destinations.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_valid_file_with_env_references(tmp_path: Path) -> None:
    dests = load_destinations(_write(tmp_path, GOOD), environ={"MR_KEY": "PKPAPER5678", "MR_SECRET": "papersecret"})
    assert [d.slug for d in dests] == ["momentum_live", "mean_reversion_paper"]
    live, paper = dests
    assert live.is_live
    assert live.base_url == "https://api.alpaca.markets"
    assert live.initial_deposit == Decimal("25000")
    assert paper.key_id == "PKPAPER5678"
    assert paper.secret_key == "papersecret"
    assert paper.enabled is False
    assert paper.price_feed.zmq_endpoints == ("tcp://127.0.0.1:5556",)


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    dests = load_destinations(_write(tmp_path, GOOD), environ={"MR_KEY": "PKPAPER5678", "MR_SECRET": "papersecret"})
    text = repr(dests) + str(dests[0])
    assert "liveSECRETvalue999" not in text
    assert "PKLIVEKEY00001234" not in text
    assert "papersecret" not in text
    assert "PK…1234" in text


def test_local_override_replaces_and_adds(tmp_path: Path) -> None:
    main = _write(tmp_path, GOOD)
    local = _write(tmp_path, '[[destinations]]\nname = "Momentum Live"\nkey_id = "PKNEW0000"\nsecret_key = "x"\nbase_url = "paper"\n'
                   '[[destinations]]\nname = "Extra"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n', "local.toml")
    dests = load_destinations(main, local, environ={"MR_KEY": "a", "MR_SECRET": "b"})
    assert [d.slug for d in dests] == ["momentum_live", "mean_reversion_paper", "extra"]
    assert dests[0].key_id == "PKNEW0000"
    assert dests[0].base_url == "https://paper-api.alpaca.markets"


ENTRY = 'name = "Acct"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "Acct"\nsecret_key = "s"\nbase_url = "paper"\n', r"destination #1 \('Acct'\): field 'key_id': missing"),
        ('name = "Acct"\nkey_id = "k"\nbase_url = "paper"\n', r"field 'secret_key': missing"),
        ('key_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n', r"destination #1: field 'name': missing"),
        (ENTRY + 'colour = "red"\n', r"field 'colour': unknown field"),
        ('name = "!!!"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n', r"field 'name': slugs to nothing"),
        ('name = "Acct"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "not a url"\n', r"field 'base_url': invalid URL"),
        ('name = "Acct"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "http://h:99999"\n', r"field 'base_url': invalid port"),
        (ENTRY + "initial_deposit = -5\n", r"field 'initial_deposit': must be a finite number >= 0"),
        (ENTRY + 'initial_deposit = "lots"\n', r"field 'initial_deposit': not a number"),
        (ENTRY + 'enabled = "yes"\n', r"field 'enabled': must be true or false"),
        ('name = "Acct"\nkey_id_env = "NOPE_UNSET"\nsecret_key = "s"\nbase_url = "paper"\n', r"field 'key_id_env': environment variable NOPE_UNSET is not set"),
        (ENTRY + "price_feed = { zmq_endpoints = ['nohost'] }\n", r"field 'price_feed.zmq_endpoints'"),
    ],
)
def test_bad_entries_name_file_entry_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, "[[destinations]]\n" + body)
    with pytest.raises(ConfigError, match=message) as err:
        load_destinations(path, environ={})
    assert str(path) in str(err.value)


def test_two_names_one_slug_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[destinations]]\n" + ENTRY + '[[destinations]]\nname = "ACCT!"\nkey_id = "k"\nsecret_key = "s"\nbase_url = "paper"\n')
    with pytest.raises(ConfigError, match=r"destination #2 \('ACCT!'\): field 'name': slug 'acct' collides with 'Acct'"):
        load_destinations(path, environ={})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_destinations(_write(tmp_path, "[[destinations]\n"), environ={})
    with pytest.raises(ConfigError, match="destinations file not found"):
        load_destinations(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Momentum Live", "momentum_live"), ("  ÄBC--12  ", "bc_12"), ("a.b.c", "a_b_c"), ("UPPER_case", "upper_case")],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_long_names_fit_postgres_identifier_limit_and_stay_unique() -> None:
    a = slugify("x" * 200 + " alpha")
    b = slugify("x" * 200 + " beta")
    assert a != b
    assert len(a) <= SLUG_MAX_LEN
    for fn in (open_trades_table, closed_trades_table, equity_table, pos_channel, closed_channel):
        assert len(fn(a).encode()) <= 63


def test_names_follow_the_original_system() -> None:
    assert (open_trades_table("s"), closed_trades_table("s"), equity_table("s")) == (
        "open_trades_s", "closed_trades_s", "equity_full_s")
    assert (pos_channel("s"), closed_channel("s")) == ("pos_channel_s", "closed_channel_s")
    with pytest.raises(ConfigError):
        equity_table('s"; drop')


def test_mask_secret() -> None:
    assert mask_secret("PKABCDEFGH1234") == "PK…1234"
    assert mask_secret(None) == "<unset>"
    assert "short" not in mask_secret("short")


def test_cli_exits_nonzero_before_touching_database(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[destinations]]\n" + ENTRY + "initial_deposit = -1\n")
    env = {"PATH": "/usr/bin:/bin", "DESTINATIONS_FILE": str(path),
           "POSTGRESQL_LIVE_CONN_STRING": "postgresql://u:pw@127.0.0.1:1/db",
           "COLDHARBOUR_ENV_FILE": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert "initial_deposit" in proc.stderr
    assert str(path) in proc.stderr
    assert "cannot reach" not in proc.stderr
