"""``stargraph sweep``: seeds x graph sizes x training-set sizes x checkpoints x objectives x pool
policies x variants, in parallel worker processes; every grid point is a run folder (resumable).

Layout::

    SWEEP_DIR/config.yaml
    SWEEP_DIR/sft/<graph>_n<n_train>_<train-variant>_s<seed>/     one SFT per distinct training setup
    SWEEP_DIR/points/<group>_s<seed>/                               one post-training run per point
    SWEEP_DIR/points.jsonl, sweep.csv                               final metrics of every point
    SWEEP_DIR/sweep_test_acc.png

A point whose folder is complete is skipped, so re-running the same command resumes the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from . import configlib, runio
from .config import PostTrainConfig, SweepConfig, TrainConfig, parse_graph
from .parallel import Runner, Task, cpu_count
from .reproduce import write_csv

Log = Callable[[str], None]

POOL_FREE = ("sft", "sft_critical")


def _apply(cls, base, overrides: dict, origin: str):
    tree = configlib.wrap(configlib.to_dict(base), origin)
    over: dict = {}
    for k, v in overrides.items():
        configlib.set_path(over, k.split("."), configlib.Sourced(v, f"{origin} {k}"))
    return configlib.build(cls, configlib.merge(tree, over))


def _split_variant(over: dict) -> tuple[dict, dict]:
    train = {k[len("train."):]: v for k, v in over.items() if k.startswith("train.")}
    post = {k[len("posttrain."):]: v for k, v in over.items() if k.startswith("posttrain.")}
    return train, post


def _tag(over: dict) -> str:
    if not over:
        return "base"
    return "t" + hashlib.sha256(json.dumps(over, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_workers(cfg: SweepConfig) -> int:
    if cfg.workers > 0:
        return cfg.workers
    dev = cfg.runtime.device
    if dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available()):
        return 1
    return cpu_count()


def plan(cfg: SweepConfig, sweep_dir: Path) -> tuple[list[Task], list[tuple[Task, dict]]]:
    """The SFT tasks and the (post-training task, point info) list of the grid."""
    sft_tasks: dict[str, Task] = {}
    points: list[tuple[Task, dict]] = []
    max_init = max(cfg.init_steps)
    for seed, graph, n_train, (vname, vover) in itertools.product(cfg.seeds, cfg.graphs, cfg.n_train, cfg.variants.items()):
        d, l, n = parse_graph(graph)
        t_over, p_over = _split_variant(vover)
        tcfg = _apply(TrainConfig, cfg.train, t_over, f"sweep variant {vname!r}")
        steps = max(tcfg.sft.steps, max_init)
        tcfg = replace(
            tcfg,
            seed=seed,
            data=replace(tcfg.data, degree=d, path_len=l, num_nodes=n, n_train=n_train),
            sft=replace(tcfg.sft, steps=steps, checkpoint_at=sorted(set(tcfg.sft.checkpoint_at) | set(cfg.init_steps))),
            runtime=cfg.runtime,
        )
        gname = f"g{d}-{l}-{n}_n{n_train}"
        sname = f"{gname}_{_tag(t_over)}_s{seed}"
        sdir = sweep_dir / "sft" / sname
        sft_tasks.setdefault(sname, Task("sft", tcfg, str(sdir), f"sft/{sname}"))
        for init, obj, pool in itertools.product(cfg.init_steps, cfg.objectives, cfg.pools):
            if obj in POOL_FREE and pool != cfg.pools[0]:
                continue  # sft / sft_critical train on the SFT data: the pool axis would only repeat them
            pcfg = _apply(PostTrainConfig, cfg.posttrain, p_over, f"sweep variant {vname!r}")
            pcfg = replace(
                pcfg, init=str(sdir / f"ckpt_{init}.pt"), objective=obj, seed=seed,
                pool=replace(pcfg.pool, policy=pool), runtime=cfg.runtime,
            )
            group = f"{gname}_{vname}_{obj}_{pool}_init{init}"
            info = {"group": group, "seed": seed, "graph": graph, "n_train": n_train, "variant": vname,
                    "objective": obj, "pool": pool, "init_step": init}
            points.append((Task("posttrain", pcfg, str(sweep_dir / "points" / f"{group}_s{seed}"), f"{group}_s{seed}"), info))
    return list(sft_tasks.values()), points


def sweep(cfg: SweepConfig, sweep_dir: str | Path, log: Log = print) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    runio.write_config(sweep_dir, cfg)
    sft_tasks, points = plan(cfg, sweep_dir)
    workers = default_workers(cfg)
    todo = [t for t, _ in points if not runio.is_done(Path(t.run_dir))]
    log(f"[sweep] {len(sft_tasks)} SFT runs, {len(points)} grid points ({len(todo)} to run), {workers} worker(s)")
    t0 = time.perf_counter()
    by_sft: dict[str, list[Task]] = {t.run_dir: [] for t in sft_tasks}
    for t, _ in points:
        if not runio.is_done(Path(t.run_dir)):
            by_sft[str(Path(t.cfg.init).parent)].append(t)
    with Runner(workers) as runner:
        # each SFT's grid points start as soon as that SFT run is done
        runner.run_staged(sft_tasks, [by_sft[t.run_dir] for t in sft_tasks])
    rows = aggregate(sweep_dir, points)
    from .figures import sweep_figure

    sweep_figure(sweep_dir)
    log(f"[sweep] done in {time.perf_counter() - t0:.0f}s; {sweep_dir / 'sweep.csv'}")
    return rows


def aggregate(sweep_dir: Path, points: list[tuple[Task, dict]]) -> list[dict]:
    rows = []
    for task, info in points:
        recs = runio.read_jsonl(Path(task.run_dir) / "metrics.jsonl")
        if not recs or not runio.is_done(Path(task.run_dir)):
            continue
        last = recs[-1]
        rows.append({
            **info,
            "steps": last["step"],
            "train_acc": last.get("train/acc"),
            "test_acc": last.get("test/acc"),
            "test_crit_acc": last.get("test/crit_acc"),
            "test_lookup_acc": last.get("test/lookup_acc"),
            "wall_time_s": last.get("time_s"),
            "run_dir": str(Path(task.run_dir).relative_to(sweep_dir)),
        })
    write_csv(sweep_dir / "sweep.csv", rows)
    runio.atomic_write_text(sweep_dir / "points.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows
