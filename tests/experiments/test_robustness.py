"""Memory kinds under Rx memory corruption (experiments/robustness.py, `hoplink robustness`)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from experiments import robustness as rb
from experiments.cli import main
from experiments.link import FPS, simulate
from experiments.table import prepare_clips
from shared.accounting import Outcome
from shared.codec.cache import DecodeCache
from shared.config import build_config
from shared.memory.adaptive import load_adaptive
from tests.synthetic import drifting_latents

BASE = build_config({"threshold": 0.95, "seed": 0}, read_env=False)
KINDS = tuple(rb.KINDS)


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    """Six camera views, ten frames each, visited twice: the second visit (after the mid-clip
    corruption) hits prototypes stored before it."""
    return drifting_latents(n=120, views=6, hold=10, noise=0.03, seed=3)


# --- a reference of each kind's decision, by hand ------------------------------------------------


def cosine(query: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    return patterns @ query


def adaptive_score(query: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """A-Hop: sorted, cumulatively summed per-dimension similarities, weighted (shared/adaptive)."""
    w = load_adaptive(len(query))
    d = len(query)
    products = np.cumsum(-np.sort(-(patterns * query), axis=1), axis=1)
    distances = np.cumsum(-np.sort((patterns - query) ** 2, axis=1), axis=1)
    return w.mix_dot * (products @ w.w_dot) / d + w.mix_dist * (distances @ w.w_dist) / d


def reference_decision(z, patterns, config) -> tuple[bool, float]:
    """Eq. (1): vq hits iff max cos ≥ τ; hopfield iterates T_β (eq. 4) and hits iff
    cos(z, T_β(z)) ≥ τ, unless (HEN) the state is within the meta-stable cosine of no pattern.
    Returns the decision and the statistic's distance to τ."""
    tau = config.threshold
    if config.memory == "vq":
        best = float(np.max(cosine(z, patterns)))
        return best >= tau, abs(best - tau)
    score = adaptive_score if config.memory == "adaptive" else cosine
    state = z.astype(np.float64)
    for _ in range(config.hopfield_steps):
        logits = config.beta * score(state, patterns)
        weights = np.exp(logits - logits.max())
        new = weights @ patterns / weights.sum()
        new /= np.linalg.norm(new)
        moved = np.abs(new - state).max()
        state = new
        if moved < config.hopfield_eps:
            break
    similarity = float(state @ z)
    margin = abs(similarity - tau)
    if config.metastable_threshold > 0:
        nearest = float(np.max(cosine(state, patterns)))
        if nearest < config.metastable_threshold:
            return False, abs(nearest - config.metastable_threshold)
        margin = min(margin, abs(nearest - config.metastable_threshold))
    return similarity >= tau, margin


@pytest.mark.parametrize("kind", KINDS)
def test_each_kinds_hits_match_a_reference_computation(stream, kind):
    config = rb.kind_config(BASE, kind)
    run = rb.run_clip(stream, config, rb.Cell())
    stored: list[np.ndarray] = []
    expected, margins = [], []
    for seq, z in enumerate(stream.astype(np.float64)):
        if not stored:
            hit, margin = False, np.inf
        else:
            hit, margin = reference_decision(z, np.stack(stored), config)
        expected.append(hit)
        margins.append(margin)
        if not hit:  # a miss stores the latent the Rx reconstructs from the NEW
            stored.append(run.shown[seq].astype(np.float64))
            assert float(run.shown[seq] @ z) > 0.99  # premise: it is z, quantized
    assert min(margins) > 1e-5  # premise: no decision within float32 rounding of τ
    assert [r.hit for r in run.records] == expected
    assert 0 < sum(expected) < len(expected)


# --- what the runner measures --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_clean_memory_reconstructs_every_hit_from_its_own_prototype(stream, kind):
    run = rb.run_clip(stream, rb.kind_config(BASE, kind), rb.Cell())
    assert run.hits > 20
    assert run.fates == {**dict.fromkeys(rb.HIT_FATES, 0), "direct": run.hits}
    assert run.exact == run.hits
    assert run.refreshes == run.cue_failures == run.lookups_ok == 0
    assert run.rx_outcomes == {**dict.fromkeys(run.rx_outcomes, 0), "decoded": len(stream)}
    if kind == "hopfield+hen":
        # Ten updates at β = 20 carry some stored patterns to a blend of their view's
        # near-duplicates, where another pattern dominates (or none: meta-stable).
        assert 0 < run.recall_right < run.recall_asked
    else:
        assert run.recall_right == run.recall_asked > 0  # each prototype recalls itself


