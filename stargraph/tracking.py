"""Experiment tracking of star-graph runs: each run folder's ``metrics.jsonl`` mirrored into a tracker.

``tracking.backend: tensorboard`` writes event files to ``<run folder>/tb``; ``wandb`` an (offline by
default) wandb run under ``<run folder>/wandb``; ``trackio`` a Trackio run of ``tracking.project``. The
training loops are unchanged: :func:`mirrored` follows ``metrics.jsonl`` while a task runs
(:class:`shared.tracking.MetricsMirror`), in whichever process or Ray worker runs the task.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from shared.tracking import MetricsMirror, TrackingConfig
from shared.tracking import make_writer as shared_make_writer

from . import configlib

__all__ = ["make_writer", "mirrored"]


def make_writer(cfg: TrackingConfig, run_dir: str | Path, name: str, config: Any = None):
    """The :class:`shared.tracking.Writer` of ``cfg.backend`` for one run folder (TensorBoard: ``<run folder>/tb``)."""
    tree = configlib.to_dict(config) if config is not None else {}
    return shared_make_writer(cfg, run_dir, name, tb_dir=Path(run_dir) / "tb", config=tree)


@contextlib.contextmanager
def mirrored(cfg: TrackingConfig | None, run_dir: str | Path, name: str, config: Any = None) -> Iterator[None]:
    """Mirror ``<run_dir>/metrics.jsonl`` into ``cfg``'s tracker while the block runs (nothing when off)."""
    if cfg is None or not cfg.enabled:
        yield
        return
    writer = make_writer(cfg, run_dir, name, config)
    with MetricsMirror(Path(run_dir) / "metrics.jsonl", writer, interval_s=cfg.interval_s):
        yield
