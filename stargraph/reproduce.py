"""``stargraph reproduce``: SFT per seed, every post-training arm per seed, CSVs, Fig. 8, summary.

Run folder layout::

    RUN_DIR/config.yaml                  resolved ReproduceConfig
    RUN_DIR/seed_<s>/sft/                SFT run: config.yaml, metrics.jsonl, ckpt_<step>.pt, log.txt
    RUN_DIR/seed_<s>/arms/<arm>/         one post-training arm: config.yaml, metrics.jsonl, log.txt
    RUN_DIR/sft_curves.csv, arm_curves.csv, final.csv
    RUN_DIR/fig8a.png, fig8b.png, fig8c.png
    RUN_DIR/summary.json                 every arm and seed: final train/test accuracy, wall time

Every stage is skipped when its folder is complete, so a killed ``reproduce`` resumes.
"""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import configlib, runio
from .config import ArmConfig, PostTrainConfig, ReproduceConfig
from .parallel import Runner, Task

Log = Callable[[str], None]


def sft_dir(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed_{seed}" / "sft"


def arm_dir(run_dir: Path, seed: int, arm: str) -> Path:
    return run_dir / f"seed_{seed}" / "arms" / arm


def arm_config(cfg: ReproduceConfig, arm: ArmConfig, seed: int, run_dir: Path) -> PostTrainConfig:
    """The posttrain config of one arm and seed: defaults < arm overrides; init from the SFT checkpoint."""
    base = configlib.wrap(configlib.to_dict(cfg.posttrain), "reproduce posttrain")
    pt = configlib.build(PostTrainConfig, configlib.merge_dotted(base, arm.set, f"arm {arm.name!r} set."))
    init = sft_dir(run_dir, seed) / f"ckpt_{arm.init_step}.pt"
    return replace(pt, init=str(init), seed=seed, runtime=cfg.runtime)


def reproduce(cfg: ReproduceConfig, run_dir: str | Path, log: Log = print) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runio.write_config(run_dir, cfg)
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    sft_tasks = [
        Task("sft", replace(cfg.train, seed=s, runtime=cfg.runtime), str(sft_dir(run_dir, s)), f"seed{s}/sft")
        for s in cfg.seeds
    ]
    log(f"[reproduce] {len(sft_tasks)} SFT runs, {len(cfg.arms) * len(cfg.seeds)} post-training arms, {cfg.workers} worker(s)")
    arm_tasks = [
        [Task("posttrain", arm_config(cfg, a, s, run_dir), str(arm_dir(run_dir, s, a.name)), f"seed{s}/{a.name}") for a in cfg.arms]
        for s in cfg.seeds
    ]
    with Runner(cfg.workers, executor=cfg.executor, ray=cfg.ray, retries=cfg.retries, tracking=cfg.tracking, log=log) as runner:
        # each seed's arms start as soon as that seed's SFT is done
        sft_results, arm_results = runner.run_staged(sft_tasks, arm_tasks)
    summary = collect(cfg, run_dir)
    summary["total_time_s"] = time.perf_counter() - t0
    summary["cpu_time_s"] = _cpu_seconds() - cpu0  # this process and its workers (user + system)
    summary["this_invocation"] = {  # sums over the tasks run now (parallel workers overlap)
        "sft_tasks_run": len(sft_results),
        "sft_tasks_wall_s_sum": sum(r[2] for r in sft_results),
        "arm_tasks_run": len(arm_results),
        "arm_tasks_wall_s_sum": sum(r[2] for r in arm_results),
    }
    runio.write_json(run_dir / "summary.json", summary)
    from .figures import make_figures

    for p in make_figures(run_dir):
        log(f"[reproduce] wrote {p}")
    log(f"[reproduce] done in {summary['total_time_s']:.0f}s; summary in {run_dir / 'summary.json'}")
    return summary


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _done_time(d: Path, key: str = "time_s") -> float | None:
    """Wall (or CPU, ``key="cpu_time_s"``) seconds of a completed stage, from its DONE marker."""
    done = d / runio.DONE
    if not done.exists():
        return None
    import json

    try:
        return float(json.loads(done.read_text())[key])
    except Exception:
        return None


def collect(cfg: ReproduceConfig, run_dir: Path) -> dict:
    """Write the CSVs and return the summary (reads only the run folder)."""
    run_dir = Path(run_dir)
    sft_rows, arm_rows, final_rows = [], [], []
    summary: dict = {"arms": {}, "seeds": list(cfg.seeds)}
    for s in cfg.seeds:
        recs = runio.read_jsonl(sft_dir(run_dir, s) / "metrics.jsonl")
        for r in recs:
            sft_rows.append({"seed": s, **r})
        if recs:
            last = recs[-1]
            row = {
                "arm": "sft", "seed": s, "objective": "sft", "init_step": 0, "steps": last["step"],
                "train_acc": last.get("train/acc"), "test_acc": last.get("test/acc"),
                "train_crit_acc": last.get("train/crit_acc"), "test_crit_acc": last.get("test/crit_acc"),
                "test_acc_given_source": last.get("test/acc_given_source"),
                "wall_time_s": _done_time(sft_dir(run_dir, s)) or last.get("time_s"),
                "cpu_time_s": _done_time(sft_dir(run_dir, s), "cpu_time_s") or last.get("cpu_time_s"),
            }
            final_rows.append(row)
            summary["arms"].setdefault("sft", {})[str(s)] = _summary_entry(row)
        for a in cfg.arms:
            d = arm_dir(run_dir, s, a.name)
            recs = runio.read_jsonl(d / "metrics.jsonl")
            for r in recs:
                arm_rows.append({"arm": a.name, "seed": s, "abs_step": a.init_step + r["step"], **r})
            if recs:
                last = recs[-1]
                row = {
                    "arm": a.name, "seed": s, "objective": last.get("objective"), "init_step": a.init_step,
                    "steps": last["step"], "train_acc": last.get("train/acc"), "test_acc": last.get("test/acc"),
                    "train_crit_acc": last.get("train/crit_acc"), "test_crit_acc": last.get("test/crit_acc"),
                    "test_acc_given_source": last.get("test/acc_given_source"),
                    "wall_time_s": _done_time(d) or last.get("time_s"),
                    "cpu_time_s": _done_time(d, "cpu_time_s") or last.get("cpu_time_s"),
                }
                final_rows.append(row)
                summary["arms"].setdefault(a.name, {})[str(s)] = _summary_entry(row)
    write_csv(run_dir / "sft_curves.csv", sft_rows)
    write_csv(run_dir / "arm_curves.csv", arm_rows)
    write_csv(run_dir / "final.csv", final_rows)
    summary["panels"] = {"a": cfg.panel_a, "b": list(cfg.panel_b), "c": list(cfg.panel_c)}
    summary["arm_specs"] = {a.name: {"init_step": a.init_step, "set": dict(a.set)} for a in cfg.arms}
    return summary


def _summary_entry(row: dict) -> dict:
    return {
        "objective": row["objective"],
        "init_step": row["init_step"],
        "train_acc": row["train_acc"],
        "test_acc": row["test_acc"],
        "test_acc_given_source": row["test_acc_given_source"],
        "wall_time_s": row["wall_time_s"],
        "cpu_time_s": row["cpu_time_s"],
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    runio.atomic_write_text(path, buf.getvalue())
