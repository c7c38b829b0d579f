"""``stargraph sweep``: seeds x graph sizes x training-set sizes x checkpoints x objectives x pool
policies x variants, on an executor (local worker processes, or Ray tasks on a cluster with
``executor: ray``); every grid point is a run folder (resumable).

Layout::

    SWEEP_DIR/config.yaml
    SWEEP_DIR/sft/<graph>_n<n_train>_<train-variant>_s<seed>/     one SFT per distinct training setup
    SWEEP_DIR/points/<group>_s<seed>/                               one post-training run per point
    SWEEP_DIR/points.jsonl, sweep.csv                               final metrics of every point
    SWEEP_DIR/table.csv                                             mean and sd over seeds per group
    SWEEP_DIR/curves.csv                                            every evaluation of every point
    SWEEP_DIR/sweep_test_acc.png, sweep_curves.png

A point whose folder is complete is skipped, so re-running the same command resumes the sweep. A run
that fails is retried ``retries`` times; one that still fails (and the points of a failed SFT run) is
listed in ``SWEEP_DIR/failed.json`` and the sweep raises :class:`shared.executors.JobsFailed` after
every other point finished. Ctrl-C cancels the runs in flight (:mod:`stargraph.parallel`).
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

from shared.configlib import old_path
from shared.executors import JobsFailed

from . import configlib, runio
from .config import PostTrainConfig, SweepConfig, TrainConfig, parse_graph
from .parallel import Runner, Task, cpu_count
from .reproduce import write_csv

Log = Callable[[str], None]

POOL_FREE = ("sft", "sft_critical")


def _apply(cls, base, overrides: dict, origin: str):
    tree = configlib.wrap(configlib.to_dict(base), origin)
    return configlib.build(cls, configlib.merge_dotted(tree, overrides, f"{origin} "))


def _split_variant(over: dict) -> tuple[dict, dict]:
    train = {k[len("train."):]: v for k, v in over.items() if k.startswith("train.")}
    post = {k[len("posttrain."):]: v for k, v in over.items() if k.startswith("posttrain.")}
    return train, post


def _tag(over: dict) -> str:
    """Folder tag of a variant's ``train.`` overrides; renamed fields hash under their old names, so the SFT
    folders of a sweep written before the rename (``sft.lr``, now ``sft.learning_rate``) keep their names."""
    if not over:
        return "base"
    over = {old_path(TrainConfig, k): v for k, v in over.items()}
    return "t" + hashlib.sha256(json.dumps(over, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _matches(info: dict, sel: dict) -> bool:
    """A grid point matches a partial point when every given key agrees (compared as text)."""
    return all(str(info[k]).replace(" ", "") == str(v).replace(" ", "") for k, v in sel.items())


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
        steps = max(tcfg.sft.max_steps, max_init)
        tcfg = replace(
            tcfg,
            seed=seed,
            data=replace(tcfg.data, degree=d, path_len=l, num_nodes=n, n_train=n_train),
            sft=replace(tcfg.sft, max_steps=steps, checkpoint_at=sorted(set(tcfg.sft.checkpoint_at) | set(cfg.init_steps))),
            runtime=cfg.runtime,
        )
        gname = f"g{d}-{l}-{n}_n{n_train}"
        sname = f"{gname}_{_tag(t_over)}_s{seed}"
        sdir = sweep_dir / "sft" / sname
        sft_task = Task("sft", tcfg, str(sdir), f"sft/{sname}")
        for init, obj, pool in itertools.product(cfg.init_steps, cfg.objectives, cfg.pools):
            if obj in POOL_FREE and pool != "fresh" and pool != next(p for p in cfg.pools if p != "fresh"):
                continue  # sft / sft_critical train on the SFT data (on fresh pools' graphs under fresh): other pools only repeat them
            pcfg = _apply(PostTrainConfig, cfg.posttrain, p_over, f"sweep variant {vname!r}")
            pcfg = replace(
                pcfg, init=str(sdir / f"ckpt_{init}.pt"), objective=obj, seed=seed,
                pool=replace(pcfg.pool, policy=pool), runtime=cfg.runtime,
            )
            group = f"{gname}_{vname}_{obj}_{pool}_init{init}"
            info = {"group": group, "seed": seed, "graph": graph, "n_train": n_train, "variant": vname,
                    "objective": obj, "pool": pool, "init_step": init}
            if cfg.only and not any(_matches(info, sel) for sel in cfg.only):
                continue
            sft_tasks.setdefault(sname, sft_task)  # an SFT run only where some kept point needs it
            points.append((Task("posttrain", pcfg, str(sweep_dir / "points" / f"{group}_s{seed}"), f"{group}_s{seed}"), info))
    return list(sft_tasks.values()), points


def describe(cfg: SweepConfig, sweep_dir: Path) -> str:
    """The plan of a sweep as text (``stargraph sweep --dry-run``): SFT runs, then every grid point
    with the fields that differ between points."""
    sft_tasks, points = plan(cfg, sweep_dir)
    lines = [f"{len(sft_tasks)} SFT runs, {len(points)} grid points, {_where(cfg)}"]
    for t in sft_tasks:
        c = t.cfg
        lines.append(f"  sft {t.label}: max_steps {c.sft.max_steps}, learning_rate {c.sft.learning_rate}, goals {c.data.goals}, mix {c.data.mix_path_lens}, online {c.data.online}, checkpoints {sorted(set(c.sft.checkpoint_at))}")
    for t, info in points:
        c = t.cfg
        lines.append(
            f"  point {t.label}: {c.objective} from {Path(c.init).parent.name}/{Path(c.init).name}, max_steps {c.max_steps}, learning_rate {c.learning_rate}, "
            f"beta {c.beta}, batch {c.batch_size}, pool {c.pool.policy} x{c.pool.graphs} (arm_negatives {c.pool.arm_negatives}), "
            f"queries {c.data.goals} mix {c.data.mix_path_lens}"
        )
    return "\n".join(lines)


def _where(cfg: SweepConfig) -> str:
    if cfg.executor == "ray":
        r = cfg.ray
        return f"ray executor ({r.cpus_per_task:g} CPU, {r.gpus_per_task:g} GPU per run)"
    return f"{default_workers(cfg)} worker(s)"


def sweep(cfg: SweepConfig, sweep_dir: str | Path, log: Log = print) -> list[dict]:
    """Run (or resume) the sweep; returns the rows of ``sweep.csv``.

    Raises :class:`shared.executors.JobsFailed` (after writing the outputs of the points that finished
    and ``failed.json``) when runs failed after their retries."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    runio.write_config(sweep_dir, cfg)
    sft_tasks, points = plan(cfg, sweep_dir)
    workers = default_workers(cfg)
    todo = [t for t, _ in points if not runio.is_done(Path(t.run_dir))]
    log(f"[sweep] {len(sft_tasks)} SFT runs, {len(points)} grid points ({len(todo)} to run), {_where(cfg)}")
    t0 = time.perf_counter()
    by_sft: dict[str, list[Task]] = {t.run_dir: [] for t in sft_tasks}
    for t in todo:
        by_sft[str(Path(t.cfg.init).parent)].append(t)
    failed: list = []
    runner = Runner(workers, executor=cfg.executor, ray=cfg.ray, retries=cfg.retries, tracking=cfg.tracking, log=log)
    with runner:
        # each SFT's grid points start as soon as that SFT run is done
        try:
            runner.run_staged(sft_tasks, [by_sft[t.run_dir] for t in sft_tasks])
        except JobsFailed as e:
            failed = e.failed
    fpath = sweep_dir / "failed.json"
    if failed:
        runio.write_json(fpath, [{"key": o.key, "attempts": o.attempts, "error": o.error} for o in failed])
    elif fpath.exists():
        fpath.unlink()
    rows = aggregate(sweep_dir, points)
    from .figures import make_figures

    make_figures(sweep_dir)
    if failed:
        log(f"[sweep] {len(failed)} run(s) failed (listed in {fpath}); {len(rows)} of {len(points)} points in {sweep_dir / 'sweep.csv'}")
        raise JobsFailed(failed)
    log(f"[sweep] done in {time.perf_counter() - t0:.0f}s; {sweep_dir / 'sweep.csv'}")
    return rows


