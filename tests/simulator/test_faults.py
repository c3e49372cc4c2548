"""REST fault knobs (error answers, Retry-After, hangs) through the real SDK and raw HTTP."""

from __future__ import annotations

import pytest
import requests
from alpaca.common.exceptions import APIError


def test_error_rate_answers_429_with_retry_after(sim):
    acct = sim.accounts[0]
    headers = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
    try:
        sim.admin("/faults", {"rest_error_rate": 1.0, "rest_error_codes": [429], "retry_after_s": 7})
        resp = requests.get(f"{sim.rest_url}/v2/account", headers=headers, timeout=5)
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "7"
        assert set(resp.json()) == {"code", "message"}
        assert sim.admin("/state")["faults"]["rest_error_rate"] == 1.0  # admin is never faulted
    finally:
        sim.admin("/faults", {"rest_error_rate": 0.0})
    assert requests.get(f"{sim.rest_url}/v2/account", headers=headers, timeout=5).status_code == 200


@pytest.mark.parametrize("code", [500, 503])
def test_error_rate_answers_server_errors_to_the_sdk(sim, code):
    client = sim.trading_client(1)
    try:
        sim.admin("/faults", {"rest_error_rate": 1.0, "rest_error_codes": [code]})
        with pytest.raises(APIError) as info:
            client.get_account()
        assert info.value.status_code == code
    finally:
        sim.admin("/faults", {"rest_error_rate": 0.0})
    assert client.get_account().status == "ACTIVE"


def test_partial_error_rate_fails_some_calls_only(sim):
    acct = sim.accounts[2]
    headers = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
    try:
        sim.admin("/faults", {"rest_error_rate": 0.5, "rest_error_codes": [500, 503]})
        codes = [requests.get(f"{sim.rest_url}/v2/positions", headers=headers, timeout=5).status_code for _ in range(60)]
    finally:
        sim.admin("/faults", {"rest_error_rate": 0.0, "rest_error_codes": [429, 500, 503]})
    assert set(codes) == {200, 500, 503}


def test_hang_makes_rest_calls_time_out(sim):
    acct = sim.accounts[3]
    headers = {"APCA-API-KEY-ID": acct["key_id"], "APCA-API-SECRET-KEY": acct["secret_key"]}
    try:
        sim.admin("/faults", {"rest_hang_s": 2.0})
        with pytest.raises(requests.Timeout):
            requests.get(f"{sim.rest_url}/v2/account", headers=headers, timeout=0.5)
    finally:
        sim.admin("/faults", {"rest_hang_s": 0.0})
    assert requests.get(f"{sim.rest_url}/v2/account", headers=headers, timeout=5).status_code == 200


def test_fault_updates_are_validated(sim):
    bad = requests.post(f"{sim.rest_url}/admin/faults", json={"no_such_knob": 1}, timeout=5, headers=sim.admin_headers)
    assert bad.status_code == 422
    assert "no_such_knob" in bad.json()["message"]
    bad_rate = requests.post(f"{sim.rest_url}/admin/faults", json={"rest_error_rate": 2}, timeout=5, headers=sim.admin_headers)
    assert bad_rate.status_code == 422
    assert sim.admin("/faults")["rest_error_rate"] == 0.0


def test_cli_fault_flags_apply_at_start(simulator_factory):
    sim = simulator_factory(accounts=1, zmq=False, extra_args=["--rest-error-rate", "1", "--rest-error-codes", "503", "--ws-delay-ms", "5"])
    faults = sim.admin("/faults")
    assert faults["rest_error_rate"] == 1.0
    assert faults["rest_error_codes"] == [503]
    assert faults["ws_delay_ms"] == 5.0
    assert sim["zmq_url"] is None
    with pytest.raises(APIError) as info:
        sim.trading_client(0).get_account()
    assert info.value.status_code == 503
