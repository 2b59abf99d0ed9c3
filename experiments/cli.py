"""The ``hoplink`` command line: one entry point, one subcommand per job.

Heavy modules (torch, the web stack) are imported inside the subcommands so that ``--help`` is
instant and the channel process never loads torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from benchmarks.run import CHANNEL_WORKERS, SECTIONS
from benchmarks.run import main as run_bench
from experiments.demo import DemoError, add_demo_arguments, run_demo
from experiments.tables import LINK_HEADERS, TERMINAL_WIDTH, link_cells, render_table
from shared.codec.zoo import WEIGHTS_DIR_ENV
from shared.config import ConfigError, add_config_arguments, config_from_args
from shared.service import (
    MAX_CHANNEL_WORKERS,
    ChannelSettings,
    RxSettings,
    TxSettings,
    add_settings_arguments,
    settings_from_args,
)

# Three processes share two cores: one BLAS/OpenMP thread each unless the user says otherwise.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


class UserError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


# --- sim ------------------------------------------------------------------------------------------


def cmd_sim(args: argparse.Namespace) -> int:
    from experiments.clips import encoded_clip  # deferred: imports torch, av
    from experiments.link import Corruption, simulate  # deferred: imports torch

    config = config_from_args(args)
    clip = encoded_clip(config, args.scenario, args.frames, short_side=args.short_side)
    corruption = None
    if args.corrupt_at is not None:
        corruption = Corruption(args.corrupt_at, args.rho, args.sigma, config.seed)
    result = simulate(
        clip.latents, config, frames=clip.frames, decoder=clip.decoder, corruption=corruption
    )
    codec = clip.codec
    if args.out_video:
        from experiments.video import frame_label, write_side_by_side  # deferred: imports av

        shown = [
            clip.decoder(result.rx_latents[r.seq]) if r.outcome.value != "lost" else None
            for r in result.records
        ]
        labels = [frame_label(r.seq, r.psnr, r.outcome.value) for r in result.records]
        path = write_side_by_side(args.out_video, clip.frames, shown, labels)
        print(f"wrote {path}: original | Rx, {len(shown)} frames of {clip.frames.shape[1:3]} px")
    s = result.summary
    if args.json:
        _print_json(
            {
                "scenario": args.scenario,
                "config": config.model_dump(),
                "config_digest": config.digest(),
                "summary": s.as_dict(),
                "tx": vars(result.tx),
                "rx": vars(result.rx),
                "digests_agree": result.digests_agree,
                "silent_wrong": result.silent_wrong,
            }
        )
        return 0
    print(
        f"scenario {args.scenario}: {s.frames} frames, memory={config.memory}, "
        f"τ={config.threshold}, M={config.capacity}, codec {codec.name}"
    )
    headers = [*LINK_HEADERS, "PSNR dB"]
    row = [*link_cells(s), s.psnr]
    if config.token_link:  # CR, η and C are the paper's per-latent figures: not defined here
        row[5:8] = ["–", "–", "–"]
    print(render_table(headers, [row]))
    print(
        "bits per frame: link = every message both ways at its coded width (frames, refreshes, "
        "DIGEST, HELLO, BYE); semantic = the paper's eq. (3), frame messages and refreshes; "
        f"wire = msgpack + websocket framing. SSIM {s.ssim:.3f}."
    )
    if config.token_link:
        tx = result.tx
        total = max(1, tx.tokens_skip + tx.tokens_hit + tx.tokens_new)
        print(
            f"token link: {clip.latents.shape[1]}x{clip.latents.shape[2]} tokens per frame "
            f"({clip.frames.shape[1]}x{clip.frames.shape[2]} px); SKIP "
            f"{tx.tokens_skip / total:.1%}, HIT {tx.tokens_hit / total:.1%}, NEW "
            f"{tx.tokens_new / total:.1%}; a frame counts as a hit when it writes no token"
        )
    outcomes = ", ".join(f"{k} {v}" for k, v in s.outcomes.items())
    print(
        f"frames: {outcomes}; refreshes {s.refreshes}; cue failures {result.rx.cue_failures}; "
        f"silent wrong {result.silent_wrong}; memory digests agree: {result.digests_agree}"
    )
    return 0


# --- table ----------------------------------------------------------------------------------------


def cmd_table(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from experiments.table import TABLE_GROUPS, paper_table  # deferred: imports av, torch
    from experiments.table import as_json as table_json  # deferred: imports av, torch
    from experiments.table import render as render_paper_table  # deferred: imports av, torch
    from shared.codec.models import codec_for  # deferred: imports torch
    from shared.scenarios import expand_sources  # deferred: imports av

    config = config_from_args(args)
    codec = codec_for(config)
    groups = TABLE_GROUPS
    if args.sources:
        groups = {label: (source,) for label, source in expand_sources(args.sources).items()}
    started = time.perf_counter()
    with tqdm(desc="calibrating", unit="run", disable=args.json or None) as bar:
        table = paper_table(
            codec,
            config,
            n_frames=args.frames,
            seed=config.seed,
            psnr_drop=args.psnr_drop,
            methods=tuple(args.methods.split(",")),
            progress=lambda g: bar.set_description(f"{g} ({len(groups)} groups)"),
            groups=groups,
            on_step=bar.update,
        )
    elapsed = time.perf_counter() - started
    if args.json:
        _print_json(table_json(table, elapsed))
        return 0
    over = "the three protocols" if groups is TABLE_GROUPS else f"the {len(groups)} sources"
    print(render_paper_table(table, over=over, seconds=elapsed, psnr_drop=args.psnr_drop))
    return 0


# --- train ----------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from shared.codec.models import CodecError  # deferred: imports torch
    from shared.codec.tokens import TOKEN_CODECS  # deferred: imports torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    out = Path(args.out).expanduser() if args.out else user_weights_dir()
    common = dict(
        minutes=args.minutes, seed=args.seed, device=args.device, out_dir=out, steps=args.steps
    )
    try:
        if args.objective == "capacity":
            from experiments.capacity import train_capacity  # deferred: imports torch

            card = train_capacity(args.codec, init=args.init or "ae64", **common)
        elif args.codec in TOKEN_CODECS:
            from experiments.train_tokens import train_token_codec  # deferred: imports torch

            init = Path(args.init).expanduser() if args.init else None
            card = train_token_codec(args.codec, init=init, **common)
        else:
            from experiments.training import train_codec  # deferred: imports torch

            card = train_codec(args.codec, init=args.init, **common)
    except CodecError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(card, indent=2))
    print(
        f"weights and card of {args.codec} written to {out}; use them with "
        f"`hoplink sim --weights-dir {out} --codec {args.codec}` (or {WEIGHTS_DIR_ENV}={out})",
        file=sys.stderr,
    )
    return 0


# --- sweep / report: experiments at scale ---------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import SweepError, sweep_command  # deferred: imports av, torch

    try:
        return sweep_command(args, config_from_args(args))
    except SweepError as exc:
        raise UserError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from experiments.report import write_report  # deferred: imports av, torch

    try:
        md, page = write_report(args.runs, args.out)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {md} and {page}")
    return 0


# --- rx / tx / channel / demo: the networked link ----------------------------------------------


def cmd_rx(args: argparse.Namespace) -> int:
    from receiver.server import run  # deferred: imports av, fastapi, torch

    return run(config_from_args(args), settings_from_args(RxSettings, args))


def cmd_tx(args: argparse.Namespace) -> int:
    from transmitter.client import run  # deferred: imports av, torch

    return run(config_from_args(args), settings_from_args(TxSettings, args))


def cmd_channel(args: argparse.Namespace) -> int:
    from channel.app import run  # deferred: imports fastapi

    return run(config_from_args(args), settings_from_args(ChannelSettings, args))


def cmd_demo(args: argparse.Namespace) -> int:

    config_from_args(args)  # validate here: a bad flag fails before any process starts
    try:
        return run_demo(args)
    except DemoError as exc:
        raise UserError(str(exc)) from None


def cmd_train_adaptive(args: argparse.Namespace) -> int:
    import torch

    from experiments.train_adaptive import train_and_save  # deferred: imports torch
    from shared.codec.models import load_codec  # deferred: imports torch

    torch.set_num_threads(1)
    out = Path(args.out).expanduser() if args.out else user_weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    card = train_and_save(load_codec(args.codec), steps=args.steps, seed=args.seed, out_dir=out)
    rows = [[e["variant"], e["strength"], e["cosine_accuracy"], e["adaptive_accuracy"]]
            for e in card["evaluation"]]  # fmt: skip
    print(render_table(["variant", "strength", "cosine top-1", "adaptive top-1"], rows))
    print(
        f"weights: {out / card['name']}.json ({card['wall_time_s']} s, "
        f"loss {card['final_loss']:.3f})"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise UserError(f"unknown bench sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return run_bench(args.quick, args.json, args.out, sections, args.channel_workers)


def cmd_snr(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from experiments.snr import snr_sweep  # deferred: imports av, torch
    from shared.codec.models import codec_for  # deferred: imports torch

    config = config_from_args(args)
    snrs = [float(v) for v in args.ebn0.split(",")]
    memories, channels = args.memories.split(","), args.channels.split(",")
    total = len(snrs) * len(memories) * len(channels)
    with tqdm(total=total, desc="snr sweep", disable=args.json or None) as bar:
        rows = snr_sweep(codec_for(config), config, scenario=args.scenario, n_frames=args.frames,
                         ebn0_db=snrs, memories=memories, channels=channels,
                         modulation=args.modulation, progress=bar.update)  # fmt: skip
    if args.out:
        import csv

        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        from experiments.snr import plot_snr  # deferred: imports av, torch

        plot_snr(rows, args.plot)
    if args.json:
        _print_json(rows)
    else:
        headers = [SNR_HEADERS.get(k, k) for k in rows[0]]
        table = [list(r.values()) for r in rows]
        print(render_table(headers, table, width=TERMINAL_WIDTH, keep=3))
        print(SNR_LEGEND)
    return 0


# Short terminal headers of `hoplink snr` (its JSON and CSV keep the full names).
SNR_HEADERS = {
    "ebn0_db": "Eb/N0 dB",
    "bits_per_frame": "bits/frame",
    "hit_rate": "hits",
    "refreshes": "refr",
    "psnr": "PSNR dB",
    "concealed": "conceal",
    "recovered": "recov",
    "silent_wrong": "silent",
    "digests_agree": "agree",
    "symbols_per_frame": "sym/frame",
    "efficiency": "η",
    "reasoning_capacity": "C",
    "kappa_bps_per_hz": "κ b/s/Hz",
    "reasoning_capacity_bps_per_hz": "C b/s/Hz",
}
SNR_LEGEND = (
    "bits/frame: semantic bits (eq. 3) per frame; hits: hit rate; refr: refreshes; lost, conceal,\n"
    "recov, silent: frames by outcome at the Rx; ber: payload bit-error rate; η, C: eq. 5;\n"
    "κ, C b/s/Hz: per Hz of bandwidth. --json or --out CSV give every column by its full name."
)


# --- robustness -----------------------------------------------------------------------------------


def cmd_robustness(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from experiments import robustness as rb  # deferred: imports av, torch
    from shared.codec.models import codec_for  # deferred: imports torch

    def floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        if text is None:
            return default
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise UserError(f"expected comma-separated numbers, got {text!r}") from None

    config = config_from_args(args)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in rb.KINDS]
    if unknown:
        raise UserError(f"unknown memory kinds {unknown}; known: {', '.join(rb.KINDS)}")
    sigmas, rhos = floats(args.sigmas, rb.SIGMAS), floats(args.rhos, rb.RHOS)
    if any(not 0 <= s <= 10 for s in sigmas) or any(not 0 <= r <= 1 for r in rhos):
        raise UserError("σ must lie in [0, 10] and ρ in [0, 1]")
    if not 0 < args.corrupt_at < 1 or args.digest_every < 0 or (args.frames or 2) < 2:
        raise UserError("--corrupt-at must lie in (0, 1), --digest-every ≥ 0, --frames ≥ 2")
    scenarios = rb.FULL_SCENARIOS if args.full else rb.SCENARIOS
    if args.scenarios:
        scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    frames = args.frames or (rb.FULL_FRAMES if args.full else rb.FRAMES)
    cells = rb.grid(sigmas, rhos, cross=args.cross or args.full)
    total = len(kinds) * len(cells) * len(scenarios)
    with tqdm(total=total, unit="clip", disable=args.json or None) as bar:

        def clip_done(kind: str, cell: rb.Cell, clip: str) -> None:
            bar.set_description(f"{kind} σ={cell.sigma:g} ρ={cell.rho:g}")
            bar.update()

        study = rb.measure(
            codec_for(config),
            config,
            kinds=kinds,
            cells=cells,
            scenarios=scenarios,
            frames=frames,
            psnr_drop=args.psnr_drop,
            corrupt_at=args.corrupt_at,
            digest_every=args.digest_every,
            on_calibration_step=lambda kind: bar.set_description(f"calibrating {kind}"),
            on_run=clip_done,
        )
    if args.json:
        _print_json(rb.as_json(study))
        return 0
    print(rb.render(study))
    print(f"({study.seconds:.0f} s)")
    return 0


# --- scenarios / faults ---------------------------------------------------------------------------

# What each bundled scenario shows (shared/scenarios.py renders them from scikit-image photos).
SCENARIO_NOTES = {
    "static": "a tripod shot of one photo (coffee); only sensor noise changes",
    "low_motion": "a slow pan over a cat photo (chelsea), about half a pixel per frame",
    "high_motion": "a fast pan with a breathing zoom (0.7x to 1.4x) over a motorcycle",
    "scene_change": "four photos cut in turn, each shot a slow pan from a fresh position",
    "repetitive_return": "a surveillance tour returning to three views of the astronaut photo",
    "cam_shake": "a hand-held camera: a few pixels of smooth random wobble (astronaut)",
    "high_texture": "a pan over gravel: fine texture that changes every frame",
    "illum_change": "fixed framing under light that brightens and goes warm to cool, then back",
}
PROTOCOL_NOTES = {
    "stable": "content the memory can recall",
    "gradual_drift": "content that changes slowly (the paper's up-to-70 % case)",
    "moderate": "content that changes fast",
}


def cmd_scenarios(args: argparse.Namespace) -> int:
    from shared.scenarios import PROTOCOLS, SCENARIOS, protocol_of  # deferred: imports av

    rows = [
        [name, protocol_of(name) or "(apart)", SCENARIO_NOTES.get(name, "")] for name in SCENARIOS
    ]
    print(render_table(["scenario", "protocol", "what the camera sees"], rows))
    print("\nprotocols (Table I averages over each):")
    for protocol, names in PROTOCOLS.items():
        print(f"  {protocol:14s} {PROTOCOL_NOTES.get(protocol, '')}: {', '.join(names)}")
    print("  scene_change is reported on its own. Any video file path also works as a scenario.")
    return 0


def _run_faults(args: argparse.Namespace) -> int:
    from experiments.faults import main as faults_main  # deferred: imports av, torch

    return faults_main(args)


# --- parser ---------------------------------------------------------------------------------------


SERVICE_COMMANDS = ("rx", "tx", "channel")


def version() -> str:
    """The installed distribution's version ("unknown" in a checkout that was never installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("hoplink")
    except PackageNotFoundError:
        return "unknown (not installed)"


