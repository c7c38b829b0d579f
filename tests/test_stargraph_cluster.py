"""``stargraph sweep`` on the Ray executor (a Ray instance on this machine, 2 CPUs) against the local one:
the same ``sweep.csv`` rows, a point that fails once is retried, a point that keeps failing is reported,
and an interrupted sweep resumes with only the missing points. Experiment tracking of a tiny run
is in tests/test_tracking.py. Skipped where Ray is not installed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stargraph import cli, runio
from stargraph.graphs import make_splits

REPO = Path(__file__).resolve().parent.parent
ray = pytest.importorskip("ray", reason="needs Ray: pip install '.[cluster]'")

pytestmark = pytest.mark.slow
SEED0 = ["--seeds", "[0]"]  # one seed: 1 SFT run + 3 grid points
TIMING = ("wall_time_s", "cpu_time_s")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module; the sweeps join it (``ray.is_initialized()``)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STEPCREDIT_INJECT_FAULTS", raising=False)
    make_splits.cache_clear()
    yield
    make_splits.cache_clear()


def _rows(run: Path) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(run / "sweep.csv"))]
    return sorted(rows, key=lambda r: r["run_dir"])


def _sweep(run: Path, *extra: str) -> int:
    return cli.main(["sweep", str(run), "--preset", "tiny_sweep", *SEED0, *extra])


def test_ray_sweep_gives_the_local_rows_and_retries_a_failing_point(tmp_path, monkeypatch, cluster):
    assert _sweep(tmp_path / "local", "--workers", "1") == 0
    # the Ray sweep, with one point made to fail on its first attempt
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "per_step_dpo_fixed:1")
    tb = ["--tracking.backend", "tensorboard"] if _has_tensorboard() else []
    assert _sweep(tmp_path / "ray", "--executor", "ray", *tb) == 0
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local") and len(_rows(tmp_path / "local")) == 3
    victim = next((tmp_path / "ray" / "points").glob("*per_step_dpo_fixed*"))
    assert len((victim / ".injected_faults").read_text().splitlines()) == 1  # it failed once ...
    assert runio.is_done(victim) and not (tmp_path / "ray" / "failed.json").exists()  # ... and then succeeded
    assert not (tmp_path / "local" / "failed.json").exists()
    if tb:  # tracking from the Ray workers: every run folder's event files hold its metrics.jsonl
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        from shared.tracking import scalars

        for d in [p.parent for p in (tmp_path / "ray").glob("*/*/DONE")]:
            acc = EventAccumulator(str(d / "tb"))
            acc.Reload()
            got = {(k, e.step) for k in acc.Tags()["scalars"] for e in acc.Scalars(k)}
            assert got == {(k, r["step"]) for r in runio.read_jsonl(d / "metrics.jsonl") for k in scalars(r)}, d


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except Exception:
        return False
    return True


def test_a_point_that_keeps_failing_is_reported_not_dropped(tmp_path, monkeypatch, capsys, cluster):
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "sft_resampled:9")
    run = tmp_path / "ray"
    assert _sweep(run, "--executor", "ray", "--retries", "2") == 1
    err = capsys.readouterr().err
    assert "1 job(s) failed" in err and "sft_resampled" in err and "3 attempt(s)" in err
    failed = json.loads((run / "failed.json").read_text())
    assert [f["key"] for f in failed] == ["g2-3-10_n200_base_sft_resampled_init10_s0"] and failed[0]["attempts"] == 3
    assert "InjectedFault" in failed[0]["error"]
    assert len(_rows(run)) == 2  # the other points finished and are in sweep.csv
    # the fault is gone: the re-run runs only that point and clears the report
    monkeypatch.delenv("STEPCREDIT_INJECT_FAULTS")
    assert _sweep(run, "--executor", "ray") == 0
    assert len(_rows(run)) == 3 and not (run / "failed.json").exists()


def test_an_interrupted_ray_sweep_resumes_with_only_the_missing_points(tmp_path, cluster):
    """Ctrl-C (SIGINT) while one point hangs: the sweep exits 130 at once; the re-run runs that point only."""
    run = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "stargraph.cli", "sweep", str(run), "--preset", "tiny_sweep", *SEED0,
           "--executor", "ray", "--ray.address", cluster]
    env = {**os.environ, "STEPCREDIT_CACHE": str(tmp_path / "cache"), "STEPCREDIT_INJECT_FAULTS": "sft_resampled:1:hang"}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(run.glob("points/*/DONE"))) < 2:  # the two other points are finished ...
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
            time.sleep(0.5)
        hung = run / "points" / "g2-3-10_n200_base_sft_resampled_init10_s0"
        while not (hung / ".injected_faults").exists():  # ... and the third one hangs
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out and "cancelling 1 job(s)" in out
    assert not runio.is_done(hung)
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("*/*/DONE")}  # the SFT run and two points
    assert len(stamps) == 3
    env.pop("STEPCREDIT_INJECT_FAULTS")
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 grid points (1 to run)" in out.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and runio.is_done(hung)
    assert len(_rows(run)) == 3
