"""The channel's typed control API (channel.control), in-process: impairments as named resources
per direction, their OpenAPI schema, and schemathesis over it."""

from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from channel.control import NewImpairment
from channel.core import ChannelCore
from channel.impairments import IMPAIRMENTS
from channel.server import build_app
from shared.config import build_config
from shared.protocol.messages import Hit, encode
from shared.service import ChannelSettings
from tests.fuzzing import REST, examples

CONFIG = build_config({"seed": 0, "threshold": 0.99}, read_env=False)
TOKEN = "control-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _client(**settings) -> TestClient:
    return TestClient(build_app(CONFIG, ChannelSettings(link_port=0, **settings)))


def test_impairments_are_added_read_updated_and_removed_by_name() -> None:
    with _client() as client:
        base = "/impairments/tx_to_rx"
        added = client.post(base, json={"type": "loss", "attributes": {"probability": 0.2}})
        assert added.status_code == 201, added.text
        view = added.json()
        assert (view["name"], view["type"], view["direction"]) == ("loss", "loss", "tx_to_rx")
        assert view["attributes"]["probability"] == 0.2 and view["counters"]["dropped"] == 0
        # The name is taken in this direction, free in the other one.
        assert client.post(base, json={"type": "loss"}).status_code == 409
        assert client.post("/impairments/rx_to_tx", json={"type": "loss"}).status_code == 201
        # A second loss of another name runs beside the first.
        burst = {"type": "loss", "name": "burst", "attributes": {"model": "gilbert_elliott"}}
        assert client.post(base, json=burst).status_code == 201
        assert [v["name"] for v in client.get(base).json()] == ["loss", "burst"]
        one = client.get(f"{base}/burst").json()
        assert one["attributes"]["model"] == "gilbert_elliott"
        # PATCH merges: what it does not name keeps its value.
        patched = client.patch(f"{base}/burst", json={"attributes": {"p_bad_to_good": 0.5}})
        assert patched.status_code == 200, patched.text
        attributes = patched.json()["attributes"]
        assert attributes["p_bad_to_good"] == 0.5 and attributes["model"] == "gilbert_elliott"
        # An attribute of another type validates as a patch but not once merged: 400 names it.
        wrong = client.patch(f"{base}/burst", json={"attributes": {"sigma": 0.5}})
        assert wrong.status_code == 400 and "sigma" in wrong.json()["detail"]
        assert client.get(f"{base}/burst").json()["attributes"] == attributes
        # Absent names answer 404, for every verb that addresses one.
        assert client.get(f"{base}/nope").status_code == 404
        assert client.patch(f"{base}/nope", json={"attributes": {}}).status_code == 404
        assert client.delete(f"{base}/nope").status_code == 404
        assert client.delete(f"{base}/burst").status_code == 204
        assert client.delete(f"{base}/burst").status_code == 404
        listed = [(v["direction"], v["name"]) for v in client.get("/impairments").json()]
        assert listed == [("tx_to_rx", "loss"), ("rx_to_tx", "loss")]
        assert client.delete("/impairments").status_code == 204
        assert client.get("/impairments").json() == []


def test_bodies_are_typed_per_impairment() -> None:
    with _client() as client:
        base = "/impairments/tx_to_rx"
        cases = [
            {"type": "gremlins"},  # no such type
            {"type": "loss", "attributes": {"probability": 2}},  # out of range
            {"type": "delay", "attributes": {"probability": 0.1}},  # not a delay attribute
            {"type": "loss", "name": "no spaces"},
            {"attributes": {"probability": 0.1}},  # the type is the discriminator
        ]
        for body in cases:
            assert client.post(base, json=body).status_code == 422, body
        assert client.post("/impairments/sideways", json={"type": "loss"}).status_code == 422
        assert client.get("/impairments").json() == []


def test_the_deprecated_put_still_adds_and_merges_by_type() -> None:
    with _client() as client:
        url = "/impairments/rx_to_tx/delay"
        assert client.put(url, json={"delay_ms": 5}).json()["attributes"]["delay_ms"] == 5
        merged = client.put(url, json={"jitter_ms": 1}).json()["attributes"]
        assert (merged["delay_ms"], merged["jitter_ms"]) == (5, 1)
        unknown = client.put("/impairments/rx_to_tx/gremlins", json={})
        assert unknown.status_code == 400 and "gremlins" in unknown.json()["detail"]


def test_writes_need_the_token_reads_do_not() -> None:
    with _client(host="0.0.0.0", control_token=TOKEN) as client:
        body = {"type": "loss"}
        assert client.post("/impairments/tx_to_rx", json=body).status_code == 401
        assert client.post("/impairments/tx_to_rx", json=body, headers=AUTH).status_code == 201
        patch = {"attributes": {"probability": 0.3}}
        assert client.patch("/impairments/tx_to_rx/loss", json=patch).status_code == 401
        assert client.delete("/impairments/tx_to_rx/loss").status_code == 401
        assert client.get("/impairments/tx_to_rx/loss").status_code == 200
        assert client.delete("/impairments/tx_to_rx/loss", headers=AUTH).status_code == 204


