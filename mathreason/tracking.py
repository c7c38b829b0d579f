"""Experiment tracking of pipeline runs (``tracking.backend: none | tensorboard | wandb | trackio``).

* Training stages (``sft``, ``rft``, ``rft_adv``, ``pref``) report through transformers' own
  ``report_to``: :func:`training_env` sets, for the duration of a training stage, the environment that
  transformers' reporting callbacks read (``TENSORBOARD_LOGGING_DIR=<run>/tb/<stage>``, ``WANDB_MODE``,
  ``WANDB_PROJECT``, ``WANDB_DIR``, ``TRACKIO_PROJECT``) and ``STEPCREDIT_REPORT_TO``, which
  :func:`mathreason.training.training_arguments` turns into ``report_to``. Environment variables also
  reach the processes of ``pipeline.launcher`` (``accelerate launch``).
* The other stages' records of ``metrics.jsonl`` (summaries: rows sampled, accuracy, rollouts, pits ...)
  are mirrored by :func:`mirror_stages` as ``<stage>/<field>`` scalars at the record's line number
  (TensorBoard: ``<run>/tb/stages``). ``metrics.jsonl`` stays the source of truth.

wandb runs offline by default (``tracking.wandb_mode``): nothing needs a network.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from shared.tracking import MetricsMirror, TrackingConfig, scalars
from shared.tracking import make_writer as shared_make_writer

__all__ = ["REPORT_TO_ENV", "make_writer", "mirror_stages", "report_to", "training_env"]

REPORT_TO_ENV = "STEPCREDIT_REPORT_TO"
MIRRORING_ENV = "STEPCREDIT_MIRRORING"


def report_to() -> str:
    """transformers' ``report_to`` of the training stage running now (``none`` outside :func:`training_env`)."""
    return os.environ.get(REPORT_TO_ENV, "none")


@contextlib.contextmanager
def training_env(cfg: TrackingConfig, run_dir: str | Path, stage: str) -> Iterator[None]:
    """The environment of transformers' reporting callbacks for one training stage (restored afterwards)."""
    if not cfg.enabled:
        yield
        return
    run_dir = Path(run_dir)
    env = {REPORT_TO_ENV: cfg.backend}
    if cfg.backend == "tensorboard":
        env["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tb" / stage.replace("/", "-"))
    elif cfg.backend == "wandb":
        env.update(WANDB_MODE=cfg.wandb_mode, WANDB_PROJECT=cfg.project, WANDB_DIR=str(run_dir), WANDB_SILENT="true")
        env["WANDB_NAME"] = f"{run_dir.name}/{stage}"
    elif cfg.backend == "trackio":
        env["TRACKIO_PROJECT"] = cfg.project
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_writer(cfg: TrackingConfig, run_dir: str | Path, name: str):
    """The :class:`shared.tracking.Writer` of the non-training stages of one run folder (TensorBoard: ``<run>/tb/stages``)."""
    return shared_make_writer(cfg, run_dir, name, tb_dir=Path(run_dir) / "tb" / "stages")


def _stage_step(record: Mapping[str, Any], index: int) -> int | None:
    return None if "step" in record else index  # records with a step are training logs: report_to has them


def _stage_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    stage = str(record.get("stage", "run"))
    return {f"{stage}/{k}": v for k, v in scalars(record).items()}


@contextlib.contextmanager
def mirror_stages(cfg: TrackingConfig, run_dir: str | Path) -> Iterator[None]:
    """Mirror the non-training records of ``<run_dir>/metrics.jsonl`` into the tracker while the block runs.

    One mirror per run folder: on the main process only, and not in a child command (a training stage
    under ``pipeline.launcher``) of a process already mirroring the same folder (``$STEPCREDIT_MIRRORING``).
    """
    from mathreason.runs import is_main_process

    run_dir = Path(run_dir)
    owner = str(run_dir.resolve())
    if not cfg.enabled or not is_main_process() or os.environ.get(MIRRORING_ENV) == owner:
        yield
        return
    writer = make_writer(cfg, run_dir, f"{run_dir.name}/stages")
    old = os.environ.get(MIRRORING_ENV)
    os.environ[MIRRORING_ENV] = owner
    try:
        with MetricsMirror(run_dir / "metrics.jsonl", writer, interval_s=cfg.interval_s, step_of=_stage_step, transform=_stage_scalars):
            yield
    finally:
        if old is None:
            os.environ.pop(MIRRORING_ENV, None)
        else:
            os.environ[MIRRORING_ENV] = old
