"""``stargraph``: one CLI for the star-graph testbed.

Subcommands (each reads and writes a run folder):

- ``stargraph train [RUN_DIR]``: SFT (the ``train:`` section of a preset);
- ``stargraph posttrain [RUN_DIR] --init CKPT``: one post-training arm from an SFT checkpoint;
- ``stargraph reproduce [RUN_DIR] --preset quick|paper``: SFT per seed, the Fig. 8 arms, CSVs,
  figures and ``summary.json``;
- ``stargraph sweep [RUN_DIR] --preset sweep``: a grid of post-training runs in parallel workers,
  or as Ray tasks on a cluster with ``--executor ray`` (docs/cluster.md);
- ``stargraph figures RUN_DIR``: redraw the figures of a reproduce or sweep folder;
- ``stargraph rescore RUN_DIR...``: every current metric of the saved checkpoints, without retraining
  (``rescore.jsonl`` / ``rescore.csv`` next to them);
- ``stargraph analysis [RUN_DIR] --set checkpoints=[...]``: gradient alignment of per-step DPO with SFT
  variants at SFT checkpoints (``alignment.json``).

Config resolution: preset < ``--config FILE`` < per-field flags < ``--set key=value`` (the grammar below
is mathreason's too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.configlib import GRAMMAR, add_config_arguments

from . import configlib
from .config import PRESET_DIR, AnalysisConfig, PostTrainConfig, ReproduceConfig, SweepConfig, TrainConfig, resolve
from .configlib import ConfigError

BACKENDS = ("none", "tensorboard", "wandb", "trackio")  # shared.tracking.BACKENDS (not imported: --help stays light)

COMMANDS = {
    "train": (TrainConfig, "train", "quick"),
    "posttrain": (PostTrainConfig, "posttrain", None),
    "reproduce": (ReproduceConfig, None, "quick"),
    "sweep": (SweepConfig, None, "sweep"),
    "analysis": (AnalysisConfig, None, None),
}


def _doc(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stargraph", description=__doc__, epilog=GRAMMAR, formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,posttrain,reproduce,sweep,analysis,figures,rescore}")
    for name, (cls, section, default_preset) in COMMANDS.items():
        sp = sub.add_parser(name, help=_doc(cls), description=_doc(cls), epilog=GRAMMAR, formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("run_dir", nargs="?", default=None, help=f"run folder (default runs/{name}_<preset>)")
        add_config_arguments(
            sp, presets=presets, default_preset=default_preset,
            preset_note=f"; its '{section}:' section is used" if section else "",
        )
        if name in ("train", "posttrain"):
            sp.add_argument("--tracking", default="none", choices=BACKENDS, help="mirror the run's metrics.jsonl into a tracker (tensorboard: <run folder>/tb)")
        if name == "sweep":
            sp.add_argument("--dry-run", action="store_true", help="print the SFT runs and grid points (with their settings) and exit")
        configlib.add_dataclass_args(sp, cls)
    fp = sub.add_parser("figures", help="redraw the figures of a reproduce or sweep folder", description="Redraw fig8a/b/c.png (reproduce) or sweep_test_acc.png (sweep) from a run folder, offline.")
    fp.add_argument("run_dir", help="a reproduce or sweep run folder")
    rp = sub.add_parser(
        "rescore", help="recompute every metric of saved checkpoints (no retraining)",
        description="Recompute every current metric (e.g. the teacher-forced per-token accuracy) of every checkpoint (*.pt) under the given folders; writes rescore.jsonl and rescore.csv next to the checkpoints.",
    )
    rp.add_argument("run_dirs", nargs="+", help="run folders (searched recursively) or checkpoint files")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--threads", type=int, default=1, help="torch threads")
    rp.add_argument("--eval-batch-size", type=int, default=4096)
    rp.add_argument("--bok-k", type=int, default=5)
    rp.add_argument("--force", action="store_true", help="recompute folders whose rescore.jsonl is up to date")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "figures":
        from .figures import make_figures

        try:
            for path in make_figures(Path(args.run_dir)):
                print(path)
        except (FileNotFoundError, ConfigError) as e:
            print(f"stargraph figures: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "rescore":
        import torch

        from .rescore import rescore

        torch.set_num_threads(args.threads)
        try:
            rescore(args.run_dirs, device=args.device, eval_batch_size=args.eval_batch_size, bok_k=args.bok_k, force=args.force)
        except FileNotFoundError as e:
            print(f"stargraph rescore: {e}", file=sys.stderr)
            return 2
        return 0
    cls, section, _ = COMMANDS[args.command]
    try:
        cfg = resolve(cls, preset=args.preset, config_file=args.config, overrides=configlib.overrides_from_args(args), preset_section=section)
    except ConfigError as e:
        print(f"stargraph {args.command}: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(configlib.dump_yaml(cfg), end="")
        return 0
    run_dir = Path(args.run_dir or f"runs/{args.command}_{args.preset or 'default'}")
    if getattr(args, "dry_run", False):
        from .sweep import describe

        print(describe(cfg, run_dir))
        return 0
    if args.command == "posttrain" and not cfg.init:
        print("stargraph posttrain: --init CKPT is required (an SFT checkpoint .pt)", file=sys.stderr)
        return 2
    from shared.executors import JobsFailed

    try:
        _run_command(args, cfg, run_dir)
    except JobsFailed as e:
        print(f"stargraph {args.command}: {e}\nre-run the same command to retry them", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError) as e:
        print(f"stargraph {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stargraph {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    print(f"stargraph {args.command}: outputs in {run_dir}")
    return 0


def _run_command(args, cfg, run_dir: Path) -> None:
    if args.command in ("train", "posttrain"):
        from shared.tracking import TrackingConfig

        from .tracking import mirrored

        tracking = TrackingConfig(backend=args.tracking)
        if args.command == "train":
            from .train import train_sft

            with mirrored(tracking, run_dir, run_dir.name, cfg):
                train_sft(cfg, run_dir)
        else:
            from .posttrain import posttrain

            with mirrored(tracking, run_dir, run_dir.name, cfg):
                posttrain(cfg, run_dir)
    elif args.command == "reproduce":
        from .reproduce import reproduce

        reproduce(cfg, run_dir)
    elif args.command == "sweep":
        from .sweep import sweep

        sweep(cfg, run_dir)
    elif args.command == "analysis":
        from .analysis import analyse

        analyse(cfg, run_dir)


if __name__ == "__main__":
    raise SystemExit(main())
