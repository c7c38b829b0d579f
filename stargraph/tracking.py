"""Experiment tracking of star-graph runs: each run folder's ``metrics.jsonl`` mirrored into a tracker.

``tracking.backend: tensorboard`` writes event files to ``<run folder>/tb``; ``wandb`` an (offline by
default) wandb run under ``<run folder>/wandb``; ``trackio`` a Trackio run of ``tracking.project``. The
training loops are unchanged: :func:`mirrored` follows ``metrics.jsonl`` while a task runs
(:class:`shared.tracking.MetricsMirror`), in whichever process or Ray worker runs the task.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from shared.tracking import MetricsMirror, TensorBoardWriter, TrackingConfig

from . import configlib

__all__ = ["make_writer", "mirrored"]


class _WandbWriter:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict) -> None:
        try:
            import wandb
        except Exception as e:  # noqa: BLE001
            raise RuntimeError("tracking.backend: wandb needs wandb: pip install 'stepcredit[tracking]'") from e
        os.environ.setdefault("WANDB_SILENT", "true")
        self._wandb = wandb
        self._run = wandb.init(
            project=cfg.project, name=name, dir=str(run_dir), mode=cfg.wandb_mode, config=config, reinit="create_new",
        )

    def log(self, values, step: int) -> None:
        self._run.log(dict(values), step=step)

    def close(self) -> None:
        self._run.finish()
        self._wandb.teardown()  # the offline run file is complete only once wandb's service has stopped


class _TrackioWriter:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict) -> None:
        try:
            import trackio
        except Exception as e:  # noqa: BLE001
            raise RuntimeError("tracking.backend: trackio needs trackio: pip install 'stepcredit[tracking]'") from e
        self._trackio = trackio
        self._trackio.init(project=cfg.project, name=name, config=config)

    def log(self, values, step: int) -> None:
        self._trackio.log(dict(values), step=step)

    def close(self) -> None:
        self._trackio.finish()


def make_writer(cfg: TrackingConfig, run_dir: str | Path, name: str, config: Any = None):
    """The :class:`shared.tracking.Writer` of ``cfg.backend`` for one run folder."""
    run_dir = Path(run_dir)
    tree = configlib.to_dict(config) if config is not None else {}
    if cfg.backend == "tensorboard":
        return TensorBoardWriter(run_dir / "tb")
    if cfg.backend == "wandb":
        return _WandbWriter(cfg, run_dir, name, tree)
    if cfg.backend == "trackio":
        return _TrackioWriter(cfg, run_dir, name, tree)
    raise ValueError(f"tracking.backend {cfg.backend!r} has no writer")


@contextlib.contextmanager
def mirrored(cfg: TrackingConfig | None, run_dir: str | Path, name: str, config: Any = None) -> Iterator[None]:
    """Mirror ``<run_dir>/metrics.jsonl`` into ``cfg``'s tracker while the block runs (nothing when off)."""
    if cfg is None or not cfg.enabled:
        yield
        return
    writer = make_writer(cfg, run_dir, name, config)
    with MetricsMirror(Path(run_dir) / "metrics.jsonl", writer, interval_s=cfg.interval_s):
        yield
