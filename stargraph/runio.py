"""Run-folder I/O: atomic writes, append-only metrics, checkpoints, optimizers and LR schedules."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from . import configlib
from .model import GPT, GPTConfig

DONE = "DONE"


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (torch.Tensor,)):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_config(run_dir: Path, cfg: Any) -> None:
    atomic_write_text(run_dir / "config.yaml", configlib.dump_yaml(cfg))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each written with a single ``write`` and fsync.

    :meth:`truncate_after` drops records of steps later than a resume point (rewritten atomically),
    so a resumed run neither loses nor duplicates records.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, rec: dict) -> None:
        line = json.dumps(rec, default=_json_default) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        return read_jsonl(self.path)

    def truncate_after(self, step: int) -> None:
        recs = [r for r in self.read() if r.get("step", -1) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, default=_json_default) + "\n" for r in recs))

    def reset(self) -> None:
        atomic_write_text(self.path, "")


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path} line {i + 1}: not valid JSON") from None
    return out


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: Path, info: dict | None = None) -> None:
    atomic_write_text(Path(run_dir) / DONE, json.dumps(info or {}) + "\n")


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


# ---------------------------------------------------------------- optimisation


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with decay on matrices only; fused on CUDA, foreach elsewhere."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    dev = next(model.parameters()).device
    kw = {"fused": True} if dev.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kw)


def lr_at(step: int, *, lr: float, warmup: int, total: int, schedule: str = "constant", min_lr: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps (step 0 gets lr/warmup), then constant or cosine to ``min_lr``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    span = max(1, total - warmup)
    ratio = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def mean_dicts(recs: Iterable[dict[str, float]]) -> dict[str, float]:
    recs = list(recs)
    if not recs:
        return {}
    keys = recs[0].keys()
    return {k: sum(r[k] for r in recs) / len(recs) for k in keys}