# Per-eval metrics copied into curves.csv (small; figures regenerate from it offline).
CURVE_KEYS = (
    "train/acc", "test/acc", "test/acc_given_source", "train/crit_acc", "test/crit_acc", "test/crit_prob",
    "test/crit_min_child", "test/crit_child_mass", "test/lookup_acc", "train_loss", "train_chosen_logp",
    "train_rejected_reward", "train_chosen_reward", "train_margin", "pool/sample_acc", "pool/pit_at_critical",
    # round 2: teacher-forced per-token accuracy and where the critical position's mass goes
    "train/forced_token_acc", "test/forced_token_acc", "train/crit_prob", "train/crit_p_other_child",
    "train/crit_p_non_child", "test/crit_p_other_child", "test/crit_p_non_child", "train/path_logp", "test/path_logp",
    "pool/crit_pit_other_child",
)

# Final metrics of every point in sweep.csv (column = key with "/" as "_") and their mean / sd in table.csv.
FINAL_KEYS = (
    "train/acc", "test/acc", "test/acc_given_source", "train/crit_acc", "test/crit_acc", "test/crit_prob",
    "test/crit_min_child", "test/lookup_acc",
    "train/forced_token_acc", "test/forced_token_acc", "train/crit_prob", "test/crit_p_other_child",
    "test/crit_p_non_child", "train/path_logp", "test/path_logp",
)
TABLE_KEYS = (
    "train_acc", "test_acc", "test_acc_given_source", "train_crit_acc", "test_crit_acc", "test_crit_prob", "test_crit_min_child",
    "train_forced_token_acc", "test_forced_token_acc", "test_crit_p_other_child", "test_crit_p_non_child", "test_path_logp",
    "wall_time_s",
)


