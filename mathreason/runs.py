"""Run folders: atomic and append-only IO, sharded row stores, fingerprints, stage records, metrics.

A run folder holds everything one pipeline run produced::

    <run_dir>/
      config.yaml            resolved config of the latest command
      metrics.jsonl          one JSON object per line, appended by every stage (fsync'ed)
      data/                  the D_syn subset actually used (``dsyn.jsonl``), tiny problems
      base/                  the tiny preset's random model and offline tokenizer
      <stage>/stage.json     status, key (hash of config + input fingerprints), output fingerprints
      <stage>/config.yaml    resolved config the stage ran with
      <stage>/...            the stage's outputs

Crash safety (the file IO is :mod:`shared.runio`). Whole files are written with
:func:`atomic_write_text` (temporary file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the
folder), so a reader sees the old or the new file, never a mix. Long loops write rows through
:class:`ShardedRows`: the work is cut into a fixed plan of shards decided before any work starts; each
finished shard is one atomic file; a resumed run skips finished shards and redoes unfinished ones from
scratch, so a ``kill -9`` loses at most the shard in flight and never duplicates a row. Metrics go
through :func:`append_jsonl` (one ``write`` plus ``fsync``); a line torn by a kill is detected (no
trailing newline) and cut off before the next append.

Only the main process (``RANK`` 0 under ``accelerate launch``) writes records and metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.runio import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps,
    iter_jsonl,
    json_default,
    read_jsonl,
    write_jsonl_atomic,
)

__all__ = [
    "RunFolder",
    "ShardedRows",
    "StageRecord",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dumps",
    "fingerprint",
    "hash_json",
    "is_main_process",
    "iter_jsonl",
    "read_jsonl",
    "sha256_file",
    "write_jsonl_atomic",
]


# ---------------------------------------------------------------- processes


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed launch (``RANK`` set by torchrun/accelerate)."""
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------- atomic and append-only files
# (shared.runio: atomic_write_bytes/text/json, write_jsonl_atomic, append_jsonl, read_jsonl, iter_jsonl, dumps)


# ---------------------------------------------------------------- hashing and fingerprints


def hash_json(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()


_FILE_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, cached in-process by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    hit = _FILE_HASH_CACHE.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _FILE_HASH_CACHE[key] = digest
    return digest


def _load_disk_cache(cache: Path | None) -> dict:
    if cache is None or not cache.exists():
        return {}
    try:
        return json.loads(cache.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def fingerprint(target: str | Path, *, cache: Path | None = None, revision: str | None = None) -> str:
    """A content fingerprint of a file, a folder (every file, by relative path) or a hub model id.

    A local file or folder is hashed by content (sha256). A string that names no local path is taken as a
    hub id and fingerprinted as ``hub:<id>@<revision>`` (its content is not available offline). With
    ``cache`` (a JSON file), file hashes are remembered across processes keyed by path, size and
    modification time, so a 7B checkpoint is read once rather than by every stage that consumes it.
    """
    p = Path(target)
    if not p.exists():
        return f"hub:{target}@{revision or 'main'}"
    disk = _load_disk_cache(cache)
    changed = False

    def file_hash(fp: Path) -> str:
        nonlocal changed
        st = fp.stat()
        key = str(fp.resolve())
        rec = disk.get(key)
        if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return rec["sha256"]
        digest = sha256_file(fp)
        if cache is not None:
            disk[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            changed = True
        return digest

    if p.is_file():
        out = "file:" + file_hash(p)
    else:
        h = hashlib.sha256()
        for fp in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
            h.update(str(fp.relative_to(p)).encode() + b"\0" + file_hash(fp).encode() + b"\n")
        out = "dir:" + h.hexdigest()
    if changed and cache is not None and is_main_process():
        atomic_write_json(cache, disk)
    return out


# ---------------------------------------------------------------- sharded row store


class ShardedRows:
    """Rows produced by a long loop, written one atomic shard file at a time.

    The plan (number of shards, and a ``key`` naming the config and inputs that produced it) is fixed in
    ``manifest.json`` before any work. On resume with the same key, finished shards are kept and only
    missing ones are computed; with a different key the folder is emptied first. Shard ``i`` is
    ``shard-00000i.jsonl``; the rows of all shards, in shard order, are the result.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def shard_path(self, i: int) -> Path:
        return self.folder / f"shard-{i:06d}.jsonl"

    def manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def open(self, key: str, num_shards: int, meta: Mapping[str, Any] | None = None) -> set[int]:
        """Start or resume a plan; returns the indices of shards already finished."""
        m = self.manifest()
        if m is not None and m.get("key") == key and m.get("num_shards") == num_shards:
            return self.done()
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.manifest_path, {"key": key, "num_shards": num_shards, "created": time.time(), "meta": dict(meta or {})}
        )
        return set()

    def done(self) -> set[int]:
        m = self.manifest()
        if m is None:
            return set()
        return {i for i in range(m["num_shards"]) if self.shard_path(i).exists()}

    def complete(self, key: str) -> bool:
        m = self.manifest()
        return m is not None and m.get("key") == key and len(self.done()) == m["num_shards"]

    def write(self, i: int, rows: Iterable[Mapping[str, Any]]) -> None:
        write_jsonl_atomic(self.shard_path(i), rows)

    def read_shard(self, i: int) -> list[dict]:
        """Rows of one finished shard."""
        return read_jsonl(self.shard_path(i))

    def read(self) -> list[dict]:
        m = self.manifest()
        if m is None:
            raise FileNotFoundError(f"{self.folder}: no manifest")
        out: list[dict] = []
        for i in range(m["num_shards"]):
            out.extend(read_jsonl(self.shard_path(i)))
        return out


# ---------------------------------------------------------------- stage records and the run folder


@dataclass
class StageRecord:
    """Contents of ``<stage>/stage.json``."""

    stage: str
    status: str
    """"running" or "done"."""
    key: str
    """Hash of the stage's config sections and its inputs' fingerprints."""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """Relative output path -> fingerprint, recorded when the stage finished."""
    summary: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    finished: float | None = None

    @classmethod
    def load(cls, path: Path) -> "StageRecord | None":
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError):
            return None


class RunFolder:
    """Paths and records of one run folder (see the module docstring for the layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def fingerprint_cache(self) -> Path:
        return self.root / ".fingerprints.json"

    def fingerprint(self, target: str | Path, revision: str | None = None) -> str:
        return fingerprint(target, cache=self.fingerprint_cache, revision=revision)

    def record_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "stage.json"

    def record(self, stage: str) -> StageRecord | None:
        return StageRecord.load(self.record_path(stage))

    def write_record(self, rec: StageRecord) -> None:
        if is_main_process():
            atomic_write_json(self.record_path(rec.stage), rec.__dict__)

    def log_metrics(self, stage: str, **values: Any) -> None:
        """Append ``{"stage", "time", **values}`` to ``metrics.jsonl`` (main process only)."""
        if is_main_process():
            append_jsonl(self.metrics_path, [{"stage": stage, "time": round(time.time(), 3), **values}])

    def metrics(self, stage: str | None = None) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        rows = read_jsonl(self.metrics_path)
        return [r for r in rows if stage is None or r.get("stage") == stage]
