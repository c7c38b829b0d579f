"""Run-folder I/O: atomic writes, append-only metrics, checkpoints.

The crash-safe file writing is :mod:`shared.runio` (re-exported here): whole files appear complete or not
at all, and ``metrics.jsonl`` is an append-only log whose torn last line (a kill mid-write) is ignored
by readers and cut off before the next append. This module adds stargraph's run-folder conventions
(``config.yaml``, the ``DONE`` marker) and GPT checkpoints. The optimizer and the LR schedule live with
the training loop in :mod:`stargraph.loop`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from shared import runio as _core
from shared.runio import atomic_torch_save, atomic_write_text, dumps  # noqa: F401  (re-exported)

from . import configlib
from .model import GPT, GPTConfig

DONE = "DONE"

MetricsLog = _core.JsonlLog
"""``metrics.jsonl``: one JSON object per line, appended with a single ``write`` and fsync;
``truncate_after(step)`` drops the records of steps later than a resume point (rewritten atomically), so
a resumed run neither loses nor duplicates records; ``reset()`` empties it."""


def write_json(path: str | Path, obj: Any) -> None:
    """Indented JSON with a final newline, written atomically."""
    _core.atomic_write_json(path, obj, indent=2)


def write_config(run_dir: Path, cfg: Any) -> None:
    atomic_write_text(run_dir / "config.yaml", configlib.dump_yaml(cfg))


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file (none when it does not exist); a torn last line (killed mid-write) is ignored."""
    return _core.read_jsonl(path, missing_ok=True)


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: Path, info: dict | None = None) -> None:
    atomic_write_text(Path(run_dir) / DONE, dumps(info or {}) + "\n")


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, model: GPT, *, step: int, spec: dict, extra: dict | None = None) -> None:
    """Model weights plus what is needed to rebuild it and its data (loadable with ``weights_only``)."""
    raw = getattr(model, "_orig_mod", model)
    atomic_torch_save(
        {
            "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
            "model_config": raw.config.to_dict(),
            "step": int(step),
            "spec": dict(spec),
            "extra": dict(extra or {}),
        },
        path,
    )


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[GPT, dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    return model.to(device), ck


def mean_dicts(recs: Iterable[dict[str, float]]) -> dict[str, float]:
    recs = list(recs)
    if not recs:
        return {}
    keys = recs[0].keys()
    return {k: sum(r[k] for r in recs) / len(recs) for k in keys}
