"""Run-folder IO: atomic writes, append-only jsonl with torn-tail repair, sharded rows, fingerprints."""

from __future__ import annotations

import json

import pytest

from mathreason.runs import (
    RunFolder,
    ShardedRows,
    StageRecord,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    fingerprint,
    read_jsonl,
    write_jsonl_atomic,
)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "f.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_text(p, "second\n")
    assert p.read_text() == "second\n"
    assert [q.name for q in p.parent.iterdir()] == ["f.json"]


def test_append_jsonl_repairs_a_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, [{"i": 0}, {"i": 1}])
    with open(p, "a") as f:
        f.write('{"i": 2, "half')  # a write torn by kill -9
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}]  # readers ignore the torn tail
    append_jsonl(p, [{"i": 3}])
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}, {"i": 3}]
    assert p.read_text().endswith("\n")


def test_read_jsonl_names_file_and_line_of_a_bad_row(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2"):
        read_jsonl(p)


def test_sharded_rows_resume_and_reset(tmp_path):
    store = ShardedRows(tmp_path / "shards")
    assert store.open("k1", 3) == set()
    store.write(0, [{"x": 0}])
    store.write(2, [{"x": 2}, {"x": 3}])
    assert not store.complete("k1")
    # Same key and plan: finished shards are kept.
    assert ShardedRows(tmp_path / "shards").open("k1", 3) == {0, 2}
    store.write(1, [])
    assert store.complete("k1")
    assert store.read() == [{"x": 0}, {"x": 2}, {"x": 3}]
    # Another key: everything is discarded.
    assert store.open("k2", 3) == set()
    assert not (tmp_path / "shards" / "shard-000000.jsonl").exists()


def test_fingerprints_follow_content(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc")
    (d / "b.txt").write_text("x")
    f1 = fingerprint(d)
    assert fingerprint(d) == f1
    (d / "b.txt").write_text("y")
    f2 = fingerprint(d)
    assert f2 != f1 and f2.startswith("dir:")
    assert fingerprint(d / "a.bin").startswith("file:")
    assert fingerprint("org/some-model", revision="abc") == "hub:org/some-model@abc"
    # The on-disk cache gives the same answer and notices changes.
    cache = tmp_path / "cache.json"
    assert fingerprint(d, cache=cache) == f2
    assert json.loads(cache.read_text())
    (d / "a.bin").write_bytes(b"abcd")
    assert fingerprint(d, cache=cache) not in (f1, f2)


def test_run_folder_records_and_metrics(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_record(StageRecord("sft", "done", "key", inputs={"a": "b"}, outputs={"model": "dir:1"}, started=1.0))
    rec = run.record("sft")
    assert rec is not None and rec.status == "done" and rec.outputs == {"model": "dir:1"}
    run.log_metrics("sft", step=1, loss=2.0)
    run.log_metrics("sample", rows=3)
    assert [m["stage"] for m in run.metrics()] == ["sft", "sample"]
    assert run.metrics("sft")[0]["loss"] == 2.0
    assert write_jsonl_atomic(tmp_path / "x.jsonl", [{"a": 1}] * 3) == 3
