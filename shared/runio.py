"""Crash-safe run-folder files: atomic whole-file writes and append-only JSONL logs.

Whole files. :func:`atomic_open` (and :func:`atomic_write_bytes`, :func:`atomic_write_text`,
:func:`atomic_write_json`, :func:`write_jsonl_atomic`, :func:`atomic_torch_save` built on it) writes a
temporary file in the target's folder, ``fsync``s it, ``os.replace``s it over the target and ``fsync``s
the folder: a reader (or a run resumed after a kill or a power cut) sees the old file or the complete new
one, never a mix. If the writer raises, the temporary file is removed and the target is untouched.
Temporary files are created with mode ``0o666`` minus the umask, like any ``open(path, "w")``.

Append-only JSONL. :func:`append_jsonl` writes every record as one ``json + "\\n"`` line, all records of a
call in one ``write``, then ``fsync``. A kill can still leave a *torn* last line (no trailing newline).
:func:`read_jsonl` ignores it, and :func:`repair_torn_tail` (run by every append) cuts it off before the
next records go in, so resuming neither loses a finished record nor reads half of one. An unterminated
last line that is nevertheless a whole JSON object or array (written by hand, or cut exactly before its
newline) is a complete record: readers return it and the repair only adds the newline. Any other bad
line is an error naming the file and the line. :class:`JsonlLog` wraps one such file (``metrics.jsonl``).

Standard library only; :func:`atomic_torch_save` imports torch when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "JsonlLog",
    "append_jsonl",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dumps",
    "fsync_dir",
    "iter_jsonl",
    "json_default",
    "read_jsonl",
    "repair_torn_tail",
    "write_jsonl_atomic",
]


# ====================================================================== atomic whole-file writes


def fsync_dir(path: str | Path) -> None:
    """``fsync`` a folder so that a rename or a new entry in it survives a power cut (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, exclusively created temporary file next to ``path`` (permissions follow the umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO]:
    """``with atomic_open(path) as f: f.write(...)``: the file appears at ``path`` complete (flushed,
    ``fsync``ed, renamed over the old one, folder ``fsync``ed) when the block ends without an exception;
    on an exception the temporary file is removed and ``path`` is untouched. ``mode`` is ``w`` or ``wb``;
    text is written as is (no newline translation). Parent folders are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        kw: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding, "newline": ""}
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` of ``text`` (UTF-8 by default)."""
    atomic_write_bytes(path, text.encode(encoding))


def json_default(obj: Any) -> Any:
    """JSON fallback for run records: paths -> str; tensors, numpy arrays and scalars -> lists/numbers;
    sets and tuples -> lists; dataclasses -> dicts. Anything else is a ``TypeError``."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and numpy scalars
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, tuple):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, **kw: Any) -> str:
    """Compact JSON of one record (UTF-8 kept as is; key order kept: it is part of a row's schema)."""
    return json.dumps(obj, ensure_ascii=False, default=json_default, **kw)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON with a final newline."""
    atomic_write_text(path, dumps(obj, indent=indent) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> int:
    """Write all ``rows`` as one JSONL file atomically (streamed: ``rows`` may be a generator; if it raises,
    the old file stays). Returns the number of rows."""
    n = 0
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
            n += 1
    return n


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically (a killed save never leaves a truncated checkpoint)."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


# ====================================================================== append-only JSONL


def _complete_record(line: bytes) -> bool:
    """True when an unterminated last line is nevertheless a whole JSON object or array (a proper prefix
    of one never is, so this cannot mistake a torn record for a finished one)."""
    try:
        return isinstance(json.loads(line.decode("utf-8")), (dict, list))
    except (UnicodeDecodeError, ValueError):
        return False


def iter_jsonl(path: str | Path, *, missing_ok: bool = False) -> Iterator[Any]:
    """Records of a JSONL file, streamed. Blank lines are skipped; a torn final line is ignored (see the
    module docstring); any other line that is not JSON raises ``ValueError`` naming the file and line.
    A missing file raises ``FileNotFoundError`` unless ``missing_ok`` (then: no records)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n") and not _complete_record(line):
                return  # torn tail: the last line, cut by a kill
            if not line.strip():
                continue
            try:
                yield json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {lineno}: not valid UTF-8 ({e.reason})") from e
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno}: not valid JSON ({e.msg})") from e


def read_jsonl(path: str | Path, *, missing_ok: bool = False) -> list:
    """All records of a JSONL file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, missing_ok=missing_ok))


def repair_torn_tail(path: str | Path) -> int:
    """Make a JSONL file end with a newline before appending: a torn last line is cut off (returns the
    number of bytes removed); a complete but unterminated last record gets its newline (returns 0)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        cut, pos, block = 0, size, 1 << 16
        while pos > 0:  # walk back to the last newline
            start = max(0, pos - block)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        f.seek(cut)
        if _complete_record(f.read(size - cut)):
            f.seek(size)
            f.write(b"\n")
            removed = 0
        else:
            f.truncate(cut)
            removed = size - cut
        f.flush()
        os.fsync(f.fileno())
    return removed


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Append ``rows`` to a JSONL file: one line each, all in one ``write``, then ``fsync``; a torn last line
    left by a kill is repaired first. Creates the file (and its folder). Returns the number of rows."""
    path = Path(path)
    lines = [dumps(r) + "\n" for r in rows]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    repair_torn_tail(path)
    with open(path, "ab") as f:
        f.write("".join(lines).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)
    return len(lines)


class JsonlLog:
    """An append-only JSONL log such as ``metrics.jsonl`` (records are JSON objects).

    :meth:`truncate_after` drops the records of steps later than a resume point (rewriting the file
    atomically), so a run resumed from a checkpoint neither loses nor duplicates records.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, rec: Mapping[str, Any]) -> None:
        append_jsonl(self.path, [rec])

    def extend(self, recs: Iterable[Mapping[str, Any]]) -> int:
        return append_jsonl(self.path, recs)

    def read(self) -> list[dict]:
        """The records so far (none when the file does not exist yet)."""
        return read_jsonl(self.path, missing_ok=True)

    def rewrite(self, recs: Iterable[Mapping[str, Any]]) -> int:
        """Replace the whole log atomically."""
        return write_jsonl_atomic(self.path, recs)

    def truncate_after(self, step: int, key: str = "step") -> None:
        """Keep the records whose ``key`` is <= ``step`` (records without it are kept)."""
        self.rewrite([r for r in self.read() if r.get(key, -1) <= step])

    def reset(self) -> None:
        """Empty the log."""
        atomic_write_text(self.path, "")
