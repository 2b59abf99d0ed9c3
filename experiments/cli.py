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

from benchmarks.run import SECTIONS
from benchmarks.run import main as run_bench
from experiments.demo import DemoError, add_demo_arguments, run_demo
from experiments.tables import Precise, render_table
from shared.config import ConfigError, add_config_arguments, config_from_args
from shared.service import (
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
    from experiments.link import Corruption, simulate  # deferred: imports torch
    from shared.codec.cache import DecodeCache  # deferred: imports torch
    from shared.codec.models import codec_for  # deferred: imports torch
    from shared.scenarios import load_clip  # deferred: imports av

    config = config_from_args(args)
    codec = codec_for(config)
    frames = load_clip(args.scenario, n_frames=args.frames, size=codec.frame_size, seed=config.seed)
    latents = codec.encode(frames)
    corruption = None
    if args.corrupt_at is not None:
        corruption = Corruption(args.corrupt_at, args.rho, args.sigma, config.seed)
    result = simulate(
        latents, config, frames=frames, decoder=DecodeCache(codec), corruption=corruption
    )
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
    headers = ["bits/frame", "hit rate", "NEW", "CR", "η", "C", "PSNR dB", "SSIM", "wire B/f"]
    row = [
        s.bits_per_frame,
        s.hit_rate,
        s.news,
        s.compression_ratio,
        s.efficiency,
        s.capacity,
        s.psnr,
        s.ssim,
        s.wire_bytes_per_frame,
    ]
    print(render_table(headers, [row]))
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
    from shared.codec.models import codec_for  # deferred: imports torch

    config = config_from_args(args)
    codec = codec_for(config)
    started = time.perf_counter()
    with tqdm(desc="calibrating", unit="run", disable=args.json or None) as bar:
        table = paper_table(
            codec,
            config,
            n_frames=args.frames,
            seed=config.seed,
            psnr_drop=args.psnr_drop,
            methods=tuple(args.methods.split(",")),
            progress=lambda g: bar.set_description(f"{g} ({len(TABLE_GROUPS)} groups)"),
            on_step=bar.update,
        )
    elapsed = time.perf_counter() - started
    rows = []
    for r in table.rows:
        s = r.result.summary
        rows.append(
            [
                r.group,
                r.method,
                Precise(r.result.threshold),
                s.bits_per_frame,
                s.hit_rate,
                s.news,
                s.compression_ratio,
                s.efficiency,
                s.capacity,
                r.target_psnr,
                s.psnr,
                s.ssim,
            ]
        )
    if args.json:
        _print_json(
            {
                "rows": [dict(zip(_TABLE_HEADERS, row, strict=True)) for row in rows],
                "reductions": table.reductions,
                "average_reduction": table.average_reduction,
                "seconds": elapsed,
            }
        )
        return 0
    print(render_table(_TABLE_HEADERS, rows))
    print()
    for group, red in table.reductions.items():
        print(f"bit reduction of hopfield over vq, {group}: {100 * red:+.1f} %")
    print(f"average over the three protocols: {100 * table.average_reduction:+.1f} %")
    print(
        f"({elapsed:.0f} s; τ calibrated per method: lowest-rate τ with PSNR ≥ target, "
        f"target = all-NEW PSNR − {args.psnr_drop} dB)"
    )
    return 0


_TABLE_HEADERS = [
    "group",
    "memory",
    "τ",
    "bits/frame",
    "hit rate",
    "NEW",
    "CR",
    "η",
    "C",
    "target dB",
    "PSNR dB",
    "SSIM",
]


# --- train ----------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from shared.codec.models import CodecError  # deferred: imports torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    common = dict(
        minutes=args.minutes, seed=args.seed, device=args.device, out_dir=args.out, steps=args.steps
    )
    try:
        if args.objective == "capacity":
            from experiments.capacity import train_capacity  # deferred: imports torch

            card = train_capacity(args.codec, init=args.init or "ae64", **common)
        else:
            from experiments.training import train_codec  # deferred: imports torch

            card = train_codec(args.codec, init=args.init, **common)
    except CodecError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(card, indent=2))
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


