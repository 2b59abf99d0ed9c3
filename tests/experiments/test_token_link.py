"""The token link in process: the same channel, ledger and stream loop as the paper's link."""

import numpy as np

from experiments.link import InProcessLink, run_stream, simulate
from receiver.tokens import TokenReceiverCore
from shared.accounting import Outcome
from shared.coding.quantizer import normalize, quantize
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


def test_a_moving_patch_is_pointed_at_the_prototypes_it_had_a_place_away():
    """A patch written once moves one column per frame. Each frame it passes τ against the
    prototypes the previous frame had a column away, though a rival prototype of the memory
    matches it better: with ``sticky`` the Tx names the former (NEAR places, a few bits), with
    the best recall it names the rival (⌈log2 M⌉ bits); the Rx shows what the Tx decided."""
    config = _config(threshold=0.97, bits_per_value=8)
    rng = np.random.default_rng(1)
    d, shape = 16, (6, 8)
    scene = normalize(rng.standard_normal((*shape, d)).astype(np.float32))
    rival = normalize(rng.standard_normal((2, d)).astype(np.float32))  # in memory beforehand
    across = rng.standard_normal((2, d)).astype(np.float32)
    across = normalize(across - np.sum(across * rival, 1, keepdims=True) * rival)
    written = 0.955 * rival + np.sqrt(1 - 0.955**2) * across  # cos 0.955 with its rival
    moving = normalize(0.4 * written + 0.6 * rival)  # cos 0.993 with the rival, 0.984 written
    clip = np.repeat(scene[None], 10, axis=0)
    for t in range(10):
        clip[t, 2, t % 7 : t % 7 + 2] = written if t == 0 else moving
    links = {}
    for name, prefer in (("near", True), ("best recall", False)):
        link = _token_link(config)
        if not prefer:
            link.tx._prefer_near = lambda *args: None
        for core in (link.tx, link.rx):
            core.memory.store_many(
                np.array([1000, 1001]), quantize(rival, 8, config.quantizer_grid())
            )
        links[name] = run_stream(clip, link)
        assert links[name].agree()
        for seq, grid in links[name].expected.items():
            np.testing.assert_array_equal(links[name].shown[seq], grid)
    near, best = (links[k] for k in ("near", "best recall"))
    assert near.ledger.link_bits < best.ledger.link_bits
    # where the patch is in frame 6 (before it wraps around), one link shows the written
    # prototypes, the other the rivals
    for link, nearer, farther in ((near, written, rival), (best, rival, written)):
        shown = link.shown[6][2, 6:8]
        assert (np.sum(shown * nearer, 1) > np.sum(shown * farther, 1)).all()
