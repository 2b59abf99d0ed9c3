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
