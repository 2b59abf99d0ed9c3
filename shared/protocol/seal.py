"""Per-message authentication of a link that has a shared secret (sans-I/O).

Once the HELLOs have passed, every message in both directions is *sealed*: its msgpack bytes are
followed by a second msgpack object, a 12-byte binary (``bin 8``) holding a 32-bit counter and a
64-bit tag, the first 8 bytes of HMAC-SHA256(key, counter ‖ message) under its direction's key.
An end that reads a message checks the tag first, then the counter against a sliding window of
the counters it accepted (the IPsec/DTLS anti-replay window), and only then decodes it: a forged,
altered or replayed message is dropped and counted and never reaches a core, so it cannot move
the Rx's sequence state. The window lets messages the channel reordered or delayed pass once;
a duplicate or a message older than the window is refused.

Keys come from HKDF-SHA256 (RFC 5869) of the secret, salted with *both* HELLO nonces: the Tx's,
and the fresh one the Rx answers with. A HELLO replayed to a restarted Rx (which no longer knows
the nonces it saw) opens a link whose keys depend on that Rx's new nonce, which the replayer
cannot compute without the secret, so nothing it sends afterwards passes. One key per direction:
a message cannot be reflected back to its sender.

Cost: :data:`SEAL_BITS` (counter + tag) per message after the HELLOs, counted as link overhead by
:class:`shared.accounting.LinkLedger`; on the socket :data:`SEALED_OVERHEAD` bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SEAL_COUNTER_BYTES = 4
SEAL_TAG_BYTES = 8  # a truncated HMAC-SHA256: 64 bits
SEAL_BYTES = SEAL_COUNTER_BYTES + SEAL_TAG_BYTES
SEAL_BITS = 8 * SEAL_BYTES  # link bits each sealed message carries beyond its own fields
_SEAL_HEADER = bytes([0xC4, SEAL_BYTES])  # msgpack bin 8: the seal is a second msgpack object
SEALED_OVERHEAD = len(_SEAL_HEADER) + SEAL_BYTES  # bytes the seal adds on the socket
MAX_COUNTER = 2 ** (8 * SEAL_COUNTER_BYTES) - 1
REPLAY_WINDOW = 4096  # counters behind the highest one that may still arrive (reordered)
_KEY_LABEL = b"hoplink-link-keys-v1"


class MessageAuthError(ValueError):
    """A message that failed authentication; ``kind`` is ``unsealed``, ``forged``, ``replayed``
    or ``exhausted`` (the sender's counter ran out: the link must be opened again)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract a key from ``ikm`` and ``salt``, expand to
    ``length`` bytes bound to ``info``."""
    if not 0 < length <= 255 * 32:
        raise ValueError(f"hkdf: cannot derive {length} bytes")
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True)
class SessionKeys:
    """The two directional keys of one link."""

    tx_to_rx: bytes
    rx_to_tx: bytes


def session_keys(secret: bytes, tx_nonce: bytes, rx_nonce: bytes) -> SessionKeys:
    """Both directions' keys from the secret and the two HELLO nonces (both must be fresh)."""
    if not secret or not tx_nonce or not rx_nonce:
        raise ValueError("session keys need the secret and both HELLO nonces")
    # Length-prefixed, so (tx, rx) nonce pairs cannot be re-split into another pair.
    salt = len(tx_nonce).to_bytes(2, "big") + tx_nonce + len(rx_nonce).to_bytes(2, "big") + rx_nonce
    okm = hkdf_sha256(secret, salt, _KEY_LABEL, 64)
    return SessionKeys(tx_to_rx=okm[:32], rx_to_tx=okm[32:])


def _tag(key: bytes, counter: bytes, body: bytes) -> bytes:
    return hmac.new(key, counter + body, hashlib.sha256).digest()[:SEAL_TAG_BYTES]


def split_sealed(data: bytes) -> tuple[bytes, int, bytes] | None:
    """(message bytes, counter, tag) of a sealed message; None when ``data`` ends in no seal.
    A tool that needs no key (the channel) uses it to read the message inside."""
    if len(data) <= SEALED_OVERHEAD or data[-SEALED_OVERHEAD:-SEAL_BYTES] != _SEAL_HEADER:
        return None
    seal = data[-SEAL_BYTES:]
    counter = int.from_bytes(seal[:SEAL_COUNTER_BYTES], "big")
    return data[:-SEALED_OVERHEAD], counter, seal[SEAL_COUNTER_BYTES:]


class ReplayWindow:
    """Which of the last ``size`` counters were accepted: a bitmap anchored at the highest."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"replay window of {size} counters")
        self.size = size
        self.highest = -1
        self._bits = 0  # bit i: counter highest - i was accepted

    def seen(self, counter: int) -> bool:
        """True for a counter accepted before, or too old to tell (behind the window)."""
        if counter > self.highest:
            return False
        behind = self.highest - counter
        return behind >= self.size or bool(self._bits >> behind & 1)

    def accept(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            # A jump past the window forgets it whole (and never builds a huge integer).
            self._bits = 1 if shift >= self.size else (self._bits << shift | 1)
            self._bits &= (1 << self.size) - 1
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)


class Sealer:
    """Seals what one end sends in one direction: counter 0, 1, 2, … and the tag."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.counter = 0

    def seal(self, body: bytes) -> bytes:
        if self.counter > MAX_COUNTER:
            raise MessageAuthError("exhausted", "message counter exhausted: reopen the link")
        counter = self.counter.to_bytes(SEAL_COUNTER_BYTES, "big")
        self.counter += 1
        return body + _SEAL_HEADER + counter + _tag(self._key, counter, body)


class Opener:
    """Checks what one end receives in one direction; counts what it refuses, by kind."""

    def __init__(self, key: bytes, window: int = REPLAY_WINDOW) -> None:
        self._key = key
        self.window = ReplayWindow(window)
        self.opened = 0
        self.unsealed = 0  # no seal where one was due
        self.forged = 0  # a tag that does not verify (forged, or altered on the way)
        self.replayed = 0  # a valid tag on a counter accepted before (or behind the window)

    def open(self, data: bytes) -> bytes:
        """The message bytes inside ``data``; raises MessageAuthError (counted) otherwise."""
        parts = split_sealed(data)
        if parts is None:
            self.unsealed += 1
            raise MessageAuthError("unsealed", "message without a seal on an authenticated link")
        body, counter, tag = parts
        expected = _tag(self._key, counter.to_bytes(SEAL_COUNTER_BYTES, "big"), body)
        if not hmac.compare_digest(tag, expected):
            self.forged += 1
            raise MessageAuthError("forged", f"message {counter}: wrong tag (forged or altered)")
        if self.window.seen(counter):  # only a verified counter moves or consults the window
            self.replayed += 1
            raise MessageAuthError("replayed", f"message {counter}: replayed or too old")
        self.window.accept(counter)
        self.opened += 1
        return body


class LinkAuth:
    """One link end's sealer (what it sends) and opener (what it receives)."""

    def __init__(self, keys: SessionKeys, role: str) -> None:
        if role not in ("tx", "rx"):
            raise ValueError(f"link auth for role {role!r}; expected 'tx' or 'rx'")
        send, receive = (
            (keys.tx_to_rx, keys.rx_to_tx) if role == "tx" else (keys.rx_to_tx, keys.tx_to_rx)
        )
        self.sealer = Sealer(send)
        self.opener = Opener(receive)

    def seal(self, body: bytes) -> bytes:
        return self.sealer.seal(body)

    def open(self, data: bytes) -> bytes:
        return self.opener.open(data)

    def counts(self) -> dict[str, int]:
        o = self.opener
        return {
            "sealed": self.sealer.counter,
            "opened": o.opened,
            "unsealed": o.unsealed,
            "forged": o.forged,
            "replayed": o.replayed,
        }


__all__ = [
    "MAX_COUNTER",
    "REPLAY_WINDOW",
    "SEALED_OVERHEAD",
    "SEAL_BITS",
    "SEAL_BYTES",
    "LinkAuth",
    "MessageAuthError",
    "Opener",
    "ReplayWindow",
    "Sealer",
    "SessionKeys",
    "hkdf_sha256",
    "session_keys",
    "split_sealed",
]
