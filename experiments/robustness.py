"""Memory kinds under Rx memory corruption: retrieval at the Rx, bits and PSNR at matched quality.

How every memory kind — vq, hopfield, hopfield with HEN dynamics, adaptive (A-Hop) — stands up
to the paper's two Rx memory errors (DESIGN.md, "Equations"): ID-map desync ρ and
prototype noise σ. Each kind first gets its own τ, calibrated by the symmetric rule of
:func:`experiments.table.calibrate` to one clean-channel PSNR target (the clips' all-NEW PSNR
minus ``psnr_drop`` dB, as for Table I), so the kinds are compared at matched quality. Then every
clip runs through the in-process link (:func:`experiments.link.run_stream`: the
Tx, channel and Rx cores on a virtual clock, with refreshes answered over a clean channel) and
the channel corrupts the Rx memory once, before a seeded random frame of the clip's middle half
(:func:`corruption_frame`; a fixed mid-clip frame would sit on a DIGEST boundary, where the
Rx's next check comes at once). Every link flag (entropy coding, DELTA, RDO, the coded cue
policy, cue bits) applies to every kind; rates are link bits/frame.

For every HIT sent from that frame on, the runner knows what the Rx cannot: which memory entry
the shown latent came from. A hit ends in exactly one of

* ``direct``: the referenced prototype's Rx copy passed its cue and was shown;
* ``lookup``: its cue failed, and content-addressable lookup on the cue found the right copy;
* ``refresh``: cue and lookup failed, and a REFRESH from the Tx repaired it;
* ``wrong``: the Rx accepted (by cue or lookup) the copy of another prototype — silent wrong;
* ``concealed``: no repair in time (or lost), the last good frame was shown.

"Right" means the Rx's own copy of the referenced prototype, noised or not: what σ does to a copy
that still passes its cue shows in ``exact`` (the shown latent is bit-equal to the Tx's) and in
PSNR, not as a wrong retrieval. ``recall`` is the kind's own retrieval routine
(:meth:`shared.memory.store.Memory.recall`) at the moment of corruption: the share of stored
prototypes whose clean version, queried against the Rx's corrupted memory, names its own slot
(a meta-stable HEN state counts as a failure). The Rx itself recovers by cue, not by similarity,
so this column says what a kind's similarity would buy there, not what the link does.

``hoplink robustness`` prints the table; tests/experiments/test_robustness.py checks it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from experiments.link import InProcessLink, measure_quality, run_stream
from experiments.table import Clip, calibrate, pool_runs, prepare_clips, run_group
from experiments.tables import Precise, render_table
from shared.accounting import FrameRecord, LinkSummary, Outcome
from shared.codec.cache import DecodeCache
from shared.codec.models import Codec
from shared.config import LinkConfig
from shared.protocol.messages import DIGEST_EVERY, Hit
from transmitter.core import TxFrame

# Memory kinds: a label and the LinkConfig fields that make it (they override the base config).
# HEN: iterate the Hopfield update (up to 10 steps) and treat a state within cosine 0.95 of no
# single prototype as a miss; the others take one update step, as the paper.
ONE_STEP = {"hopfield_steps": 1, "metastable_threshold": 0.0}
KINDS: dict[str, dict[str, Any]] = {
    "vq": {"memory": "vq", **ONE_STEP},
    "hopfield": {"memory": "hopfield", **ONE_STEP},
    "hopfield+hen": {"memory": "hopfield", "hopfield_steps": 10, "metastable_threshold": 0.95},
    "adaptive": {"memory": "adaptive", **ONE_STEP},
}
SIGMAS = (0.0, 0.02, 0.05, 0.1, 0.2)
RHOS = (0.0, 0.05, 0.1, 0.2, 0.5)
SCENARIOS = ("repetitive_return", "high_motion", "scene_change")  # returns, motion, cuts
FULL_SCENARIOS = (
    "static",
    "low_motion",
    "repetitive_return",
    "high_motion",
    "high_texture",
    "illum_change",
    "cam_shake",
    "scene_change",
)
FRAMES = 60
FULL_FRAMES = 120
CORRUPT_AT = 0.5  # centre of the corruption frames, as a fraction of the clip
PSNR_DROP = 0.5

HIT_FATES = ("direct", "lookup", "refresh", "wrong", "concealed")


def corruption_frame(n: int, seed: int, around: float = CORRUPT_AT) -> int:
    """A seeded random frame in the middle half of an ``n``-frame clip, centred on
    ``around · n``: where a one-shot corruption of the Rx memory comes, never only on DIGEST
    boundaries (a clip of 60 frames split at 0.5 is corrupted right before a DIGEST)."""
    rng = np.random.default_rng([seed, n])
    half = max(1, n // 4)
    centre = int(round(around * n))
    return int(np.clip(centre + rng.integers(-half, half + 1), 1, max(1, n - 1)))


@dataclass(frozen=True)
class Cell:
    """One corruption of the Rx memory: a fraction ρ of its ID map permuted, noise σ added."""

    sigma: float = 0.0
    rho: float = 0.0

    @property
    def clean(self) -> bool:
        return self.sigma == 0.0 and self.rho == 0.0


def grid(
    sigmas: Sequence[float] = SIGMAS, rhos: Sequence[float] = RHOS, cross: bool = False
) -> list[Cell]:
    """The cells: each σ alone and each ρ alone (with the clean cell first), or σ × ρ."""
    if cross:
        return [Cell(s, r) for r in rhos for s in sigmas]
    cells = [Cell(s, 0.0) for s in sigmas] + [Cell(0.0, r) for r in rhos]
    if not any(c.clean for c in cells):
        cells.insert(0, Cell())
    return list(dict.fromkeys(cells))  # ρ = 0 and σ = 0 both name the clean cell


# --- one clip through the in-process link -------------------------------------------------------


class ObservedLink(InProcessLink):
    """The in-process link, also keeping each frame's hit message and whether a hit was shown
    from the referenced prototype's own Rx copy."""

    def __init__(self, config: LinkConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.hits: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # seq -> refs, weights
        self.right: dict[int, bool] = {}  # hit frames: shown from the referenced prototype
        self.exact: dict[int, bool] = {}  # hit frames: shown bit-equal to the Tx's latent

    def frame(self, seq: int, latent: np.ndarray) -> TxFrame:
        decision = super().frame(seq, latent)
        if isinstance(decision.message, Hit):
            self.hits[seq] = (decision.message.refs, decision.message.weights)
        elif decision.hit and self.tx.coder is not None:  # a CODED hit: the coder's reference
            self.hits[seq] = ((self.tx.coder.last_ref,), ())
        return decision

    def _settle(self, frames: Iterable, risk: dict | None) -> None:
        frames = list(frames)
        for frame in frames:
            if frame.outcome is None or frame.seq in self.outcomes:
                continue  # provisional, or settled twice (the base class counts it)
            latent = frame.latent
            hit = self.hits.get(frame.seq)
            if hit is not None and latent is not None:
                # Slot r holds the Rx's copy of reference r (desync moves the map, not content).
                own = self.rx.memory.reconstruct(*hit)
                self.right[frame.seq] = bool(np.array_equal(latent, own))
                self.exact[frame.seq] = bool(np.array_equal(latent, self.expected[frame.seq]))
        super()._settle(frames, risk)

    def hit_fate(self, seq: int) -> str:
        """What became of hit ``seq`` at the Rx (one of :data:`HIT_FATES`)."""
        outcome = self.outcomes.get(seq, Outcome.LOST)
        if outcome in (Outcome.CONCEALED, Outcome.LOST):
            return "concealed"
        if not self.right.get(seq, False):
            return "wrong"
        return {
            Outcome.DECODED: "direct",
            Outcome.RECOVERED_LOOKUP: "lookup",
            Outcome.RECOVERED_REFRESH: "refresh",
        }[outcome]

    def kind_recall(self) -> tuple[int, int]:
        """(right, asked): stored prototypes whose clean Tx version, recalled from the Rx memory
        by the kind's own retrieval, names its own slot and is not a meta-stable state."""
        tx, rx = self.tx.memory, self.rx.memory
        refs = [r for r in range(tx.count) if tx.filled[r] and rx.filled[r]]
        right = 0
        for ref in refs:
            recall = rx.recall(tx.prototypes[ref])
            right += recall is not None and not recall.metastable and recall.refs[0] == ref
        return right, len(refs)


@dataclass
class ClipRun:
    """One clip under one cell: per-frame records and what became of the hits after the event."""

    clip: str
    corrupt_at: int  # the frame the corruption came before
    records: list[FrameRecord]
    shown: np.ndarray  # (N, d) the latent the Rx showed per frame (zeros for lost frames)
    fates: dict[str, int]  # hits sent from the corruption on, by fate
    exact: int  # of those hits, shown bit-equal to the Tx's latent
    recall_right: int
    recall_asked: int
    refresh_bits: int
    feedback_bits: int
    refreshes: int
    link_bits: int
    wire_bits: int
    cue_failures: int
    lookups_ok: int
    ids_desynced: int
    prototypes_noised: int
    rx_outcomes: dict[str, int]  # the Rx's own counters of frames by outcome

    @property
    def hits(self) -> int:
        return sum(self.fates.values())


def run_clip(
    latents: np.ndarray,
    config: LinkConfig,
    cell: Cell,
    *,
    frames: np.ndarray | None = None,
    decoder: DecodeCache | None = None,
    name: str = "",
    corrupt_at: float = CORRUPT_AT,
    digest_every: int = DIGEST_EVERY,
    seed: int | None = None,
) -> ClipRun:
    """Run a clip's latents through the link; the Rx memory is corrupted once (ρ, σ) before
    frame ``corruption_frame(N, seed, corrupt_at)``. PSNR needs ``frames`` and ``decoder``.

    The loop is :func:`experiments.faults.run_cell`'s without impairment windows: deliver what is
    due, tick the Rx, inject the event, send the frame, a DIGEST every ``digest_every`` frames; at
    the end a last DIGEST, the refreshes it asks for, and BYE.
    """
    seed = config.seed if seed is None else seed
    link = ObservedLink(config, seed=seed)
    n = len(latents)
    at = corruption_frame(n, seed, corrupt_at)
    recall = (0, 0)

    def corrupt_once(seq: int, link: ObservedLink) -> None:
        nonlocal recall
        if seq != at:
            return
        if not cell.clean:
            link.inject(link.channel.corruption_event(cell.rho, cell.sigma))
            link.run_until(link.now)
        recall = link.kind_recall()

    run_stream(latents, link, digest_every=digest_every, before_frame=corrupt_once)
    records = link.ledger.ordered(n)
    shown_all = np.zeros((n, config.latent_dim), dtype=np.float32)
    for seq, shown in link.shown.items():
        shown_all[seq] = shown
    if frames is not None and decoder is not None:
        measure_quality(records, frames, link.shown, decoder)
    fates = dict.fromkeys(HIT_FATES, 0)
    exact = 0
    for seq in range(at, n):
        if records[seq].hit:
            fates[link.hit_fate(seq)] += 1
            exact += link.exact.get(seq, False)
    c = link.rx.counters
    return ClipRun(
        clip=name,
        corrupt_at=at,
        records=records,
        shown=shown_all,
        fates=fates,
        exact=exact,
        recall_right=recall[0],
        recall_asked=recall[1],
        refresh_bits=link.ledger.refresh_bits,
        feedback_bits=link.ledger.feedback_bits,
        refreshes=link.ledger.refreshes,
        link_bits=link.ledger.link_bits,
        wire_bits=link.ledger.wire_bits,
        cue_failures=c.cue_failures,
        lookups_ok=c.lookups_ok,
        ids_desynced=c.ids_desynced,
        prototypes_noised=c.prototypes_noised,
        rx_outcomes={o.value: getattr(c, o.value) for o in Outcome},
    )


# --- every kind over the grid ---------------------------------------------------------------------


@dataclass
class Row:
    """One kind under one cell, pooled over the clips."""

    kind: str
    sigma: float
    rho: float
    threshold: float
    hits: int  # hits sent from the corruption on
    fates: dict[str, int]
    exact: int
    recall: float  # the kind's own retrieval from the corrupted memory (see module doc)
    cue_failures: int
    lookups_ok: int
    refreshes: int
    ids_desynced: int
    summary: LinkSummary  # the whole clips: link, semantic, wire bits/frame, PSNR, outcomes

    def share(self, fate: str) -> float:
        return self.fates[fate] / self.hits if self.hits else float("nan")

    @property
    def exact_share(self) -> float:
        return self.exact / self.hits if self.hits else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "summary"},
            "shares": {f: self.share(f) for f in HIT_FATES},
            "exact_share": self.exact_share,
            "link_bits_per_frame": self.summary.link_bits_per_frame,
            "semantic_bits_per_frame": self.summary.semantic_bits_per_frame,
            "psnr": self.summary.psnr,
            "hit_rate": self.summary.hit_rate,
            "outcomes": self.summary.outcomes,
        }


