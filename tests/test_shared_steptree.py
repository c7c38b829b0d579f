"""The tabular step tree of the teaching notebooks: exact values, rollouts and the two tilted optima."""

from __future__ import annotations

import itertools

import pytest
import torch

from shared import steptree as st
from shared.advantages import best_of_k_from_rollouts, mc_q_values, step_advantages
from shared.losses import dpo_loss


def _tree(b=2, L=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(b**i, b, generator=g, dtype=torch.float64) for i in range(L)]
    rewards = (torch.rand(b**L, generator=g) < 0.4).double()
    return logits, rewards


def test_values_match_enumeration_and_responses_are_in_leaf_order():
    logits, r = _tree(b=3, L=3)
    probs = st.policy_probs(logits)
    ys = st.all_responses(3, 3)
    assert ys.shape == (27, 3) and ys[5].tolist() == [0, 1, 2]
    p_y = st.response_logprobs(logits).exp()
    torch.testing.assert_close(p_y, st.response_probs(probs))
    torch.testing.assert_close(p_y.sum(), torch.tensor(1.0, dtype=torch.float64))
    values = st.tree_values(probs, r)
    torch.testing.assert_close(values[0][0], (p_y * r).sum())
    # Q of prefix y_{1:1} by brute force.
    for a in range(3):
        sel = ys[:, 0] == a
        torch.testing.assert_close(values[1][a], (p_y[sel] * r[sel]).sum() / p_y[sel].sum())


def test_prefix_q_values_and_advantages_telescope():
    logits, r = _tree()
    values = st.tree_values(st.policy_probs(logits), r)
    ys = st.all_responses(2, 3)
    q, v0 = st.prefix_q_values(values, ys)
    torch.testing.assert_close(q[:, -1], r)
    adv = step_advantages(q, v0, torch.ones_like(q, dtype=torch.bool))
    torch.testing.assert_close(adv.sum(-1), r - v0)
    node_adv = st.node_advantages(values)
    nodes = st.prefix_nodes(ys, 2)
    for i in range(3):
        torch.testing.assert_close(adv[:, i], node_adv[i][nodes[:, i], ys[:, i]])
    # Under pi, advantages have mean zero at every node.
    for p, a in zip(st.policy_probs(logits), node_adv):
        torch.testing.assert_close((p * a).sum(-1), torch.zeros(p.shape[0], dtype=torch.float64))


def test_rollouts_estimate_q_and_best_of_k():
    logits, r = _tree(seed=1)
    probs = st.policy_probs(logits)
    values = st.tree_values(probs, r)
    y = st.all_responses(2, 3)[[1]]
    q, _ = st.prefix_q_values(values, y)
    s = st.rollout_successes(probs, r, y.repeat(4000, 1), 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mc_q_values(s).mean(0).double(), q[0], atol=0.02, rtol=0)
    torch.testing.assert_close(best_of_k_from_rollouts(s).mean(0).double(), 1 - (1 - q[0]) ** 5, atol=0.03, rtol=0)
    assert torch.equal(s[:, -1, :], r[1].expand(4000, 5))


def test_tilted_policies():
    logits, r = _tree(L=2, seed=2)
    probs = st.policy_probs(logits)
    values = st.tree_values(probs, r)
    beta = 0.3
    adv = st.advantage_tilted_policy(probs, st.node_advantages(values), beta)
    seq = st.reward_tilted_policy(probs, r, beta)
    target = st.response_probs(probs) * torch.exp(r / beta)
    torch.testing.assert_close(st.response_probs(seq), target / target.sum())
    # At the last step A(s, a) = r - V(s): the two optima agree there, not (in general) at the first step.
    torch.testing.assert_close(adv[-1], seq[-1])
    for p in adv + seq:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0], dtype=torch.float64))


def test_whole_response_dpo_reaches_the_reward_tilted_policy():
    logits_ref, r = _tree(L=2, seed=3)
    beta = 0.5
    pairs = list(itertools.permutations(range(4), 2))
    c, j = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    p_label = torch.sigmoid(r[c] - r[j])
    ref = st.response_logprobs(logits_ref)
    params = [t.clone().requires_grad_() for t in logits_ref]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=400, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        lp = st.response_logprobs(params)
        loss = (p_label * dpo_loss(lp[c], lp[j], ref[c], ref[j], beta=beta).loss_B).sum()
        loss.backward()
        return loss

    opt.step(closure)
    want = st.reward_tilted_policy(st.policy_probs(logits_ref), r, beta)
    torch.testing.assert_close(st.response_probs(st.policy_probs([p.detach() for p in params])), st.response_probs(want), atol=1e-5, rtol=0)


def test_partial_paths_and_samples():
    logits, r = _tree(b=3, L=3, seed=4)
    ys = st.all_responses(3, 3)
    full = st.step_logprobs_on_tree(logits, ys)
    torch.testing.assert_close(st.step_logprobs_on_tree(logits, ys[:, :2]), full[:, :2])
    assert st.step_logprobs_on_tree(logits, ys[:, :0]).shape == (27, 0)
    y = st.sample_responses(st.policy_probs(logits), 20000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount((y * torch.tensor([9, 3, 1])).sum(-1), minlength=27).double() / 20000
    torch.testing.assert_close(freq, full.sum(-1).exp(), atol=0.01, rtol=0)


def test_shape_errors():
    with pytest.raises(ValueError):
        st.policy_probs([torch.zeros(1, 2), torch.zeros(3, 2)])
    with pytest.raises(ValueError):
        st.prefix_nodes(torch.tensor([[0, 2]]), 2)
