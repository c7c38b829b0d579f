"""``mathreason pipeline``: run stages in order, checking all of them before the first one starts.

With ``pipeline.launcher`` set (e.g. ``accelerate launch --config_file fsdp.yaml --num_processes 8``)
the training stages (sft, rft) run in a child command ``<launcher> -m mathreason.cli <stage> --config
<run_dir>/config.yaml``, so they get all GPUs, while sampling, grading and evaluation run in this
process (vLLM does its own tensor parallelism).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from mathreason.config import Config
from mathreason.stages import STAGES, Context, StageError, check_stages, run_stage

__all__ = ["run_pipeline"]

logger = logging.getLogger(__name__)


def run_pipeline(
    cfg: Config,
    stages: Sequence[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``stages`` (default ``cfg.pipeline.stages``) over ``cfg.run_dir``; returns one result per stage.

    Every stage is checked first (config, data, models, upstream outputs present or scheduled), so a bad
    input fails before any work. Stages whose outputs are up to date are skipped.
    """
    names = list(stages or cfg.pipeline.stages)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise StageError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    ctx = Context(cfg, progress=progress)
    check_stages(names, ctx)
    results = []
    for name in names:
        stage = STAGES[name]
        if stage.training and cfg.pipeline.launcher:
            results.append(_launch(name, cfg, force))
        else:
            results.append(run_stage(stage, ctx, force=force))
        logger.info("stage %s: %s", name, results[-1]["status"])
    return results


def _launch(name: str, cfg: Config, force: bool) -> dict[str, Any]:
    ctx = Context(cfg)
    config_path = ctx.run.config_path
    if not config_path.exists():
        raise StageError(f"{config_path} is missing; the pipeline writes it before launching {name}")
    cmd = shlex.split(cfg.pipeline.launcher) + ["-m", "mathreason.cli", name, "--config", str(config_path)]
    if force:
        cmd.append("--force")
    logger.info("launching: %s", shlex.join(cmd))
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise StageError(f"stage {name} failed under the launcher (exit status {proc.returncode}): {shlex.join(cmd)}")
    from mathreason.stages import STAGES as _REGISTRY

    label = _REGISTRY[name].record_name(ctx)
    rec = ctx.run.record(label)
    return {"stage": label, "status": rec.status if rec else "unknown", "summary": rec.summary if rec else {}}
