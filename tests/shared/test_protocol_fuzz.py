"""Fuzzing the message decoder (shared.protocol.messages): random bytes, random fields, mutated
valid messages, deep nesting and oversize.

Every input is either handled or refused with the module's own named error. Strategies and case
counts are in tests/fuzzing.py; run deeper with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.protocol.messages import MESSAGE_TYPES, Message, ProtocolError, decode, encode
from tests.fuzzing import CONFIGS, FUZZ, examples, messages, msgpack_values


def _decodes_or_refuses(data: bytes) -> Message | None:
    try:
        message = decode(data)
    except ProtocolError:
        return None
    assert isinstance(message, Message)
    assert decode(encode(message)) == message  # what decodes, re-encodes to the same message
    return message


@settings(max_examples=examples(3000), **FUZZ)
@given(st.binary(max_size=600))
def test_decoder_refuses_random_bytes_with_a_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=examples(1000), **FUZZ)
@given(
    kind=st.sampled_from([*MESSAGE_TYPES, "nope", ""]) | st.integers(0, 2**64 - 1) | st.none(),
    fields=st.dictionaries(
        st.sampled_from(
            sorted({f.name for c in MESSAGE_TYPES.values() for f in dataclasses.fields(c)})
        )
        | st.text(max_size=6),
        msgpack_values,
        max_size=8,
    ),
)
def test_decoder_validates_every_field(kind: Any, fields: dict) -> None:
    data = msgpack.packb({"type": kind, **fields}, use_bin_type=True)
    message = _decodes_or_refuses(data)
    if message is not None:  # accepted fields are the declared types, floats finite
        for f in dataclasses.fields(message):
            value = getattr(message, f.name)
            if isinstance(value, float):
                assert math.isfinite(value)


@settings(max_examples=examples(1000), **FUZZ)
@given(
    st.data(),
    st.sampled_from(list(CONFIGS.values())),
)
def test_decoder_survives_mutations_of_valid_messages(data, config) -> None:
    raw = bytearray(encode(data.draw(messages(config))))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "append", "byte"]))
        if op == "flip" and raw:
            bit = data.draw(st.integers(0, 8 * len(raw) - 1))
            raw[bit >> 3] ^= 0x80 >> (bit & 7)
        elif op == "truncate":
            del raw[data.draw(st.integers(0, len(raw))) :]
        elif op == "append":
            raw += data.draw(st.binary(min_size=1, max_size=8))
        elif raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decodes_or_refuses(bytes(raw))


def test_decoder_refuses_deep_nesting_and_oversize() -> None:
    deep = b"\x91" * 100_000 + b"\xc0"  # a list in a list in ... (msgpack's stack limit)
    with pytest.raises(ProtocolError):
        decode(deep)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (300 * 1024))
    huge_map = msgpack.packb({"type": "bye", "last_seq": 1, **{f"k{i}": i for i in range(10_000)}})
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode(huge_map)
