"""Scaling runs: every chosen method at every D_syn size and seed, one run folder per point.

A point ``(seed s, size n)`` is the run folder ``<root>/seed-<s>/size-<n>`` holding an ordinary pipeline
run with ``seed: s`` and ``data.subset_size: n`` (nested seeded subsets: with one ``data.subset_seed``
the n problems of a smaller size are among those of every larger one). Its stages are
:func:`mathreason.methods.plan` of ``scaling.methods``; every stage skips itself when up to date, so a
killed study resumes where it stopped, and ``point.json`` marks a finished point.

Points are independent of each other: :func:`points` lists them and :func:`run_point` runs one.
:func:`run_scaling` runs them on ``scaling.executor``: ``local`` (one after another in this process,
smallest size first) or ``ray`` (every point a Ray task reserving ``ray.cpus_per_task`` CPUs and
``ray.gpus_per_task`` GPUs, :class:`mathreason.executors.RayBackend`). Either way a point whose
``point.json`` records the same config is skipped, a failing point is retried ``scaling.retries`` times
and then listed in ``<root>/failed.json`` (:class:`shared.executors.JobsFailed`, after the other points
ran), and Ctrl-C cancels the points in flight. :func:`report` fits SFT's power law over the finished
points and writes each method's data-efficiency factors (:mod:`mathreason.scaling_report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json

from mathreason.config import Config, ConfigError, build_config, dump_yaml, to_dict
from mathreason.methods import plan, resolve_method, run_plan
from mathreason.runs import atomic_write_json, atomic_write_text, hash_json, is_main_process
from shared.executors import InlineBackend, Job, JobsFailed, maybe_inject_fault, run_jobs

__all__ = ["Point", "finished", "method_tags", "points", "report", "run_point", "run_scaling", "study_root"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    seed: int
    size: int
    cfg: Config

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)


def study_root(cfg: Config) -> Path:
    return Path(cfg.scaling.root or cfg.run_dir)


def points(cfg: Config) -> list[Point]:
    """Every ``(seed, size)`` point of the study with its config (smallest sizes first)."""
    s = cfg.scaling
    if not s.sizes:
        raise ConfigError("field scaling.sizes: empty; list the D_syn sizes, e.g. scaling.sizes=[100,200,400]")
    root = study_root(cfg)
    out = []
    for seed in s.seeds:
        for size in sorted(s.sizes):
            tree = to_dict(cfg)
            tree["run_dir"] = str(root / f"seed-{seed}" / f"size-{size}")
            tree["seed"] = seed
            tree["data"]["subset_size"] = size
            out.append(Point(seed, size, build_config(tree)))
    return out


def methods_at(cfg: Config, size: int) -> list[str]:
    """The methods of ``scaling.methods`` that run at D_syn size ``size`` (``scaling.method_sizes``)."""
    ms = cfg.scaling.method_sizes
    return [m for m in cfg.scaling.methods if m not in ms or size in ms[m]]


def method_tags(methods: list[str], variants: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Method -> the key of its policy in ``eval/summary.json``."""
    from mathreason.stages import policy_tag

    return {m: policy_tag(resolve_method(m, variants).policy) for m in methods}


def run_point(point: Point, methods: list[str], *, force: bool = False, progress: bool = True, launcher: str = "") -> dict[str, Any]:
    """Run (or resume) one point; writes ``point.json`` when it is complete."""
    from mathreason.tracking import mirror_stages

    t0 = time.time()
    maybe_inject_fault(f"seed-{point.seed}/size-{point.size}", point.run_dir)
    steps = plan(point.cfg, methods)
    if is_main_process():
        point.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(point.run_dir / "config.yaml", dump_yaml(point.cfg))
    with mirror_stages(point.cfg.tracking, point.run_dir):
        results = run_plan(steps, force=force, progress=progress, launcher=launcher)
    rec = {
        "seed": point.seed,
        "size": point.size,
        "methods": methods,
        "stages": {r["stage"]: r["status"] for r in results},
        "seconds": round(time.time() - t0, 3),
        "config": hash_json(to_dict(point.cfg)),
    }
    if is_main_process():
        atomic_write_json(point.run_dir / "point.json", rec)
    return rec


def finished(point: Point) -> dict[str, Any] | None:
    """The point's ``point.json`` when it records a finished run of this very config, else None."""
    try:
        rec = json.loads((point.run_dir / "point.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("config") == hash_json(to_dict(point.cfg)) else None


def run_scaling(cfg: Config, *, force: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Check every point's first stage inputs, then run the unfinished points on ``scaling.executor``.

    Returns one record per point, in :func:`points` order (a finished point's ``point.json`` with every
    stage ``skipped``). Raises :class:`shared.executors.JobsFailed` when points failed after their retries.
    """
    pts = points(cfg)
    s = cfg.scaling
    methods = list(s.methods)
    if "sft" not in methods:
        logger.warning("scaling.methods has no `sft`: the report needs SFT's power law as its reference")
    for p in pts:  # cheap checks of every point before any work (D_syn subset sizes, models, templates)
        from mathreason.stages import Context

        ctx = Context(p.cfg, progress=False)
        ctx.dsyn()
        ctx.template()
    root = study_root(cfg)
    if is_main_process():
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "study.yaml", dump_yaml(cfg))
    keys = [f"seed-{p.seed}/size-{p.size}" for p in pts]
    done = {} if force else {k: rec for k, p in zip(keys, pts) if (rec := finished(p)) is not None}
    r = cfg.ray
    jobs = [
        Job(k, run_point, (p, methods_at(cfg, p.size)), {"force": force, "progress": progress, "launcher": cfg.pipeline.launcher},
            cpus=r.cpus_per_task, gpus=r.gpus_per_task)
        for k, p in zip(keys, pts) if k not in done
    ]
    logger.info("scaling: %d points (%d to run) on the %s executor", len(pts), len(jobs), s.executor)
    if s.executor == "ray" and jobs:  # no Ray when every point is finished
        from mathreason.executors import RayBackend

        backend = RayBackend(r)
    else:
        backend = InlineBackend()
    try:
        outs = run_jobs(jobs, backend, retries=s.retries, log=logger.info)
    finally:
        backend.close()
    ran = {o.key: o.value for o in outs if o.ok}
    failed = [o for o in outs if not o.ok]
    fpath = root / "failed.json"
    if failed:
        atomic_write_json(fpath, [{"key": o.key, "attempts": o.attempts, "error": o.error} for o in failed])
        raise JobsFailed(failed)
    if fpath.exists():
        fpath.unlink()
    return [ran[k] if k in ran else {**done[k], "stages": dict.fromkeys(done[k]["stages"], "skipped")} for k in keys]


def report(cfg: Config, *, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Fit SFT's power law over the study's finished points and write the data-efficiency report."""
    from mathreason.scaling_report import write_report

    s = cfg.scaling
    benchmark = s.benchmark or cfg.eval.benchmarks[0]
    return write_report(
        study_root(cfg), method_tags(list(s.methods), cfg.pipeline.variants), benchmark, metric=s.metric, out_dir=out_dir, reference="sft",
        min_sizes=s.min_sizes, sizes_of=s.method_sizes,
    )
