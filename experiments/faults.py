"""The fault matrix: one link under each fault, checked against what the link promises.

The promise (DESIGN "Protocol"): under faults and bad input the link keeps working,
accounts for every frame, never decodes a wrong frame silently more often than its cues allow,
and its two memories re-converge once the faults stop. Each :class:`FaultCell` names a fault
(bit errors, loss, bursts, ID desync, prototype noise, reorder, duplication, and combinations);
running it yields a :class:`CellResult` whose :meth:`CellResult.problems` lists every broken
promise. ``hoplink faults`` prints the matrix; ``tests/experiments/test_faults.py`` asserts it is
clean.

Two runners, one set of cells:

* **in-process** (:func:`run_cell`): the Tx, channel and Rx cores wired together on a virtual
  clock (no sockets, no sleeping): the channel core's impairments, delays and reordering act
  exactly as in the channel process. Seeded and deterministic, so it runs the whole matrix in
  seconds, and — being omniscient — it can check what the Rx cannot know: whether a frame it
  accepted was the Tx's (*silent wrong*), and when the two memories became equal again.
* **network** (:func:`run_network`): the real rx, channel and tx processes on loopback, a few
  cells through one Rx and one channel (a fresh Tx per cell: its BYE ends the Rx session, its
  HELLO starts the next, so every cell reads its own numbers). It checks what processes add:
  no crash or hang, every frame accounted, memories agreeing at the end.

Faults are on for frames ``[start, stop)``; the in-process runner clears the channel at ``stop``
(and one-shot corruption events happen inside the window, at their cell's fraction of the clip
moved by a seeded random offset, so no event sits on a DIGEST boundary by construction); the
network runner gives every
impairment ``seq_range = [start, stop - 1]`` instead, which needs no timing.

**Silent wrong decodes.** The Rx accepts a reference when its own prototype's K-bit SimHash cue
is within t bits of the cue sent. Each hyperplane separates two latents at angle θ with
probability θ/π, so a wrong prototype at angle θ passes with
P = P[Binom(K, θ/π) ≤ t] (:func:`shared.memory.cues.accept_probability`; at θ = π/2 this is
:func:`shared.memory.cues.false_accept_probability`, ≈1.3e-6 for K = 32, t = 3). Before each HIT
reaches the Rx the runner computes an upper bound of the chance that it is accepted wrongly — the
verification of the referenced prototype plus a union bound over the lookup's candidates — and
sums it: ``risk`` is the expected number of silent wrong frames. Frames on the same wrong
prototype repeat one and the same cue comparison (the hyperplanes are fixed), so the check is
made on distinct (shown, true) pairs: ``pairs ≤ risk_pairs + 3·sqrt(risk_pairs) + 3``.
With DELTA or entropy-coded frames (link tools) the same model is applied when the Rx resolves
a frame's reference (a coded HIT's, a DELTA's base): a wrong one passed its cue, or was trusted
because the coded cue was not sent (``coded_cue=on_change``: same reference as the previous
frame), which the model counts as certain acceptance — a mode that verifies less shows its
silent wrong frames (DESIGN "Comparing methods at matched quality").
A NEW or REFRESH whose latent bits the channel flipped is wrong content that no cue covers (the
protocol carries no checksum); such frames are counted apart (``payload wrong``) and must not
exceed the latent messages the channel corrupted.

**Re-convergence bound.** After the faults stop with D references diverged, the first DIGEST
comes within N frames (``digest_every``); each DIGEST makes the Rx request up to
R = min(MAX_REFRESHES_PER_DIGEST, refresh_budget) refreshes, each answered within the Tx's
budget and arriving before the next frame on a clean link. So ⌈D/R⌉ DIGESTs repair everything,
and the memories are equal within ``N·(⌈D/R⌉ + 1) + 1`` frames of the stop (one spare period
for a repair that races a DIGEST), and stay equal.

**Process faults** (tests/e2e/test_faults.py, tests/e2e/test_network.py). A killed Rx restarts
empty: it persists nothing. The Tx reconnects with capped backoff; the fresh Rx opens a new
session, counts the frames before its first as lost (none skipped silently), and re-learns the
memory the way every divergence is repaired: hits on references it lacks ask for refreshes at once,
and each DIGEST names up to 32 stale references, answered within the Tx's refresh budget — the
memories agree within N·(⌈M/R⌉ + 1) + 1 frames for M references. A snapshot on disk was not chosen:
it would still have to be checked against the Tx by a DIGEST (NEWs sent while the Rx was down are
gone, evictions rewrite slots, a snapshot may come from another session or configuration), so it
would only save the refresh traffic — at most M·(⌈log2 M⌉ + d·b) bits, 16.6 kB at the defaults,
spread over ⌈M/32⌉ DIGEST periods — for disk state that must itself be versioned, verified and kept
fresh. A killed Tx restarts at frame 0 with an empty memory; its HELLO carries a new stream id, so
the Rx opens a new session instead of taking its frames for duplicates of the dead stream's. A
restarted channel: the Tx reconnects, the Rx resumes the session (same stream id) and counts the
frames lost in the break.

**Which cells run where.** Every cell runs in process (seconds for the whole matrix); four
cells, one per family (bit errors + loss, bursts + reorder + duplication + feedback loss, memory
corruption on write and by events, whole-frame bit errors), also run over real processes
(``NETWORK_CELLS``, about 6 s each, most of it the Tx process starting), where the Rx cannot know
the truth, so silent wrong decodes and the re-convergence time are checked in process only.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.demo import DemoError, Processes, get_json, request_json, wait_for
from experiments.link import InProcessLink, run_stream
from experiments.tables import TERMINAL_WIDTH, render_table
from receiver.core import MAX_REFRESHES_PER_DIGEST
from shared.accounting import Outcome
from shared.codec.models import load_codec
from shared.config import LinkConfig, build_config
from shared.memory.cues import false_accept_probability
from shared.scenarios import load_clip

# The matrix's link: a clip with scene cuts and returns (a few dozen prototypes, mostly hits), a
# tight τ so that memories hold enough prototypes for ID desync to permute, DIGEST every 15.
SCENARIO = "scene_change"
FRAMES = 240
THRESHOLD = 0.99
DIGEST_EVERY = 15
FPS = 30.0
SEED = 0
NETWORK_SCENARIO = "low_motion"
NETWORK_FRAMES = 150

Impairments = dict[str, dict[str, dict[str, Any]]]  # direction -> impairment -> attributes


@dataclass(frozen=True)
class CorruptAt:
    """A one-shot corruption of the Rx memory (``POST /events/corrupt``) before a frame."""

    frame: int
    rho: float = 0.0
    sigma: float = 0.0


@dataclass(frozen=True)
class FaultCell:
    """One fault of the matrix: impairments on for frames [start, stop) and one-shot events.

    ``start``/``stop``/event frames are fractions of the clip when below 1 (0.1 → frame 24 of
    240), so one cell serves clips of any length.
    """

    name: str
    group: str
    impairments: Impairments = field(default_factory=dict)
    events: tuple[CorruptAt, ...] = ()
    start: float = 0.1
    stop: float = 0.6
    full_only: bool = False  # only in the full matrix (``--full`` / HOPLINK_FULL_FAULTS=1)
    config: dict[str, Any] = field(default_factory=dict)  # LinkConfig changes for this cell
    headers_exposed: bool = False  # whole-frame bit errors: seq and slots may be wrong too

    def window(self, frames: int) -> tuple[int, int]:
        return _frame(self.start, frames), _frame(self.stop, frames)

    def event_frames(self, frames: int, seed: int = SEED) -> list[tuple[int, CorruptAt]]:
        """Each event's frame, moved by a seeded random offset of up to frames/20 either way,
        so corruption lands at no fixed phase of the DIGEST period."""
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        reach = max(1, frames // 20)
        out = []
        for e in self.events:
            at = _frame(e.frame, frames) + int(rng.integers(-reach, reach + 1))
            out.append((int(np.clip(at, 1, frames - 1)), e))
        return out


def _frame(x: float, frames: int) -> int:
    return int(round(x * frames)) if x < 1 else int(x)


def _ge(p_gb: float, p_bg: float) -> dict[str, Any]:
    return {"model": "gilbert_elliott", "p_good_to_bad": p_gb, "p_bad_to_good": p_bg}


FWD, BACK = "tx_to_rx", "rx_to_tx"


def _cells() -> list[FaultCell]:
    cells = [FaultCell("clean", "baseline")]
    for ber in (1e-4, 1e-3, 1e-2):
        cells.append(FaultCell(f"ber {ber:g}", "bit errors", {FWD: {"bit_errors": {"ber": ber}}}))
    cells.append(
        FaultCell(
            "ber 1e-3 whole frame",
            "bit errors",
            {FWD: {"bit_errors": {"ber": 1e-3, "whole_frame": True}}},
            headers_exposed=True,
        )
    )
    cells.append(
        FaultCell(
            "ber 1e-2 whole frame",
            "bit errors",
            {FWD: {"bit_errors": {"ber": 1e-2, "whole_frame": True}}},
            headers_exposed=True,
            full_only=True,
        )
    )
    for p in (0.01, 0.1):
        cells.append(FaultCell(f"loss {p:.0%}", "loss", {FWD: {"loss": {"probability": p}}}))
    cells.append(FaultCell("loss bursts (G-E)", "loss", {FWD: {"loss": _ge(0.02, 0.25)}}))
    cells.append(
        FaultCell(
            "loss bursts (G-E) long", "loss", {FWD: {"loss": _ge(0.01, 0.05)}}, full_only=True
        )
    )
    cells.append(
        FaultCell(
            "feedback loss 50%",
            "loss",
            {BACK: {"loss": {"probability": 0.5}}, FWD: {"bit_errors": {"ber": 1e-3}}},
        )
    )
    for rho in (0.05, 0.2, 0.5):
        cells.append(
            FaultCell(f"desync rho {rho}", "id desync", events=(CorruptAt(0.57, rho=rho),))
        )
    for sigma in (0.05, 0.2, 0.5):
        cells.append(
            FaultCell(
                f"noise sigma {sigma}", "prototype noise", events=(CorruptAt(0.57, sigma=sigma),)
            )
        )
    cells.append(
        FaultCell(
            "desync + noise on write",
            "memory writes",
            {
                FWD: {
                    "id_desync": {"probability": 0.2},
                    "prototype_noise": {"probability": 0.3, "sigma": 0.2},
                }
            },
        )
    )
    cells.append(
        FaultCell(
            "reorder + duplicate + jitter",
            "transport",
            {
                FWD: {
                    "duplicate": {"probability": 0.1},
                    "delay": {"delay_ms": 20, "jitter_ms": 15},
                    "reorder": {"probability": 0.1, "after_messages": 3, "hold_ms": 200},
                },
                BACK: {"delay": {"delay_ms": 20, "jitter_ms": 15}},
            },
        )
    )
    cells.append(
        FaultCell(
            "rate 20 kbit/s + queue",
            "transport",
            {FWD: {"rate": {"bits_per_second": 20_000, "queue_bytes": 2_000}}},
            full_only=True,
        )
    )
    cells.append(
        FaultCell(
            "everything at once",
            "combination",
            {
                FWD: {
                    "bit_errors": {"ber": 1e-3},
                    "loss": _ge(0.02, 0.25),
                    "duplicate": {"probability": 0.05},
                    "delay": {"delay_ms": 10, "jitter_ms": 8},
                    "reorder": {"probability": 0.05, "after_messages": 2},
                },
                BACK: {"loss": {"probability": 0.1}},
            },
            events=(CorruptAt(0.3, rho=0.2), CorruptAt(0.45, sigma=0.2)),
        )
    )
    # The full matrix: the cross product of bit errors and loss, of ρ and σ, other link modes.
    for ber in (1e-4, 1e-3, 1e-2):
        for name, loss in (
            ("1%", {"probability": 0.01}),
            ("10%", {"probability": 0.1}),
            ("G-E", _ge(0.02, 0.25)),
        ):
            cells.append(
                FaultCell(
                    f"ber {ber:g} + loss {name}",
                    "combination",
                    {FWD: {"bit_errors": {"ber": ber}, "loss": loss}},
                    full_only=True,
                )
            )
    for rho in (0.05, 0.2, 0.5):
        for sigma in (0.05, 0.2, 0.5):
            cells.append(
                FaultCell(
                    f"rho {rho} + sigma {sigma}",
                    "memory corruption",
                    events=(CorruptAt(0.57, rho=rho, sigma=sigma),),
                    full_only=True,
                )
            )
    for mode in ({"memory": "vq"}, {"transmission": "soft"}):
        label = ", ".join(f"{v}" for v in mode.values())
        cells.append(
            FaultCell(
                f"{label}: ber 1e-3 + loss 10% + rho 0.2",
                "link modes",
                {FWD: {"bit_errors": {"ber": 1e-3}, "loss": {"probability": 0.1}}},
                events=(CorruptAt(0.35, rho=0.2),),
                config=mode,
                full_only=True,
            )
        )
    return cells


CELLS: tuple[FaultCell, ...] = tuple(_cells())

# Cells run over the real processes (short matrix): one per family of faults.
NETWORK_CELLS: tuple[FaultCell, ...] = (
    FaultCell(
        "net: ber 1e-3 + loss 10%",
        "combination",
        {FWD: {"bit_errors": {"ber": 1e-3}, "loss": {"probability": 0.1}}},
    ),
    FaultCell(
        "net: bursts + reorder + dup + feedback loss",
        "combination",
        {
            FWD: {
                "loss": _ge(0.02, 0.25),
                "duplicate": {"probability": 0.1},
                "delay": {"delay_ms": 5, "jitter_ms": 4},
                "reorder": {"probability": 0.1, "after_messages": 3},
            },
            BACK: {"loss": {"probability": 0.2}},
        },
    ),
    FaultCell(
        "net: desync + noise (write, events)",
        "memory corruption",
        {
            FWD: {
                "id_desync": {"probability": 0.2},
                "prototype_noise": {"probability": 0.3, "sigma": 0.2},
            }
        },
        events=(CorruptAt(0.3, rho=0.2), CorruptAt(0.45, sigma=0.2)),
    ),
    FaultCell(
        "net: ber 1e-3 whole frame",
        "bit errors",
        {FWD: {"bit_errors": {"ber": 1e-3, "whole_frame": True}}},
        headers_exposed=True,
    ),
)


def matrix(full: bool = False) -> list[FaultCell]:
    """The cells of the short (default) or the full matrix."""
    return [c for c in CELLS if full or not c.full_only]


# --- results -------------------------------------------------------------------------------------


@dataclass
class CellResult:
    """What one cell did, and the promises it checks (see :meth:`problems`)."""

    cell: str
    group: str
    where: str  # "sim" (in-process cores) | "net" (real processes)
    frames: int  # frames the Tx decided
    outcomes: dict[str, int]
    duplicates_settled: int = 0  # frames settled twice (must be 0)
    tx_unsent: int = 0
    rx_errors: int = 0  # bad messages the Rx counted (decode errors + core errors)
    injected: dict[str, int] = field(default_factory=dict)  # what the channel did
    refreshes: int = 0
    refreshes_refused: int = 0
    silent_wrong: int | None = None  # accepted (decoded / lookup) hit frames not the Tx's
    silent_pairs: int | None = None  # distinct (shown, true) latents among them
    risk: float | None = None  # expected silent wrong frames (cue model upper bound)
    risk_pairs: float | None = None  # same, over distinct pairs
    payload_wrong: int | None = None  # NEW/REFRESH content the channel changed (no cue covers)
    payload_corrupted: int | None = None  # latent messages the channel corrupted
    stale_at_stop: int | None = None  # references diverged when the faults stopped (D)
    reconverged_after: int | None = None  # frames from the stop until the memories stay equal
    reconverge_bound: int | None = None  # N·⌈D/R⌉ + 1 (+N with a NEW in flight)
    agree_at_end: bool = False
    alive: bool = True  # processes still answering /healthz
    headers_exposed: bool = False
    wall_s: float = 0.0

    @property
    def accounted(self) -> int:
        return sum(self.outcomes.values())

    def problems(self) -> list[str]:
        """Every promise this cell broke (empty: the cell passes)."""
        out = []
        if not self.alive:
            out.append("a process stopped answering")
        if self.accounted != self.frames:
            out.append(f"{self.accounted} frames accounted of {self.frames}")
        if self.duplicates_settled:
            out.append(f"{self.duplicates_settled} frames settled twice")
        if self.outcomes.get("lost", 0) < self.tx_unsent:
            out.append(f"{self.tx_unsent} frames unsent but only {self.outcomes['lost']} lost")
        if self.silent_pairs is not None and self.risk_pairs is not None:
            allowed = self.risk_pairs + 3 * math.sqrt(self.risk_pairs) + 3
            if self.silent_pairs > allowed:
                out.append(
                    f"{self.silent_pairs} silent wrong pairs > bound {allowed:.1f} "
                    f"(expected {self.risk_pairs:.2f})"
                )
        if (
            self.payload_wrong is not None
            and self.payload_corrupted is not None
            and not self.headers_exposed
            and self.payload_wrong > self.payload_corrupted
        ):
            out.append(
                f"{self.payload_wrong} wrong NEW/REFRESH frames but only "
                f"{self.payload_corrupted} latents corrupted"
            )
        if self.reconverge_bound is not None and (
            self.reconverged_after is None or self.reconverged_after > self.reconverge_bound
        ):
            out.append(
                f"memories re-converged after {self.reconverged_after} frames, "
                f"bound {self.reconverge_bound}"
            )
        if not self.agree_at_end:
            out.append("memories differ at the end")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accounted": self.accounted, "problems": self.problems()}


# --- the in-process runner ----------------------------------------------------------------------


def run_cell(
    cell: FaultCell,
    latents: np.ndarray,
    config: LinkConfig,
    *,
    seed: int = SEED,
    fps: float = FPS,
    digest_every: int = DIGEST_EVERY,
) -> CellResult:
    """Run ``latents`` through the in-process link under ``cell``'s faults."""
    started = time.perf_counter()
    if cell.config:
        config = config.replace(**cell.config)
    link = InProcessLink(config, seed=seed, model_cue_risk=True)
    n = len(latents)
    start, stop = cell.window(n)
    events = dict(cell.event_frames(n, seed))
    stop_at = max([stop if cell.impairments else 0, *(f + 1 for f in events)], default=0)
    agree_log: list[tuple[int, bool]] = []
    stale = None

    def at_frame_time(seq: int, link: InProcessLink) -> None:
        if seq == stop and cell.impairments:
            link.channel.clear_all()  # what it held goes out at once

    def before_frame(seq: int, link: InProcessLink) -> None:
        nonlocal stale
        if seq == stop_at:
            stale = link.stale_refs()
        if seq >= stop_at:
            agree_log.append((seq, link.agree()))
        if seq == start:
            for direction, impairments in cell.impairments.items():
                for name, attributes in impairments.items():
                    link.channel.set_impairment(direction, name, attributes)
        if seq in events:
            e = events[seq]
            link.inject(link.channel.corruption_event(e.rho, e.sigma))
            link.run_until(link.now)

    run_stream(
        latents,
        link,
        fps=fps,
        digest_every=digest_every,
        at_frame_time=at_frame_time,
        before_frame=before_frame,
    )
    agree_end = link.agree()
    agree_log.append((n, agree_end))
    reconverged = None
    for seq, ok in reversed(agree_log):
        if not ok:
            break
        reconverged = seq - stop_at
    bound = None
    if stale is not None:
        refreshes_per_digest = min(_max_refreshes_per_digest(), link.tx.refresh_budget)
        bound = digest_every * (math.ceil(stale / refreshes_per_digest) + 1) + 1
    stats = link.channel.stats()
    injected = _injected(stats)
    outcomes = {o.value: 0 for o in Outcome}
    for outcome in link.outcomes.values():
        outcomes[outcome.value] += 1
    silent_pairs = set(link.silent)
    c = link.rx.counters
    return CellResult(
        cell=cell.name,
        group=cell.group,
        where="sim",
        frames=n,
        outcomes=outcomes,
        duplicates_settled=link.settled_twice,
        rx_errors=link.rx_decode_errors + c.errors,
        injected=injected,
        refreshes=c.refreshes_applied,
        refreshes_refused=link.tx.counters.refreshes_refused,
        silent_wrong=len(link.silent),
        silent_pairs=len(silent_pairs),
        risk=link.risk,
        risk_pairs=_pair_risk(link.pair_risk),
        payload_wrong=link.payload_wrong,
        payload_corrupted=_latents_corrupted(stats),
        stale_at_stop=stale,
        reconverged_after=reconverged,
        reconverge_bound=bound,
        agree_at_end=agree_end,
        headers_exposed=cell.headers_exposed,
        wall_s=time.perf_counter() - started,
    )


def _pair_risk(comparisons: dict[tuple[bytes, bytes, int], float]) -> float:
    """Expected distinct (shown, true) pairs accepted: a pair compared with the same cue bits
    repeats one outcome, so each (pair, flipped) counts once, and a pair at most once."""
    pairs: dict[tuple[bytes, bytes], float] = {}
    for (shown, true, _), p in comparisons.items():
        pairs[(shown, true)] = min(1.0, pairs.get((shown, true), 0.0) + p)
    return sum(pairs.values())


def _max_refreshes_per_digest() -> int:

    return MAX_REFRESHES_PER_DIGEST


def _injected(stats: dict) -> dict[str, int]:
    """The channel's counters that say what it did (summed over both directions)."""
    keys = {
        "dropped": ("loss", "dropped"),
        "bits_flipped": ("bit_errors", "bits_flipped"),
        "corrupted": ("bit_errors", "messages_corrupted"),
        "desynced": ("id_desync", "desynced"),
        "noised": ("prototype_noise", "noised"),
        "duplicated": ("duplicate", "duplicated"),
        "reordered": ("reorder", "reordered"),
        "rate_dropped": ("rate", "dropped"),
    }
    out = dict.fromkeys(keys, 0)
    for direction in ("tx_to_rx", "rx_to_tx"):
        impairments = stats[direction]["impairments"]
        for label, (name, counter) in keys.items():
            out[label] += impairments.get(name, {}).get(counter, 0)
    out["events"] = stats.get("events", {}).get("corrupt", 0)
    return {k: v for k, v in out.items() if v}


