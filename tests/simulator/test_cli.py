"""``python -m simulator`` options: destinations file, generated keys, NYSE hours, history."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from decimal import Decimal

from tests.simulator_fixtures import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_destinations_file_sets_names_keys_and_deposits(simulator_factory, tmp_path):
    port = free_port()
    dest = tmp_path / "destinations.toml"
    dest.write_text(
        f"""
[[destinations]]
name = "Sim Momentum"
key_id = "PKSIMMOMENTUM0000001"
secret_key = "secret-momentum-0000000000000000000000001"
base_url = "http://127.0.0.1:{port}"
initial_deposit = 25000

[[destinations]]
name = "Real Paper"
key_id = "PKREALPAPER000000001"
secret_key = "secret-real-paper"
base_url = "paper"
"""
    )
    sim = simulator_factory(zmq=False, extra_args=["--destinations", str(dest), "--port", str(port)])
    assert sim.rest_url == f"http://127.0.0.1:{port}"
    assert sim.accounts == [{"name": "Sim Momentum", "key_id": "PKSIMMOMENTUM0000001", "secret_key": "secret-momentum-0000000000000000000000001"}]
    assert Decimal(sim.trading_client(0).get_account().cash) == 25_000
    secret = sim.accounts[0]["secret_key"]
    assert secret not in sim.log_text()


def test_all_destinations_flag_serves_every_destination(simulator_factory, tmp_path):
    dest = tmp_path / "d.toml"
    dest.write_text(
        '[[destinations]]\nname = "a"\nkey_id = "K1"\nsecret_key = "S1"\nbase_url = "paper"\n'
        '[[destinations]]\nname = "b"\nkey_id = "K2"\nsecret_key = "S2"\nbase_url = "live"\n'
    )
    sim = simulator_factory(zmq=False, extra_args=["--destinations", str(dest), "--all-destinations"])
    assert [a["name"] for a in sim.accounts] == ["a", "b"]


def test_generated_keys_are_stable_per_seed(simulator_factory):
    one = simulator_factory(accounts=2, seed=5, zmq=False)
    two = simulator_factory(accounts=2, seed=5, zmq=False)
    other = simulator_factory(accounts=2, seed=6, zmq=False)
    assert one.accounts == two.accounts != other.accounts
    assert [a["name"] for a in one.accounts] == ["sim-1", "sim-2"]
    assert len({a["key_id"] for a in one.accounts}) == 2


def test_bad_destinations_file_exits_with_a_message(tmp_path):
    dest = tmp_path / "bad.toml"
    dest.write_text('[[destinations]]\nname = "x"\n')
    out = subprocess.run(
        [sys.executable, "-m", "simulator", "--destinations", str(dest), "--port", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "key_id" in out.stderr


def test_nyse_hours_clock_and_history(simulator_factory):
    sim = simulator_factory(accounts=1, history_days=2, zmq=False, extra_args=["--nyse-hours"])
    client = sim.trading_client(0)
    clock = client.get_clock()
    state = sim.admin("/state")
    assert state["market_open"] == clock.is_open
    assert clock.next_open > clock.timestamp or clock.is_open
    hist = client.get_portfolio_history()
    assert len(hist.timestamp) >= 2
    assert hist.timeframe == "1D"
    fills = client.get("/account/activities/FILL")
    assert fills
    assert json.dumps(fills)


def test_no_admin_flag_hides_the_admin_api(simulator_factory):
    import requests

    sim = simulator_factory(accounts=1, zmq=False, extra_args=["--no-admin"])
    assert requests.get(f"{sim.rest_url}/admin/state", timeout=5).status_code == 404
    assert sim.trading_client(0).get_account().status == "ACTIVE"