def pool(kind: str, cell: Cell, config: LinkConfig, runs: list[ClipRun]) -> Row:
    fates = {f: sum(r.fates[f] for r in runs) for f in HIT_FATES}
    asked = sum(r.recall_asked for r in runs)
    summary = pool_runs(runs, config)
    return Row(
        kind=kind,
        sigma=cell.sigma,
        rho=cell.rho,
        threshold=config.threshold,
        hits=sum(fates.values()),
        fates=fates,
        exact=sum(r.exact for r in runs),
        recall=sum(r.recall_right for r in runs) / asked if asked else float("nan"),
        cue_failures=sum(r.cue_failures for r in runs),
        lookups_ok=sum(r.lookups_ok for r in runs),
        refreshes=sum(r.refreshes for r in runs),
        ids_desynced=sum(r.ids_desynced for r in runs),
        summary=summary,
    )


@dataclass
class Calibration:
    kind: str
    config: LinkConfig
    psnr: float  # clean channel, simulator
    link_bits_per_frame: float
    steps: int  # simulator runs the calibration took


@dataclass
class Study:
    target_psnr: float
    ceiling_psnr: float  # all-NEW PSNR of the clips
    scenarios: tuple[str, ...]
    frames: int
    cells: list[Cell]
    calibrations: list[Calibration] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    corrupt_frames: dict[str, int] = field(default_factory=dict)  # clip -> frame corrupted before
    digest_every: int = DIGEST_EVERY
    seconds: float = 0.0


