"""The ``hoplink`` command line in process: errors, switches, help, version, weights folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments import cli
from experiments.demo import explanation
from experiments.tables import TERMINAL_WIDTH, render_table
from shared.codec.zoo import WEIGHTS_DIR_ENV, codecs_dir, shipped_codecs_dir
from shared.config import config_from_args
from shared.scenarios import SCENARIOS


@pytest.fixture(autouse=True)
def _weights_env(monkeypatch):
    """``--weights-dir`` sets the variable for the process: restore it after each test."""
    monkeypatch.setenv(WEIGHTS_DIR_ENV, "")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("hoplink ") and out.split()[1][0].isdigit()


def test_an_unknown_flag_gets_the_subcommands_one_line_error(capsys):
    code, _, err = run(capsys, "sim", "--bogus")
    assert code == 2
    assert err.strip().splitlines() == [
        "hoplink sim: unrecognized arguments: --bogus (see `hoplink sim --help`)"
    ]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["sim", "--capacity", "many"], "--capacity"),
        (["sim", "--memory", "lstm"], "--memory"),
        (["sim", "--delta", "maybe"], "--delta"),
        (["bench", "--quick", "--only"], "--only"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(capsys, argv, flag):
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"hoplink {argv[0]}: argument {flag}")


def test_an_unknown_command_is_one_line(capsys):
    code, _, err = run(capsys, "simulate")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'simulate'" in err


@pytest.mark.parametrize(
    "argv, delta, entropy",
    [
        ([], False, False),
        (["--delta"], True, False),
        (["--delta", "--entropy-coding"], True, True),
        (["--delta", "true"], True, False),  # the older spelling still works
        (["--delta", "False"], False, False),
        (["--entropy-coding", "--no-entropy-coding"], False, False),
    ],
)
def test_boolean_settings_are_switches(argv, delta, entropy, monkeypatch):
    monkeypatch.delenv("HOPLINK_DELTA", raising=False)
    monkeypatch.delenv("HOPLINK_ENTROPY_CODING", raising=False)
    parser, _ = cli.build_parser("sim")
    config = config_from_args(parser.parse_args(["sim", *argv]))
    assert (config.delta, config.entropy_coding) == (delta, entropy)


def test_a_switch_followed_by_another_flag_takes_no_value():
    parser, _ = cli.build_parser("sim")
    args = parser.parse_args(["sim", "--delta", "--capacity", "64"])
    assert args.delta is True and args.capacity == 64


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_an_example_in_its_help(name):
    _, parsers = cli.build_parser(name)
    text = parsers[name].format_help()
    assert "example:" in text and f"hoplink {name}" in text.split("example:")[1]


def test_top_level_help_lists_every_command_without_their_flags(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in cli.COMMANDS:
        assert name in out
    assert "--capacity" not in out  # the settings are the subcommands'


def test_scenarios_describes_each_in_120_columns(capsys):
    code, out, _ = run(capsys, "scenarios")
    assert code == 0
    for name in SCENARIOS:
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        assert cli.SCENARIO_NOTES[name] in line
    assert max(map(len, out.splitlines())) <= TERMINAL_WIDTH


def test_a_wide_table_is_cut_into_blocks_that_repeat_the_key():
    headers = ["cell", *(f"column {i}" for i in range(30))]
    rows = [["a long cell name", *range(30)], ["b", *range(30, 60)]]
    text = render_table(headers, rows, width=80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and all(b.splitlines()[0].lstrip().startswith("cell") for b in blocks)
    # every value shows once, in its row
    assert sum(f" {v}" in text or text.startswith(str(v)) for v in range(60)) == 60
    assert render_table(headers[:3], [r[:3] for r in rows], width=80).count("\n\n") == 0


def test_snr_table_fits_120_columns(capsys):
    code, out, err = run(
        capsys, "snr", "--ebn0", "4", "--memories", "hopfield", "--channels", "awgn",
        "--frames", "8",
    )  # fmt: skip
    assert code == 0, err
    assert "bits/frame" in out and max(map(len, out.splitlines())) <= TERMINAL_WIDTH


def test_demo_explanation_says_what_each_figure_means_in_120_columns():
    rx = {"quality": {"reference": "low_motion"}, "bits": {"semantic_per_frame": 1.0}}
    text = explanation(rx, live=True)
    for figure in ("semantic bits/frame", "wire bits/frame", "PSNR dB", "next:"):
        assert sum(line.strip().startswith(figure) for line in text.splitlines()) == 1
    assert "dashboard" in text and "dashboard" not in explanation(rx, live=False)
    assert max(map(len, text.splitlines())) <= TERMINAL_WIDTH


# --- weights folders ------------------------------------------------------------------------------


def test_shipped_weights_are_the_default():
    assert codecs_dir() == shipped_codecs_dir() and (codecs_dir() / "ae64.pt").is_file()


def test_weights_dir_is_where_codecs_load_from(tmp_path, capsys):
    from shared.codec.models import CodecError, load_codec

    for suffix in (".pt", ".json"):
        shutil.copy(shipped_codecs_dir() / f"ae64{suffix}", tmp_path / f"ae64{suffix}")
    code, out, err = run(
        capsys, "sim", "--weights-dir", str(tmp_path), "--scenario", "static", "--frames", "4",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert Path(codecs_dir()) == tmp_path.resolve()
    load_codec("ae64")
    with pytest.raises(CodecError, match=str(tmp_path.resolve())):
        load_codec("ae128")  # not in the folder: named, not silently the shipped one


def test_a_missing_weights_dir_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "sim", "--weights-dir", str(tmp_path / "nope"))
    assert code == 2 and "--weights-dir" in err and "no such folder" in err
    assert codecs_dir() == shipped_codecs_dir()


def test_trained_weights_go_to_a_user_folder_never_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert cli.user_weights_dir() == tmp_path / "hoplink" / "weights"
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    assert cli.user_weights_dir() == tmp_path / "mine"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, "")
    assert shipped_codecs_dir() not in cli.user_weights_dir().parents


def test_table_takes_sources_one_group_each(capsys, tmp_path):
    import json

    code, out, _ = run(
        capsys, "table", "--sources", "static,low_motion", "--frames", "8", "--methods", "vq",
        "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert [row["group"] for row in payload["rows"]] == ["static", "low_motion"]
    assert all(row["link b/f"] > row["semantic b/f"] > 0 for row in payload["rows"])
    code, _, err = run(capsys, "table", "--sources", str(tmp_path / "absent.mp4"))
    assert code == 2 and "absent.mp4" in err
