"""mathreason on Ray (a Ray instance on this machine, 2 CPUs) against one process: the `sample` and
`advantages` shards on 2 Ray actors (transformers backend, tiny model) give the rows of a single-process
run, also when an actor is killed mid-stage; `scaling.executor: ray` gives the local points and skips
finished ones. Also `tracking.backend: tensorboard` of a tiny SFT (event files = metrics.jsonl).
Skipped where Ray is not installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mathreason.cli import main
from mathreason.config import load_config
from mathreason.pipeline import run_pipeline
from mathreason.runs import read_jsonl

pytestmark = pytest.mark.slow
OVER = ["advantages.chunk_size=2", "advantages.rollouts=4", "advantages.schedule=all", "advantages.select=all", "sample.chunk_size=4"]
RAY = ["actors.count=2", "actors.cpus=1", "ray.num_cpus=2"]



def _set(overrides) -> list[str]:
    """`--set k=v` for each override (the CLI grammar)."""
    return [a for kv in overrides for a in ("--set", kv)]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.delenv("STEPCREDIT_INJECT_FAULTS", raising=False)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="needs Ray: pip install '.[cluster]'")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A tiny run folder after sft, sample and grade (one process)."""
    base = tmp_path_factory.mktemp("cluster") / "base"
    run_pipeline(load_config("tiny", [f"run_dir={base}", *OVER]), ["sft", "sample", "grade"], progress=False)
    return base


def _copy(src: Path, dst: Path, *drop: str) -> Path:
    shutil.copytree(src, dst)
    for d in drop:
        shutil.rmtree(dst / d, ignore_errors=True)
    return dst


def test_sample_shards_on_two_ray_actors_give_the_single_process_rows(cluster, graded, tmp_path):
    run = _copy(graded, tmp_path / "ray", "sample", "grade")
    assert main(["sample", "--preset", "tiny", "--set", f"run_dir={run}", *_set(OVER), *_set(RAY), "--quiet"]) == 0
    assert read_jsonl(run / "sample" / "samples.jsonl") == read_jsonl(graded / "sample" / "samples.jsonl")
    m = json.loads((run / "sample" / "shards" / "manifest.json").read_text())
    assert m["num_shards"] >= 4 and m == json.loads((graded / "sample" / "shards" / "manifest.json").read_text()) | {"created": m["created"]}


def test_advantages_on_two_ray_actors_match_one_process_and_a_killed_actors_shard_is_redone(cluster, graded, tmp_path, monkeypatch):
    whole = _copy(graded, tmp_path / "whole")
    assert main(["advantages", "--preset", "tiny", "--set", f"run_dir={whole}", *_set(OVER), "--quiet"]) == 0
    run = _copy(graded, tmp_path / "ray")
    # the actor computing shard 1 of round 0 dies (os._exit) on its first attempt
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "round-000/shard-000001:1:exit")
    assert main(["advantages", "--preset", "tiny", "--set", f"run_dir={run}", *_set(OVER), *_set(RAY), "--quiet"]) == 0
    rounds = run / "advantages" / "rounds" / "round-000"
    assert len((rounds / ".injected_faults").read_text().splitlines()) == 1  # the actor was killed once
    assert read_jsonl(run / "advantages" / "advantages.jsonl") == read_jsonl(whole / "advantages" / "advantages.jsonl")
    # nothing lost or duplicated: the shards hold every prefix of the plan once, as in the one-process run
    total = json.loads((rounds / "manifest.json").read_text())["num_shards"]
    assert total >= 3
    for folder in (rounds, whole / "advantages" / "rounds" / "round-000"):
        prefixes = [r["prefix"] for i in range(total) for r in read_jsonl(folder / f"shard-{i:06d}.jsonl")]
        assert len(prefixes) == len(set(prefixes))
    assert all(read_jsonl(rounds / f"shard-{i:06d}.jsonl") == read_jsonl(whole / "advantages" / "rounds" / "round-000" / f"shard-{i:06d}.jsonl") for i in range(total))
    s, w = (json.loads((d / "advantages" / "summary.json").read_text()) for d in (run, whole))
    assert s["rollouts_generated_this_run"] == w["rollouts_generated_this_run"] == s["rollouts_generated"]  # the dead actor's work is not counted
    assert {k: v for k, v in s.items() if k != "seconds"} == {k: v for k, v in w.items() if k != "seconds"}