def _add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    from experiments.sweep import add_sweep_arguments  # deferred: imports av, torch

    sweep = sub.add_parser(
        "sweep", help="parallel, resumable parameter sweep -> tidy CSV + the paper's figures"
    )
    add_sweep_arguments(sweep)
    add_config_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser("report", help="render a sweep folder as a Markdown + HTML report")
    report.add_argument("--runs", required=True, help="the sweep's --out folder")
    report.add_argument("--out", default=None, help="report folder (default: the --runs folder)")
    report.set_defaults(func=cmd_report)


# --- rx / tx / channel / demo: the networked link ----------------------------------------------


def cmd_rx(args: argparse.Namespace) -> int:
    from receiver.server import run  # deferred: imports av, fastapi, torch

    return run(config_from_args(args), settings_from_args(RxSettings, args))


def cmd_tx(args: argparse.Namespace) -> int:
    from transmitter.client import run  # deferred: imports av, torch

    return run(config_from_args(args), settings_from_args(TxSettings, args))


def cmd_channel(args: argparse.Namespace) -> int:
    from channel.server import run  # deferred: imports fastapi

    return run(config_from_args(args), settings_from_args(ChannelSettings, args))


def cmd_demo(args: argparse.Namespace) -> int:

    config_from_args(args)  # validate here: a bad flag fails before any process starts
    try:
        return run_demo(args)
    except DemoError as exc:
        raise UserError(str(exc)) from None


