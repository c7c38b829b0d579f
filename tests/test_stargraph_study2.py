"""Round-2 tools: critical-position mass and teacher-forced per-token accuracy (against hand-made logits and
a brute-force per-position computation), ``stargraph rescore``, online SFT and epoch checkpoints, the
``study2_*`` sweep presets (each loads, pairs its arms with their controls, and one tiny point of each
runs), and the exact-vs-MC Q benchmark."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stargraph import cli, configlib, runio
from stargraph.config import DataConfig, ModelConfig, RuntimeConfig, SFTConfig, SweepConfig, TrainConfig, resolve
from stargraph.evaluate import critical_mass, evaluate, summarize, teacher_forced
from stargraph.graphs import make_splits
from stargraph.queries import build_queries
from stargraph.rescore import rescore
from stargraph.sweep import plan, sweep
from stargraph.train import load_data, train_sft

REPO = Path(__file__).resolve().parent.parent
RT = RuntimeConfig(device="cpu", threads=1, eval_batch_size=512, amp="off")
STUDY2 = ("study2_strength", "study2_metric", "study2_structured", "study2_decomp", "study2_online", "study2_scale")


def tiny_train(steps: int = 60, sft: dict | None = None, **data) -> TrainConfig:
    """G(2,3,8), 2x32 GPT (about a second for 60 steps)."""
    return TrainConfig(
        seed=0,
        data=DataConfig(**{"degree": 2, "path_len": 3, "num_nodes": 8, "n_train": 400, "n_test": 60, "n_eval_train": 60, **data}),
        model=ModelConfig(n_layer=2, n_head=2, n_embd=32),
        sft=SFTConfig(**{"max_steps": steps, "batch_size": 64, "learning_rate": 3e-3, "warmup_steps": 5, "eval_every": 30, "checkpoint_at": [30] if steps >= 30 else [], "resume_every": 0, **(sft or {})}),
        runtime=RT,
    )


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    make_splits.cache_clear()
    yield
    make_splits.cache_clear()


# ---------------------------------------------------------------- metrics


def test_critical_mass_on_hand_made_logits():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.1, 0.2], [0.1, 0.1, 0.7, 0.1]]))
    children = torch.tensor([[0, 1], [2, 3]])
    m = critical_mass(logits, children, torch.tensor([0, 3]))
    assert m["p_correct_N"].tolist() == pytest.approx([0.5, 0.1])
    assert m["p_other_child_N"].tolist() == pytest.approx([0.2, 0.7])
    assert m["p_non_child_N"].tolist() == pytest.approx([0.3, 0.2])
    assert (m["p_correct_N"] + m["p_other_child_N"] + m["p_non_child_N"]).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        critical_mass(logits, children[:1], torch.tensor([0, 3]))


def test_summary_of_mass_likelihood_and_forced_accuracy_by_hand():
    p = torch.tensor([[1.0, 0.5, 0.8], [0.9, 0.25, 1.0]], dtype=torch.float64)
    correct = torch.tensor([[True, True, False], [True, False, True]])
    tf = {"logp_NL": p.log(), "correct_NL": correct, "child_mass_N": torch.tensor([0.9, 0.6], dtype=torch.float64),
          "other_child_N": torch.tensor([0.4, 0.35], dtype=torch.float64), "non_child_N": torch.tensor([0.1, 0.4], dtype=torch.float64),
          "min_child_N": torch.tensor([True, False])}
    m = summarize(tf, bok_k=0)
    assert m["forced_token_acc"] == pytest.approx(4 / 6) and m["forced_token_acc_given_source"] == pytest.approx(2 / 4)
    assert m["crit_prob"] == pytest.approx(0.375) and m["crit_p_other_child"] == pytest.approx(0.375) and m["crit_p_non_child"] == pytest.approx(0.25)
    assert m["crit_logp"] == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert m["path_logp"] == pytest.approx((math.log(0.4) + math.log(0.225)) / 2)
    assert m["path_logp_given_source"] == pytest.approx((math.log(0.4) + math.log(0.25)) / 2)
    # a shorter target: its padding (log-prob 0, counted correct) is left out of per-token means
    tf["mask_NL"] = torch.tensor([[True, True, True], [True, True, False]])
    tf["logp_NL"] = tf["logp_NL"].clone()
    tf["logp_NL"][1, 2] = 0.0
    m = summarize(tf, bok_k=0)
    assert m["forced_token_acc"] == pytest.approx(3 / 5) and m["acc_pos2"] == 0.0
    assert m["loss"] == pytest.approx(-(math.log(0.5) + math.log(0.8) + math.log(0.9) + math.log(0.25)) / 5)


@torch.no_grad()
def brute_force_forced(model, data) -> float:
    """Per position, the model run on the true prefix alone: argmax == target, averaged over the
    true target positions of every row."""
    hits, n = 0, 0
    mask = data.target_mask_NL
    for i in range(len(data)):
        for j in range(data.L):
            if not mask[i, j]:
                continue
            prefix = data.tokens_NT[i, : data.P + j]
            pred = int(model(prefix[None])[0, -1].argmax())
            hits += pred == int(data.tokens_NT[i, data.P + j])
            n += 1
    return hits / n


@pytest.fixture()
def sft_dir(tmp_path):
    train_sft(tiny_train(), tmp_path / "sft", log=lambda s: None)
    return tmp_path / "sft"


def test_forced_token_accuracy_equals_brute_force_and_is_logged(sft_dir):
    model, _ = runio.load_checkpoint(sft_dir / "ckpt_60.pt")
    model.eval()
    data = load_data(tiny_train(), torch.device("cpu"))
    m = evaluate(model, {"test": data.test}, batch_size=512, amp="off", bok_k=0)
    bf = brute_force_forced(model, data.test)
    assert m["test/forced_token_acc"] == pytest.approx(bf) and 0.1 < bf < 1.0  # neither trivial value
    # rows with shorter targets (goals inside an arm, a shorter family): only their true positions count
    mixed = build_queries([make_splits(data.spec, 400, 60, 0)[1]], "all_nodes", data.spec).data
    assert mixed.target_len_N is not None
    mm = summarize(teacher_forced(model, mixed, amp="off"), bok_k=0)
    assert mm["forced_token_acc"] == pytest.approx(brute_force_forced(model, mixed))
    recs = runio.read_jsonl(sft_dir / "metrics.jsonl")
    for r in recs:
        assert {"train/forced_token_acc", "test/forced_token_acc", "test/crit_p_other_child", "test/path_logp"} <= set(r)
        assert r["test/crit_prob"] + r["test/crit_p_other_child"] + r["test/crit_p_non_child"] == pytest.approx(1.0)


def test_rescore_recomputes_checkpoints_without_retraining(sft_dir, tmp_path, capsys):
    out = rescore([tmp_path], log=lambda s: None)
    recs = out[sft_dir]
    assert [r["step"] for r in recs] == [30, 60] and (sft_dir / "rescore.csv").exists()
    model, _ = runio.load_checkpoint(sft_dir / "ckpt_30.pt")
    data = load_data(tiny_train(), torch.device("cpu"))
    assert recs[0]["test/forced_token_acc"] == pytest.approx(brute_force_forced(model.eval(), data.test))
    logged = {r["step"]: r for r in runio.read_jsonl(sft_dir / "metrics.jsonl")}
    assert recs[1]["test/acc"] == pytest.approx(logged[60]["test/acc"]) and recs[1]["train/forced_token_acc"] == pytest.approx(logged[60]["train/forced_token_acc"])
    rows = list(csv.DictReader(open(sft_dir / "rescore.csv")))
    assert len(rows) == 2 and float(rows[1]["test/acc"]) == pytest.approx(recs[1]["test/acc"])
    stamp = (sft_dir / "rescore.jsonl").stat().st_mtime_ns
    assert cli.main(["rescore", str(tmp_path)]) == 0 and (sft_dir / "rescore.jsonl").stat().st_mtime_ns == stamp  # up to date
    assert cli.main(["rescore", str(tmp_path / "nothing")]) == 2 and "no checkpoints" in capsys.readouterr().err


# ---------------------------------------------------------------- SFT data options


def test_online_sft_draws_fresh_graphs_every_step_deterministically(tmp_path):
    cfg = tiny_train(steps=6, sft={"eval_every": 3}, online=True, goals="all_leaves")
    from stargraph.train import online_batch

    data = load_data(cfg, torch.device("cpu"))
    b0, b1 = online_batch(data, cfg, 0), online_batch(data, cfg, 1)
    assert len(b0) == 64 and not torch.equal(b0.tokens_NT, b1.tokens_NT)
    assert torch.equal(b0.tokens_NT, online_batch(data, cfg, 0).tokens_NT)
    test_rows = {tuple(r) for r in data.test.tokens_NT[:, : data.test.P - 2].tolist()}
    train_rows = {tuple(r) for r in data.train.tokens_NT[:, : data.test.P - 2].tolist()}
    got = {tuple(r) for r in b0.tokens_NT[:, : b0.P - 2].tolist()}
    assert not got & test_rows and not got & train_rows  # new graphs, never a test (or fixed training) graph
    assert (b0.tokens_NT[0::2, b0.P - 3] == b0.tokens_NT[1::2, b0.P - 3]).all()  # all_leaves: both goals of each graph
    a = train_sft(cfg, tmp_path / "a", log=lambda s: None)
    train_sft(cfg, tmp_path / "b", log=lambda s: None)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rs]
    assert strip(runio.read_jsonl(tmp_path / "a" / "metrics.jsonl")) == strip(runio.read_jsonl(tmp_path / "b" / "metrics.jsonl"))
    assert a["step"] == 6 and a["epoch"] is None
    with pytest.raises(ValueError, match="online"):
        replace(cfg, sft=replace(cfg.sft, checkpoint_every_epochs=1))


def test_epoch_checkpoints_and_structured_sft(tmp_path):
    cfg = tiny_train(steps=20, sft={"checkpoint_every_epochs": 1, "eval_every": 10}, goals="all_leaves")
    rec = train_sft(cfg, tmp_path / "s", log=lambda s: None)
    # 400 graphs x 2 goals = 800 queries, batch 64: an epoch is 12 steps
    assert sorted(p.name for p in (tmp_path / "s").glob("ckpt_*.pt")) == ["ckpt_12.pt", "ckpt_20.pt"]
    assert rec["epoch"] == pytest.approx(20 * 64 / 800)
    ck = torch.load(tmp_path / "s" / "ckpt_12.pt", weights_only=True)
    assert ck["spec"]["goals"] == "all_leaves" and ck["spec"]["mix_path_lens"] == []


def test_mixed_sft_reports_each_family_separately(tmp_path):
    cfg = tiny_train(steps=4, sft={"eval_every": 4}, mix_path_lens=[2], mix_n_train=50, mix_n_test=20, goals="all_nodes")
    rec = train_sft(cfg, tmp_path / "m", log=lambda s: None)
    assert {"train/acc", "test/acc", "test_l2/acc", "test_l2/forced_token_acc"} <= set(rec)
    plain = train_sft(replace(cfg, data=replace(cfg.data, mix_path_lens=[], goals="leaf"), sft=replace(cfg.sft, max_steps=0)), tmp_path / "p", log=lambda s: None)
    assert len(load_data(cfg, torch.device("cpu")).test) == 60 and "test_l2/acc" not in plain


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", STUDY2)
def test_study2_presets_load_and_dry_run(name, capsys, tmp_path):
    cfg = resolve(SweepConfig, preset=name, config_file=None, overrides={})
    assert cfg.seeds == [0, 1, 2]
    sft_tasks, points = plan(cfg, tmp_path)
    assert points and sft_tasks
    assert cli.main(["sweep", str(tmp_path / "dry"), "--preset", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(points)} grid points" in out and not (tmp_path / "dry").exists()
    # every arm has its continued-SFT control: same seed, checkpoint, lr, steps and batch (same data)
    by = {}
    for t, info in points:
        by.setdefault((info["seed"], info["init_step"], t.cfg.learning_rate, t.cfg.max_steps, t.cfg.batch_size, t.cfg.init, json.dumps(configlib.to_dict(t.cfg.data))), set()).add(info["objective"])
    for objs in by.values():
        assert "sft" in objs, objs
    for t, _ in points:
        assert len({info["seed"] for _, info in points}) == 3


def test_strength_preset_spans_beta_and_lr():
    cfg = resolve(SweepConfig, preset="study2_strength", config_file=None, overrides={})
    _, points = plan(cfg, Path("/nonexistent"))
    ps = [t.cfg for t, i in points if i["objective"] == "per_step_dpo"]
    assert {c.beta for c in ps} == {0.03, 0.1, 0.3, 1.0} and {c.learning_rate for c in ps} == {1e-4, 3e-4, 1e-3, 3e-3}
    assert {c.learning_rate for t, i in points if i["objective"] == "sft" for c in [t.cfg]} == {1e-4, 3e-4, 1e-3, 3e-3}
    assert max(i["init_step"] for _, i in points) <= 200  # under-trained checkpoints only


def test_structured_and_decomposition_presets_set_their_options():
    cfg = resolve(SweepConfig, preset="study2_structured", config_file=None, overrides={})
    _, points = plan(cfg, Path("/nonexistent"))
    arms = {(i["variant"], i["objective"]): t for t, i in points}
    assert arms[("structured", "per_step_dpo")].cfg.data.goals == "all_leaves" and arms[("structured", "per_step_dpo")].cfg.pool.arm_negatives
    assert arms[("structured", "sft_critical")].cfg.data.goals == "all_leaves"  # the controls see the same queries
    assert {o for _, o in arms} == {"sft", "sft_critical", "per_step_dpo", "per_step_dpo_sft", "awr"}
    cfg = resolve(SweepConfig, preset="study2_decomp", config_file=None, overrides={})
    sft_tasks, _ = plan(cfg, Path("/nonexistent"))
    assert {(tuple(t.cfg.data.mix_path_lens), t.cfg.data.goals) for t in sft_tasks} == {((), "leaf"), ((2, 3), "leaf"), ((), "all_nodes"), ((2, 3), "all_nodes")}
    cfg = resolve(SweepConfig, preset="study2_online", config_file=None, overrides={})
    sft_tasks, points = plan(cfg, Path("/nonexistent"))
    assert all(t.cfg.data.online for t in sft_tasks)  # SFT on fresh graphs every step
    assert {t.cfg.pool.policy for t, _ in points} == {"fresh"} and {t.cfg.max_steps for t, _ in points} == {3000}
    assert {i["objective"] for _, i in points} == {"sft", "per_step_dpo", "per_step_dpo_sft"}


TINY = {
    "seeds": [0], "graphs": ["2,4,10"], "n_train": [120], "init_steps": [4], "workers": 1,
    "runtime": {"device": "cpu", "threads": 1, "eval_batch_size": 512, "amp": "off", "bok_k": 5},
    "train": {"data": {"n_test": 40, "n_eval_train": 40}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
              "sft": {"max_steps": 4, "batch_size": 16, "warmup_steps": 2, "eval_every": 4, "resume_every": 0, "checkpoint_every_epochs": 0}},
    "posttrain": {"max_steps": 2, "batch_size": 8, "eval_every": 2, "pool": {"graphs": 6, "samples_per_graph": 2, "resample_every": 2, "temperature": 2.0}},
}
ONE_POINT = {
    "study2_strength": ("lr3e-3_b1", "per_step_dpo"),
    "study2_metric": ("base", "per_step_dpo_sft"),
    "study2_structured": ("structured", "awr"),
    "study2_decomp": ("mix23_nodes", "per_step_dpo"),
    "study2_online": ("online", "per_step_dpo"),
    "study2_scale": ("paper", "per_step_dpo_sft"),
}


@pytest.mark.parametrize("name", STUDY2)
def test_a_tiny_point_of_each_study2_preset_runs(name, tmp_path):
    variant, objective = ONE_POINT[name]
    over = configlib.wrap(TINY, "test")
    cfg = resolve(SweepConfig, preset=name, config_file=None, overrides=over)
    v = dict(cfg.variants.get(variant, {}))
    if "train.data.mix_n_train" in v:
        v.update({"train.data.mix_n_train": 30, "train.data.mix_n_test": 10})
    cfg = replace(cfg, variants={variant: v}, only=[{"objective": objective}, {"objective": "sft"}])
    rows = sweep(cfg, tmp_path / "sw", log=lambda s: None)
    assert {r["objective"] for r in rows} == {objective, "sft"} and all(r["steps"] == 2 for r in rows)
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["test_forced_token_acc"] <= 1
        assert r["test_crit_prob"] + r["test_crit_p_other_child"] + r["test_crit_p_non_child"] == pytest.approx(1.0)
    if name == "study2_decomp":
        assert all("test_l2_acc" in r and "test_l3_acc" in r for r in rows)
    table = list(csv.DictReader(open(tmp_path / "sw" / "table.csv")))
    assert len(table) == len(rows) == 2 * len(cfg.pools) and "test_forced_token_acc_mean" in table[0]  # an arm and its control per pool


# ---------------------------------------------------------------- benchmark


def test_q_cost_benchmark_emits_json(sft_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("q_cost", REPO / "benchmarks" / "q_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "q.json"
    assert mod.main(["--init", str(sft_dir / "ckpt_60.pt"), "--graphs", "8", "--samples", "2", "--ks", "2", "8", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["responses"] == 16 and set(res["mc"]) == {"2", "8"} and res["exact"]["time_s"] > 0
    for v in res["mc"].values():
        assert v["time_s"] > 0 and 0 <= v["q_mean_abs_err"] <= v["q_max_abs_err"] <= 1
    assert res["target_exact_20x_cheaper_than_mc_k16"] is None