def _col(key: str) -> str:
    return key.replace("/", "_")


def _family_keys(rec: dict) -> dict:
    """Final metrics of mixed shorter families (``test_l<l>/...``), if any."""
    return {_col(k): v for k, v in rec.items() if k.startswith("test_l") and k.endswith(("/acc", "/crit_acc", "/forced_token_acc"))}


def aggregate(sweep_dir: Path, points: list[tuple[Task, dict]]) -> list[dict]:
    """Write ``sweep.csv`` / ``points.jsonl`` (final metrics of every complete point),
    ``curves.csv`` (every eval of every point) and ``table.csv`` (mean and sd over seeds per group)."""
    rows, curves = [], []
    for task, info in points:
        recs = runio.read_jsonl(Path(task.run_dir) / "metrics.jsonl")
        if not recs or not runio.is_done(Path(task.run_dir)):
            continue
        last = recs[-1]
        rows.append({
            **info,
            "steps": last["step"],
            **{_col(k): last.get(k) for k in FINAL_KEYS},
            **_family_keys(last),
            "best_train_acc": max(r.get("train/acc", 0.0) for r in recs),
            "wall_time_s": last.get("time_s"),
            "cpu_time_s": last.get("cpu_time_s"),
            "run_dir": str(Path(task.run_dir).relative_to(sweep_dir)),
        })
        for r in recs:
            curves.append({"group": info["group"], "seed": info["seed"], "step": r["step"], **{k: r.get(k) for k in CURVE_KEYS}})
    write_csv(sweep_dir / "sweep.csv", rows)
    write_csv(sweep_dir / "curves.csv", curves)
    write_csv(sweep_dir / "table.csv", group_table(rows))
    runio.atomic_write_text(sweep_dir / "points.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def group_table(rows: list[dict]) -> list[dict]:
    """One row per group: seeds, and mean / sd over seeds of the final metrics."""
    import statistics

    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["group"], []).append(r)
    out = []
    for g, rs in by.items():
        row = {k: rs[0][k] for k in ("group", "graph", "n_train", "variant", "objective", "pool", "init_step", "steps")}
        row["seeds"] = len(rs)
        for k in TABLE_KEYS:
            vals = [float(r[k]) for r in rs if r.get(k) is not None]
            row[f"{k}_mean"] = statistics.fmean(vals) if vals else None
            row[f"{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(row)
    return out