def _latents_corrupted(stats: dict) -> int:
    """Upper bound of the NEW/REFRESH latents the channel changed: every corrupted message and
    every noised write (bit errors count all corrupted messages, hits included)."""
    d = stats["tx_to_rx"]["impairments"]
    return (
        d.get("bit_errors", {}).get("messages_corrupted", 0)
        + d.get("prototype_noise", {}).get("noised", 0)
        + d.get("id_desync", {}).get("desynced", 0)
    )


def matrix_config(**changes: Any) -> LinkConfig:
    return build_config({"threshold": THRESHOLD, "seed": SEED, **changes}, read_env=False)


def link_flags(args: Any) -> dict[str, Any]:
    """The link flags given on the command line (shared.config.add_config_arguments), over the
    matrix's own defaults."""
    return {
        name: getattr(args, name)
        for name in LinkConfig.model_fields
        if getattr(args, name, None) is not None
    }


def load_latents(
    scenario: str = SCENARIO, frames: int = FRAMES, config: LinkConfig | None = None
) -> np.ndarray:
    """The clip's latents through the shipped codec (as the Tx computes them)."""

    config = config or matrix_config()
    codec = load_codec(config.codec)
    clip = load_clip(scenario, n_frames=frames, size=codec.frame_size, seed=config.seed)
    return codec.encode(clip)