def kind_config(base: LinkConfig, kind: str) -> LinkConfig:
    if kind not in KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; known: {', '.join(KINDS)}")
    return base.replace(transmission="index", **KINDS[kind])


def measure(
    codec: Codec,
    base: LinkConfig,
    *,
    kinds: Sequence[str] = tuple(KINDS),
    cells: Sequence[Cell] | None = None,
    scenarios: Sequence[str] = SCENARIOS,
    frames: int = FRAMES,
    psnr_drop: float = PSNR_DROP,
    corrupt_at: float = CORRUPT_AT,
    digest_every: int = DIGEST_EVERY,
    on_calibration_step: Callable[[str], None] | None = None,
    on_run: Callable[[str, Cell, str], None] | None = None,
) -> Study:
    """Calibrate every kind to one clean-channel PSNR, then run each over the cells."""
    started = time.perf_counter()
    cells = list(cells) if cells is not None else grid()
    for kind in kinds:
        kind_config(base, kind)  # unknown kinds fail before any work
    decoder = DecodeCache(codec)
    clips: list[Clip] = prepare_clips(scenarios, codec, frames, base.seed)
    ceiling = run_group(clips, base.replace(memory="vq", threshold=1.0), decoder, False)
    study = Study(
        target_psnr=ceiling.summary.psnr - psnr_drop,
        ceiling_psnr=ceiling.summary.psnr,
        scenarios=tuple(scenarios),
        frames=frames,
        cells=cells,
        digest_every=digest_every,
    )
    for kind in kinds:
        steps = 0

        def step(kind: str = kind) -> None:
            nonlocal steps
            steps += 1
            if on_calibration_step:
                on_calibration_step(kind)

        chosen, _ = calibrate(clips, kind_config(base, kind), study.target_psnr, decoder, step)
        s = chosen.summary
        study.calibrations.append(
            Calibration(kind, chosen.config, s.psnr, s.link_bits_per_frame, steps)
        )
        for cell in cells:
            runs = []
            for i, clip in enumerate(clips):
                runs.append(
                    run_clip(
                        clip.latents,
                        chosen.config,
                        cell,
                        frames=clip.frames,
                        decoder=decoder,
                        name=clip.name,
                        corrupt_at=corrupt_at,
                        digest_every=digest_every,
                        seed=base.seed + i,
                    )
                )
                study.corrupt_frames[clip.name] = runs[-1].corrupt_at
                if on_run:
                    on_run(kind, cell, clip.name)
            study.rows.append(pool(kind, cell, chosen.config, runs))
    study.seconds = time.perf_counter() - started
    return study