def _add_network_commands(sub: argparse._SubParsersAction) -> None:

    rx = sub.add_parser("rx", help="run the receiver process (websocket /link, REST on 8003)")
    add_settings_arguments(rx, RxSettings)
    add_config_arguments(rx)
    rx.set_defaults(func=cmd_rx)

    tx = sub.add_parser("tx", help="run the transmitter process (streams to --url, REST on 8001)")
    add_settings_arguments(tx, TxSettings)
    add_config_arguments(tx)
    tx.set_defaults(func=cmd_tx)

    channel = sub.add_parser(
        "channel", help="run the channel proxy (Tx-side /link, impairment REST API on 8002)"
    )
    add_settings_arguments(channel, ChannelSettings)
    add_config_arguments(channel)
    channel.set_defaults(func=cmd_channel)

    demo = sub.add_parser("demo", help="start rx, channel and tx on loopback and stream a clip")
    add_demo_arguments(demo)
    add_config_arguments(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_train_adaptive(args: argparse.Namespace) -> int:
    import torch

    from experiments.train_adaptive import train_and_save  # deferred: imports torch
    from shared.codec.models import load_codec  # deferred: imports torch

    torch.set_num_threads(1)
    card = train_and_save(
        load_codec(args.codec), steps=args.steps, seed=args.seed, out_dir=args.out
    )
    rows = [[e["variant"], e["strength"], e["cosine_accuracy"], e["adaptive_accuracy"]]
            for e in card["evaluation"]]  # fmt: skip
    print(render_table(["variant", "strength", "cosine top-1", "adaptive top-1"], rows))
    print(f"weights: {card['name']}.json ({card['wall_time_s']} s, loss {card['final_loss']:.3f})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise UserError(f"unknown bench sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return run_bench(args.quick, args.json, args.out, sections)


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
        print(render_table(list(rows[0]), [list(r.values()) for r in rows]))
    return 0


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
    print(
        f"({study.seconds:.0f} s; Rx memory corrupted once before frame "
        f"{round(args.corrupt_at * frames)} of {frames}, a DIGEST every {args.digest_every} frames)"
    )
    return 0


# --- parser ---------------------------------------------------------------------------------------


SERVICE_COMMANDS = ("rx", "tx", "channel")


def build_parser(services_only: bool = False) -> argparse.ArgumentParser:
    """The ``hoplink`` parser; ``services_only``: just the network commands, so a service process
    does not import what the other commands need (scipy, av: ~50 MB resident in the channel)."""
    parser = argparse.ArgumentParser(
        prog="hoplink",
        description="Emulator of semantic video communication with shared Hopfield memories.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if services_only:
        _add_network_commands(sub)
        return parser

    sim = sub.add_parser("sim", help="run one clip through the in-process simulator")
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
    sim.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(sim)
    sim.set_defaults(func=cmd_sim)

    table = sub.add_parser("table", help="reproduce the paper's Table I at matched PSNR")
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
    table.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(table)
    table.set_defaults(func=cmd_table)

    train = sub.add_parser("train", help="train a codec's weights from the bundled photos")
    train.add_argument("--codec", default="ae64", help="codec name (default ae64)")
    train.add_argument(
        "--objective",
        default="mse",
        choices=("mse", "capacity"),
        help="mse: a plain autoencoder; capacity: Algorithm 1 (reasoning capacity under a "
        "distortion constraint), fine-tuning --init (default ae64) into --codec (e.g. ae64cap)",
    )
    train.add_argument("--init", default=None, help="start from this shipped codec's weights")
    train.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    train.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    train.add_argument("--seed", type=int, default=0, help="seed of data and init (default 0)")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    train.add_argument("--out", default=None, help="output folder (default: the package's)")
    train.set_defaults(func=cmd_train)

    adaptive = sub.add_parser(
        "train-adaptive", help="train the adaptive memory's learned similarity (A-Hop)"
    )
    adaptive.add_argument("--codec", default="ae64", help="codec whose latents it learns on")
    adaptive.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    adaptive.add_argument("--seed", type=int, default=0)
    adaptive.add_argument("--out", default=None, help="output folder (default: the package's)")
    adaptive.set_defaults(func=cmd_train_adaptive)

    bench = sub.add_parser("bench", help="throughput, latency and scale beside their floors")
    bench.add_argument("--quick", action="store_true", help="a reduced run (seconds)")
    bench.add_argument("--only", default=None, help="comma-separated sections to run")
    bench.add_argument("--json", action="store_true", help="print JSON instead of tables")
    bench.add_argument("--out", default=None, help="also write the JSON to this file")
    bench.set_defaults(func=cmd_bench)

    snr = sub.add_parser("snr", help="bits/frame, refreshes, PSNR and losses vs channel Eb/N0")
    snr.add_argument("--scenario", default="low_motion", help="scenario or video file")
    snr.add_argument("--frames", type=int, default=120, help="frames per run (default 120)")
    snr.add_argument("--ebn0", default="0,2,4,6,8,10,12,14", help="Eb/N0 values in dB")
    snr.add_argument("--memories", default="hopfield,vq", help="memory kinds, comma-separated")
    snr.add_argument("--channels", default="awgn,rayleigh", help="awgn and/or rayleigh")
    snr.add_argument("--modulation", default="qpsk", choices=("bpsk", "qpsk", "16qam", "64qam"))
    snr.add_argument("--out", default=None, help="also write a CSV here")
    snr.add_argument("--plot", default=None, help="also write PREFIX.png and PREFIX.svg")
    snr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(snr)
    snr.set_defaults(func=cmd_snr)

    robust = sub.add_parser(
        "robustness",
        help="every memory kind under Rx prototype noise σ and ID desync ρ, at matched PSNR",
    )
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
        help="corrupt the Rx memory before this fraction of the clip (default 0.5)",
    )
    robust.add_argument(
        "--digest-every", type=int, default=30, help="DIGEST period in frames (default 30)"
    )
    robust.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(robust)
    robust.set_defaults(func=cmd_robustness)

    scen = sub.add_parser("scenarios", help="list the bundled scenarios and protocols")
    scen.set_defaults(func=cmd_scenarios)
    faults = sub.add_parser("faults", help="run the fault matrix, every promise checked")
    faults.add_argument("--full", action="store_true", help="full matrix (HOPLINK_FULL_FAULTS=1)")
    faults.add_argument("--json", action="store_true", help="print JSON instead of a table")
    faults.add_argument("--no-network", action="store_true", help="skip the real-process cells")
    faults.set_defaults(func=_run_faults)
    from experiments.codeceval import add_codec_eval_command  # deferred: imports av, torch
    from experiments.rd import add_rd_command  # deferred: imports av, torch

    add_rd_command(sub, add_config_arguments)
    add_codec_eval_command(sub)
    _add_network_commands(sub)
    _add_experiment_commands(sub)
    return parser


def cmd_scenarios(args: argparse.Namespace) -> int:
    from shared.scenarios import PROTOCOLS, SCENARIOS, protocol_of  # deferred: imports av

    for name in SCENARIOS:
        print(f"{name:18s} {protocol_of(name) or '(reported separately)'}")
    print("protocols: " + "; ".join(f"{p}: {', '.join(n)}" for p, n in PROTOCOLS.items()))
    return 0


def _run_faults(args: argparse.Namespace) -> int:
    from experiments.faults import main as faults_main  # deferred: imports av, torch

    return faults_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(services_only=bool(argv) and argv[0] in SERVICE_COMMANDS)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
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
