"""``mathreason``: the GSM8K/MATH pipeline's command line.

    mathreason <stage> --preset NAME [--config FILE] [--set section.field=value ...] [--section.field VALUE ...]
    mathreason pipeline --preset NAME [--stages sft,sample,...] [--methods sft,rft,...] [--set ...]
    mathreason scaling --preset NAME [--set ...]          # scaling.methods at every scaling.sizes x seeds
    mathreason scaling-report --preset NAME [--set ...]   # SFT power law, data-efficiency factors, figures
    mathreason diagnostics --preset NAME [--set ...]      # arith study: pits vs truth, Fig. 7 Q curves
    mathreason methods                                    # the methods a study can compare
    mathreason <command> ... --print-config               # the resolved config as YAML (runs nothing)
    mathreason show-config --preset NAME [--set ...]      # the same
    mathreason status --preset NAME [--set ...]           # what each stage recorded
    mathreason presets                                    # the packaged presets
    mathreason configs-dir                                # folder of the accelerate/DeepSpeed configs

Stages: sft, sample, grade, advantages, pairs, pref, rft, rft_adv, eval. The config grammar is stargraph's
(below): ``--preset`` names a packaged preset (``tiny``, ``gsm8k``, ``math``, ``arith``), ``--config`` a
YAML file (which may start from a preset with ``preset: gsm8k``); one of them is required. Every config
field is also a flag; ``mathreason sft --help`` lists them all with their documentation. Bad configs and
bad data stop with exit status 2 and a message naming the file, line and field, before any work starts.

Training stages run distributed under ``accelerate launch``, e.g.
``accelerate launch --config_file "$(mathreason configs-dir)/fsdp.yaml" -m mathreason.cli sft --config my.yaml``
(see docs/mathreason.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import yaml

from mathreason.config import STAGES as STAGE_NAMES
from mathreason.config import Config, ConfigError, available_presets, dump_yaml, load_config
from shared import configlib

__all__ = ["main"]

STAGE_HELP = {
    "sft": "fine-tune the base model on D_syn (pi_sft)",
    "sample": "sample sample.n solutions per D_syn question from a policy",
    "grade": "grade the samples against the D_syn answers",
    "advantages": "Q of every step prefix by rollouts, advantages (Eq. 3) and first pits of the sampled responses",
    "pairs": "first-pit (full, shared-prefix), random and max-edit-distance preference pairs",
    "pref": "per-step DPO or a baseline (pref.objective) from pi_sft into pref/<pref.name>",
    "rft": "rejection fine-tuning of the base model on pi_sft's correct samples",
    "rft_adv": "advantage-filtered RFT: clone responses whose minimum step advantage is in the top half",
    "eval": "greedy pass@1 and sampled pass@k on test benchmarks",
}


def _add_config_args(p: argparse.ArgumentParser, *, print_config: bool = True) -> None:
    configlib.add_config_arguments(
        p, presets=available_presets(), print_config=print_config,
        preset_note="; --preset or --config is required (a --config FILE may start from a preset with `preset: NAME`)",
    )
    p.add_argument("positional", nargs="*", help=argparse.SUPPRESS)  # old `a.b=v` overrides: an error with a hint
    configlib.add_arguments(p, Config, title="config fields (each also settable as --set section.field=value)")


def _subparser(sub: argparse._SubParsersAction, name: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=configlib.GRAMMAR, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mathreason",
        description=__doc__,
        epilog=configlib.GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_NAMES:
        p = _subparser(sub, name, help=STAGE_HELP[name], description=STAGE_HELP[name])
        _add_config_args(p)
        p.add_argument("--force", action="store_true", help="re-run even if the outputs are up to date")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _subparser(sub, "pipeline", help="run the stages in order (pipeline.stages)", description="run the stages in order")
    _add_config_args(p)
    p.add_argument("--stages", default=None, help="comma-separated stages to run (default: pipeline.stages)")
    p.add_argument("--methods", default=None, help="comma-separated methods to train and evaluate (default: pipeline.methods); see `mathreason methods`")
    p.add_argument("--force", action="store_true", help="re-run stages even if their outputs are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _subparser(sub, "scaling", help="run scaling.methods at every D_syn size and seed (one run folder each)", description="scaling runs")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="re-run stages even if their outputs are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = _subparser(sub, "scaling-report", help="fit SFT's power law and write every method's data-efficiency factors", description="scaling report")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="output folder (default: <scaling root>/report)")
    p = _subparser(
        sub, "diagnostics",
        help="on the arith task: first pits vs the first wrong equation, and Fig. 7 (mean Q per step of each policy)",
        description="diagnostics of a scaling study on the arith task",
    )
    _add_config_args(p)
    p.add_argument("--no-qcurves", action="store_true", help="only the pit-vs-truth check (no Fig. 7 runs)")
    p.add_argument("--questions", type=int, default=100, help="Fig. 7: test questions per policy")
    p.add_argument("--samples", type=int, default=2, help="Fig. 7: responses per question")
    p.add_argument("--rollouts", type=int, default=4, help="Fig. 7: pi_sft rollouts per step prefix (Monte-Carlo Q)")
    p.add_argument("--k-sweep", default="", help="re-value the largest size's negatives with these K (e.g. 5,16): pit hit rate vs K")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("methods", help="list the methods a study can compare")
    p = _subparser(sub, "show-config", help="print the resolved config as YAML")
    _add_config_args(p, print_config=False)
    p = _subparser(sub, "status", help="print what each stage of a run folder recorded")
    _add_config_args(p, print_config=False)
    sub.add_parser("presets", help="list the packaged presets")
    sub.add_parser("configs-dir", help="print the folder of the shipped accelerate (FSDP, ZeRO-3) and DeepSpeed configs")
    return parser


def _load(args: argparse.Namespace) -> Config:
    """The config of the command line: ``--preset`` < ``--config FILE`` < flags < ``--set`` (stargraph's grammar)."""
    if args.positional:
        sets = [a for a in args.positional if "=" in a]
        if sets:
            raise ConfigError(f"override {sets[0]!r}: overrides are options now: write --set {sets[0]}")
        raise ConfigError(f"unexpected argument {args.positional[0]!r}")
    if args.config is not None and not os.path.isfile(args.config):
        hint = f"; for the packaged preset write --preset {args.config}" if args.config in available_presets() else ""
        raise ConfigError(f"--config {args.config}: no such file{hint}")
    if args.preset is None and args.config is None:
        raise ConfigError(f"give --preset NAME ({', '.join(available_presets())}) or --config FILE")
    return load_config(args.config, preset=args.preset, tree=configlib.command_line_tree(args, yaml.safe_load))


def _errors() -> tuple[type[BaseException], ...]:
    from mathreason.data import DataError
    from mathreason.stages import StageError

    return (ConfigError, DataError, StageError)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from shared.executors import JobsFailed

    try:
        return _run(args)
    except _errors() as e:
        print(f"mathreason: error: {e}", file=sys.stderr)
        return 2
    except JobsFailed as e:
        print(f"mathreason: error: {e}\nre-run the same command to retry them", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mathreason: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "presets":
        print("\n".join(available_presets()))
        return 0
    if args.command == "methods":
        from mathreason.methods import METHODS

        for m in METHODS.values():
            print(f"{m.name:28s} policy {m.policy:34s} {m.description}")
        return 0
    if args.command == "configs-dir":
        from importlib import resources

        print(resources.files("mathreason") / "configs")
        return 0
    cfg = _load(args)
    if args.command == "show-config" or getattr(args, "print_config", False):
        sys.stdout.write(dump_yaml(cfg))
        return 0
    from mathreason.stages.base import apply_device

    if args.command != "status":
        apply_device(cfg.device)  # before anything asks CUDA (every Context applies it again)
    from mathreason.runs import RunFolder, is_main_process

    run = RunFolder(cfg.run_dir)
    if args.command == "status":
        names = []
        for name in STAGE_NAMES:
            if name == "pref":  # one record per preference run, pref/<name>
                runs = sorted(f"pref/{p.name}" for p in run.stage_dir("pref").glob("*") if (p / "stage.json").exists())
                names += runs or [f"pref/{cfg.pref.name}"]
            else:
                names.append(name)
        for name in names:
            rec = run.record(name)
            line = {"stage": name, "status": rec.status if rec else "not run"}
            if rec:
                line["key"] = rec.key[:12]
                line["summary"] = rec.summary
            print(json.dumps(line, default=str))
        return 0
    if args.command == "scaling-report":
        from mathreason.scaling import report

        rep = report(cfg, out_dir=args.out)
        from mathreason.scaling_report import format_table

        print(format_table(rep))
        return 0
    if args.command == "diagnostics":
        from mathreason.diagnostics import write_diagnostics

        out = write_diagnostics(
            cfg, qcurves=not args.no_qcurves, questions=args.questions, samples=args.samples, rollouts=args.rollouts,
            k_sweep=[int(k) for k in args.k_sweep.split(",") if k.strip()], progress=not args.quiet,
        )
        print(json.dumps({"pit_truth_overall": out["pit_truth_overall"], "qcurves": {k: {t: c["mean_q"] for t, c in v.items()} for k, v in out["qcurves"].items()}}, default=str))
        return 0
    if args.command == "scaling":
        from mathreason.scaling import run_scaling

        for rec in run_scaling(cfg, force=args.force, progress=not args.quiet):
            print(json.dumps(rec, default=str))
        return 0

    from mathreason.tracking import mirror_stages

    with mirror_stages(cfg.tracking, cfg.run_dir):
        results = _run_stages(args, cfg, run)
    if is_main_process():
        for r in results:
            print(json.dumps(r, default=str))
    return 0


def _run_stages(args: argparse.Namespace, cfg: Config, run) -> list[dict]:
    """``pipeline`` or a single stage command; returns the stage results."""
    from mathreason.runs import atomic_write_text, is_main_process
    from mathreason.stages import STAGES, Context, check_stages, run_stage

    progress = not args.quiet
    if args.command == "pipeline" and (args.methods or cfg.pipeline.methods):
        from mathreason.methods import plan, run_plan

        methods = args.methods.split(",") if args.methods else list(cfg.pipeline.methods)
        steps = plan(cfg, methods)
        if is_main_process():
            atomic_write_text(run.config_path, dump_yaml(cfg))
        results = run_plan(steps, force=args.force, progress=progress, launcher=cfg.pipeline.launcher)
    elif args.command == "pipeline":
        from mathreason.pipeline import run_pipeline

        names = args.stages.split(",") if args.stages else list(cfg.pipeline.stages)
        unknown = [n for n in names if n not in STAGES]
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
        # Check everything before writing anything.
        check_stages(names, Context(cfg, progress=progress))
        if is_main_process():
            atomic_write_text(run.config_path, dump_yaml(cfg))
        results = run_pipeline(cfg, names, force=args.force, progress=progress)
    else:
        ctx = Context(cfg, progress=progress)
        STAGES[args.command].check(ctx)
        if is_main_process():
            atomic_write_text(run.config_path, dump_yaml(cfg))
        results = [run_stage(STAGES[args.command], ctx, force=args.force)]
    return results


if __name__ == "__main__":
    sys.exit(main())