def test_openapi_documents_every_impairment_responses_and_the_bearer_scheme() -> None:
    with _client() as client:
        spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["controlToken"] == {
        **schemes["controlToken"],
        "type": "http",
        "scheme": "bearer",
    }
    post = spec["paths"]["/impairments/{direction}"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "type"
    assert set(body["discriminator"]["mapping"]) == set(IMPAIRMENTS)
    assert {"201", "400", "401", "409", "422"} <= set(post["responses"])
    assert post["security"] == [{"controlToken": []}]
    one = spec["paths"]["/impairments/{direction}/{name}"]
    assert {"200", "404"} <= set(one["get"]["responses"])
    assert {"200", "400", "401", "404"} <= set(one["patch"]["responses"])
    assert {"204", "401", "404"} <= set(one["delete"]["responses"])
    assert one["put"]["deprecated"] is True
    listed = spec["paths"]["/impairments"]["get"]["responses"]["200"]["content"]
    items = listed["application/json"]["schema"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(IMPAIRMENTS)
    # Each type's attributes are its own model, bounds included.
    schemas = spec["components"]["schemas"]
    ref = schemas["NewLoss"]["properties"]["attributes"]["$ref"]
    probability = schemas[ref.rsplit("/", 1)[1]]["properties"]["probability"]
    assert (probability["minimum"], probability["maximum"]) == (0.0, 1.0)


def test_new_impairment_union_validates_each_type_with_its_own_attributes() -> None:
    from pydantic import TypeAdapter

    adapter = TypeAdapter(NewImpairment)
    for kind, cls in IMPAIRMENTS.items():
        parsed = adapter.validate_python({"type": kind})
        assert isinstance(parsed.attributes, cls.Attributes)


def test_two_impairments_of_one_type_run_in_the_order_added_with_their_own_draws() -> None:
    """Named impairments of one type sit at the type's place in the pipeline, in the order they
    were added, each with its own random stream (keyed by its name)."""
    core = ChannelCore(CONFIG, seed=3)
    core.set_impairment("tx_to_rx", "delay", {"delay_ms": 1})
    core.set_impairment("tx_to_rx", "second", {"probability": 0.5}, kind="loss")
    core.set_impairment("tx_to_rx", "first", {"probability": 0.5}, kind="loss")
    assert list(core.impairments()["tx_to_rx"]) == ["second", "first", "delay"]
    assert core.impairment_types()["tx_to_rx"] == {
        "second": "loss",
        "first": "loss",
        "delay": "delay",
    }
    data = encode(Hit(seq=0, t=0.0, refs=(1,), cue=0))
    delivered = sum(len(core.on_data("tx_to_rx", data, float(i))) for i in range(2000))
    state = core.impairments()["tx_to_rx"]
    dropped = state["second"]["counters"]["dropped"], state["first"]["counters"]["dropped"]
    assert state["first"]["counters"]["matched"] == 2000 - dropped[0]
    assert delivered == 2000 - sum(dropped)
    assert np.isclose(dropped[0] / 2000, 0.5, atol=0.05) and dropped[1] > 0
    try:
        core.set_impairment("tx_to_rx", "first", {"delay_ms": 1}, kind="delay")
    except ValueError as exc:
        assert "first" in str(exc) and "loss" in str(exc)
    else:
        raise AssertionError("a name keeps its type")
    core.clear_impairment("tx_to_rx", "second")
    assert core.stats()["tx_to_rx"]["impairments"]["second"]["dropped"] == dropped[0]


CONTROL_PATHS = r"^/impairments|^/events/"
control_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", build_app(CONFIG, ChannelSettings(control_token=TOKEN, link_port=0))
).include(path_regex=CONTROL_PATHS)
_apps: dict[str, TestClient] = {}


@pytest.fixture(scope="module", autouse=True)
def _stop_app():
    yield
    while _apps:
        _apps.popitem()[1].__exit__(None, None, None)


@control_schema.parametrize()
@settings(max_examples=examples(20), **REST)
def test_control_api_conforms_to_its_openapi_schema(case) -> None:
    """Generated requests, with and without the token: never a 5xx, only documented status
    codes and content types, and every answer matches its declared model."""
    if "client" not in _apps:  # the lifespan of the schema's app, once for the module
        client = TestClient(case.operation.schema.app)
        client.__enter__()
        _apps["client"] = client
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    for headers in ({}, AUTH):
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks)
    _apps["client"].delete("/impairments", headers=AUTH)
