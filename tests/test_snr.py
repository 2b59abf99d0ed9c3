"""The link against channel SNR, through the real cores and the phy impairment."""

from shared.config import build_config
from shared.snr import snr_sweep


def test_errors_fall_and_memories_agree_as_snr_rises(codec, tmp_path):
    config = build_config(read_env=False)
    rows = snr_sweep(codec, config, n_frames=40, ebn0_db=(0, 14), memories=("vq",),
                     channels=("awgn",))  # fmt: skip
    low, high = rows
    assert (low["ebn0_db"], high["ebn0_db"]) == (0, 14)
    # At 14 dB QPSK over AWGN (BER ~1e-13) nothing breaks; at 0 dB (BER 0.08) almost everything.
    assert high["refreshes"] == 0 and high["concealed"] == 0 and high["digests_agree"]
    assert low["refreshes"] > 5 and low["concealed"] > high["concealed"]
    assert low["bits_per_frame"] > high["bits_per_frame"]  # refreshes cost bits
    assert high["psnr"] > low["psnr"] + 5
    from shared.snr import plot_snr

    paths = plot_snr(rows, str(tmp_path / "snr"))
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)