def accounted(run: rb.ClipRun, frames: int) -> None:
    """Every frame ends in exactly one outcome, the same at the Rx and in the records."""
    by_record = Counter(r.outcome.value for r in run.records)
    assert sum(run.rx_outcomes.values()) == len(run.records) == frames
    assert {k: v for k, v in run.rx_outcomes.items() if v} == dict(by_record)
    assert len(run.records) // 4 <= run.corrupt_at <= 3 * len(run.records) // 4
    hits_after = sum(r.hit for r in run.records[run.corrupt_at :])
    assert sum(run.fates.values()) == hits_after


@pytest.mark.parametrize("kind", KINDS)
def test_id_desync_fails_cues_and_lookup_finds_the_moved_prototypes(stream, kind):
    run = rb.run_clip(stream, rb.kind_config(BASE, kind), rb.Cell(rho=0.5))
    accounted(run, len(stream))
    assert run.ids_desynced >= 2
    assert run.cue_failures > 0
    assert run.fates["lookup"] > 0
    assert run.fates["lookup"] + run.fates["refresh"] <= run.cue_failures
    assert run.rx_outcomes["recovered_lookup"] == run.lookups_ok >= run.fates["lookup"]
    # Desync moves the map, not the content: whatever was found shows the Tx's prototype.
    assert run.exact == run.hits - run.fates["wrong"] - run.fates["concealed"]


@pytest.mark.parametrize("kind", KINDS)
def test_prototype_noise_leaves_right_but_inexact_copies_and_refreshes_the_rest(stream, kind):
    small = rb.run_clip(stream, rb.kind_config(BASE, kind), rb.Cell(sigma=0.02))
    large = rb.run_clip(stream, rb.kind_config(BASE, kind), rb.Cell(sigma=0.2))
    for run in (small, large):
        accounted(run, len(stream))
    # σ = 0.02 (cos ≈ 0.99 to the original): the noised copies pass their 32-bit cues.
    assert small.fates["direct"] > small.exact
    # σ = 0.2 (cos ≈ 0.5): hits on noised copies fail their cues and ask for refreshes.
    assert large.fates["refresh"] > 0
    assert large.cue_failures > small.cue_failures
    assert large.refreshes >= large.fates["refresh"]


CODED = {"entropy_coding": True}


def test_coded_hits_are_followed_to_their_own_prototype(stream):
    """Entropy-coded hits carry no HIT message: the runner follows the coder's reference."""
    run = rb.run_clip(stream, rb.kind_config(BASE.replace(**CODED), "vq"), rb.Cell())
    assert run.hits > 20
    assert run.fates == {**dict.fromkeys(rb.HIT_FATES, 0), "direct": run.hits}
    assert run.exact == run.hits


def test_a_cue_only_on_change_shows_noised_copies_a_cue_on_every_reference_repairs():
    """A steady camera repeats its reference: with the cue sent only when the reference changes,
    the Rx shows its noised copy of a repeated reference without checking it."""
    steady = drifting_latents(n=120, views=6, hold=10, noise=0.003, seed=3)
    runs = {
        cue: rb.run_clip(
            steady, rb.kind_config(BASE.replace(**CODED, coded_cue=cue), "vq"), rb.Cell(sigma=0.1)
        )
        for cue in ("on_change", "every_reference")
    }
    for run in runs.values():
        accounted(run, len(steady))
    on_change, every = runs["on_change"], runs["every_reference"]
    assert on_change.corrupt_at == every.corrupt_at  # same seed, same frame
    assert on_change.fates["concealed"] == every.fates["concealed"] == 0
    assert on_change.hits - on_change.exact > 0  # noised copies shown unverified
    assert every.hits == every.exact  # every one checked, and the failures refreshed
    assert every.cue_failures > on_change.cue_failures


def test_corruption_frames_are_seeded_and_not_tied_to_digests():
    frames = [rb.corruption_frame(60, seed) for seed in range(20)]
    assert frames == [rb.corruption_frame(60, seed) for seed in range(20)]
    assert all(15 <= f <= 45 for f in frames)
    assert len(set(frames)) > 8
    assert sum(f % 30 == 0 for f in frames) < len(frames) // 2


