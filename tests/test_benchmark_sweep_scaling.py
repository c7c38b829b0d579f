"""benchmarks/sweep_scaling.py writes its JSON (one local configuration, no Ray: a smoke test, no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_sweep_scaling_benchmark_emits_json(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("sweep_scaling", REPO / "benchmarks" / "sweep_scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    assert mod.main(["--seeds", "0", "--workers", "1", "--no-ray", "--noop-jobs", "10", "--set", "posttrain.max_steps=2",
                     "--out", str(out), "--keep", str(tmp_path / "runs")]) == 0
    res = json.loads(out.read_text())
    assert res["points"] == 3 and res["sft_runs"] == 1 and res["set"] == ["posttrain.max_steps=2"]
    assert res["local"]["1"]["wall_s"] > 0 and res["local"]["1"]["efficiency"] == 1.0
    assert res["noop"]["process_pool_s_per_job"] > 0 and "ray" not in res
    rows = (tmp_path / "runs" / "local_w1" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
