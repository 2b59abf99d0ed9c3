"""Per-message authentication (shared/protocol/seal.py): keys, seals, the replay window, and
what a sealed link costs in the ledger."""

from __future__ import annotations

import dataclasses

import pytest

from shared.accounting import LinkLedger, link_bits
from shared.config import build_config
from shared.protocol.messages import Bye, Digest, Hello, Hit, decode, encode
from shared.protocol.seal import (
    SEAL_BITS,
    SEALED_OVERHEAD,
    LinkAuth,
    MessageAuthError,
    ReplayWindow,
    hkdf_sha256,
    session_keys,
    split_sealed,
)
from shared.protocol.security import link_auth, sign_hello

SECRET = b"correct horse battery staple"


def _pair(tx_nonce: bytes = b"t" * 16, rx_nonce: bytes = b"r" * 16) -> tuple[LinkAuth, LinkAuth]:
    keys = session_keys(SECRET, tx_nonce, rx_nonce)
    return LinkAuth(keys, "tx"), LinkAuth(keys, "rx")


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf_sha256(ikm, salt, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_keys_depend_on_both_nonces_and_differ_per_direction() -> None:
    keys = session_keys(SECRET, b"t" * 16, b"r" * 16)
    assert keys.tx_to_rx != keys.rx_to_tx
    assert session_keys(SECRET, b"t" * 16, b"R" * 16) != keys  # a fresh Rx nonce: new keys
    assert session_keys(b"another secret", b"t" * 16, b"r" * 16) != keys
    with pytest.raises(ValueError):
        session_keys(SECRET, b"t" * 16, b"")


def test_sealed_messages_open_in_order_and_out_of_order_once() -> None:
    tx, rx = _pair()
    bodies = [encode(Hit(seq=i, t=0.0, refs=(1,), cue=7)) for i in range(5)]
    sealed = [tx.seal(b) for b in bodies]
    assert all(len(s) == len(b) + SEALED_OVERHEAD for s, b in zip(sealed, bodies, strict=True))
    # Still one msgpack message followed by one bin object: tools without the key can read it.
    body, counter, _ = split_sealed(sealed[3])
    assert decode(body) == decode(bodies[3]) and counter == 3
    for i in (0, 2, 1, 4, 3):  # reordered on the way: each passes once
        assert rx.open(sealed[i]) == bodies[i]
    for i in (1, 4):  # duplicated on the way, or replayed
        with pytest.raises(MessageAuthError) as refused:
            rx.open(sealed[i])
        assert refused.value.kind == "replayed"
    assert rx.counts() == {"sealed": 0, "opened": 5, "unsealed": 0, "forged": 0, "replayed": 2}


def test_forged_altered_unsealed_and_reflected_messages_are_refused() -> None:
    tx, rx = _pair()
    good = tx.seal(encode(Hit(seq=0, t=0.0, refs=(1,), cue=7)))
    altered = bytearray(good)
    altered[12] ^= 0x01  # one bit of the message, as a bit-error impairment would flip
    forged = encode(Hit(seq=10**6, t=0.0, refs=(1,), cue=7)) + good[-SEALED_OVERHEAD:]
    attacker, _ = _pair(rx_nonce=b"x" * 16)  # a replayed HELLO: keys under another Rx nonce
    cases = [
        (bytes(altered), "forged"),
        (forged, "forged"),
        (attacker.seal(encode(Bye(last_seq=0))), "forged"),
        (encode(Bye(last_seq=0)), "unsealed"),
        (rx.seal(encode(Bye(last_seq=0))), "forged"),  # the Rx's own message reflected to it
    ]
    for data, kind in cases:
        with pytest.raises(MessageAuthError) as refused:
            rx.open(data)
        assert refused.value.kind == kind
    assert rx.open(good)  # nothing refused moved the window: the real message still opens
    assert rx.counts()["forged"] == 4 and rx.counts()["unsealed"] == 1


def test_replay_window_refuses_what_is_behind_it_and_survives_huge_jumps() -> None:
    window = ReplayWindow(size=8)
    for counter in (0, 1, 5):
        assert not window.seen(counter)
        window.accept(counter)
    assert window.seen(1) and not window.seen(3)
    window.accept(2**32 - 1)  # a jump far past the window: no huge bitmap
    assert window.seen(5)  # now far behind: refused
    assert window.seen(2**32 - 1) and not window.seen(2**32 - 2)


def test_link_auth_binds_the_rx_hellos_fresh_nonce() -> None:
    hello = sign_hello(Hello(role="tx", config_digest="c", model_digest="m"), SECRET)
    reply = sign_hello(Hello(role="rx", config_digest="c", model_digest="m"), SECRET, hello.nonce)
    tx = link_auth(SECRET, "tx", hello, reply)
    rx = link_auth(SECRET, "rx", hello, reply)
    assert rx.open(tx.seal(b"\x80")) == b"\x80"
    other = sign_hello(Hello(role="rx", config_digest="c", model_digest="m"), SECRET, hello.nonce)
    restarted = link_auth(SECRET, "rx", hello, other)  # the same Tx HELLO, another Rx nonce
    with pytest.raises(MessageAuthError):
        restarted.open(tx.seal(b"\x80"))
    assert link_auth(None, "tx", hello, reply) is None


def test_the_ledger_counts_a_seal_on_every_message_but_the_hellos() -> None:
    cfg = build_config({}, read_env=False)
    plain, sealed = LinkLedger(cfg), LinkLedger(cfg, authenticated=True)
    hit = Hit(seq=0, t=0.0, refs=(1,), cue=7)
    hello = Hello(role="tx", config_digest="c", model_digest="m")
    for ledger in (plain, sealed):
        ledger.traffic(hello, len(encode(hello)))
        ledger.frame(0, hit, hit=True, wire_bytes=len(encode(hit)))
        digest = Digest(seq=0, count=0, digest="d")
        ledger.traffic(digest, len(encode(digest)))
    assert sealed.auth_bits == 2 * SEAL_BITS and plain.auth_bits == 0
    assert sealed.link_bits - plain.link_bits == 2 * SEAL_BITS
    assert sealed.wire_bits - plain.wire_bits == 2 * 8 * SEALED_OVERHEAD
    assert link_bits(dataclasses.replace(hello, next_seq=5), cfg) == link_bits(hello, cfg)
