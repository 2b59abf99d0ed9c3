"""The fault matrix (``pytest -m faults``) through the in-process link.

Each cell runs the Tx, channel and Rx cores on a virtual clock: seeded, deterministic, and able
to see silent wrong decodes and the moment the memories re-converge. The short matrix runs by
default; ``HOPLINK_FULL_FAULTS=1`` runs the full one. The cells over the real processes, and the
process faults, are in tests/e2e/test_faults.py. See :mod:`experiments.faults` for what each
column promises and why the bounds are what they are.
"""

from __future__ import annotations

import os

import pytest

from experiments import faults

pytestmark = pytest.mark.faults

FULL = os.environ.get("HOPLINK_FULL_FAULTS", "") not in ("", "0")
CELLS = faults.matrix(full=FULL)


@pytest.fixture(scope="module")
def latents():
    return faults.load_latents()


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_fault_cell_in_process(cell: faults.FaultCell, latents) -> None:
    result = faults.run_cell(cell, latents, faults.matrix_config())
    assert not result.problems(), faults.render([result])
    assert result.accounted == result.frames == len(latents)
    if cell.impairments or cell.events:
        assert result.reconverge_bound is not None


LINK_TOOLS = ({"entropy_coding": True}, {"delta": True}, {"entropy_coding": True, "delta": True})


@pytest.mark.parametrize("tools", LINK_TOOLS, ids=lambda t: "+".join(t))
def test_fault_matrix_holds_with_link_tools(tools: dict, latents) -> None:
    """The short matrix with DELTA and entropy-coded frames: a frame that shows a reference (a
    coded HIT, a DELTA's base) is accepted by that reference's cue, or trusted when the coded
    cue is not sent, so a wrong one is a silent wrong frame in the cue model, not a payload
    changed in transit; and a loss holds back no frame of a later entropy segment, so the
    memories re-converge within the same bound."""
    config = faults.matrix_config(**tools)
    results = faults.run_matrix(faults.matrix(), latents, config)
    for result in results:
        assert not result.problems(), faults.render([result])
    by_name = {r.cell: r for r in results}
    if tools.get("entropy_coding"):  # unverified references under Rx corruption are shown
        noised = by_name["noise sigma 0.5"]
        assert noised.silent_wrong > 0 and noised.payload_wrong == 0
        assert noised.risk >= noised.silent_wrong


def test_faults_are_seeded(latents) -> None:
    """The same cell twice gives the same numbers (the matrix is reproducible)."""
    cell = next(c for c in CELLS if c.name == "everything at once")
    first, second = (faults.run_cell(cell, latents, faults.matrix_config()) for _ in range(2))
    assert first.as_dict() | {"wall_s": 0} == second.as_dict() | {"wall_s": 0}


def test_cue_model_matches_the_measured_silent_wrong_rate(latents) -> None:
    """Across the matrix, the silent wrong decodes measured agree with the number the SimHash
    model (P[Binom(K, θ/π) ≤ t] per wrong candidate) expects: the bound is neither violated
    nor vacuous."""
    results = faults.run_matrix(CELLS, latents)
    measured = sum(r.silent_wrong for r in results)
    expected = sum(r.risk for r in results)
    assert measured > 0  # bit errors on NEW latents make near-miss prototypes that cues accept
    assert measured <= expected + 3 * expected**0.5 + 3
    assert measured >= expected / 3  # the model is not a loose overestimate


def test_event_frames_are_seeded_and_at_no_fixed_phase() -> None:
    cell = next(c for c in CELLS if c.name == "everything at once")
    frames = {seed: cell.event_frames(faults.FRAMES, seed) for seed in range(12)}
    assert frames[3] == cell.event_frames(faults.FRAMES, 3)
    firsts = {f[0][0] for f in frames.values()}
    assert len(firsts) > 6
    assert {f % faults.DIGEST_EVERY for f in firsts} != {0}
    reach = faults.FRAMES // 20
    assert all(abs(f - round(0.3 * faults.FRAMES)) <= reach for f in firsts)


def test_faults_takes_every_link_flag() -> None:
    import argparse

    from shared.config import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--entropy-coding", "--delta", "--coded-cue", "every_reference"])
    args.cue_bits = 16
    flags = faults.link_flags(args)
    assert flags == {
        "entropy_coding": True,
        "delta": True,
        "coded_cue": "every_reference",
        "cue_bits": 16,
    }
    config = faults.matrix_config(**flags)
    assert (config.entropy_coding, config.delta, config.cue_bits) == (True, True, 16)
    assert config.threshold == faults.THRESHOLD  # the matrix's own τ unless given
