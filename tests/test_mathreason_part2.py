"""mathreason part 2 on the tiny preset (CPU): advantages -> pairs -> per-step DPO and every baseline ->
eval from one config, their invariants, kill -9 and resume of the advantages stage, and the scaling
runner with its report. The tiny model is random and memorises 16 one-step problems: these tests prove
the plumbing and the invariants, not that per-step credit helps (issue 11's learnable task does that)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mathreason.cli import main
from mathreason.config import load_config
from mathreason.credit import prefix_key
from mathreason.methods import METHODS, plan, run_plan
from mathreason.pipeline import run_pipeline
from mathreason.runs import read_jsonl

ALL = list(METHODS)


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


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Every method of the registry trained and evaluated in one run folder, from one config."""
    run = tmp_path_factory.mktemp("part2") / "run"
    cfg = load_config("tiny", [f"run_dir={run}"])
    t0 = time.time()
    results = run_plan(plan(cfg, ALL), progress=False)
    print(f"tiny chain through every part-2 stage and method: {time.time() - t0:.1f} s")
    return run, cfg, results


@pytest.mark.slow
def test_every_stage_and_method_runs_from_one_config(chain):
    run, cfg, results = chain
    labels = [r["stage"] for r in results]
    prefs = [f"pref/{METHODS[m].pref['name']}" for m in ALL if METHODS[m].pref]
    assert labels == ["sft", "sample", "grade", "advantages", "pairs", *prefs, "rft", "rft_adv", "eval"]
    assert all(r["status"] == "done" for r in results)
    for label in labels:
        rec = json.loads((run / label / "stage.json").read_text())
        assert rec["status"] == "done" and (run / label / "config.yaml").exists()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    tags = {"sft", "rft", "rft_adv"} | {p.replace("/", "-") for p in prefs}
    assert set(summary) == tags and all(summary[t]["tiny"]["greedy"]["problems"] == 8 for t in tags)
    # The methods needing every step's value made the advantages stage value every prefix of every response.
    adv_cfg = json.loads((run / "advantages" / "summary.json").read_text())
    assert adv_cfg["schedule"] == "all" and adv_cfg["responses"] > adv_cfg["negatives"]
    # The pairs summary says how many max-edit pairs are random pairs too (all of them when each question has
    # one positive and one negative: then dpo and dpo_max_edit are one arm).
    pairs = json.loads((run / "pairs" / "summary.json").read_text())
    me = read_jsonl(run / "pairs" / "max_edit_distance.jsonl")
    rnd = {(r["problem_id"], str(r["chosen"]), str(r["rejected"])) for r in read_jsonl(run / "pairs" / "random.jsonl")}
    if me:
        shared = sum((r["problem_id"], str(r["chosen"]), str(r["rejected"])) in rnd for r in me)
        assert pairs["max_edit_pairs_also_random"] == pytest.approx(shared / len(me))
    # Up to date: the whole plan is skipped.
    again = run_plan(plan(load_config("tiny", [f"run_dir={run}"]), ALL), progress=False)
    assert all(r["status"] == "skipped" for r in again)


