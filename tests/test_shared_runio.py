"""shared.runio: atomic whole-file writes (also under exceptions and kill -9) and append-only JSONL
with torn-line recovery."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shared import runio

RUNIO_FILE = Path(runio.__file__)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes_round_trip_and_leave_no_temporaries(tmp_path):
    p = tmp_path / "a" / "b" / "f.txt"
    runio.atomic_write_text(p, "héllo\r\n")
    assert p.read_bytes() == "héllo\r\n".encode()  # no newline translation
    runio.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    runio.atomic_write_json(p, {"b": 1, "a": [1, 2]})
    assert p.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'  # key order kept
    assert runio.write_jsonl_atomic(tmp_path / "rows.jsonl", ({"i": i} for i in range(3))) == 3
    assert runio.read_jsonl(tmp_path / "rows.jsonl") == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert _leftovers(p.parent) == [] and _leftovers(tmp_path) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        runio.atomic_write_text(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_an_exception_mid_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.jsonl"
    runio.atomic_write_text(p, "old\n")
    with pytest.raises(RuntimeError):
        with runio.atomic_open(p) as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert p.read_text() == "old\n" and _leftovers(tmp_path) == []

    def rows():
        yield {"i": 0}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runio.write_jsonl_atomic(p, rows())
    assert p.read_text() == "old\n" and _leftovers(tmp_path) == []
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        runio.atomic_write_json(p, {"x": object()})
    assert p.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f"
    runio.atomic_write_text(p, "old")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(runio.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        runio.atomic_write_text(p, "new")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with runio.atomic_open(tmp_path / "f", "a"):
            pass


def test_atomic_torch_save(tmp_path):
    p = tmp_path / "ck.pt"
    runio.atomic_torch_save({"w": torch.arange(3)}, p)
    assert torch.equal(torch.load(p, weights_only=True)["w"], torch.arange(3))
    with pytest.raises(Exception):
        runio.atomic_torch_save({"f": lambda: 0}, p)  # lambdas do not pickle: the save fails midway
    assert torch.equal(torch.load(p, weights_only=True)["w"], torch.arange(3)) and _leftovers(tmp_path) == []


def test_kill_9_during_atomic_writes_leaves_one_whole_version(tmp_path):
    """A writer killed at a random moment leaves the old or the new file, never a mix."""
    p = tmp_path / "big.txt"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('runio', {str(RUNIO_FILE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "versions = [c * 2_000_000 for c in 'ab']\n"
        f"m.atomic_write_text({str(p)!r}, versions[0]); print('ready', flush=True)\n"
        "i = 0\n"
        f"while True:\n    i += 1; m.atomic_write_text({str(p)!r}, versions[i % 2])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    text = p.read_text()
    assert text in ("a" * 2_000_000, "b" * 2_000_000)


# ---------------------------------------------------------------- JSON records


def test_json_default_handles_run_record_types():
    @dataclasses.dataclass
    class D:
        x: int

    rec = {
        "path": Path("a/b"),
        "arr": np.arange(3),
        "np_scalar": np.float32(0.5),
        "t": torch.tensor([1.5, 2.0]),
        "t0": torch.tensor(3),
        "set": {"b", "a"},
        "dc": D(1),
    }
    assert json.loads(runio.dumps(rec)) == {
        "path": "a/b", "arr": [0, 1, 2], "np_scalar": 0.5, "t": [1.5, 2.0], "t0": 3, "set": ["a", "b"], "dc": {"x": 1}
    }
    assert runio.dumps({"é": 1}) == '{"é": 1}'
    with pytest.raises(TypeError):
        runio.dumps({"x": object()})


# ---------------------------------------------------------------- append-only JSONL


def test_append_then_read(tmp_path):
    p = tmp_path / "sub" / "m.jsonl"
    assert runio.append_jsonl(p, [{"i": 0}, {"i": 1}]) == 2
    assert runio.append_jsonl(p, []) == 0
    runio.append_jsonl(p, [{"i": 2, "s": "é\n"}])
    assert runio.read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 2, "s": "é\n"}]
    assert list(runio.iter_jsonl(p)) == runio.read_jsonl(p)
    assert p.read_text().count("\n") == 3


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    p = tmp_path / "m.jsonl"
    runio.append_jsonl(p, [{"i": 0}, {"i": 1}])
    with open(p, "a") as f:
        f.write('{"i": 2, "ha')  # a write torn by kill -9
    assert runio.read_jsonl(p) == [{"i": 0}, {"i": 1}]
    runio.append_jsonl(p, [{"i": 3}])
    assert runio.read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 3}]
    assert p.read_text() == '{"i": 0}\n{"i": 1}\n{"i": 3}\n'


def test_torn_multibyte_character_and_torn_only_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"i": 0}\n{"s": "\xc3')  # cut inside a UTF-8 character
    assert runio.read_jsonl(p) == [{"i": 0}]
    q = tmp_path / "only.jsonl"
    q.write_text('{"half')
    assert runio.read_jsonl(q) == []
    assert runio.repair_torn_tail(q) == 6 and q.read_bytes() == b""


def test_a_complete_but_unterminated_record_is_kept(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"i": 0}\n{"i": 1}')  # written by hand, or cut exactly before the newline
    assert runio.read_jsonl(p) == [{"i": 0}, {"i": 1}]
    assert runio.repair_torn_tail(p) == 0 and p.read_text() == '{"i": 0}\n{"i": 1}\n'
    runio.append_jsonl(p, [{"i": 2}])
    assert runio.read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 2}]
    # A bare number is not prefix-safe ("12" could be the start of "123"): it counts as torn.
    p.write_text('{"i": 0}\n12')
    assert runio.read_jsonl(p) == [{"i": 0}]


def test_repair_walks_back_over_a_long_torn_line(tmp_path):
    p = tmp_path / "m.jsonl"
    runio.append_jsonl(p, [{"i": 0}])
    torn = '{"pad": "' + "x" * 200_000  # longer than the repair's read block
    with open(p, "a") as f:
        f.write(torn)
    assert runio.repair_torn_tail(p) == len(torn)
    assert p.read_text() == '{"i": 0}\n'
    assert runio.repair_torn_tail(p) == 0 and runio.repair_torn_tail(tmp_path / "missing") == 0


def test_a_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 3: not valid JSON"):
        runio.read_jsonl(p)
    p.write_bytes(b'{"a": 1}\n"\xff"\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: not valid UTF-8"):
        runio.read_jsonl(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        runio.read_jsonl(tmp_path / "nope.jsonl")
    assert runio.read_jsonl(tmp_path / "nope.jsonl", missing_ok=True) == []


def test_jsonl_log_resume_neither_loses_nor_duplicates(tmp_path):
    log = runio.JsonlLog(tmp_path / "run" / "metrics.jsonl")
    assert log.read() == []
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step})
    log.append({"event": "note"})  # records without a step are kept
    with open(log.path, "a") as f:
        f.write('{"step": 6, "lo')  # killed while logging step 6
    # Resume from the checkpoint of step 3: later records go, then the run logs steps 4.. again.
    log.truncate_after(3)
    assert [r.get("step") for r in log.read()] == [1, 2, 3, None]
    log.extend({"step": s} for s in (4, 5))
    assert [r.get("step") for r in runio.JsonlLog(log.path).read()] == [1, 2, 3, None, 4, 5]
    log.reset()
    assert log.read() == [] and log.path.exists()
