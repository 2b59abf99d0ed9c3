"""The receiver's core for token links: CODED token frames in, token grids to show out.

Frames are decoded in sequence order per segment, as on every entropy-coded link (the ordering,
loss and duplicate handling is the single-latent core's). Each frame is verified by its cues
(:mod:`shared.coding.tokens`): a region whose cue fails, or that recalls a prototype the Rx does
not hold, is concealed with the last good frame's tokens there and its prototypes are asked for
again; a frame whose frame cue fails with every region cue passing is concealed whole and the
prototypes of its unverified regions are asked for again (the rotating region cue also finds the
culprit within a rotation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from receiver.core import ReceiverCore, RxStep
from shared.accounting import Outcome
from shared.coding.tokens import (
    DIGEST_BLOCK,
    NEW,
    REGION_CUE_BITS,
    TokenCoder,
    TokenSymbols,
    region_index,
    xor_cue,
)
from shared.protocol.messages import Coded, Digest, ProtocolError

MAX_REFRESHES_PER_FRAME = 256  # prototypes one concealed frame may ask for
REFRESHED_TRUST = 30  # frames a refreshed prototype is not asked for again (it is the Tx's own)
ASK_AGAIN = 5  # frames before an unanswered request is repeated (lost, or over the Tx's budget)
# A DIGEST asks for every reference of the blocks that differ, up to the token Tx's refresh budget
# (transmitter/tokens.py): a corruption event can touch thousands of prototypes at once.
MAX_REFRESHES_PER_TOKEN_DIGEST = 8192


@dataclass
class TokenReceiverCore(ReceiverCore):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.coder = TokenCoder(self.config)
        self.regions_concealed = 0  # regions shown from the last good frame
        self.frame_cue_failures = 0  # frames whose frame cue failed with every region passing
        self._digest_cursor = 0  # where the next DIGEST mismatch starts asking (a rotation)
        self._refreshed: dict[int, int] = {}  # reference -> the frame position it was refreshed at
        self._asked: dict[int, int] = {}  # reference -> the frame position it was last asked for

    def _decode_payload(self, coded: Coded) -> TokenSymbols:
        return self.coder.decode(coded.payload, coded.seq)

    def _apply_symbols(self, seq: int, t: float, symbols, now: float, step: RxStep) -> None:
        self._show(seq, t, symbols, step)

    def _show(self, seq: int, t: float, symbols: TokenSymbols, step: RxStep) -> None:
        cfg, memory = self.config, self.memory
        kinds, refs = symbols.kinds, symbols.refs
        h, w = kinds.shape
        recalled = kinds != NEW
        slots = self.id_map[refs]
        grid = memory.prototypes[slots].copy()  # recalls read the memory before its writes
        missing = recalled & ~memory.filled[slots]
        new = kinds == NEW
        if new.any():
            new_slots = refs[new]
            if np.unique(new_slots).size != new_slots.size:
                self._settle(seq, t, self.last_good, Outcome.CONCEALED, step)
                raise ProtocolError(f"coded {seq}: {new_slots.size} NEW tokens overrun the ring")
            grid[new] = memory.store_many(new_slots, symbols.new_codes)
            self.id_map[new_slots] = new_slots
            self.slot_cues[new_slots] = self.hasher.cues(grid[new])
            for ref in new_slots.tolist():
                self._awaiting.pop(ref, None)
        # Verification against the Tx's cues, over the Rx's own prototypes of the references.
        own = self.slot_cues[self.id_map]  # cue per reference
        regions = region_index((h, w))
        failed = set(np.unique(regions[missing]).tolist())
        mask = (1 << min(REGION_CUE_BITS, cfg.cue_bits)) - 1
        for region, cue in symbols.region_cues.items():
            if xor_cue(own, refs[recalled & (regions == region)]) & mask != cue:
                failed.add(region)
        frame_ok = symbols.frame_cue is None or xor_cue(own, refs[recalled]) == symbols.frame_cue
        self.counters.missing_refs += int(missing.sum())
        if not failed and frame_ok:
            self._settle(seq, t, grid, Outcome.DECODED, step)
            return
        self.counters.cue_failures += 1
        shown = self.last_good if self.last_good is not None else grid
        if shown.shape != grid.shape:
            shown = grid
        # Suspects: the failing regions, and when the frame cue fails too, every region no cue
        # verified this frame (a corrupted prototype there is not localized any closer).
        suspect = np.isin(regions, list(failed))
        if not frame_ok:
            suspect |= ~np.isin(regions, list(symbols.region_cues))
        if failed:
            self.regions_concealed += len(failed)
            concealed = np.isin(regions, list(failed))
            grid[concealed] = shown[concealed]
        else:  # only the frame cue failed: nothing localized, the whole frame is concealed
            self.frame_cue_failures += 1
            grid = shown
        # A suspect region names every prototype it shows; those refreshed lately are the Tx's
        # own, so each frame asks for ones not yet repaired and the repair progresses.
        now_at = self._coded_next
        suspects = [
            ref
            for ref in np.unique(refs[suspect & recalled]).tolist()
            if now_at - self._refreshed.get(ref, -REFRESHED_TRUST) >= REFRESHED_TRUST
            and now_at - self._asked.get(ref, -ASK_AGAIN) >= ASK_AGAIN
        ][:MAX_REFRESHES_PER_FRAME]
        for ref in suspects:
            self._asked[ref] = now_at
            self._request_refresh(ref, -1, "token region failed its cue", step, retry=True)
        # Concealed frames do not become the last good frame; the next one is compared afresh.
        self._settle(seq, t, grid, Outcome.CONCEALED, step)

    def _on_digest(self, digest: Digest, step: RxStep) -> None:
        """Compare block hashes; ask again for every reference of a block that differs."""
        self.counters.digests += 1
        self.tx_digest = digest.digest
        blocks = -(-digest.count // DIGEST_BLOCK)
        if len(digest.slot_hashes) != 4 * blocks or digest.count > self.config.capacity:
            raise ProtocolError(f"digest: {len(digest.slot_hashes)} hash bytes for {digest.count}")
        if digest.digest == self.digest:
            return
        self.counters.digest_mismatches += 1
        theirs = np.frombuffer(digest.slot_hashes, dtype="<u4")
        ours = self.memory.block_hashes(order=self.id_map, block=DIGEST_BLOCK)
        differing = [
            ref
            for block in range(blocks)
            if block >= len(ours) or ours[block] != theirs[block]
            for ref in range(block * DIGEST_BLOCK, min((block + 1) * DIGEST_BLOCK, digest.count))
        ]
        # A block names up to DIGEST_BLOCK suspects and only so many are asked per DIGEST: start
        # where the last one stopped, so every suspect is asked within a few periods.
        start = self._digest_cursor % max(1, len(differing))
        for ref in (differing[start:] + differing[:start])[:MAX_REFRESHES_PER_TOKEN_DIGEST]:
            self._request_refresh(ref, -1, "digest mismatch", step, retry=True)
        self._digest_cursor = start + MAX_REFRESHES_PER_TOKEN_DIGEST

    def _on_refresh(self, refresh, step: RxStep) -> None:
        super()._on_refresh(refresh, step)
        self._refreshed[refresh.ref] = self._coded_next


def receiver_core(config, **kwargs) -> ReceiverCore:
    """The Rx core a link configuration needs: the token core for a token codec."""
    return (TokenReceiverCore if config.token_link else ReceiverCore)(config, **kwargs)
