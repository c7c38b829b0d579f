"""Gradient alignment: the per-step DPO gradient it reports is the one of the DPO formula."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from stargraph.analysis import gradient_alignment
from stargraph.config import PoolConfig, PostTrainConfig, RuntimeConfig
from stargraph.posttrain import PostTrainer


@pytest.fixture(scope="module")
def ckpt(tiny_sft):
    return tiny_sft[1]


def test_per_step_dpo_gradient_is_half_beta_times_the_log_prob_difference(ckpt):
    beta = 0.3
    res = gradient_alignment(ckpt, graphs=64, samples_per_graph=2, uniform=64, beta=beta, seed=0, chunk=16, return_grads=True)
    assert res["pairs"] > 0 and res["pairs_pit_at_critical"] > 0
    # the same pool, rebuilt: at the start the policy is the reference, so h = 0 and
    # grad = -(beta / 2) * mean_i (grad log pi(chosen_i) - grad log pi(rejected_i))
    cfg = PostTrainConfig(
        init=str(ckpt), objective="per_step_dpo", beta=beta, seed=0, max_steps=0,
        pool=PoolConfig(policy="resampled", graphs=64, samples_per_graph=2),
        runtime=RuntimeConfig(device="cpu", threads=0, eval_batch_size=4096, amp="off"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        pt = PostTrainer(cfg, Path(tmp), log=lambda s: None)
    pt.model.train()
    b = pt.make_batches(pt.build_pool())
    assert len(b) == res["pairs"]
    c = (pt._logps(b.chosen_BT) * b.chosen_mask_BL).sum(1)
    r = (pt._logps(b.rejected_BT) * b.rejected_mask_BL).sum(1)
    (-(beta / 2) * (c - r).mean()).backward()
    manual = torch.cat([p.grad.flatten() for p in pt.model.parameters()])
    assert torch.allclose(res["grads"]["psdpo"], manual, atol=1e-6, rtol=1e-4)
    for k, v in res["cosine"].items():
        assert -1.0 - 1e-6 <= v <= 1.0 + 1e-6, k
    # SFT on the whole path = SFT on the source + critical + lookup tokens: its gradient is a
    # positive combination, so it correlates positively with the critical- and lookup-token parts
    assert res["cosine"]["sft|sft_lookup"] > 0 and res["cosine"]["sftc|sft"] > 0


def test_analysis_is_a_stargraph_subcommand_with_a_typed_config(ckpt, tmp_path, capsys):
    from stargraph.cli import main

    out = tmp_path / "align"
    args = ["analysis", str(out), "--set", f"checkpoints=[{ckpt}]", "--graphs", "32", "--set", "samples_per_graph=2",
            "--uniform", "32", "--beta", "0.3"]
    assert main(args) == 0
    res = json.loads((out / "alignment.json").read_text())
    assert len(res) == 1 and res[0]["pairs"] > 0 and "psdpo|sftc_pairs" in res[0]["cosine"]
    direct = gradient_alignment(ckpt, graphs=32, samples_per_graph=2, uniform=32, beta=0.3, seed=0)
    assert res[0]["cosine"] == pytest.approx(direct["cosine"])
    cfg = (out / "config.yaml").read_text()
    assert "graphs: 32" in cfg and "beta: 0.3" in cfg
    capsys.readouterr()
    assert main(["analysis", str(tmp_path / "none")]) == 2 and "no checkpoints given" in capsys.readouterr().err
    assert main(["analysis", str(tmp_path / "none"), "--set", "checkpoints=[nope.pt]"]) == 2
    assert main(["analysis", "--print-config", "--set", "seed=3"]) == 0 and "seed: 3" in capsys.readouterr().out


def test_the_pair_sft_controls_train_the_positives_of_per_step_dpo(ckpt, tmp_path):
    """sft_critical_pairs is the update the analysis calls sftc_pairs (critical-token SFT on the graphs of the
    pairs, once per pair); sft_pairs scores the whole true path of each pair; neither looks at the negatives."""
    res = gradient_alignment(ckpt, graphs=64, samples_per_graph=2, uniform=64, seed=0, chunk=16, return_grads=True)
    batches = {}
    for objective in ("per_step_dpo", "sft_critical_pairs", "sft_pairs"):
        cfg = PostTrainConfig(
            init=str(ckpt), objective=objective, seed=0, max_steps=0,
            pool=PoolConfig(policy="resampled", graphs=64, samples_per_graph=2),
            runtime=RuntimeConfig(device="cpu", threads=0, eval_batch_size=4096, amp="off"),
        )
        pt = PostTrainer(cfg, tmp_path / objective, log=lambda s: None)
        pt.model.train()
        b = batches[objective] = pt.make_batches(pt.build_pool())
        if objective == "sft_critical_pairs":
            assert b.chosen_mask_BL[:, 1].all() and b.chosen_mask_BL.sum() == len(b) and b.ref_chosen_BL is None
            loss, diag = pt.step_loss(b, torch.arange(len(b)))
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in pt.model.parameters()])
            assert torch.allclose(grad, res["grads"]["sftc_pairs"], atol=1e-6, rtol=1e-4) and set(diag) == {"loss"}
            # the negatives do not enter the loss
            other = type(b)(**{**b.tensors(), "rejected_BT": b.chosen_BT})
            assert torch.equal(pt.step_loss(other, torch.arange(len(b)))[0].detach(), loss.detach())
    dpo, crit, full = batches["per_step_dpo"], batches["sft_critical_pairs"], batches["sft_pairs"]
    assert torch.equal(dpo.chosen_BT, crit.chosen_BT) and torch.equal(dpo.chosen_BT, full.chosen_BT)  # the same pairs
    assert torch.equal(full.chosen_mask_BL, dpo.sft_mask_BL) and full.chosen_mask_BL[:, 0].all()  # source included


def test_pool_graph_groups_and_critical_metrics_by_group(ckpt, tmp_path):
    from stargraph.analysis import critical_by_group, pool_graph_groups
    from stargraph.evaluate import summarize, teacher_forced

    cfg = PostTrainConfig(init=str(ckpt), objective="per_step_dpo", seed=0, max_steps=0,
                          pool=PoolConfig(policy="resampled", graphs=64, samples_per_graph=2, temperature=2.0),
                          runtime=RuntimeConfig(device="cpu", threads=0, eval_batch_size=4096, amp="off"))
    pt = PostTrainer(cfg, tmp_path / "pool", log=lambda s: None)
    pool = pt.build_pool()
    n = len(pt.train)
    groups = pool_graph_groups(pool, n)
    stacked = torch.stack(list(groups.values())).int()
    assert torch.equal(stacked.sum(0), torch.ones(n, dtype=torch.int))  # a partition of the training queries
    assert int((groups["erred"] | groups["pool_right"]).sum()) == int(torch.unique(pool.graph_M).numel()) == 64
    assert torch.equal(groups["erred"].nonzero().squeeze(1), torch.unique(pool.graph_M[~pool.correct_M]))
    res = critical_by_group(pt.model, pt.train, {**groups, "all": torch.ones(n, dtype=torch.bool)})
    whole = summarize(teacher_forced(pt.model, pt.train, amp="off"), bok_k=0)
    assert res["all"]["n"] == n and res["all"]["crit_acc"] == pytest.approx(whole["crit_acc"])
    assert res["all"]["crit_prob"] == pytest.approx(whole["crit_prob"])
    for r in res.values():
        assert r["crit_prob"] + r["p_other_child"] + r["p_non_child"] == pytest.approx(1.0)
    # the pool's all-right graphs are the ones the policy gets right more often than the erred ones
    assert res["pool_right"]["crit_prob"] > res["erred"]["crit_prob"]
    with pytest.raises(ValueError, match="beyond"):
        pool_graph_groups(pool, 3)
