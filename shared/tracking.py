"""Experiment tracking: mirror a run's ``metrics.jsonl`` into TensorBoard, Weights & Biases or Trackio.

``metrics.jsonl`` stays the source of truth; a tracker only shows the same scalars live. A
:class:`MetricsMirror` follows the file from a background thread (every ``tracking.interval_s`` seconds,
and once more at the end) and forwards each complete record's numeric fields to a :class:`Writer` at
the record's ``step``. The loops that write ``metrics.jsonl`` need no change, and a worker process, a
Ray task or this process can mirror its own run folder.

This module holds what the front ends share: :class:`TrackingConfig`, the mirror and the writers
(:func:`make_writer`: TensorBoard through ``torch.utils.tensorboard``, wandb, Trackio). wandb and Trackio
are optional extras imported only when their writer is made: the one place ``shared`` imports anything
beyond the standard library, torch and numpy (``tests/test_architecture.py`` allows exactly this).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from shared.configlib import require

__all__ = ["BACKENDS", "MetricsMirror", "TensorBoardWriter", "TrackingConfig", "Writer", "make_writer", "scalars"]

BACKENDS = ("none", "tensorboard", "wandb", "trackio")


@dataclass
class TrackingConfig:
    """Experiment tracking (off by default; ``metrics.jsonl`` is always written)."""

    backend: str = "none"
    "none | tensorboard | wandb | trackio: where the scalars of metrics.jsonl are mirrored (tensorboard: event files under <run folder>/tb)."
    project: str = "stepcredit"
    "wandb / Trackio project name."
    wandb_mode: str = "offline"
    "wandb mode: offline (no network; `wandb sync <run folder>/wandb/offline-run-*` uploads later) or online."
    interval_s: float = 10.0
    "Seconds between two reads of metrics.jsonl by the mirror (the last records are sent when the run ends)."

    def validate(self) -> None:
        require(self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        require(self.wandb_mode in ("offline", "online"), "wandb_mode", f"must be offline or online, got {self.wandb_mode!r}")
        require(self.interval_s > 0, "interval_s", f"must be > 0, got {self.interval_s}")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


def scalars(record: Mapping[str, Any], skip: tuple[str, ...] = ("step", "time", "time_s")) -> dict[str, float]:
    """The finite numeric fields of a metrics record (booleans and the ``skip`` keys left out)."""
    out = {}
    for k, v in record.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class Writer(Protocol):
    """Where mirrored scalars go."""

    def log(self, values: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardWriter:
    """Scalars as TensorBoard event files in ``log_dir``.

    A new writer hides what an earlier writer of the same folder logged (``purge_step=0``): a resumed
    run mirrors its whole ``metrics.jsonl`` again, so TensorBoard shows each step once.
    """

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # noqa: BLE001 - tensorboard missing or broken
            raise RuntimeError("tracking.backend: tensorboard needs the tensorboard package: pip install 'stepcredit[tracking]'") from e
        log_dir = Path(log_dir)
        earlier = log_dir.is_dir() and any(p.name.startswith("events.out.tfevents") for p in log_dir.iterdir())
        self._w = SummaryWriter(str(log_dir), purge_step=0 if earlier else None)

    def log(self, values: Mapping[str, float], step: int) -> None:
        for k, v in values.items():
            self._w.add_scalar(k, v, global_step=step)

    def close(self) -> None:
        self._w.flush()
        self._w.close()


StepOf = Callable[[Mapping[str, Any], int], "int | None"]
"""``(record, index of the record in the file) -> step``, or None to leave the record out."""


def _step_field(record: Mapping[str, Any], index: int) -> int | None:
    step = record.get("step")
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else index


class MetricsMirror:
    """Forwards the records of a ``metrics.jsonl`` to a :class:`Writer` as they are appended.

    Only complete lines are read (a line torn by a kill is left for the next read). When the file is
    replaced by a shorter one (a resumed run truncates records past its checkpoint), reading starts over
    and records of steps already sent are not sent again. Use as a context manager::

        with MetricsMirror(run_dir / "metrics.jsonl", writer, interval_s=10):
            train(...)
    """

    def __init__(
        self,
        path: str | Path,
        writer: Writer,
        *,
        interval_s: float = 10.0,
        step_of: StepOf = _step_field,
        transform: Callable[[Mapping[str, Any]], Mapping[str, float]] = scalars,
    ) -> None:
        self.path = Path(path)
        self.writer = writer
        self.interval_s = interval_s
        self.step_of = step_of
        self.transform = transform
        self._offset = 0
        self._index = 0
        self._inode: int | None = None
        self._last_step: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0

    def poll(self) -> int:
        """Forward the complete records appended since the last call; returns how many were sent."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return 0
            if self._inode is not None and (st.st_ino != self._inode or st.st_size < self._offset):
                self._offset, self._index = 0, 0  # replaced (truncated on resume): read again, skip sent steps
            self._inode = st.st_ino
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            sent = 0
            for line in data[:end].splitlines():
                index = self._index
                self._index += 1
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(rec, dict):
                    continue
                step = self.step_of(rec, index)
                if step is None or (self._last_step is not None and step <= self._last_step):
                    continue
                values = self.transform(rec)
                if values:
                    self.writer.log(values, step)
                    sent += 1
                self._last_step = step
            self._offset += end
            self.sent += sent
            return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> "MetricsMirror":
        self._thread = threading.Thread(target=self._loop, name=f"mirror:{self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, send the last records and close the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.poll()
        finally:
            self.writer.close()

    def __enter__(self) -> "MetricsMirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _WandbWriter:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, name: str, config: dict | None) -> None:
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
    def __init__(self, cfg: TrackingConfig, name: str, config: dict | None) -> None:
        try:
            import trackio
        except Exception as e:  # noqa: BLE001
            raise RuntimeError("tracking.backend: trackio needs trackio: pip install 'stepcredit[tracking]'") from e
        self._trackio = trackio
        trackio.init(project=cfg.project, name=name, config=config)

    def log(self, values, step: int) -> None:
        self._trackio.log(dict(values), step=step)

    def close(self) -> None:
        self._trackio.finish()


def make_writer(cfg: TrackingConfig, run_dir: str | Path, name: str, *, tb_dir: str | Path, config: dict | None = None) -> Writer:
    """The :class:`Writer` of ``cfg.backend``: TensorBoard event files in ``tb_dir``, an (offline by default)
    wandb run under ``run_dir/wandb``, or a Trackio run of ``cfg.project``; ``config`` is the run's config tree."""
    if cfg.backend == "tensorboard":
        return TensorBoardWriter(tb_dir)
    if cfg.backend == "wandb":
        return _WandbWriter(cfg, Path(run_dir), name, config)
    if cfg.backend == "trackio":
        return _TrackioWriter(cfg, name, config)
    raise ValueError(f"tracking.backend {cfg.backend!r} has no writer")