@pytest.mark.slow
def test_advantage_rows_hold_the_invariants(chain):
    run, cfg, _ = chain
    graded = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(run / "grade" / "graded.jsonl")}
    prompts = {r["problem_id"]: r["prompt_ids"] for r in read_jsonl(run / "sample" / "prompts.jsonl")}
    rows = read_jsonl(run / "advantages" / "advantages.jsonl")
    summary = json.loads((run / "advantages" / "summary.json").read_text())
    K = cfg.advantages.rollouts
    assert rows and summary["responses"] == len(rows)
    evaluated = set()
    for row in rows:
        s = graded[(row["problem_id"], row["sample_index"])]
        ids, ends = s["token_ids"], row["step_ends"]
        # Step ends cut the sample's own ids: strictly increasing, the last one is the whole response.
        assert ends[-1] == len(ids) and all(a < b for a, b in zip([0] + ends, ends))
        assert s["finish_reason"] == "stop"
        # Q of the last prefix is the sample's reward; no rollouts from it.
        assert row["q"][-1] == row["reward"] == (1.0 if s["correct"] else 0.0)
        assert row["successes"][-1] is None
        if row["pit"] >= 0:  # a pit always loses value (a positive can have one too: it recovered later)
            assert row["advantages"][row["pit"]] < 0
            assert row["q"][row["pit"]] == min(q for q in row["q"] if q is not None)
        if row["v_successes"] is not None:
            evaluated.add(prefix_key(prompts[row["problem_id"]], []))
        for i, n in enumerate(row["successes"]):
            if n is not None:
                evaluated.add(prefix_key(prompts[row["problem_id"]], ids[: ends[i]]))
                assert 0 <= n <= K and row["q"][i] == (1.0 if n > 0 else 0.0)
    # Rollouts = unique prefixes x K: identical prefixes (e.g. the question's V) were rolled out once.
    assert summary["unique_prefixes"] == len(evaluated)
    assert summary["rollouts_generated"] == K * len(evaluated)
    assert sum(r["rollouts"] for r in rows) > summary["rollouts_generated"]  # V is shared by a question's responses


@pytest.mark.slow
def test_pairs_are_token_ids_and_truncated_rejected_sides_have_no_eos(chain):
    run, cfg, _ = chain
    from mathreason.models import load_tokenizer

    eos = load_tokenizer(run / "sft" / "model").eos_token_id
    graded = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(run / "grade" / "graded.jsonl")}
    adv = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(run / "advantages" / "advantages.jsonl")}
    full = read_jsonl(run / "pairs" / "first_pit_full.jsonl")
    assert full
    for p in full:
        neg = adv[(p["problem_id"], p["rejected_source"]["sample_index"])]
        ids = graded[(p["problem_id"], p["rejected_source"]["sample_index"])]["token_ids"]
        rejected = [t for step in p["rejected"] for t in step]
        assert p["prefix"] == [] and len(p["rejected"]) == p["pit"] + 1 == neg["pit"] + 1
        assert rejected == ids[: neg["step_ends"][p["pit"]]] or (p["pit"] == neg["num_steps"] - 1 and rejected[:-1] == ids)
        if p["pit"] < neg["num_steps"] - 1:
            assert eos not in rejected  # truncated at the pit: never an EOS
        else:
            assert rejected[-1] == eos  # the whole response ended
        chosen = [t for step in p["chosen"] for t in step]
        assert chosen[-1] == eos and graded[(p["problem_id"], p["chosen_source"]["sample_index"])]["correct"]
    for p in read_jsonl(run / "pairs" / "first_pit_shared_prefix.jsonl"):
        assert len(p["rejected"]) == 1 and len(p["prefix"]) == p["pit"]
        assert [t for step in p["chosen"] for t in step][-1] == eos
    for kind in ("random", "max_edit_distance"):
        for p in read_jsonl(run / "pairs" / f"{kind}.jsonl"):
            assert p["prefix"] == [] and [t for s in p["chosen"] for t in s][-1] == eos


@pytest.mark.slow
def test_first_per_step_dpo_loss_is_log2_and_the_reference_is_computed_once(chain):
    run, cfg, _ = chain
    metrics = read_jsonl(run / "metrics.jsonl")
    first = next(m for m in metrics if m["stage"] == "pref/per_step_dpo" and m.get("event") == "train" and "loss" in m)
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert k in first
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    # per-step IPO and DPO-Positive train on the same pairs from the same reference: the cache is reused.
    recs = {p: json.loads((run / "pref" / p / "stage.json").read_text())["summary"] for p in ("per_step_dpo", "per_step_ipo", "per_step_dpop")}
    assert recs["per_step_dpo"]["reference"] == "computed"
    assert recs["per_step_ipo"]["reference"] == recs["per_step_dpop"]["reference"] == "cache"
    later = [m for m in metrics if m["stage"] == "pref/per_step_dpo" and m.get("event") == "train" and "loss" in m]
    assert later[-1]["rewards/margins"] > 0  # training separates chosen from rejected


