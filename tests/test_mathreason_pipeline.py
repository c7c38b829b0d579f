"""The mathreason pipeline end to end on the tiny preset (CPU): sft -> sample -> grade -> rft -> eval,
skipping when up to date, resuming the sampling stage after a real SIGKILL, nested D_syn subsets, and
clear errors before any work for malformed configs and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from mathreason.cli import main
from mathreason.config import load_config
from mathreason.pipeline import run_pipeline
from mathreason.runs import read_jsonl
from mathreason.sampling import row_seed
from mathreason.config import PART1_STAGES
from mathreason.stages import STAGES, Context, run_stage

SAMPLE_KEYS = ["problem_id", "sample_index", "prompt_id", "text", "token_ids", "finish_reason", "stop_reason", "seed"]


def _sets(items: list[str]) -> list[str]:
    """``a.b=v`` overrides as command-line options: ``--set a.b=v`` each."""
    return [x for item in items for x in ("--set", item)]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "mathreason"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mathreason.cli"]


@pytest.mark.slow
def test_tiny_chain_end_to_end_then_skip_and_partial_rerun(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("tiny", [f"run_dir={run}"])
    t0 = time.time()
    results = run_pipeline(cfg, progress=False)
    elapsed = time.time() - t0
    print(f"tiny chain sft->sample->grade->rft->eval: {elapsed:.1f} s")
    assert [r["stage"] for r in results] == ["sft", "sample", "grade", "rft", "eval"]
    assert all(r["status"] == "done" for r in results)

    # Every stage recorded its key, inputs, output fingerprints and resolved config.
    for name in PART1_STAGES:
        rec = json.loads((run / name / "stage.json").read_text())
        assert rec["status"] == "done" and rec["outputs"] and rec["inputs"]
        assert (run / name / "config.yaml").exists()
    assert (run / "data" / "dsyn.jsonl").exists()

    # sample: one row per (question, sample index), deterministic per-row seeds.
    samples = read_jsonl(run / "sample" / "samples.jsonl")
    assert len(samples) == 16 * 4
    assert len({(r["problem_id"], r["sample_index"]) for r in samples}) == len(samples)
    for r in samples:
        assert list(r) == SAMPLE_KEYS
        assert r["seed"] == row_seed(cfg.seed, "sample", r["problem_id"], r["sample_index"])
        assert 1 <= len(r["token_ids"]) <= cfg.sample.max_tokens
    prompts = read_jsonl(run / "sample" / "prompts.jsonl")
    assert {p["prompt_id"] for p in prompts} == {r["prompt_id"] for r in samples}

    # grade: verdicts with extracted answers; pi_sft has learned (memorised) most of D_syn.
    graded = read_jsonl(run / "grade" / "graded.jsonl")
    assert len(graded) == len(samples) and all(isinstance(r["correct"], bool) for r in graded)
    gsum = json.loads((run / "grade" / "summary.json").read_text())
    assert gsum["accuracy"] == pytest.approx(sum(r["correct"] for r in graded) / len(graded))
    assert gsum["accuracy"] > 0.5, gsum

    # rft: deduplicated correct samples only, trained from the base model.
    data = read_jsonl(run / "rft" / "data.jsonl")
    correct = {(r["problem_id"], r["sample_index"]) for r in graded if r["correct"]}
    assert data and all((r["problem_id"], r["sample_index"]) in correct for r in data)
    assert len({r["text"].strip().lower() for r in data}) == len(data)
    assert (run / "rft" / "model" / "config.json").exists()
    rft_rec = json.loads((run / "rft" / "stage.json").read_text())
    assert rft_rec["inputs"]["init_model"] == json.loads((run / "sft" / "stage.json").read_text())["inputs"]["base_model"]

    # eval: per-sample rows with extracted answer and verdict, summary with pass@k and stderr.
    summary = json.loads((run / "eval" / "summary.json").read_text())
    for pol in ("sft", "rft"):
        s = summary[pol]["tiny"]
        assert s["greedy"]["problems"] == 8 and 0.0 <= s["greedy"]["accuracy"] <= 1.0 and "stderr" in s["greedy"]
        assert set(s["sampled"]["pass@k"]) == {"1", "4"}
        assert s["sampled"]["pass@k"]["1"]["value"] <= s["sampled"]["pass@k"]["4"]["value"]
        rows = read_jsonl(run / "eval" / pol / "tiny" / "sampled.jsonl")
        assert len(rows) == 8 * 4 and {"extracted", "correct", "reason", "gold"} <= set(rows[0])

    # metrics.jsonl: training curves and stage events.
    metrics = read_jsonl(run / "metrics.jsonl")
    losses = [m["loss"] for m in metrics if m["stage"] == "sft" and m.get("event") == "train" and "loss" in m]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert {m["stage"] for m in metrics if m.get("event") == "done"} == set(PART1_STAGES)

    # Up to date: everything is skipped.
    again = run_pipeline(cfg, progress=False)
    assert [r["status"] for r in again] == ["skipped"] * 5

    # A deleted output is restored from the stage's shards (same key: nothing is re-sampled).
    before = (run / "sample" / "samples.jsonl").read_text()
    (run / "sample" / "samples.jsonl").unlink()
    assert run_pipeline(cfg, ["sample"], progress=False)[0]["status"] == "done"
    assert (run / "sample" / "samples.jsonl").read_text() == before

    # A changed sampling config re-runs sampling and grading, not SFT.
    cfg2 = load_config("tiny", [f"run_dir={run}", "sample.temperature=1.0"])
    res2 = run_pipeline(cfg2, ["sft", "sample", "grade"], progress=False)
    assert [r["status"] for r in res2] == ["skipped", "done", "done"]
    assert read_jsonl(run / "sample" / "samples.jsonl") != samples


@pytest.mark.slow
def test_sampling_resumes_after_sigkill_with_rows_equal_to_an_uninterrupted_run(tmp_path):
    overrides = ["sample.policy=base", "sample.chunk_size=1", "sample.max_tokens=48", "data.tiny_train_size=12"]
    killed = tmp_path / "killed"
    cmd = _cli() + ["sample", "--preset", "tiny", "--set", f"run_dir={killed}", *_sets(overrides), "--quiet"]
    shards = killed / "sample" / "shards"
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if shards.is_dir() and any(p.name.startswith("shard-") for p in shards.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"sampling ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards.iterdir() if p.name.startswith("shard-")}
    print(f"SIGKILL after {len(done_before)} of 12 shards")
    assert 1 <= len(done_before) < 12, f"{len(done_before)} of 12 shards were done at the kill"
    assert not (killed / "sample" / "samples.jsonl").exists()
    assert json.loads((killed / "sample" / "stage.json").read_text())["status"] == "running"

    # Resume with the same command.
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name, (content, mtime) in done_before.items():  # finished shards were kept, not redone
        assert (shards / name).read_bytes() == content and (shards / name).stat().st_mtime_ns == mtime

    # An uninterrupted run of the same config elsewhere.
    ref = tmp_path / "reference"
    cfg = load_config("tiny", [f"run_dir={ref}", *overrides])
    assert run_stage(STAGES["sample"], Context(cfg, progress=False))["status"] == "done"

    resumed_rows = read_jsonl(killed / "sample" / "samples.jsonl")
    reference_rows = read_jsonl(ref / "sample" / "samples.jsonl")
    assert len(resumed_rows) == 12 * 4
    assert len({(r["problem_id"], r["sample_index"]) for r in resumed_rows}) == len(resumed_rows)
    assert resumed_rows == reference_rows
    assert json.loads((killed / "sample" / "stage.json").read_text())["status"] == "done"


def _tiny_dsyn(path: Path, n: int, bad_line: int | None = None) -> Path:
    rows = []
    for i in range(n):
        row = {"id": f"p{i}", "question": f"What is {i} plus 1?", "solution": f"{i}+1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
        if bad_line is not None and i + 1 == bad_line:
            del row["question"]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_nested_subsets(tmp_path):
    dsyn = _tiny_dsyn(tmp_path / "dsyn.jsonl", 20)

    def ids(size, seed=0):
        cfg = load_config("tiny", [f"run_dir={tmp_path / 'r'}", f"data.dsyn={dsyn}", f"data.subset_size={size}", f"data.subset_seed={seed}"])
        return [p.id for p in Context(cfg).dsyn()]

    s5, s10, s20 = ids(5), ids(10), ids(20)
    assert s10[:5] == s5 and s20[:10] == s10  # 1x inside 2x inside 4x
    assert sorted(s20) == sorted(f"p{i}" for i in range(20))
    assert ids(5, seed=1) != s5 and ids(5) == s5
    written = read_jsonl(tmp_path / "r" / "data" / "dsyn.jsonl")
    assert [r["id"] for r in written] == s5  # the last subset used is recorded in the run folder
    with pytest.raises(Exception, match=r"data\.subset_size: 50 but D_syn .* has only 20 problems"):
        ids(50)


def test_malformed_config_fails_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"preset: tiny\nrun_dir: {run}\nsample:\n  temperature: hot\n")
    assert main(["pipeline", "--config", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad} line 4: field sample.temperature: expected a number, got 'hot'" in err
    assert not run.exists()


def test_malformed_data_fails_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    dsyn = _tiny_dsyn(tmp_path / "dsyn.jsonl", 6, bad_line=4)
    assert main(["pipeline", "--preset", "tiny", "--set", f"run_dir={run}", "--set", f"data.dsyn={dsyn}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{dsyn}:4: field 'question': missing" in err
    assert not any((run / s).exists() for s in STAGES) and not (run / "metrics.jsonl").exists()


def test_missing_upstream_output_is_a_clear_error(tmp_path, capsys):
    assert main(["grade", "--preset", "tiny", "--set", f"run_dir={tmp_path / 'run'}", "--quiet"]) == 2
    assert "run `mathreason sample` first" in capsys.readouterr().err
    assert main(["eval", "--preset", "tiny", "--set", f"run_dir={tmp_path / 'run'}", "--quiet"]) == 2
    assert "run `mathreason sft` first" in capsys.readouterr().err


def test_status_and_show_config(tmp_path, capsys):
    assert main(["status", "--preset", "tiny", "--set", f"run_dir={tmp_path / 'run'}"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    expected = [("pref/per_step_dpo" if s == "pref" else s) for s in STAGES]  # one record per preference run
    assert [x["stage"] for x in lines] == expected and all(x["status"] == "not run" for x in lines)
    args = ["--preset", "tiny", "--sample.n", "3", "--set", f"run_dir={tmp_path / 'p'}"]
    assert main(["show-config", *args]) == 0
    shown = capsys.readouterr().out
    assert "n: 3" in shown
    # Every stage (and pipeline) also takes --print-config, as stargraph's commands do: same YAML, nothing run.
    for cmd in ("sft", "pipeline"):
        assert main([cmd, *args, "--print-config"]) == 0
        assert capsys.readouterr().out == shown
        assert not (tmp_path / "p").exists()
    assert main(["configs-dir"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert {"fsdp.yaml", "zero3.yaml", "ds_zero3.json"} <= {p.name for p in folder.iterdir()}


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import ClusterConfig

    folder = REPO_ROOT / "mathreason" / "configs"
    fsdp = ClusterConfig.from_yaml_file(str(folder / "fsdp.yaml"))
    zero3 = ClusterConfig.from_yaml_file(str(folder / "zero3.yaml"))
    assert str(fsdp.distributed_type).endswith("FSDP") and fsdp.fsdp_config["fsdp_version"] == 2
    assert str(zero3.distributed_type).endswith("DEEPSPEED") and zero3.deepspeed_config["zero_stage"] == 3
    ds = json.loads((folder / "ds_zero3.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_accumulation_steps"] == "auto"


@pytest.mark.slow
def test_pipeline_launches_training_distributed(tmp_path):
    """`pipeline.launcher` runs SFT as a 2-process DDP job (torchrun, gloo on CPU); one process records."""
    run = tmp_path / "run"
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    cmd = _cli() + [
        "pipeline", "--preset", "tiny", "--set", f"run_dir={run}", "--set", "pipeline.stages=[sft]", "--set", f"pipeline.launcher={launcher}",
        "--set", "sft.per_device_batch_size=4", "--set", "sft.epochs=4", "--quiet",
    ]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads((run / "sft" / "stage.json").read_text())
    assert rec["status"] == "done"
    assert rec["summary"]["processes"] == 2 and rec["summary"]["gradient_accumulation_steps"] == 1
    assert (run / "sft" / "model" / "model.safetensors").exists()
    done = [m for m in read_jsonl(run / "metrics.jsonl") if m.get("event") == "done"]
    assert len(done) == 1  # only rank 0 writes records and metrics


@pytest.mark.slow
def test_real_benchmarks_and_dsyn(tmp_path, data_dir, monkeypatch):
    """With the reference copies present: GSM8K train as D_syn (nested subsets), and evaluation of a model on
    GSM8K test, MATH-500 and MATH test with per-sample verdicts and pass@k."""
    monkeypatch.setenv("STEPCREDIT_DATA", str(data_dir))
    run = tmp_path / "run"
    base = ["data.dsyn=gsm8k", "data.subset_seed=3"]
    small = Context(load_config("tiny", [f"run_dir={run}", *base, "data.subset_size=3"])).dsyn()
    large = Context(load_config("tiny", [f"run_dir={run}", *base, "data.subset_size=6"])).dsyn()
    assert [p.id for p in large[:3]] == [p.id for p in small] and all(p.id.startswith("gsm8k/train/") for p in large)

    cfg = load_config(
        "tiny",
        [f"run_dir={run}", "eval.policies=[base]", "eval.benchmarks=[gsm8k, math500, math]", "eval.limit=2",
         "eval.num_samples=2", "eval.pass_k=[1, 2]", "eval.max_tokens=6"],
    )
    assert run_stage(STAGES["eval"], Context(cfg, progress=False))["status"] == "done"
    summary = json.loads((run / "eval" / "summary.json").read_text())["base"]
    assert set(summary) == {"gsm8k", "math500", "math"}
    for bench, s in summary.items():
        assert s["greedy"]["problems"] == 2 and set(s["sampled"]["pass@k"]) == {"1", "2"}
        rows = read_jsonl(run / "eval" / "base" / bench / "greedy.jsonl")
        assert len(rows) == 2 and all({"extracted", "correct", "gold", "reason"} <= set(r) for r in rows)
    golds = [r["gold"] for r in read_jsonl(run / "eval" / "base" / "math500" / "greedy.jsonl")]
    assert all(g.strip() for g in golds)


def test_unavailable_models_fail_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    assert main(["sft", "--preset", "tiny", "--set", f"run_dir={run}", "--set", f"model.name_or_path={tmp_path / 'missing'}"]) == 2
    assert "field model.name_or_path: model" in capsys.readouterr().err and not (run / "sft").exists()
    assert main(["sft", "--preset", "tiny", "--set", f"run_dir={run}", "--set", "model.name_or_path=no-such-org/no-such-model"]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
    assert main(["sample", "--preset", "tiny", "--set", f"run_dir={run}", "--set", f"sample.policy={tmp_path / 'nope'}"]) == 2
    assert "policy" in capsys.readouterr().err and not (run / "sample").exists()