def drive(link: rb.ObservedLink, latents: np.ndarray) -> None:
    for seq, z in enumerate(latents):
        link.run_until(seq / FPS)
        link.frame(seq, z)
    link.run_until(len(latents) / FPS)


@pytest.mark.parametrize("kind", ["vq", "hopfield", "adaptive"])
def test_kind_recall_is_the_argmax_of_the_kinds_similarity_over_the_noised_memory(stream, kind):
    config = rb.kind_config(BASE, kind)
    link = rb.ObservedLink(config, seed=0)
    drive(link, stream[:60])
    link.inject(link.channel.corruption_event(sigma=0.2))
    link.run_until(link.now)
    right, asked = link.kind_recall()
    clean = link.tx.memory.prototypes[: link.tx.memory.count].astype(np.float64)
    noisy = link.rx.memory.prototypes[: link.rx.memory.count].astype(np.float64)
    assert not np.allclose(clean, noisy)
    score = adaptive_score if kind == "adaptive" else cosine
    by_hand = [int(np.argmax(score(q, noisy))) == r for r, q in enumerate(clean)]
    assert (right, asked) == (sum(by_hand), len(clean))
    assert 0 < right < asked  # σ = 0.2 confuses some near-duplicate prototypes


def test_clean_run_costs_what_the_simulator_says(codec):
    """The in-process link at σ = ρ = 0 is the link the calibration ran: same bits and PSNR."""
    config = BASE.replace(threshold=0.85)
    decoder = DecodeCache(codec)
    (clip,) = prepare_clips(["repetitive_return"], codec, 30, seed=0)
    run = rb.run_clip(clip.latents, config, rb.Cell(), frames=clip.frames, decoder=decoder)
    sim = simulate(clip.latents, config, frames=clip.frames, decoder=decoder, with_ssim=False)
    row = rb.pool("vq", rb.Cell(), config, [run])
    assert [r.hit for r in run.records] == [r.hit for r in sim.records]
    assert 0 < sim.summary.hits < 30
    assert row.summary.link_bits_per_frame == sim.summary.link_bits_per_frame
    assert row.summary.psnr == pytest.approx(sim.summary.psnr, abs=1e-9)
    assert all(r.outcome is Outcome.DECODED for r in run.records)


def test_grid_is_each_axis_alone_or_the_cross_product():
    cells = rb.grid((0.0, 0.1), (0.0, 0.5))
    assert cells == [rb.Cell(), rb.Cell(sigma=0.1), rb.Cell(rho=0.5)]
    assert len(rb.grid((0.0, 0.1), (0.0, 0.5), cross=True)) == 4
    assert rb.grid((0.1,), (0.5,))[0] == rb.Cell()  # the clean baseline is always measured


def test_robustness_command_calibrates_each_kind_and_reports_every_cell(capsys):
    argv = ["robustness", "--json", "--frames", "16", "--scenarios", "repetitive_return"]
    argv += ["--kinds", "vq,hopfield+hen", "--sigmas", "0,0.2", "--rhos", "0.5", "--seed", "0"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["kind"] for c in out["calibrations"]] == ["vq", "hopfield+hen"]
    hen = out["calibrations"][1]["config"]
    assert (hen["hopfield_steps"], hen["metastable_threshold"]) == (10, 0.95)
    rows = out["rows"]
    assert [(r["kind"], r["sigma"], r["rho"]) for r in rows] == [
        (k, s, r) for k in ("vq", "hopfield+hen") for s, r in ((0, 0), (0.2, 0), (0, 0.5))
    ]
    for cal in out["calibrations"]:
        clean = next(r for r in rows if r["kind"] == cal["kind"] and r["sigma"] == r["rho"] == 0)
        assert clean["link_bits_per_frame"] == cal["link_bits_per_frame"]  # calibrated, clean
        assert clean["psnr"] == pytest.approx(cal["psnr"], abs=1e-9)
        assert cal["psnr"] >= out["target_psnr"]
    for r in rows:
        assert sum(r["outcomes"].values()) == 16
        assert sum(r["fates"].values()) == r["hits"]


def test_robustness_command_names_what_it_refuses(capsys):
    assert main(["robustness", "--kinds", "vq,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["robustness", "--rhos", "1.5"]) == 2
    assert "ρ" in capsys.readouterr().err
