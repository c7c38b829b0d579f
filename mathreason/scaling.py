"""Scaling runs: every chosen method at every D_syn size and seed, one run folder per point.

A point ``(seed s, size n)`` is the run folder ``<root>/seed-<s>/size-<n>`` holding an ordinary pipeline
run with ``seed: s`` and ``data.subset_size: n`` (nested seeded subsets: with one ``data.subset_seed``
the n problems of a smaller size are among those of every larger one). Its stages are
:func:`mathreason.methods.plan` of ``scaling.methods``; every stage skips itself when up to date, so a
killed study resumes where it stopped, and ``point.json`` marks a finished point.

Points are independent of each other: :func:`points` lists them and :func:`run_point` runs one, so a
cluster executor can dispatch them in parallel; :func:`run_scaling` is the local executor (one after
another, smallest size first). :func:`report` fits SFT's power law over the finished points and writes
each method's data-efficiency factors (:mod:`mathreason.scaling_report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathreason.config import Config, ConfigError, build_config, dump_yaml, to_dict
from mathreason.methods import plan, resolve_method, run_plan
from mathreason.runs import atomic_write_json, atomic_write_text, hash_json, is_main_process

__all__ = ["Point", "method_tags", "points", "report", "run_point", "run_scaling", "study_root"]

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


def method_tags(methods: list[str], variants: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Method -> the key of its policy in ``eval/summary.json``."""
    from mathreason.stages import policy_tag

    return {m: policy_tag(resolve_method(m, variants).policy) for m in methods}


def run_point(point: Point, methods: list[str], *, force: bool = False, progress: bool = True, launcher: str = "") -> dict[str, Any]:
    """Run (or resume) one point; writes ``point.json`` when it is complete."""
    t0 = time.time()
    steps = plan(point.cfg, methods)
    if is_main_process():
        point.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(point.run_dir / "config.yaml", dump_yaml(point.cfg))
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


def run_scaling(cfg: Config, *, force: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """The local executor: check every point's first stage inputs, then run the points one after another."""
    pts = points(cfg)
    methods = list(cfg.scaling.methods)
    if "sft" not in methods:
        logger.warning("scaling.methods has no `sft`: the report needs SFT's power law as its reference")
    for p in pts:  # cheap checks of every point before any work (D_syn subset sizes, models, templates)
        from mathreason.stages import Context

        ctx = Context(p.cfg, progress=False)
        ctx.dsyn()
        ctx.template()
    if is_main_process():
        root = study_root(cfg)
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "study.yaml", dump_yaml(cfg))
    out = []
    for p in pts:
        logger.info("scaling point seed %d size %d -> %s", p.seed, p.size, p.run_dir)
        out.append(run_point(p, methods, force=force, progress=progress, launcher=cfg.pipeline.launcher))
    return out


def report(cfg: Config, *, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Fit SFT's power law over the study's finished points and write the data-efficiency report."""
    from mathreason.scaling_report import write_report

    s = cfg.scaling
    benchmark = s.benchmark or cfg.eval.benchmarks[0]
    return write_report(
        study_root(cfg), method_tags(list(s.methods), cfg.pipeline.variants), benchmark, metric=s.metric, out_dir=out_dir, reference="sft", min_sizes=s.min_sizes
    )
