"""The link against channel SNR: bits/frame, refreshes, PSNR and frames lost vs Eb/N0.

Each point runs a clip through the real Tx, channel and Rx cores on a virtual clock
(:class:`shared.faults.InProcessLink`) with the ``phy`` impairment on both directions, so the
errors are the ones the network would see at that SNR. Lost frames count in "lost"; PSNR is over
the frames the Rx showed (concealed frames show the last good one).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from channel.core import DIRECTIONS
from shared.accounting import Outcome, psnr, semantic_bits
from shared.config import LinkConfig
from shared.faults import InProcessLink
from shared.protocol import Bye, Refresh
from shared.simulator import DecodeCache

FPS = 30.0
DIGEST_EVERY = 30


class _ShowingLink(InProcessLink):
    """An in-process link that also keeps the latent the Rx showed for every settled frame."""

    def __init__(self, config: LinkConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.shown: dict[int, np.ndarray] = {}

    def _settle(self, frames: Iterable, risk) -> None:
        frames = list(frames)
        for frame in frames:
            if frame.outcome is not None and frame.latent is not None:
                self.shown.setdefault(frame.seq, frame.latent)
        super()._settle(frames, risk)


def snr_point(
    frames: np.ndarray,
    latents: np.ndarray,
    config: LinkConfig,
    phy: dict,
    decoder: DecodeCache,
    seed: int = 0,
) -> dict:
    """One clip at one channel setting; ``phy`` are the phy impairment's attributes."""
    link = _ShowingLink(config, seed=seed)
    for direction in DIRECTIONS:
        link.channel.set_impairment(direction, "phy", phy)
    frame_bits = 0
    for seq, latent in enumerate(latents):
        link.run_until(seq / FPS)
        link.tick()
        decision = link.tx.on_frame(seq, link.now, latent)
        link.expected[seq] = decision.latent
        frame_bits += semantic_bits(decision.message, config)
        link.send("tx_to_rx", decision.message)
        if (seq + 1) % DIGEST_EVERY == 0:
            link.send("tx_to_rx", link.tx.digest())
    n = len(latents)
    deadline = link.now + 5.0
    link.run_until(n / FPS)
    while (not link.idle or link.rx._pending) and link.now < deadline:
        link.run_until(link.now + 0.05)
        link.tick()
    link._settle(link.rx.on_message(Bye(last_seq=n - 1), link.now).frames, None)
    refresh_bits = link.tx.counters.refreshes_sent * semantic_bits(
        Refresh(ref=0, seq=0, latent=b""), config
    )
    outcomes = {o.value: 0 for o in Outcome}
    for outcome in link.outcomes.values():
        outcomes[outcome.value] += 1
    quality = [psnr(frames[s], decoder(latent)) for s, latent in link.shown.items()]
    return {
        "bits_per_frame": (frame_bits + refresh_bits) / n,
        "refreshes": link.tx.counters.refreshes_sent,
        "psnr": float(np.mean(quality)) if quality else float("nan"),
        "lost": outcomes["lost"],
        "concealed": outcomes["concealed"],
        "recovered": outcomes["recovered_lookup"] + outcomes["recovered_refresh"],
        "silent_wrong": len(link.silent),
        "digests_agree": link.agree(),
    }


def snr_sweep(
    codec,
    config: LinkConfig,
    *,
    scenario: str = "low_motion",
    n_frames: int = 120,
    ebn0_db: Iterable[float] = (0, 2, 4, 6, 8, 10, 12, 14),
    memories: Iterable[str] = ("hopfield", "vq"),
    channels: Iterable[str] = ("awgn", "rayleigh"),
    modulation: str = "qpsk",
    progress=None,
) -> list[dict]:
    from shared.scenarios import load_clip

    frames = load_clip(scenario, n_frames=n_frames, size=codec.frame_size, seed=config.seed)
    latents = codec.encode(frames)
    decoder = DecodeCache(codec)
    rows = []
    for channel in channels:
        for memory in memories:
            for snr in ebn0_db:
                phy = {"snr_db": float(snr), "modulation": modulation, "channel": channel}
                point = snr_point(frames, latents, config.replace(memory=memory), phy, decoder)
                rows.append({"channel": channel, "memory": memory, "ebn0_db": snr, **point})
                if progress:
                    progress()
    return rows


def plot_snr(rows: list[dict], prefix: str) -> list[str]:
    """PSNR, bits/frame and concealed frames against Eb/N0; writes ``prefix``.png and .svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("psnr", "PSNR (dB)"), ("bits_per_frame", "bits/frame (incl. refreshes)"),
              ("concealed", "concealed frames"))  # fmt: skip
    for channel, memory in sorted({(r["channel"], r["memory"]) for r in rows}):
        mine = [r for r in rows if r["channel"] == channel and r["memory"] == memory]
        style = "-" if channel == "awgn" else "--"
        for ax, (key, label) in zip(axes, panels, strict=True):
            ax.plot([r["ebn0_db"] for r in mine], [r[key] for r in mine], style, marker="o",
                    label=f"{memory}, {channel}")  # fmt: skip
            ax.set_xlabel("Eb/N0 (dB)")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths = [f"{prefix}.png", f"{prefix}.svg"]
    for path in paths:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return paths