# --- the table ------------------------------------------------------------------------------------

HEADERS = [
    "kind",
    "τ",
    "σ",
    "ρ",
    "hits",
    "direct",
    "lookup",
    "refresh",
    "wrong",
    "conceal",
    "exact",
    "recall",
    "cue fail",
    "link b/f",
    "PSNR dB",
]


def table_rows(study: Study) -> list[list[object]]:

    return [
        [
            r.kind,
            Precise(r.threshold),
            r.sigma,
            r.rho,
            r.hits,
            *(r.share(f) for f in HIT_FATES),
            r.exact_share,
            r.recall,
            r.cue_failures,
            r.summary.link_bits_per_frame,
            r.summary.psnr,
        ]
        for r in study.rows
    ]


def render(study: Study) -> str:

    lines = [
        f"target PSNR {study.target_psnr:.2f} dB (all-NEW {study.ceiling_psnr:.2f} dB − drop); "
        f"{', '.join(study.scenarios)}, {study.frames} frames each",
    ]
    for c in study.calibrations:
        lines.append(
            f"  {c.kind}: τ = {c.config.threshold:.4f}, clean {c.link_bits_per_frame:.1f} link "
            f"bits/frame, {c.psnr:.2f} dB ({c.steps} calibration runs)"
        )
    frames = ", ".join(f"{clip} {at}" for clip, at in study.corrupt_frames.items())
    lines += [
        "",
        render_table(HEADERS, table_rows(study)),
        "",
        textwrap.fill(LEGEND, 100),
        textwrap.fill(
            f"Rx memory corrupted once per clip, before a seeded random frame ({frames}); "
            f"a DIGEST every {study.digest_every} frames.",
            100,
        ),
    ]
    return "\n".join(lines)


