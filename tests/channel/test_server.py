"""The channel shell's control API (channel.server), in-process through Starlette's TestClient."""

from __future__ import annotations

from starlette.testclient import TestClient

from channel.server import build_app
from shared.config import build_config
from shared.service import ChannelSettings

CONFIG = build_config({"seed": 0, "threshold": 0.99}, read_env=False)


def _channel_client(**settings):
    return TestClient(build_app(CONFIG, ChannelSettings(link_port=0, **settings)))


def test_control_api_needs_the_token_when_one_is_set() -> None:
    token = "t0ken"
    with _channel_client(host="0.0.0.0", control_token=token) as client:
        put = "/impairments/tx_to_rx/loss"
        assert client.get("/impairments").status_code == 200  # reads stay open
        assert client.put(put, json={"probability": 0.1}).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert client.put(put, json={"probability": 0.1}, headers=bad).status_code == 401
        good = {"Authorization": f"Bearer {token}"}
        assert client.put(put, json={"probability": 0.1}, headers=good).status_code == 200
        assert client.delete("/impairments").status_code == 401
        assert client.post("/events/corrupt", json={"rho": 0.1}).status_code == 401
        assert client.post("/events/corrupt", json={"rho": 0.1}, headers=good).status_code == 409
        assert client.delete("/impairments", headers=good).status_code == 204
        evil = {**good, "Origin": "http://evil.example"}
        assert client.put(put, json={}, headers=evil).status_code == 403


def test_control_api_on_loopback_stays_open_but_not_cross_origin() -> None:
    with _channel_client() as client:
        put = "/impairments/tx_to_rx/loss"
        assert client.put(put, json={"probability": 0.1}).status_code == 200
        same = {"Origin": "http://testserver"}
        assert client.delete("/impairments", headers=same).status_code == 204
        evil = {"Origin": "http://evil.example"}
        # A text/plain POST is a "simple" request browsers send without asking: refused here.
        r = client.post("/events/corrupt", content=b'{"rho": 1}', headers=evil)
        assert r.status_code == 403
        big = {"probability": 0.1, "types": ["new"] * 20_000}  # > 64 KiB of JSON
        assert client.put(put, json=big).status_code == 413


def test_control_api_refuses_strings_and_booleans_for_numbers_and_flags() -> None:
    """No coercion: "0.5" is not a probability, true is not a BER, "yes" is not a flag."""
    with _channel_client() as client:
        bad = [
            ("/impairments/tx_to_rx/loss", {"probability": "0.5"}),
            ("/impairments/tx_to_rx/loss", {"probability": True}),
            ("/impairments/tx_to_rx/bit_errors", {"ber": "1e-3"}),
            ("/impairments/tx_to_rx/bit_errors", {"whole_frame": "yes"}),
            ("/impairments/tx_to_rx/bit_errors", {"whole_frame": 1}),
            ("/impairments/tx_to_rx/delay", {"delay_ms": "10"}),
        ]
        for path, attributes in bad:
            r = client.put(path, json=attributes)
            assert r.status_code in (400, 422), (attributes, r.status_code)
            assert next(iter(attributes)) in r.text
        assert client.get("/impairments").json() in ([], {"tx_to_rx": {}, "rx_to_tx": {}})
        for rho in ("0.5", True):
            assert client.post("/events/corrupt", json={"rho": rho}).status_code == 422
        ok = client.put("/impairments/tx_to_rx/bit_errors", json={"ber": 1, "whole_frame": True})
        assert ok.status_code == 200  # a JSON integer is a number
