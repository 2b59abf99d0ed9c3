"""`hoplink rd` on a tiny clip: runs in seconds and writes the CSVs and the plot."""

import csv
import json

from experiments.cli import main


def test_reduced_rd_writes_csv_plot_and_tables(tmp_path, capsys):
    out = tmp_path / "rd"
    code = main(
        [
            "rd",
            "--scenario",
            "cam_shake",
            "--frames",
            "12",
            "--methods",
            "vq,rdo-entropy-delta",
            "--points",
            "3",
            "--crfs",
            "51,40",
            "--no-ssim",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((out / "rd_points.csv").open()))
    assert {r["method"] for r in rows} == {"vq", "rdo-entropy-delta"}
    assert all(r["digests_agree"] == "True" and r["silent_wrong"] == "0" for r in rows)
    assert all(float(r["bits_per_frame"]) > 0 and float(r["psnr"]) > 5 for r in rows)
    assert {r["knob"] for r in rows} == {"threshold", "rdo_lambda"}
    bd = list(csv.DictReader((out / "bd_rate.csv").open()))
    assert {(r["method"], r["anchor"]) for r in bd} >= {
        ("rdo-entropy-delta", "vq"),
        ("rdo-entropy-delta", "h264"),
        ("vq", "h264"),
    }
    assert len(list(csv.DictReader((out / "h264_points.csv").open()))) == 2
    for name in ("rd.png", "rd.svg"):
        assert (out / name).stat().st_size > 1000
    summary = json.loads((out / "rd.json").read_text())
    assert summary["interpolation"].startswith("pchip") and summary["seconds"]["total"] > 0
    assert "| method |" in capsys.readouterr().out


def test_unknown_method_is_a_clear_error(tmp_path, capsys):
    code = main(["rd", "--scenario", "static", "--methods", "vq,nope", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown method" in capsys.readouterr().err
