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


def test_three_bit_figures_of_a_known_stream_sum_by_hand():
    """NEW, HIT, HIT of one latent, one DIGEST at the end: every figure counted by hand."""
    import numpy as np

    from experiments.link import InProcessLink, run_stream
    from shared.protocol.messages import Bye, Hello, encode

    cfg = build_config({"capacity": 256, "cue_bits": 32}, read_env=False)
    z = np.zeros(cfg.latent_dim, dtype=np.float32)
    z[0] = 1.0
    link = run_stream(np.stack([z, z, z]), InProcessLink(cfg), digest_every=0)
    s = link.ledger.summary(link.ledger.ordered(3))
    new, hit = 64 * 8, 8 + 32  # d·b; ⌈log2 256⌉ + K
    assert s.semantic_bits_per_frame == (new + 2 * hit) / 3
    # Each HELLO: role, version, two sha256 digests, the next sequence number; the Tx's
    # also its 16-byte stream id.
    hellos = 2 * (2 + 8 + 256 + 256 + 32) + 8 * 16
    digest = 9 + 256 + 32  # ⌈log2 257⌉ count bits, sha256, one 32-bit reference hash
    bye = 32 + 8 * len("end of stream")  # last seq, and the reason the Tx gives
    assert s.link_bits_per_frame == (new + 2 * hit + hellos + digest + bye) / 3
    # Wire: msgpack bytes + a websocket header (2 bytes under 126 bytes of payload, 4 up to
    # 64 KiB), + 4 mask bytes on Tx→Rx frames (client frames are masked).
    forward = link.channel.stats()["tx_to_rx"]
    assert forward["messages_in"] == 4  # NEW, HIT, HIT, DIGEST (the Rx sent nothing back)
    assert forward["bytes_in"] < 4 * 126  # … all of them short
    hello_tx, hello_rx = (
        len(
            encode(
                Hello(role="tx", config_digest=cfg.digest(), model_digest="0" * 64, stream="0" * 16)
            )
        ),
        len(encode(Hello(role="rx", config_digest=cfg.digest(), model_digest="0" * 64))),
    )
    assert min(hello_tx, hello_rx) >= 126
    wire = (
        forward["bytes_in"] + 4 * (2 + 4)
        + hello_tx + 4 + 4
        + hello_rx + 4
        + len(encode(Bye(last_seq=2, reason="end of stream"))) + 2 + 4
    )  # fmt: skip
    assert s.wire_bits_per_frame == 8 * wire / 3
