"""SFT and post-training: every objective and pool policy runs from a tiny checkpoint; same seed gives
identical metrics; killed SFT and post-training runs resume with nothing lost or duplicated."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import REPO_ROOT
from stargraph import configlib, loop, runio
from stargraph.config import OBJECTIVES, DataConfig, ModelConfig, PoolConfig, PostTrainConfig, RuntimeConfig, SFTConfig, TrainConfig
from stargraph.graphs import make_splits
from stargraph.loop import EpochSampler
from stargraph.posttrain import PostTrainer, posttrain
from stargraph.train import train_sft

RT = RuntimeConfig(device="cpu", threads=1, eval_batch_size=512, amp="off")


def tiny_train(steps: int = 30, **sft) -> TrainConfig:
    """G(2,3,8) with a 2-layer 32-wide GPT: learns the lookup in ~150 steps (about a second)."""
    return TrainConfig(
        seed=0,
        data=DataConfig(degree=2, path_len=3, num_nodes=8, n_train=400, n_test=100, n_eval_train=100),
        model=ModelConfig(n_layer=2, n_head=2, n_embd=32),
        sft=SFTConfig(**{"max_steps": steps, "batch_size": 64, "learning_rate": 3e-3, "warmup_steps": 5, "eval_every": 10, "checkpoint_at": [10], "resume_every": 0, **sft}),
        runtime=RT,
    )


def strip_time(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in recs]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEPCREDIT_CACHE", str(root / "cache"))
    make_splits.cache_clear()
    train_sft(tiny_train(steps=150, eval_every=50, checkpoint_at=[50]), root / "sft", log=lambda s: None)
    yield root
    mp.undo()
    make_splits.cache_clear()


def test_sft_writes_metrics_checkpoints_and_learns(sft_run):
    d = sft_run / "sft"
    recs = runio.read_jsonl(d / "metrics.jsonl")
    assert [r["step"] for r in recs] == [0, 50, 100, 150]
    assert (d / "ckpt_50.pt").exists() and (d / "ckpt_150.pt").exists() and runio.is_done(d)
    assert recs[-1]["train_loss"] < recs[1]["train_loss"]
    assert recs[-1]["train/acc"] > 0.1 and recs[-1]["test/lookup_acc"] > 0.5  # it learns
    for key in ("train/acc", "test/acc", "test/crit_acc", "test/acc_pos2", "test/v_crit", "test/q_crit", "test/crit_child_mass"):
        assert 0.0 <= recs[-1][key] <= 1.0
    assert (d / "config.yaml").exists()


def _pt(sft_run, objective: str, **kw) -> PostTrainConfig:
    pool = kw.pop("pool", {})
    return PostTrainConfig(
        init=str(sft_run / "sft" / "ckpt_150.pt"), objective=objective, max_steps=4, batch_size=8, eval_every=2, learning_rate=1e-3,
        pool=PoolConfig(**{"graphs": 24, "samples_per_graph": 4, "resample_every": 2, **pool}), runtime=RT, save_final=False, **kw,
    )


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_runs_and_changes_the_model(sft_run, objective):
    cfg = _pt(sft_run, objective)  # the checkpoint's samples hold both positives and negatives
    trainer = PostTrainer(cfg, sft_run / f"pt_{objective}", log=lambda s: None)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    rec = trainer.run()
    assert rec["step"] == 4 and math.isfinite(rec["train_loss"])
    assert rec["empty_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # the frozen reference never moves
    ref0, _ = runio.load_checkpoint(cfg.init)
    assert all(torch.equal(a, b) for a, b in zip(ref0.parameters(), trainer.ref.parameters()))


@pytest.mark.parametrize(
    "kw",
    [
        {"pool": {"policy": "fixed"}},
        {"pool": {"policy": "balanced", "max_tries": 8}},
        {"pool": {"policy": "fresh"}},
        {"pool": {"sampler": "start"}},
        {"construction": "shared_prefix"},
        {"q_estimator": "mc", "mc_rollouts": 4},
        {"q_estimator": "mc", "bok_k": 3, "pit_threshold": 0.0},
        {"bok_k": 5},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_per_step_dpo_variants_run(sft_run, kw):
    cfg = _pt(sft_run, "per_step_dpo", **{**kw, "pool": {"temperature": 2.0, **kw.get("pool", {})}})
    rec = PostTrainer(cfg, sft_run / "variant", log=lambda s: None).run()
    assert rec["pool/pairs"] > 0 and math.isfinite(rec["train_loss"])
    if kw.get("q_estimator", "exact") == "exact":
        assert rec["pool/pit_is_first_error"] == 1.0  # exact Q: the first pit is the first wrong node


def test_balanced_pool_gives_every_graph_the_same_number_of_negatives(sft_run):
    cfg = _pt(sft_run, "per_step_dpo", pool={"policy": "balanced", "max_tries": 16, "samples_per_graph": 3, "temperature": 2.0})
    tr = PostTrainer(cfg, sft_run / "bal", log=lambda s: None)
    pool = tr.build_pool()
    neg_graphs = pool.graph_M[~pool.correct_M]
    counts = torch.bincount(neg_graphs)
    assert set(counts[counts > 0].tolist()) == {3}


def test_per_step_pairs_truncate_at_the_first_pit(sft_run):
    cfg = _pt(sft_run, "per_step_dpo", pool={"temperature": 2.0})
    tr = PostTrainer(cfg, sft_run / "pairs", log=lambda s: None)
    pool = tr.build_pool()
    b = tr.make_batches(pool)
    P = tr.P
    rej, rmask, chosen, cmask = b.rejected_BT, b.rejected_mask_BL, b.chosen_BT, b.chosen_mask_BL
    for i in range(len(b)):
        k = int(rmask[i].nonzero().max())  # last rejected position = the pit
        assert torch.equal(rej[i, P : P + k], chosen[i, P : P + k])  # agrees with the true path before the pit
        assert rej[i, P + k] != chosen[i, P + k]  # the pit is wrong
        assert cmask[i, 1:].all() and not cmask[i, 0]  # "full": chosen = the whole true path after the source


def test_same_seed_same_metrics(sft_run, tmp_path):
    a = train_sft(tiny_train(steps=20), tmp_path / "a", log=lambda s: None)
    b = train_sft(tiny_train(steps=20), tmp_path / "b", log=lambda s: None)
    ra = strip_time(runio.read_jsonl(tmp_path / "a" / "metrics.jsonl"))
    rb = strip_time(runio.read_jsonl(tmp_path / "b" / "metrics.jsonl"))
    assert ra == rb and a["train/acc"] == b["train/acc"]
    train_sft(replace(tiny_train(steps=20), seed=1), tmp_path / "c", log=lambda s: None)
    assert strip_time(runio.read_jsonl(tmp_path / "c" / "metrics.jsonl")) != ra
    pa = _pt(sft_run, "per_step_dpo", pool={"temperature": 2.0})
    posttrain(pa, tmp_path / "pa", log=lambda s: None)
    posttrain(pa, tmp_path / "pb", log=lambda s: None)
    assert strip_time(runio.read_jsonl(tmp_path / "pa" / "metrics.jsonl")) == strip_time(runio.read_jsonl(tmp_path / "pb" / "metrics.jsonl"))


class Killed(Exception):
    pass


def kill_at(step: int, action):
    """A :data:`stargraph.loop.AFTER_STEP` hook: ``action()`` after step ``step``'s metrics record, before its
    checkpoint and snapshot (the worst moment to die)."""

    def hook(done: int) -> None:
        if done == step:
            action()

    return hook


def raise_killed() -> None:
    raise Killed()


def test_killed_sft_resumes_with_nothing_lost_or_duplicated(sft_run, tmp_path, monkeypatch):
    cfg = tiny_train(steps=40, resume_every=10)
    train_sft(cfg, tmp_path / "full", log=lambda s: None)
    monkeypatch.setattr(loop, "AFTER_STEP", [kill_at(30, raise_killed)])
    with pytest.raises(Killed):
        train_sft(cfg, tmp_path / "killed", log=lambda s: None)
    assert (tmp_path / "killed" / "resume.pt").exists() and not runio.is_done(tmp_path / "killed")
    assert [r["step"] for r in runio.read_jsonl(tmp_path / "killed" / "metrics.jsonl")] == [0, 10, 20, 30]
    monkeypatch.setattr(loop, "AFTER_STEP", [])
    train_sft(cfg, tmp_path / "killed", log=lambda s: None)
    full = strip_time(runio.read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    resumed = strip_time(runio.read_jsonl(tmp_path / "killed" / "metrics.jsonl"))
    assert [r["step"] for r in resumed] == [0, 10, 20, 30, 40]
    assert resumed == full
    # a complete run is skipped
    assert train_sft(cfg, tmp_path / "killed", log=lambda s: None)["step"] == 40


KILL_DRIVER = """
import os, signal, sys
from stargraph import loop
from stargraph.cli import main
kill_at = int(os.environ["KILL_AT_STEP"])
loop.AFTER_STEP.append(lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == kill_at else None)
sys.exit(main(sys.argv[1:]))
"""


def _final_weights_equal(a, b) -> bool:
    wa = torch.load(a, weights_only=True)["model"]
    wb = torch.load(b, weights_only=True)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_posttraining_killed_with_sigkill_resumes_to_the_uninterrupted_metrics(sft_run, tmp_path):
    """Post-training killed with SIGKILL (at step 4, after its record, before its snapshot) and resumed gives
    the same metrics and final weights as an uninterrupted run: snapshot at step 2 (eval_every), a pool rebuilt
    at step 3 from the restored RNG streams, the records after the snapshot dropped and recomputed."""
    cfg = replace(_pt(sft_run, "per_step_dpo", pool={"temperature": 2.0, "resample_every": 3}), max_steps=6, save_final=True)
    posttrain(cfg, tmp_path / "full", log=lambda s: None)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(configlib.dump_yaml(cfg))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "KILL_AT_STEP": "4"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, "posttrain", str(killed), "--config", str(cfg_file)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "resume.pt").exists() and not runio.is_done(killed) and not (killed / "final.pt").exists()
    assert [r["step"] for r in runio.read_jsonl(killed / "metrics.jsonl")] == [0, 2, 4]
    lines: list[str] = []
    rec = posttrain(cfg, killed, log=lines.append)
    assert any("resuming" in line and "at step 2" in line for line in lines)
    full = strip_time(runio.read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    resumed = strip_time(runio.read_jsonl(killed / "metrics.jsonl"))
    assert [r["step"] for r in resumed] == [0, 2, 4, 6]
    assert resumed == full and strip_time([rec]) == full[-1:]
    assert _final_weights_equal(killed / "final.pt", tmp_path / "full" / "final.pt")
    assert runio.is_done(killed) and not (killed / "resume.pt").exists()


@pytest.mark.parametrize("objective", ["sft", "awr", "rft"])
def test_killed_posttraining_of_other_objectives_resumes_to_the_same_metrics(sft_run, tmp_path, monkeypatch, objective):
    """The other task states (the SFT control's epoch sampler; sequence batches with advantages) survive a resume."""
    cfg = replace(_pt(sft_run, objective, pool={"temperature": 2.0, "resample_every": 3}), max_steps=6)
    posttrain(cfg, tmp_path / "full", log=lambda s: None)
    monkeypatch.setattr(loop, "AFTER_STEP", [kill_at(5, raise_killed)])
    with pytest.raises(Killed):
        posttrain(cfg, tmp_path / "killed", log=lambda s: None)
    monkeypatch.setattr(loop, "AFTER_STEP", [])
    posttrain(cfg, tmp_path / "killed", log=lambda s: None)
    full = strip_time(runio.read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    assert strip_time(runio.read_jsonl(tmp_path / "killed" / "metrics.jsonl")) == full
    assert [r["step"] for r in full] == [0, 2, 4, 6]


def test_posttrain_requires_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="init"):
        posttrain(PostTrainConfig(runtime=RT), tmp_path / "x", log=lambda s: None)


@pytest.mark.gpu
def test_cuda_bf16_sft_and_posttrain_smoke(sft_run, tmp_path):
    rt = RuntimeConfig(device="cuda", eval_batch_size=512, amp="auto")
    cfg = replace(tiny_train(steps=20), runtime=rt)
    rec = train_sft(cfg, tmp_path / "sft", log=lambda s: None)
    assert rec["step"] == 20 and math.isfinite(rec["train_loss"])
    for objective in ("per_step_dpo", "awr", "sft"):
        pt = replace(_pt(sft_run, objective), runtime=rt)
        out = posttrain(pt, tmp_path / objective, log=lambda s: None)
        assert math.isfinite(out["train_loss"])


def test_lesson_configs_give_the_same_weights_whatever_the_evaluation_schedule(tmp_path, monkeypatch):
    """The course's star-graph lessons (notebooks 06, 07) train the same checkpoint with different logs."""
    from stargraph import lessons

    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    make_splits.cache_clear()
    try:
        a = lessons.train_config(max_steps=12, eval_every=4)
        b = lessons.train_config(max_steps=12, eval_every=12)
        assert a.sft.max_steps == 12 and a.model.n_layer == 4 and a.data.n_train == 2000 and a.runtime.threads == 1
        train_sft(a, tmp_path / "a", log=lambda s: None)
        train_sft(b, tmp_path / "b", log=lambda s: None)
        assert len(runio.read_jsonl(tmp_path / "a" / "metrics.jsonl")) == 4 and len(runio.read_jsonl(tmp_path / "b" / "metrics.jsonl")) == 2
        wa, _ = runio.load_checkpoint(tmp_path / "a" / "ckpt_12.pt")
        wb, _ = runio.load_checkpoint(tmp_path / "b" / "ckpt_12.pt")
        assert all(torch.equal(x, y) for x, y in zip(wa.state_dict().values(), wb.state_dict().values()))
        pc = lessons.posttrain_config(tmp_path / "a" / "ckpt_12.pt", "sft_critical_pairs", max_steps=7, beta=0.3)
        assert pc.objective == "sft_critical_pairs" and pc.max_steps == 7 and pc.beta == 0.3 and pc.pool.resample_every == 0
    finally:
        make_splits.cache_clear()


@pytest.mark.parametrize("objective", ["sft", "sft_critical"])
def test_sft_controls_of_fresh_pools_train_on_the_pools_fresh_graphs(sft_run, tmp_path, objective):
    """Under pool.policy fresh the sft / sft_critical controls are SFT on the same data as the per-step arm:
    at every rebuild they switch to the true paths of exactly the fresh graphs the arm's pool of that round
    holds (never a training or test graph), so their batches come from those graphs only."""
    pool = {"policy": "fresh", "resample_every": 2}
    arm = PostTrainer(_pt(sft_run, "per_step_dpo", pool=pool), tmp_path / "arm", log=lambda s: None)
    ctl = PostTrainer(_pt(sft_run, objective, pool=pool), tmp_path / "ctl", log=lambda s: None)
    ctl.sft_sampler = EpochSampler(len(ctl.sft_data), 8, torch.Generator().manual_seed(1), ctl.device)
    fixed = {tuple(r) for r in ctl.sft_data.tokens_NT.tolist()}
    for rnd in range(2):
        graphs = arm.build_pool().graphs.tokens_NT
        ctl.step(2 * rnd)  # a rebuild step
        assert torch.equal(ctl.sft_data.tokens_NT, graphs)
        assert not {tuple(r) for r in graphs.tolist()} & fixed
        seen = set()
        for _ in range(3):
            seen |= {tuple(r) for r in ctl._sft_batch(ctl.sft_sampler.next()).tokens_BT.tolist()}
        assert seen <= {tuple(r) for r in graphs.tolist()}
    assert ctl.round == arm.round == 2


def test_killed_sft_control_on_fresh_pools_resumes_to_the_same_metrics(sft_run, tmp_path, monkeypatch):
    """The control's fresh graphs of the current round survive a resume (they are in the snapshot)."""
    cfg = replace(_pt(sft_run, "sft", pool={"policy": "fresh", "resample_every": 3}), max_steps=6)
    posttrain(cfg, tmp_path / "full", log=lambda s: None)
    monkeypatch.setattr(loop, "AFTER_STEP", [kill_at(5, raise_killed)])
    with pytest.raises(Killed):
        posttrain(cfg, tmp_path / "killed", log=lambda s: None)
    monkeypatch.setattr(loop, "AFTER_STEP", [])
    posttrain(cfg, tmp_path / "killed", log=lambda s: None)
    full = strip_time(runio.read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    assert strip_time(runio.read_jsonl(tmp_path / "killed" / "metrics.jsonl")) == full
    assert [r["step"] for r in full] == [0, 2, 4, 6]
