import contextlib
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.protocol.messages import (
    MAX_MESSAGE_BYTES,
    Bye,
    Digest,
    Error,
    Hello,
    Hit,
    New,
    ProtocolError,
    Refresh,
    RefreshRequest,
    decode,
    encode,
    peek_type,
)

EXAMPLES = [
    Hello(role="tx", config_digest="ab" * 32, model_digest="cd" * 32),
    Hit(seq=7, t=0.25, refs=(3,), cue=2**40 + 5),
    Hit(seq=8, t=0.5, refs=(3, 9, 1), cue=0, weights=(15, 7, 2)),
    New(seq=9, t=0.3, slot=12, latent=bytes(range(64))),
    New(seq=10, t=0.3, slot=-1, latent=b"\x00" * 64),
    RefreshRequest(ref=12, seq=9, reason="cue and lookup failed"),
    Refresh(ref=12, seq=9, latent=b"\x01" * 64),
    Digest(seq=30, count=2, digest="0" * 64, slot_hashes=b"\x00" * 8),
    Error(code="bad_message", reason="x"),
    Bye(last_seq=99),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(message):
    assert decode(encode(message)) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.TYPE)
def test_peek_type_reads_the_type_without_decoding(message):
    data = encode(message)
    assert peek_type(data) == message.TYPE
    assert peek_type(data[:7]) is None  # too short to say
    assert peek_type(msgpack.packb({"seq": 1, "type": message.TYPE})) is None  # type not first


def test_hit_is_small_on_the_wire():
    assert len(encode(Hit(seq=1000, t=33.3, refs=(200,), cue=2**31))) < 64


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"type": "warp"}, "unknown message type"),
        ({"type": "hit", "seq": 1, "t": 0.0, "refs": [1]}, "missing field 'cue'"),
        (
            {"type": "hit", "seq": "1", "t": 0.0, "refs": [1], "cue": 0},
            "hit.seq must be an integer",
        ),
        ({"type": "hit", "seq": 1, "t": math.nan, "refs": [1], "cue": 0}, "hit.t must be finite"),
        ({"type": "hit", "seq": 1, "t": 0.0, "refs": [-2], "cue": 0}, "hit.refs"),
        (
            {"type": "new", "seq": 1, "t": 0.0, "slot": 1, "latent": "text"},
            "new.latent must be binary",
        ),
        ({"type": "new", "seq": 1, "t": 0.0, "slot": -5, "latent": b""}, "new.slot = -5"),
        ({"type": "bye", "last_seq": 1, "extra": 1}, "unknown fields"),
        ([1, 2, 3], "expected a map"),
    ],
)
def test_invalid_messages_are_named(payload, match):
    with pytest.raises(ProtocolError, match=match):
        decode(msgpack.packb(payload, use_bin_type=True))


def test_malformed_and_oversize_bytes():
    with pytest.raises(ProtocolError, match="malformed"):
        decode(b"\xc1\xff\x00")
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_protocol_error(data):
    with contextlib.suppress(ProtocolError):  # anything else fails the test
        decode(data)