def test_scaling_on_the_ray_executor_gives_the_local_points_and_skips_finished_ones(cluster, tmp_path, capsys):
    def study(root: Path, *extra: str) -> list[dict]:
        args = ["--preset", "tiny", "--set", f"run_dir={root}", "--set", "scaling.sizes=[6,10]", "--set", "scaling.methods=[sft]", *_set(extra), "--quiet"]
        assert main(["scaling", *args]) == 0
        return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"seed"')]

    local = study(tmp_path / "local")
    ray_pts = study(tmp_path / "ray", "scaling.executor=ray", "ray.cpus_per_task=1")
    assert [(p["seed"], p["size"], p["stages"]) for p in ray_pts] == [(p["seed"], p["size"], p["stages"]) for p in local]
    for n in (6, 10):
        a, b = (json.loads((tmp_path / s / "seed-0" / f"size-{n}" / "eval" / "summary.json").read_text()) for s in ("local", "ray"))
        assert a == b
    again = study(tmp_path / "ray", "scaling.executor=ray", "ray.cpus_per_task=1")
    assert all(set(p["stages"].values()) == {"skipped"} for p in again)


def test_tiny_sft_with_tensorboard_tracking_writes_the_scalars_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["sft", "--preset", "tiny", "--set", f"run_dir={run}", "--set", "tracking.backend=tensorboard", "--set", "sft.logging_steps=1", "--quiet"]) == 0
    recs = [r for r in read_jsonl(run / "metrics.jsonl") if r["stage"] == "sft" and r.get("event") == "train"]
    skip = {"stage", "event", "time", "step"}
    expected = {(f"train/{k}", r["step"]): v for r in recs for k, v in r.items() if k not in skip and isinstance(v, (int, float))}
    acc = EventAccumulator(str(run / "tb" / "sft"))
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert len(expected) >= 8 and set(got) == set(expected)
    assert all(got[k] == pytest.approx(v, rel=1e-5) for k, v in expected.items())
    # the non-training records (stage summaries) go to tb/stages
    stages = EventAccumulator(str(run / "tb" / "stages"))
    stages.Reload()
    assert "sft/seconds" in stages.Tags()["scalars"]


def test_a_scaling_point_that_keeps_failing_is_reported_and_the_others_run(tmp_path, monkeypatch, capsys):
    """Local executor (no Ray needed): retries, then failed.json and exit status 1; the re-run clears it."""
    root = tmp_path / "study"
    args = ["scaling", "--preset", "tiny", "--set", f"run_dir={root}", "--set", "scaling.sizes=[6,10]", "--set", "scaling.methods=[sft]", "--set", "scaling.retries=1", "--quiet"]
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "size-10:9")
    assert main(args) == 1
    assert "seed-0/size-10: 2 attempt(s)" in capsys.readouterr().err
    failed = json.loads((root / "failed.json").read_text())
    assert [(f["key"], f["attempts"]) for f in failed] == [("seed-0/size-10", 2)] and "InjectedFault" in failed[0]["error"]
    assert (root / "seed-0" / "size-6" / "point.json").exists() and not (root / "seed-0" / "size-10" / "point.json").exists()
    monkeypatch.delenv("STEPCREDIT_INJECT_FAULTS")
    assert main(args) == 0
    pts = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"seed"')]
    assert [set(p["stages"].values()) for p in pts] == [{"skipped"}, {"done"}]  # only the failed point ran
    assert not (root / "failed.json").exists()
