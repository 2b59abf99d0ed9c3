"""Fuzzing the Rx's REST API (receiver.server), in-process: cases generated from its OpenAPI
schema; never a server error, and every success conforms to the schema.

Case counts are in tests/fuzzing.py; run deeper with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.fuzzing import (
    REST,
    REST_EXAMPLES,
    openapi_schema,
    schemathesis,
    stop_started,
    validate_case,
)


@pytest.fixture(scope="module", autouse=True)
def _stop_apps():
    yield
    stop_started()


if schemathesis is not None:
    rx_schema = openapi_schema("rx")

    @rx_schema.parametrize()
    @settings(max_examples=REST_EXAMPLES, **REST)
    def test_rx_api_from_its_openapi_schema(case) -> None:
        validate_case(case, "rx")