@pytest.mark.slow
def test_advantage_filtered_rft_drops_the_bottom_half(chain):
    run, _, _ = chain
    data = read_jsonl(run / "rft_adv" / "data.jsonl")
    rows = read_jsonl(run / "advantages" / "advantages.jsonl")
    mins = sorted(min(a for a in r["advantages"] if a is not None) for r in rows)
    kept = sorted(d["min_advantage"] for d in data)
    assert len(kept) == len(mins) - len(mins) // 2
    assert kept[0] >= mins[len(mins) // 2 - 1]


def test_full_mask_pairs_through_the_trainer_path_give_exactly_dpo_loss(tmp_path):
    """Per-step DPO computed as the trainer does (one padded forward pass over chosen and rejected rows) with
    masks covering whole responses equals shared.losses.dpo_loss on sequence log-probs of unpadded rows."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mathreason.preference import collate_pairs, pair_logps
    from shared.losses import dpo_loss, per_step_dpo_loss
    from shared.pairs import Pair, pair_token_rows

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=50, max_position_embeddings=64)).double().eval()
    pairs = [((1, 2, 3), ((4, 5), (6,)), ((7,), (8, 9, 10, 11))), ((1, 2), ((12,),), ((13, 14), (15,)))]
    items = [{"rows": pair_token_rows(p, Pair((), c, r, 0, 0))} for p, c, r in pairs]
    batch = collate_pairs(items, pad_id=0)
    with torch.no_grad():
        pi_c, pi_r = pair_logps(model, batch)
    ref_c, ref_r = pi_c * 0.7, pi_r * 1.3  # any reference
    ours = per_step_dpo_loss(pi_c, pi_r, ref_c, ref_r, batch["chosen_mask"], batch["rejected_mask"], beta=0.3)

    def seq_logp(ids, n_prompt):
        ids = torch.tensor([ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        return lp[n_prompt - 1 :].sum()

    pc = torch.stack([seq_logp(list(p) + [t for s in c for t in s], len(p)) for p, c, _ in pairs])
    pr = torch.stack([seq_logp(list(p) + [t for s in r for t in s], len(p)) for p, _, r in pairs])
    rc = torch.where(batch["chosen_mask"], ref_c, torch.zeros_like(ref_c)).sum(-1)
    rr = torch.where(batch["rejected_mask"], ref_r, torch.zeros_like(ref_r)).sum(-1)
    ref = dpo_loss(pc.float(), pr.float(), rc, rr, beta=0.3)  # token_logprobs normalises in float32
    assert torch.allclose(ours.loss_B, ref.loss_B, atol=1e-5) and torch.allclose(ours.margins_B, ref.margins_B, atol=1e-5)
    # Padding matters: a wrong mask alignment (unshifted) gives a different loss.
    bad = per_step_dpo_loss(pi_c, pi_r, ref_c, ref_r, batch["chosen_mask"].roll(1, 1), batch["rejected_mask"], beta=0.3)
    assert not torch.allclose(bad.loss_B, ref.loss_B, atol=1e-3)


@pytest.mark.slow
def test_advantages_resume_after_sigkill_with_rows_equal_to_an_uninterrupted_run(chain, tmp_path):
    base = tmp_path / "base"
    over = ["advantages.chunk_size=1", "advantages.rollouts=4", "advantages.schedule=all", "advantages.select=all"]
    # pi_sft, its samples and their grades are the chain's (the same tiny config but for the advantages section)
    for folder in ("base", "data", "sft", "sample", "grade"):
        shutil.copytree(chain[0] / folder, base / folder)
    up = run_pipeline(load_config("tiny", [f"run_dir={base}", *over]), ["sft", "sample", "grade"], progress=False)
    assert [r["status"] for r in up] == ["skipped"] * 3
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(base, whole)
    shutil.copytree(base, killed)
    assert main(["advantages", "--preset", "tiny", "--set", f"run_dir={whole}", *_sets(over), "--quiet"]) == 0
    rounds = killed / "advantages" / "rounds" / "round-000"
    cmd = _cli() + ["advantages", "--preset", "tiny", "--set", f"run_dir={killed}", *_sets(over), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if rounds.is_dir() and any(p.name.startswith("shard-") for p in rounds.iterdir()):
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"advantages ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total = json.loads((rounds / "manifest.json").read_text())["num_shards"]
    done = sorted(p.name for p in rounds.iterdir() if p.name.startswith("shard-"))
    print(f"SIGKILL after {len(done)} of {total} shards")
    assert 1 <= len(done) < total
    assert not (killed / "advantages" / "advantages.jsonl").exists()
    before = {n: (rounds / n).read_bytes() for n in done}
    assert main(["advantages", "--preset", "tiny", "--set", f"run_dir={killed}", *_sets(over), "--quiet"]) == 0
    # Finished shards were kept as they were, the rest computed; the rows equal the uninterrupted run's.
    assert all((rounds / n).read_bytes() == b for n, b in before.items())
    assert read_jsonl(killed / "advantages" / "advantages.jsonl") == read_jsonl(whole / "advantages" / "advantages.jsonl")
    s = json.loads((killed / "advantages" / "summary.json").read_text())
    assert s["rollouts_generated_this_run"] == 4 * (total - len(done))  # only the missing shards were rolled out again
    whole_s = json.loads((whole / "advantages" / "summary.json").read_text())
    drop = ("seconds", "rollouts_generated_this_run", "rollout_tokens_this_run")
    assert {k: v for k, v in s.items() if k not in drop} == {k: v for k, v in whole_s.items() if k not in drop}


@pytest.mark.slow
def test_scaling_and_its_report_on_three_tiny_sizes(tmp_path, capsys):
    root = tmp_path / "study"
    args = ["--preset", "tiny", "--set", f"run_dir={root}", "--set", "scaling.sizes=[6,10,16]", "--set", "scaling.methods=[sft,rft,per_step_dpo]", "--quiet"]
    assert main(["scaling", *args]) == 0
    points = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{\"seed\"")]
    assert [(p["seed"], p["size"]) for p in points] == [(0, 6), (0, 10), (0, 16)]
    for n in (6, 10, 16):
        d = root / "seed-0" / f"size-{n}"
        assert len(read_jsonl(d / "data" / "dsyn.jsonl")) == n and (d / "point.json").exists()
        assert set(json.loads((d / "eval" / "summary.json").read_text())) == {"sft", "rft", "pref-per_step_dpo"}
    # Nested subsets: the 6 problems of the smallest size are among the 10 of the next.
    small = {r["id"] for r in read_jsonl(root / "seed-0" / "size-6" / "data" / "dsyn.jsonl")}
    assert small <= {r["id"] for r in read_jsonl(root / "seed-0" / "size-10" / "data" / "dsyn.jsonl")}
    # Resuming a finished study skips every stage.
    assert main(["scaling", *args]) == 0
    again = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{\"seed\"")]
    assert all(set(p["stages"].values()) == {"skipped"} for p in again)
    r = main(["scaling-report", *args[:-1]])
    out = capsys.readouterr()
    assert r == 0, out.err
    rep = json.loads((root / "report" / "report.json").read_text())
    assert rep["benchmark"] == "tiny" and {x["method"] for x in rep["rows"]} == {"sft", "rft", "per_step_dpo"}
    for f in ("report.csv", "scaling.png", "efficiency.png"):
        assert (root / "report" / f).stat().st_size > 0
    assert "per_step_dpo" in out.out


@pytest.mark.slow
def test_preference_training_resumes_after_a_crash_and_merges_lora(chain, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from mathreason.preference import pair_items, train_preference

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated crash")

    run, cfg, _ = chain
    items, dropped = pair_items(read_jsonl(run / "pairs" / "first_pit_full.jsonl"), 256)
    assert items and dropped == 0
    over = ["pref.train.max_steps=6", "pref.train.batch_size=2", "pref.train.per_device_batch_size=2", "pref.train.save_steps=2",
            "pref.train.save_total_limit=3", "pref.train.lr_scheduler=linear"]
    pref = load_config("tiny", over).pref
    sft = str(run / "sft" / "model")
    kw = dict(pref=pref, init_model=sft, tokenizer_path=sft, model_cfg=cfg.model, ref_cache=tmp_path / "ref.pt", key="k", seed=0)
    full = train_preference(items, out_dir=tmp_path / "full", **kw)
    assert full["optimizer_steps"] == 6 and full["reference"] == "computed"
    with pytest.raises(KeyboardInterrupt):
        train_preference(items, out_dir=tmp_path / "crash", callbacks=[Crash()], **kw)
    assert not (tmp_path / "crash" / "model").exists()
    resumed = train_preference(items, out_dir=tmp_path / "crash", **kw)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["reference"] == "cache"
    a, b = load_file(str(tmp_path / "full" / "model" / "model.safetensors")), load_file(str(tmp_path / "crash" / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # LoRA: adapters on q/v only, merged into a plain checkpoint.
    lora = load_config("tiny", over + ["pref.train.lora.enabled=true", "pref.train.lora.r=4", "pref.train.lora.target_modules=[q_proj,v_proj]"]).pref
    train_preference(items, out_dir=tmp_path / "lora", **{**kw, "pref": lora})
    out = tmp_path / "lora" / "model"
    assert not any(p.name.startswith("adapter_") for p in out.iterdir())
    trained, init = load_file(str(out / "model.safetensors")), load_file(str(run / "sft" / "model" / "model.safetensors"))
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert trained.keys() == init.keys() and changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


@pytest.mark.slow
def test_per_step_dpo_under_a_two_process_launch_matches_the_reference_of_one_process(chain, tmp_path):
    """`pref` under `pipeline.launcher` (torchrun, 2 CPU processes, gloo): the reference pass is split over
    the processes and gathered, giving the log-probs one process computed; one process records."""
    run, _, _ = chain
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    # The reference cache of per-step DPO's pairs (first_pit_full) and pi_sft, computed by one process.
    from mathreason.runs import hash_json

    fp = lambda p: json.loads((copy / "pref" / "per_step_dpo" / "stage.json").read_text())["inputs"][p]  # noqa: E731
    key = hash_json([fp("data:first_pit_full.jsonl"), fp("init"), 256, "ref-v1"])[:20]
    cached = copy / "ref_logps" / f"{key}.pt"
    single = torch.load(cached, weights_only=True)
    shutil.rmtree(copy / "ref_logps")
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    cmd = _cli() + [
        "pipeline", "--preset", "tiny", "--set", f"run_dir={copy}", "--set", "pipeline.stages=[pref]", "--set", f"pipeline.launcher={launcher}",
        "--set", "pref.beta=0.2", "--set", "pref.train.per_device_batch_size=4", "--set", "pref.ref_batch_size=3", "--quiet",
    ]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads((copy / "pref" / "per_step_dpo" / "stage.json").read_text())
    assert rec["status"] == "done" and rec["summary"]["processes"] == 2 and rec["summary"]["reference"] == "computed"
    (new,) = list((copy / "ref_logps").glob("*.pt"))
    assert new.name == cached.name
    two = torch.load(new, weights_only=True)
    assert len(two["chosen"]) == len(single["chosen"])
    for a, b in zip(single["chosen"] + single["rejected"], two["chosen"] + two["rejected"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    done = [m for m in read_jsonl(copy / "metrics.jsonl") if m.get("event") == "done" and m["stage"] == "pref/per_step_dpo"]
    assert len(done) == 2  # the chain's run and this one: only rank 0 records


def test_method_variants_are_their_own_pref_runs_with_their_overrides():
    from mathreason.config import ConfigError

    cfg = load_config("tiny", ["pipeline.variants={strong: [pref.train.learning_rate=0.01, pref.beta=0.5]}"])
    steps = {s.label: s for s in plan(cfg, ["sft", "per_step_dpo", "per_step_dpo:strong"])}
    base, strong = steps["pref/per_step_dpo"].cfg.pref, steps["pref/per_step_dpo-strong"].cfg.pref
    assert (base.train.learning_rate, base.beta) == (cfg.pref.train.learning_rate, cfg.pref.beta)
    assert (strong.train.learning_rate, strong.beta, strong.objective, strong.pairs) == (0.01, 0.5, "per_step_dpo", "first_pit_full")
    assert steps["eval"].cfg.eval.policies == ["sft", "pref/per_step_dpo", "pref/per_step_dpo-strong"]
    with pytest.raises(ConfigError, match="no variant"):
        load_config("tiny", ["pipeline.methods=[per_step_dpo:nope]"])
    with pytest.raises(ConfigError, match="pref.field=value"):
        load_config("tiny", ["pipeline.variants={bad: [sample.n=2]}", "pipeline.methods=[dpo:bad]"])
    with pytest.raises(ConfigError, match="preference methods"):
        load_config("tiny", ["pipeline.variants={v: [pref.beta=1]}", "scaling.methods=[rft:v]"])


def test_scaling_runs_each_method_only_at_its_method_sizes(tmp_path, capsys):
    """scaling.method_sizes: SFT at every size, per-step DPO only at the larger one; the report has no
    'missing' note for the sizes it was never meant to run at; bad limits are clear config errors."""
    from mathreason.config import ConfigError
    from mathreason.diagnostics import fig7_size
    from mathreason.scaling import methods_at

    root = tmp_path / "study"
    over = [f"run_dir={root}", "scaling.sizes=[6,10]", "scaling.min_sizes=2", "scaling.methods=[sft,per_step_dpo]",
            "scaling.method_sizes={per_step_dpo: [10]}"]
    args = ["--preset", "tiny", *(x for o in over for x in ("--set", o))]
    cfg = load_config("tiny", over)
    assert [methods_at(cfg, n) for n in (6, 10)] == [["sft"], ["sft", "per_step_dpo"]]
    assert fig7_size(cfg) == 10 and fig7_size(load_config("tiny", ["scaling.sizes=[6,10,16]", "scaling.methods=[sft,rft]", "scaling.method_sizes={rft: [6,10]}"])) == 10
    assert fig7_size(load_config("tiny", ["scaling.sizes=[6,10]"])) == 10
    assert main(["scaling", *args, "--quiet"]) == 0
    capsys.readouterr()
    for n, pols in ((6, {"sft"}), (10, {"sft", "pref-per_step_dpo"})):
        d = root / "seed-0" / f"size-{n}"
        assert set(json.loads((d / "eval" / "summary.json").read_text())) == pols
        assert (d / "pref").exists() == (n == 10) and (d / "sample").exists() == (n == 10)
        assert json.loads((d / "point.json").read_text())["methods"] == methods_at(cfg, n)
    assert main(["scaling-report", *args]) == 0
    capsys.readouterr()
    rep = json.loads((root / "report" / "report.json").read_text())
    assert rep["missing"] == []
    assert {(r["method"], r["size"]) for r in rep["rows"]} == {("sft", 6), ("sft", 10), ("per_step_dpo", 10)}
    with pytest.raises(ConfigError, match="method_sizes.*unknown method"):
        load_config("tiny", ["scaling.sizes=[6,10]", "scaling.methods=[sft,rft]", "scaling.method_sizes={rtf: [6]}"])
    with pytest.raises(ConfigError, match="method_sizes.*non-empty"):
        load_config("tiny", ["scaling.sizes=[6,10]", "scaling.methods=[sft,rft]", "scaling.method_sizes={rft: []}"])
    # narrowing the study on the command line leaves the limits of absent methods and sizes aside
    narrow = load_config("tiny", [*over, "scaling.methods=[sft]", "scaling.sizes=[6]"])
    assert methods_at(narrow, 6) == ["sft"] and fig7_size(narrow) == 6
    assert methods_at(load_config("tiny", [*over, "scaling.sizes=[6]"]), 6) == ["sft"]
