"""The paper's equivalence theorem, numerically, on a tabular problem.

One state s (reached through a shared prefix of tokens) with a few actions whose advantages A(s, a)
are known. Pairs (s, a+, a-) are labelled by Bradley-Terry on the advantage,
P(a+ > a-) = sigma(A(a+) - A(a-)). Minimising per-step DPO with reference pi_ref on these pairs must
drive the policy to pi_ref(a|s) exp(A(s, a) / beta) / Z(s), which is also the optimum of
advantage-weighted regression on samples of pi_ref.
"""

from __future__ import annotations

import itertools

import torch

from shared.losses import advantage_weighted_loss, per_step_dpo_loss

BETA = 0.5
PI_REF = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
ADV = torch.tensor([0.3, -0.2, 0.6, -0.5], dtype=torch.float64)
PREFIX = 3  # tokens of the shared prefix s; their log-probs must cancel


def _target() -> torch.Tensor:
    w = PI_REF * torch.exp(ADV / BETA)
    return w / w.sum()


class TabularPolicy(torch.nn.Module):
    """Learnable prefix-token log-probs (which the loss must not care about) and action logits."""

    def __init__(self) -> None:
        super().__init__()
        self.prefix_logits = torch.nn.Parameter(torch.zeros(PREFIX, 2, dtype=torch.float64))
        self.action_logits = torch.nn.Parameter(torch.log(PI_REF).clone())

    def sequence_token_logps(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, PREFIX + 1) token log-probs of prefix tokens (always token 0) and the action."""
        prefix_T = torch.log_softmax(self.prefix_logits, -1)[:, 0]
        action_B = torch.log_softmax(self.action_logits, -1)[actions]
        return torch.cat([prefix_T.expand(actions.shape[0], PREFIX), action_B.unsqueeze(-1)], dim=1)


def _ref_logps(actions: torch.Tensor) -> torch.Tensor:
    prefix = torch.full((actions.shape[0], PREFIX), -0.7, dtype=torch.float64)
    return torch.cat([prefix, torch.log(PI_REF)[actions].unsqueeze(-1)], dim=1)


def _minimise(loss_fn, policy: TabularPolicy, steps: int) -> None:
    opt = torch.optim.LBFGS(policy.parameters(), lr=0.5, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def test_per_step_dpo_on_advantage_labelled_pairs_reaches_advantage_weighted_policy():
    pairs = list(itertools.permutations(range(4), 2))
    chosen = torch.tensor([a for a, _ in pairs])
    rejected = torch.tensor([b for _, b in pairs])
    # Expected loss under Bradley-Terry labels: each ordered pair (a, b) is "a preferred" w.p. sigma(A_a - A_b).
    p_label = torch.sigmoid(ADV[chosen] - ADV[rejected])
    ref_c, ref_r = _ref_logps(chosen), _ref_logps(rejected)
    ones = torch.ones(len(pairs), PREFIX + 1, dtype=torch.bool)
    policy = TabularPolicy()

    def loss_fn():
        out = per_step_dpo_loss(
            policy.sequence_token_logps(chosen), policy.sequence_token_logps(rejected), ref_c, ref_r, ones, ones, beta=BETA
        )
        return (p_label * out.loss_B).sum()

    _minimise(loss_fn, policy, steps=500)
    pi = torch.softmax(policy.action_logits.detach(), -1)
    torch.testing.assert_close(pi, _target(), atol=1e-5, rtol=0)
    # The shared prefix cancels, so its parameters receive no net gradient and never move.
    assert torch.all(policy.prefix_logits.detach() == 0)


def test_per_step_dpo_on_sampled_labels_is_close_to_the_same_policy():
    g = torch.Generator().manual_seed(0)
    n = 40_000
    a = torch.randint(0, 4, (n,), generator=g)
    b = (a + torch.randint(1, 4, (n,), generator=g)) % 4
    prefer_a = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(ADV[a] - ADV[b])
    chosen, rejected = torch.where(prefer_a, a, b), torch.where(prefer_a, b, a)
    ones = torch.ones(n, PREFIX + 1, dtype=torch.bool)
    ref_c, ref_r = _ref_logps(chosen), _ref_logps(rejected)
    policy = TabularPolicy()

    def loss_fn():
        out = per_step_dpo_loss(
            policy.sequence_token_logps(chosen), policy.sequence_token_logps(rejected), ref_c, ref_r, ones, ones, beta=BETA
        )
        return out.loss_B.mean()

    _minimise(loss_fn, policy, steps=200)
    pi = torch.softmax(policy.action_logits.detach(), -1)
    torch.testing.assert_close(pi, _target(), atol=0.02, rtol=0)


def test_advantage_weighted_regression_reaches_the_same_policy():
    actions = torch.arange(4)
    mask = torch.ones(4, 1, dtype=torch.bool)
    policy = TabularPolicy()

    def loss_fn():
        logps = torch.log_softmax(policy.action_logits, -1)[actions].unsqueeze(-1)
        out = advantage_weighted_loss(logps, ADV[actions].unsqueeze(-1), mask, beta=BETA, max_weight=1e6)
        return (PI_REF * out.loss_B).sum()  # expectation over a ~ pi_ref

    _minimise(loss_fn, policy, steps=500)
    pi = torch.softmax(policy.action_logits.detach(), -1)
    torch.testing.assert_close(pi, _target(), atol=1e-5, rtol=0)