LEGEND = (
    "hits: HIT frames sent from the corruption on (pooled over the clips); direct / lookup / "
    "refresh / wrong / conceal: their shares shown from the referenced prototype's own Rx copy "
    "after its cue passed / found by lookup on the cue / repaired by a refresh / from another "
    "prototype's copy (silent wrong) / concealed; exact: shown bit-equal to the Tx's latent (a "
    "noised copy that passes its cue is right but not exact); recall: the kind's own retrieval "
    "queried with each clean prototype against the corrupted Rx memory names its slot (not "
    "used by the Rx, which recovers by cue); cue fail: the Rx's counter; link b/f: link "
    "bits/frame, every message both ways (frames, refreshes and their requests, DIGEST, HELLO, "
    "BYE); PSNR over the whole clips."
)


def as_json(study: Study) -> dict[str, Any]:
    return {
        "target_psnr": study.target_psnr,
        "ceiling_psnr": study.ceiling_psnr,
        "scenarios": list(study.scenarios),
        "frames": study.frames,
        "corrupt_frames": study.corrupt_frames,
        "calibrations": [
            {
                "kind": c.kind,
                "threshold": c.config.threshold,
                "psnr": c.psnr,
                "link_bits_per_frame": c.link_bits_per_frame,
                "steps": c.steps,
                "config": c.config.model_dump(),
            }
            for c in study.calibrations
        ],
        "rows": [r.as_dict() for r in study.rows],
        "seconds": study.seconds,
    }
