"""The in-process link (experiments.link): Tx core, impairments and Rx core in one loop."""

import pytest

from experiments.link import Corruption, simulate
from shared.config import build_config


def _cfg(**kw):
    return build_config({"threshold": 0.95, "capacity": 64, **kw}, read_env=False)


@pytest.mark.parametrize("memory", ["vq", "hopfield"])
def test_simulator_recovers_from_corruption_and_reconverges(latents, memory):
    cfg = _cfg(memory=memory)
    clean = simulate(latents, cfg)
    assert clean.digests_agree and clean.summary.refreshes == 0
    for corruption in (Corruption(100, rho=0.5), Corruption(100, sigma=0.5)):
        hurt = simulate(latents, cfg, corruption=corruption)
        assert hurt.digests_agree  # DIGEST + refreshes re-converged the memories
        assert hurt.summary.refreshes > 0
        assert hurt.summary.bits_per_frame > clean.summary.bits_per_frame
        assert sum(hurt.summary.outcomes.values()) == len(latents)
        assert hurt.summary.outcomes["lost"] == 0