def user_weights_dir() -> Path:
    """Where ``hoplink train`` writes by default: ``$HOPLINK_WEIGHTS_DIR``, else the user's data
    folder (``$XDG_DATA_HOME/hoplink/weights``, ``~/.local/share/hoplink/weights``); never the
    installed package."""
    override = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    data = os.environ.get("XDG_DATA_HOME", "").strip() or Path.home() / ".local" / "share"
    return Path(data) / "hoplink" / "weights"


class HoplinkParser(argparse.ArgumentParser):
    """argparse with one-line errors that name the command and the flag at fault."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions as usual; keeps the example block (lines starting with two spaces)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_weights_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights-dir",
        default=None,
        metavar="DIR",
        help=f"read codec weights and cards from DIR (e.g. `hoplink train --out DIR`) instead of "
        f"the shipped ones; also {WEIGHTS_DIR_ENV}",
    )


def _sim_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "--scenario",
        default="low_motion",
        help="scenario name (see `hoplink scenarios`) or a video file path",
    )
    sim.add_argument("--frames", type=int, default=None, help="frames to use (default: 120)")
    sim.add_argument(
        "--corrupt-at", type=int, default=None, help="corrupt the Rx memory once, before this frame"
    )
    sim.add_argument("--rho", type=float, default=0.0, help="ID-map desync fraction ρ")
    sim.add_argument("--sigma", type=float, default=0.0, help="prototype noise σ")
    sim.add_argument(
        "--short-side",
        type=int,
        default=240,
        help="token codecs: the working size's short side in px (default 240; smaller videos "
        "keep their size)",
    )
    sim.add_argument(
        "--out-video",
        default=None,
        metavar="FILE.mp4",
        help="write original | what the Rx showed side by side, PSNR burnt in",
    )
    sim.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_weights_dir(sim)
    add_config_arguments(sim)
    sim.set_defaults(func=cmd_sim)


def _table_arguments(table: argparse.ArgumentParser) -> None:
    table.add_argument("--frames", type=int, default=None, help="frames per clip (default 120)")
    table.add_argument(
        "--psnr-drop",
        type=float,
        default=0.5,
        help="target PSNR = all-NEW PSNR minus this many dB (default 0.5)",
    )
    table.add_argument(
        "--methods",
        default="hopfield,vq",
        help="memory kinds to calibrate, comma-separated (default hopfield,vq)",
    )
    table.add_argument(
        "--sources",
        default=None,
        help="one group per source instead of the paper's protocols: scenarios, video files, or "
        "`real` (the Debian-packaged camera videos), comma-separated",
    )
    table.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_weights_dir(table)
    add_config_arguments(table)
    table.set_defaults(func=cmd_table)


def _train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--codec", default="ae64", help="codec name (default ae64)")
    train.add_argument(
        "--objective",
        default="mse",
        choices=("mse", "capacity"),
        help="mse: a plain autoencoder; capacity: Algorithm 1 (reasoning capacity under a "
        "distortion constraint), fine-tuning --init (default ae64) into --codec (e.g. ae64cap)",
    )
    train.add_argument(
        "--init",
        default=None,
        help="start from this shipped codec's weights (a token codec: a weights file of its spec)",
    )
    train.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    train.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    train.add_argument("--seed", type=int, default=0, help="seed of data and init (default 0)")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    train.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"output folder (default ${WEIGHTS_DIR_ENV}, else ~/.local/share/hoplink/weights); "
        "use it with --weights-dir DIR",
    )
    train.set_defaults(func=cmd_train)


def _train_adaptive_arguments(adaptive: argparse.ArgumentParser) -> None:
    adaptive.add_argument("--codec", default="ae64", help="codec whose latents it learns on")
    adaptive.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    adaptive.add_argument("--seed", type=int, default=0)
    adaptive.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"output folder (default ${WEIGHTS_DIR_ENV}, else ~/.local/share/hoplink/weights)",
    )
    adaptive.set_defaults(func=cmd_train_adaptive)


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--quick", action="store_true", help="a reduced run (seconds)")
    bench.add_argument(
        "--only", default=None, help=f"comma-separated sections, from {', '.join(SECTIONS)}"
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of tables")
    bench.add_argument("--out", default=None, help="also write the JSON to this file")
    bench.add_argument(
        "--channel-workers",
        type=int,
        default=CHANNEL_WORKERS,
        choices=range(1, MAX_CHANNEL_WORKERS + 1),
        metavar="W",
        help="scale also runs the links through a channel of W worker processes "
        f"(hoplink channel --workers W; default {CHANNEL_WORKERS}; 1: not)",
    )
    _add_weights_dir(bench)
    bench.set_defaults(func=cmd_bench)


def _snr_arguments(snr: argparse.ArgumentParser) -> None:
    snr.add_argument("--scenario", default="low_motion", help="scenario or video file")
    snr.add_argument("--frames", type=int, default=120, help="frames per run (default 120)")
    snr.add_argument("--ebn0", default="0,2,4,6,8,10,12,14", help="Eb/N0 values in dB")
    snr.add_argument("--memories", default="hopfield,vq", help="memory kinds, comma-separated")
    snr.add_argument("--channels", default="awgn,rayleigh", help="awgn and/or rayleigh")
    snr.add_argument("--modulation", default="qpsk", choices=("bpsk", "qpsk", "16qam", "64qam"))
    snr.add_argument("--out", default=None, help="also write a CSV here")
    snr.add_argument("--plot", default=None, help="also write PREFIX.png and PREFIX.svg")
    snr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_weights_dir(snr)
    add_config_arguments(snr)
    snr.set_defaults(func=cmd_snr)


def _robustness_arguments(robust: argparse.ArgumentParser) -> None:
    robust.add_argument(
        "--kinds",
        default="vq,hopfield,hopfield+hen,adaptive",
        help="memory kinds, comma-separated (default: all four; each sets memory, "
        "hopfield_steps and metastable_threshold: hopfield+hen = 10 steps, threshold 0.95)",
    )
    robust.add_argument("--sigmas", default=None, help="σ values (default 0,0.02,0.05,0.1,0.2)")
    robust.add_argument("--rhos", default=None, help="ρ values (default 0,0.05,0.1,0.2,0.5)")
    robust.add_argument(
        "--cross", action="store_true", help="every σ × ρ pair (default: each σ and ρ alone)"
    )
    robust.add_argument(
        "--scenarios",
        default=None,
        help="clips, comma-separated (default repetitive_return,high_motion,scene_change)",
    )
    robust.add_argument("--frames", type=int, default=None, help="frames per clip (default 60)")
    robust.add_argument(
        "--full", action="store_true", help="all eight scenarios, 120 frames, every σ × ρ pair"
    )
    robust.add_argument(
        "--psnr-drop",
        type=float,
        default=0.5,
        help="matched PSNR target = the clips' all-NEW PSNR minus this many dB (default 0.5)",
    )
    robust.add_argument(
        "--corrupt-at",
        type=float,
        default=0.5,
        help="corrupt the Rx memory once per clip, before a seeded random frame within a quarter "
        "of the clip of this fraction (default 0.5)",
    )
    robust.add_argument(
        "--digest-every", type=int, default=30, help="DIGEST period in frames (default 30)"
    )
    robust.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_weights_dir(robust)
    add_config_arguments(robust)
    robust.set_defaults(func=cmd_robustness)


def _scenarios_arguments(scen: argparse.ArgumentParser) -> None:
    scen.set_defaults(func=cmd_scenarios)


def _faults_arguments(faults: argparse.ArgumentParser) -> None:
    faults.add_argument("--full", action="store_true", help="full matrix (HOPLINK_FULL_FAULTS=1)")
    faults.add_argument("--json", action="store_true", help="print JSON instead of a table")
    faults.add_argument("--no-network", action="store_true", help="skip the real-process cells")
    _add_weights_dir(faults)
    add_config_arguments(faults)
    faults.set_defaults(func=_run_faults)


def _rd_arguments(rd: argparse.ArgumentParser) -> None:
    from experiments.rd import add_rd_arguments  # deferred: imports av, torch

    add_rd_arguments(rd, add_config_arguments)
    _add_weights_dir(rd)


def _codec_eval_arguments(p: argparse.ArgumentParser) -> None:
    from experiments.codeceval import add_codec_eval_arguments  # deferred: imports av, torch

    add_codec_eval_arguments(p)


def _sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    from experiments.sweep import add_sweep_arguments  # deferred: imports av, torch

    add_sweep_arguments(sweep)
    _add_weights_dir(sweep)
    add_config_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--runs", required=True, help="the sweep's --out folder")
    report.add_argument("--out", default=None, help="report folder (default: the --runs folder)")
    report.set_defaults(func=cmd_report)


def _service_arguments(cls: type, func: Callable[[argparse.Namespace], int]):
    def add(parser: argparse.ArgumentParser) -> None:
        add_settings_arguments(parser, cls)
        _add_weights_dir(parser)
        add_config_arguments(parser)
        parser.set_defaults(func=func)

    return add


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    add_demo_arguments(demo)
    _add_weights_dir(demo)
    add_config_arguments(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_soak(args: argparse.Namespace) -> int:
    from experiments.soak import run_soak  # deferred: keeps --help fast

    config_from_args(args)  # validate here: a bad flag fails before any process starts
    try:
        return run_soak(args)
    except DemoError as exc:
        raise UserError(str(exc)) from None


def _soak_arguments(soak: argparse.ArgumentParser) -> None:
    from experiments.soak import add_soak_arguments  # deferred: keeps --help fast

    add_soak_arguments(soak)
    _add_weights_dir(soak)
    add_config_arguments(soak)
    soak.set_defaults(func=cmd_soak)


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, an example, and what adds its flags (only when it runs,
    so ``hoplink --help`` imports neither torch nor av)."""

    help: str
    example: str
    add: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {
    "sim": Command(
        "run one clip through the in-process simulator",
        "hoplink sim --scenario static --frames 60 --delta --entropy-coding",
        _sim_arguments,
    ),
    "table": Command(
        "reproduce the paper's Table I at matched PSNR",
        "hoplink table --frames 60 --methods hopfield,vq",
        _table_arguments,
    ),
    "rd": Command(
        "RD curves of every method (τ / λ sweeps), BD-rate vs VQ and H.264",
        "hoplink rd --scenario low_motion --points 4 --no-h264 --out rd-results",
        _rd_arguments,
    ),
    "sweep": Command(
        "parallel, resumable parameter sweep -> tidy CSV + the paper's figures",
        "hoplink sweep --grid threshold=0.9,0.95 --grid scenario=static --frames 30 --out runs/t\n"
        "  hoplink sweep --ray-address 127.0.0.1:6379 --preset paper --out runs/paper",
        _sweep_arguments,
    ),
    "report": Command(
        "render a sweep folder as a Markdown + HTML report",
        "hoplink report --runs runs/t",
        _report_arguments,
    ),
    "snr": Command(
        "bits/frame, refreshes, PSNR and losses vs channel Eb/N0",
        "hoplink snr --ebn0 0,6,12 --memories hopfield --channels awgn --frames 60",
        _snr_arguments,
    ),
    "robustness": Command(
        "every memory kind under Rx prototype noise σ and ID desync ρ, at matched PSNR",
        "hoplink robustness --kinds vq,hopfield --sigmas 0,0.1 --rhos 0 --frames 30",
        _robustness_arguments,
    ),
    "faults": Command(
        "run the fault matrix, every promise checked",
        "hoplink faults --no-network",
        _faults_arguments,
    ),
    "codec-eval": Command(
        "PSNR/SSIM of each shipped codec per scenario, vs a thumbnail and H.264",
        "hoplink codec-eval --codecs ae64 --bits 4,8 --no-h264",
        _codec_eval_arguments,
    ),
    "train": Command(
        "train a codec's weights from the bundled photos (into a user folder)",
        "hoplink train --codec ae64 --minutes 5 --out ~/hoplink-weights\n"
        "  hoplink sim --weights-dir ~/hoplink-weights",
        _train_arguments,
    ),
    "train-adaptive": Command(
        "train the adaptive memory's learned similarity (A-Hop)",
        "hoplink train-adaptive --steps 500 --out ~/hoplink-weights",
        _train_adaptive_arguments,
    ),
    "bench": Command(
        "throughput, latency and scale beside their floors",
        "hoplink bench --quick --only hop,retrieval",
        _bench_arguments,
    ),
    "scenarios": Command(
        "describe the bundled scenarios and the protocols they are averaged in",
        "hoplink scenarios",
        _scenarios_arguments,
    ),
    "demo": Command(
        "start rx, channel and tx on loopback, stream a clip, keep the dashboard up",
        "hoplink demo                 # until Ctrl-C\n"
        "  hoplink demo --once --frames 60 --no-impairments",
        _demo_arguments,
    ),
    "soak": Command(
        "rx, channel and tx for N minutes: RSS growth per process, every frame accounted",
        "hoplink soak --minutes 10 --json > soak.json",
        _soak_arguments,
    ),
    "rx": Command(
        "run the receiver process (link ws://…:9003/link, REST on 8003)",
        "hoplink rx --port 8003 --reference low_motion",
        _service_arguments(RxSettings, cmd_rx),
    ),
    "tx": Command(
        "run the transmitter process (streams to --url, REST on 8001)",
        "hoplink tx --url ws://127.0.0.1:9002/link --scenario low_motion --frames 120",
        _service_arguments(TxSettings, cmd_tx),
    ),
    "channel": Command(
        "run the channel proxy (Tx-side link on 9002, impairment REST API on 8002)",
        "hoplink channel --rx-url ws://127.0.0.1:9003/link --impair tx_to_rx.loss.probability=0.01",
        _service_arguments(ChannelSettings, cmd_channel),
    ),
}


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``hoplink`` parser and its subparsers; only ``command``'s flags are added (the others'
    would import what that command does not need: torch, av, scipy)."""
    parser = HoplinkParser(
        prog="hoplink",
        description="Emulator of semantic video communication with shared Hopfield memories.",
        epilog="example:\n  hoplink demo\n  hoplink sim --scenario static\n  hoplink sim --help",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"hoplink {version()}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=HoplinkParser
    )
    parsers = {}
    for name, spec in COMMANDS.items():
        parsers[name] = sub.add_parser(
            name,
            help=spec.help,
            description=spec.help[0].upper() + spec.help[1:] + ".",
            epilog=f"example:\n  {spec.example}",
            formatter_class=_Formatter,
        )
        if name == command:
            spec.add(parsers[name])
    return parser, parsers


def _use_weights_dir(args: argparse.Namespace) -> None:
    """``--weights-dir``: this process and the processes it starts read weights from there."""
    folder = getattr(args, "weights_dir", None)
    if folder is None or args.command == "codec-eval":  # codec-eval reads its own flag
        return
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--weights-dir {folder}: no such folder")
    os.environ[WEIGHTS_DIR_ENV] = str(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser, parsers = build_parser(command if command in COMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top level's
        parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _use_weights_dir(args)
        return func(args)
    except (ConfigError, UserError) as exc:
        print(f"hoplink {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Errors of the known kinds (bad scenario, codec) carry a message meant for the user.
        from shared.codec.models import CodecError  # deferred: imports torch
        from shared.scenarios import ScenarioError  # deferred: imports av

        if isinstance(exc, CodecError | ScenarioError):
            print(f"hoplink {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