def run_matrix(
    cells: Iterable[FaultCell],
    latents: np.ndarray,
    config: LinkConfig | None = None,
    *,
    progress: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    config = config or matrix_config()
    results = []
    for cell in cells:
        result = run_cell(cell, latents, config, seed=config.seed)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


# --- the network runner --------------------------------------------------------------------------


class NetworkBench:
    """One rx and one channel process on loopback that run cells one after the other (a fresh
    Tx process per cell); a context manager that stops them all."""

    def __init__(
        self,
        log_dir: Path,
        *,
        scenario: str = NETWORK_SCENARIO,
        frames: int = NETWORK_FRAMES,
        threshold: float = THRESHOLD,
        digest_every: int = DIGEST_EVERY,
        seed: int = SEED,
        link: dict[str, Any] | None = None,
    ) -> None:

        self.scenario, self.frames, self.every = scenario, frames, digest_every
        env = {
            "HOPLINK_LOG_LEVEL": "warning",
            "HOPLINK_SEED": str(seed),
            "HOPLINK_THRESHOLD": str(threshold),
        }
        for name, value in (link or {}).items():  # the link flags, as every process reads them
            env[f"HOPLINK_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        self.procs = Processes(Path(log_dir), env=env)

    def __enter__(self) -> NetworkBench:
        try:
            self.rx = self.procs.start("rx", ["receiver"])
            self.channel = self.procs.start("channel", ["channel", "--rx-url", self.rx.ws_url])
        except BaseException:
            self.procs.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.procs.stop_all()

    def run(self, cell: FaultCell) -> CellResult:
        return _network_cell(
            self.procs,
            self.rx,
            self.channel,
            cell,
            scenario=self.scenario,
            frames=self.frames,
            every=self.every,
        )


def run_network(
    cells: Iterable[FaultCell],
    log_dir: Path,
    *,
    progress: Callable[[CellResult], None] | None = None,
    **bench: Any,
) -> list[CellResult]:
    """Run ``cells`` over real rx, channel and tx processes (see :class:`NetworkBench`)."""
    results = []
    with NetworkBench(log_dir, **bench) as b:
        for cell in cells:
            results.append(b.run(cell))
            if progress is not None:
                progress(results[-1])
    return results


def _network_cell(procs, rx, channel, cell: FaultCell, *, scenario, frames, every) -> CellResult:
    started = time.perf_counter()
    base = channel.url
    request_json("DELETE", f"{base}/impairments")
    start, stop = cell.window(frames)
    for direction, impairments in cell.impairments.items():
        for name, attributes in impairments.items():
            body = {"seq_range": [start, stop - 1], **attributes}
            request_json("PUT", f"{base}/impairments/{direction}/{name}", body)
    before = _core_stats(channel.stats())
    events = cell.event_frames(frames)
    fps = "60" if events else "0"  # events are timed by the Rx's progress: pace the stream
    tx = procs.start(
        "tx",
        [
            "transmitter",
            "--url",
            channel.ws_url,
            "--scenario",
            scenario,
            "--frames",
            str(frames),
            "--fps",
            fps,
            "--digest-every",
            str(every),
            "--linger",
        ],
        key="tx-faults",
    )
    try:
        for frame, event in events:
            wait_for(lambda f=frame: rx.stats()["frames"] >= f, 60, f"frame {frame} at the Rx")
            body = {"rho": event.rho, "sigma": event.sigma}
            request_json("POST", f"{base}/events/corrupt", body)

        def tx_done() -> dict | None:
            if tx.process.poll() is not None:
                raise DemoError(f"tx exited ({tx.process.returncode}):\n{tx.log_tail()}")
            s = tx.stats()
            return s if s["link"]["finished"] else None

        tx_stats = wait_for(tx_done, 120, "the Tx")

        def rx_done() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        rx_stats = wait_for(rx_done, 60, "the Rx to settle")
        after = _core_stats(channel.stats())
    finally:
        procs.stop("tx-faults")
        with contextlib.suppress(OSError):  # the channel may be the fault under test
            request_json("DELETE", f"{base}/impairments")
    alive = all(child.process.poll() is None and _healthy(child.url) for child in (rx, channel))
    injected = {k: v - _injected(before).get(k, 0) for k, v in _injected(after).items()}
    c, t = rx_stats["counters"], rx_stats["traffic"]
    return CellResult(
        cell=cell.name,
        group=cell.group,
        where="net",
        frames=tx_stats["frames"],
        outcomes=dict(rx_stats["frames_by_outcome"]),
        tx_unsent=tx_stats["traffic"]["frames_unsent"],
        rx_errors=t["decode_errors"] + c["errors"],
        injected={k: v for k, v in injected.items() if v},
        refreshes=c["refreshes_applied"],
        refreshes_refused=tx_stats["counters"]["refreshes_refused"],
        agree_at_end=bool(rx_stats["digest"]["agree"]),
        alive=alive,
        headers_exposed=cell.headers_exposed,
        wall_s=time.perf_counter() - started,
    )


def _core_stats(snapshot: dict) -> dict:
    """The channel process's /stats in the shape of ChannelCore.stats()."""
    return {**snapshot["directions"], "events": snapshot["events"]}


def _healthy(url: str) -> bool:

    try:
        return get_json(f"{url}/healthz", timeout=5).get("status") == "ok"
    except (OSError, ValueError):
        return False


# --- the table -----------------------------------------------------------------------------------

TABLE_HEADERS = [
    "cell",
    "run",
    "frames",
    "dec",
    "lookup",
    "refresh",
    "conceal",
    "lost",
    "acct",
    "bad msgs",
    "silent wrong",
    "risk",
    "payload wrong",
    "D",
    "reconv",
    "bound",
    "agree",
    "ok",
]


def table_rows(results: Iterable[CellResult]) -> list[list[object]]:
    rows = []
    for r in results:
        o = r.outcomes
        silent = "-" if r.silent_wrong is None else f"{r.silent_wrong} ({r.silent_pairs})"
        risk = "-" if r.risk is None else f"{r.risk:.2f} ({r.risk_pairs:.2f})"
        rows.append(
            [
                r.cell,
                r.where,
                r.frames,
                o.get("decoded", 0),
                o.get("recovered_lookup", 0),
                o.get("recovered_refresh", 0),
                o.get("concealed", 0),
                o.get("lost", 0),
                "yes" if r.accounted == r.frames and not r.duplicates_settled else "NO",
                r.rx_errors,
                silent,
                risk,
                "-" if r.payload_wrong is None else r.payload_wrong,
                "-" if r.stale_at_stop is None else r.stale_at_stop,
                "-" if r.reconverged_after is None else r.reconverged_after,
                "-" if r.reconverge_bound is None else r.reconverge_bound,
                r.agree_at_end,
                "ok" if not r.problems() else "FAIL",
            ]
        )
    return rows


def render(results: list[CellResult]) -> str:

    lines = [render_table(TABLE_HEADERS, table_rows(results), width=TERMINAL_WIDTH, keep=2)]
    failed = [r for r in results if r.problems()]
    for r in failed:
        lines.append(f"FAIL {r.cell} ({r.where}): " + "; ".join(r.problems()))
    return "\n".join(lines)


LEGEND = (
    "dec/lookup/refresh/conceal/lost: frames by outcome at the Rx; acct: they add up to the "
    "frames the Tx decided, none settled twice; bad msgs: messages the Rx rejected (counted); "
    "silent wrong: accepted hit frames that were not the Tx's (distinct pairs), risk: the "
    "expected number under the cue model (P[Binom(K, θ/π) ≤ t] per wrong candidate; "
    f"an unrelated prototype passes with {false_accept_probability(32, 3):.2g} at K=32, t=3); "
    "payload wrong: NEW/REFRESH latents changed in transit (no cue covers them); D: references "
    "diverged when the faults stopped; reconv: frames until the memories stay equal, "
    "bound = N·(⌈D/R⌉ + 1) + 1 with N the DIGEST period, R = min(32, refresh budget)."
)


__all__ = [
    "CELLS",
    "NETWORK_CELLS",
    "CellResult",
    "CorruptAt",
    "FaultCell",
    "LEGEND",
    "NetworkBench",
    "load_latents",
    "matrix",
    "matrix_config",
    "render",
    "run_cell",
    "run_matrix",
    "run_network",
]


# --- `hoplink faults` ----------------------------------------------------------------------------


def main(args: Any) -> int:
    """``hoplink faults [--full] [--json] [--no-network]``: run the matrix, print it; exit 1 if
    a cell broke a promise."""
    import json
    import os
    import shutil
    import sys
    import tempfile
    import textwrap

    full = args.full or os.environ.get("HOPLINK_FULL_FAULTS", "") not in ("", "0")
    started = time.perf_counter()

    def progress(result: CellResult) -> None:
        if not args.json:
            status = "ok" if not result.problems() else "FAIL"
            print(f"  {result.where} {result.cell}: {status}", file=sys.stderr, flush=True)

    config = matrix_config(**link_flags(args))
    cells = matrix(full=full)
    results = run_matrix(cells, load_latents(config=config), config, progress=progress)
    if not args.no_network:
        logs = Path(tempfile.mkdtemp(prefix="hoplink-faults-"))
        try:
            results += run_network(NETWORK_CELLS, logs, progress=progress, link=link_flags(args))
        except Exception:
            print(f"the processes' logs are in {logs}", file=sys.stderr)
            raise
        shutil.rmtree(logs, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if args.json:
        payload = {
            "matrix": "full" if full else "short",
            "seconds": elapsed,
            "cells": [r.as_dict() for r in results],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render(results))
        print()
        print(textwrap.fill(LEGEND, TERMINAL_WIDTH))
        sim = sum(r.where == "sim" for r in results)
        summary = (
            f"{'full' if full else 'short'} matrix: {sim} cells in process ({SCENARIO}, "
            f"{FRAMES} frames, τ={config.threshold}, DIGEST every {DIGEST_EVERY}; link flags: "
            f"{', '.join(f'{k}={v}' for k, v in link_flags(args).items()) or 'defaults'}), "
            f"{len(results) - sim} over processes ({NETWORK_SCENARIO}, {NETWORK_FRAMES} frames); "
            f"{elapsed:.0f} s"
        )
        print(textwrap.fill(summary, TERMINAL_WIDTH))
    return 1 if any(r.problems() for r in results) else 0
