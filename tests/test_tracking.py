"""Experiment tracking: the metrics.jsonl mirror (new lines only, torn lines, a truncated file), and tiny
star-graph runs with ``--tracking tensorboard`` and ``--tracking wandb`` (offline, no network) whose
tracker holds exactly the scalars of ``metrics.jsonl``. (The math SFT's tensorboard test is in
tests/test_mathreason_cluster.py.)"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from shared.tracking import MetricsMirror, TrackingConfig, scalars
from stargraph import cli, runio
from stargraph.graphs import make_splits


class _Mem:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.closed = False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    make_splits.cache_clear()
    yield
    make_splits.cache_clear()


def test_the_mirror_sends_complete_new_records_once_and_survives_a_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    mem = _Mem()
    m = MetricsMirror(path, mem, interval_s=3600)
    assert m.poll() == 0  # no file yet
    path.write_text(json.dumps({"step": 0, "loss": 2.0, "time_s": 1.0, "ok": True, "name": "x"}) + "\n" + '{"step": 1, "lo')
    assert m.poll() == 1 and mem.logged == [(0, {"loss": 2.0})]  # torn line left for later; time, bools, text dropped
    with open(path, "a") as f:
        f.write('ss": 1.5}\n{"step": 2, "loss": NaN, "acc": 0.5}\n')
    assert m.poll() == 2 and mem.logged[1:] == [(1, {"loss": 1.5}), (2, {"acc": 0.5})]
    assert m.poll() == 0
    # a resumed run rewrites the file shorter (records after its checkpoint dropped), then appends again
    runio.atomic_write_text(path, json.dumps({"step": 0, "loss": 2.0}) + "\n" + json.dumps({"step": 1, "loss": 1.5}) + "\n")
    with open(path, "a") as f:
        f.write(json.dumps({"step": 2, "loss": 1.2, "acc": 0.5}) + "\n" + json.dumps({"step": 3, "loss": 1.0}) + "\n")
    assert m.poll() == 1 and mem.logged[-1] == (3, {"loss": 1.0})  # steps already sent are not sent again
    m.stop()
    assert mem.closed


def test_tracking_config_rejects_an_unknown_backend():
    from stargraph import configlib
    from stargraph.config import SweepConfig, resolve

    with pytest.raises(configlib.ConfigError, match="tracking.backend"):
        resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={"tracking": configlib.Sourced({"backend": "mlflow"}, "--set")})
    assert TrackingConfig().enabled is False


def test_tensorboard_event_files_hold_the_scalars_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "sft"
    assert cli.main(["train", str(run), "--preset", "tiny", "--tracking", "tensorboard"]) == 0
    expected = {(k, r["step"]): v for r in runio.read_jsonl(run / "metrics.jsonl") for k, v in scalars(r).items()}
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    got = {(k, e.step): e.value for k in acc.Tags()["scalars"] for e in acc.Scalars(k)}
    assert len(expected) > 10 and set(got) == set(expected)
    assert all(got[k] == pytest.approx(v, rel=1e-6, abs=1e-6) for k, v in expected.items())  # float32 in event files


def _wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline ``run-*.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    b = run_file.read_bytes()
    assert b[:4] == b":W&B"
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(b):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", b[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        data, pos = b[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 1:
            records.append(data)
        elif kind in (2, 3):
            buf = (buf if kind == 3 else b"") + data
        elif kind == 4:
            records.append(buf + data)
    rows = []
    for data in records:
        r = pb.Record()
        r.ParseFromString(data)
        if r.WhichOneof("record_type") == "history":
            rows.append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in r.history.item})
    return rows


def test_wandb_offline_run_holds_the_scalars_of_metrics_jsonl(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for k in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(k, raising=False)
    run = tmp_path / "sft"
    assert cli.main(["train", str(run), "--preset", "tiny", "--tracking", "wandb"]) == 0
    [run_file] = list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # offline: nothing sent anywhere
    hist = {row["_step"]: {k: v for k, v in row.items() if not k.startswith("_")} for row in _wandb_history(run_file)}
    recs = runio.read_jsonl(run / "metrics.jsonl")
    assert sorted(hist) == [r["step"] for r in recs] and len(recs) >= 2
    for r in recs:
        assert hist[r["step"]] == pytest.approx(scalars(r))
    assert os.environ.get("WANDB_MODE") is None  # the run's mode came from the config, not the environment


def test_trackio_local_run_holds_the_scalars_of_metrics_jsonl(tmp_path):
    """trackio (the [tracking] extra; skipped without it) logs to a local SQLite database under TRACKIO_DIR,
    which trackio reads once at import: the run is a fresh process."""
    pytest.importorskip("trackio")
    import sqlite3
    import subprocess
    import sys

    from conftest import REPO_ROOT

    run = tmp_path / "sft"
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "stargraph.cli", "train", str(run), "--preset", "tiny", "--tracking", "trackio"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [db] = list((tmp_path / "trackio").glob("*.db"))
    with sqlite3.connect(db) as con:
        rows = {step: json.loads(m) for step, m in con.execute("select step, metrics from metrics")}
    recs = runio.read_jsonl(run / "metrics.jsonl")
    assert sorted(rows) == [r["step"] for r in recs] and len(recs) >= 2
    for r in recs:
        assert set(scalars(r)) <= set(rows[r["step"]])
        assert {k: rows[r["step"]][k] for k in scalars(r)} == pytest.approx(scalars(r))
