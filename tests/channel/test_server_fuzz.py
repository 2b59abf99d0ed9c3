"""Fuzzing the channel's REST API (channel.server), in-process: Hypothesis-generated JSON
against the control API, and cases generated from its OpenAPI schema; never a server error.

Strategies and case counts are in tests/fuzzing.py; run deeper with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import (
    AUTH,
    FUZZ,
    REST,
    REST_EXAMPLES,
    examples,
    openapi_schema,
    schemathesis,
    started,
    stop_started,
    validate_case,
)


@pytest.fixture(scope="module", autouse=True)
def _stop_apps():
    yield
    stop_started()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)
attribute_names = st.sampled_from(
    [
        "probability",
        "ber",
        "delay_ms",
        "jitter_ms",
        "types",
        "seq_range",
        "toxicity",
        "model",
        "whole_frame",
        "after_messages",
        "sigma",
        "bits_per_second",
        "queue_bytes",
    ]
) | st.text(max_size=10)


@settings(max_examples=examples(300), **FUZZ)
@given(
    direction=st.sampled_from(["tx_to_rx", "rx_to_tx", "sideways", "%00", ""]),
    name=st.sampled_from(["loss", "bit_errors", "delay", "reorder", "rate", "gremlins"]),
    body=st.dictionaries(attribute_names, json_values, max_size=5) | json_values,
    method=st.sampled_from(["PUT", "DELETE", "POST"]),
    auth=st.booleans(),
)
def test_channel_control_api_answers_any_body_without_a_server_error(
    direction, name, body, method, auth
) -> None:
    """Hypothesis-generated JSON against the control API (in-process): 2xx or a 4xx that says
    why, never a 5xx; with the token only, state changes."""
    client = started("channel")
    path = f"/impairments/{direction}/{name}" if method != "POST" else "/events/corrupt"
    headers = {"Content-Type": "application/json", **(AUTH if auth else {})}
    content = json.dumps(body)  # NaN and Infinity included: Python's JSON parser takes them
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code < 500, response.text
    if not auth:
        assert response.status_code in (401, 404, 405), response.text
    elif response.status_code >= 400:
        assert response.json()["detail"]
    client.delete("/impairments", headers=AUTH)


if schemathesis is not None:
    channel_schema = openapi_schema("channel")

    @channel_schema.parametrize()
    @settings(max_examples=REST_EXAMPLES, **REST)
    def test_channel_api_from_its_openapi_schema(case) -> None:
        validate_case(case, "channel")
        started("channel").delete("/impairments", headers=AUTH)
