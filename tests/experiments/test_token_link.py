"""The token link in process: the same channel, ledger and stream loop as the paper's link."""

import numpy as np

from experiments.link import InProcessLink, run_stream, simulate
from receiver.tokens import TokenReceiverCore
from shared.accounting import Outcome
from shared.coding.quantizer import normalize
from shared.config import build_config
from transmitter.tokens import TokenTransmitterCore


def _config(**changes):
    values = {"latent_dim": 16, "bits_per_value": 4, "capacity": 1024, "threshold": 0.9}
    return build_config({**values, **changes}, read_env=False)


def _token_clip(n=40, shape=(6, 8), d=16, seed=0):
    """Grids of unit tokens: a drifting scene with a patch that moves one column per frame."""
    rng = np.random.default_rng(seed)
    scene = normalize(rng.standard_normal((*shape, d)).astype(np.float32))
    patch = normalize(rng.standard_normal((2, 2, d)).astype(np.float32))
    frames = []
    for t in range(n):
        grid = normalize(scene + 0.05 * rng.standard_normal(scene.shape).astype(np.float32))
        col = t % (shape[1] - 1)
        grid[2:4, col : col + 2] = patch
        frames.append(grid)
    return np.stack(frames)


def _token_link(config, **kwargs):
    """An in-process link whose cores are the token cores (a 1x1 test config names no token
    codec, so it is built by hand)."""
    link = InProcessLink(config, seed=config.seed, **kwargs)
    link.tx = TokenTransmitterCore(config)
    link.rx = TokenReceiverCore(config, refresh_timeout=1.0, reorder_window=64)
    return link


def test_tx_and_rx_token_memories_stay_identical_over_a_clip():
    config = _config()
    clip = _token_clip()
    link = run_stream(clip, _token_link(config))
    records = link.ledger.ordered(len(clip))
    assert all(r.outcome is Outcome.DECODED for r in records)
    assert link.agree()
    for seq, grid in link.expected.items():
        np.testing.assert_array_equal(link.shown[seq], grid)
    tx = link.tx.counters
    assert tx.tokens_skip > tx.tokens_new > 0  # the scene is recalled, the first frame written
    assert link.ledger.link_bits > 0


def test_a_one_by_one_grid_makes_the_single_latent_links_decisions():
    for memory in ("vq", "hopfield"):
        config = _config(memory=memory, token_skip="best", capacity=32, threshold=0.8)
        rng = np.random.default_rng(3)
        anchors = normalize(rng.standard_normal((5, 16)).astype(np.float32))
        picks = rng.integers(0, 5, 60)
        latents = normalize(anchors[picks] + 0.08 * rng.standard_normal((60, 16)))
        latents = latents.astype(np.float32)
        single = run_stream(latents, InProcessLink(config, seed=0))
        tokens = run_stream(latents[:, None, None, :], _token_link(config))
        for seq in range(60):
            np.testing.assert_array_equal(tokens.shown[seq][0, 0], single.shown[seq])
        hits = [r.hit for r in single.ledger.ordered(60)]
        assert hits == [r.hit for r in tokens.ledger.ordered(60)]
        assert tokens.tx.memory.digest() == single.tx.memory.digest()


def test_a_corrupted_token_prototype_is_caught_localized_and_refreshed():
    config = _config(cue_bits=32)
    clip = _token_clip(n=60)
    link = _token_link(config)
    victim = {}

    def corrupt(seq, link):
        if seq == 25:  # mid-segment, off any DIGEST boundary
            ref = int(link.rx.coder.prev_refs[0, 0])
            slot = int(link.rx.id_map[ref])
            memory = link.rx.memory
            memory.prototypes[slot] = normalize(-memory.prototypes[slot])
            link.rx.slot_cues[slot] = link.rx.hasher.cue(memory.prototypes[slot])
            victim["ref"] = ref

    run_stream(clip, link, before_frame=corrupt)
    records = link.ledger.ordered(len(clip))
    outcomes = [r.outcome for r in records]
    assert Outcome.CONCEALED in outcomes[25:]  # caught: not shown as decoded
    assert link.silent_decoded == 0
    # Localized: the refresh asked for the corrupted reference and not the whole memory.
    assert link.rx.counters.refresh_requests <= 64
    assert link.tx.counters.refreshes_sent >= 1
    assert link.agree()  # refreshed: both memories equal again
    assert outcomes[-1] is Outcome.DECODED


def test_a_token_codecs_card_makes_a_token_link_with_its_own_defaults():
    config = build_config({"codec": "tok8d16"}, read_env=False)
    assert config.token_link
    assert (config.latent_dim, config.bits_per_value, config.latent_grid) == (16, 4, "per_dim")
    # A flag still wins over the card's default.
    assert build_config({"codec": "tok8d16", "capacity": 2048}, read_env=False).capacity == 2048
    clip = _token_clip(n=12)
    result = simulate(clip, config)
    assert result.rx_latents.shape == clip.shape
    assert result.summary.outcomes["decoded"] == 12 and result.digests_agree
    assert result.tx.tokens_new > 0 and result.tx.tokens_skip > 0
