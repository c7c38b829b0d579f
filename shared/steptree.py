"""Tabular step trees: a toy reasoning problem on which every quantity of the paper is exact.

A question x is answered by L steps, each one of ``b`` choices, so a response y = (y_1, ..., y_L) is a
leaf of a b-ary tree of depth L, with reward r(x, y) (1 correct, 0 wrong; any real works). A policy
pi(y_i | x, y_{<i}) is a table of logits with one row per prefix node. Nodes are numbered level by
level: the prefix y_{1:i} is node ``sum_j y_j b^(i - j)`` of level i (the root, the empty prefix, is
node 0 of level 0), and its children are ``node * b + a``.

On such a tree the value functions the paper estimates with rollouts can be computed exactly by one
backward pass, ``V_L = r`` and ``V_i(s) = sum_a pi(a | s) V_{i+1}(s a)``, so that
``Q^pi(x, y_{1:i}) = V_i(y_{1:i})`` and ``V^pi(x) = V_0``. The teaching notebooks use these functions
to compare Monte-Carlo and exact Q-values, to show where each preference loss sends its gradient, and
to check the paper's theorem: per-step DPO on advantage-labelled pairs and advantage-weighted
regression both reach ``pi_ref(a | s) exp(A(s, a) / beta) / Z(s)`` at every prefix s
(:func:`advantage_tilted_policy`), while DPO on whole responses reaches
``pi_ref(y) exp(r(y) / beta) / Z`` (:func:`reward_tilted_policy`).

Levels are Python lists indexed by depth i = 0..L-1 (policy rows) or 0..L (values); level i of a
policy is a ``(b^i, b)`` tensor.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "uniform_logits",
    "policy_probs",
    "all_responses",
    "prefix_nodes",
    "tree_values",
    "prefix_q_values",
    "node_advantages",
    "step_logprobs_on_tree",
    "response_logprobs",
    "rollout_successes",
    "sample_responses",
    "advantage_tilted_policy",
    "reward_tilted_policy",
    "response_probs",
]


def _branching(levels: Sequence[torch.Tensor]) -> int:
    if len(levels) == 0:
        raise ValueError("a step tree needs at least one level")
    b = int(levels[0].shape[-1])
    for i, t in enumerate(levels):
        if tuple(t.shape) != (b**i, b):
            raise ValueError(f"level {i} must have shape ({b ** i}, {b}), got {tuple(t.shape)}")
    return b


def uniform_logits(branching: int, depth: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Zero logits (the uniform policy) for a tree of the given branching and depth."""
    if branching < 1 or depth < 1:
        raise ValueError(f"uniform_logits: branching and depth must be >= 1, got {branching}, {depth}")
    return [torch.zeros(branching**i, branching, dtype=dtype) for i in range(depth)]


def policy_probs(logits_levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Softmax of each node's logits: ``pi(a | s)`` for every prefix node s of every level."""
    _branching(logits_levels)
    return [torch.softmax(t, dim=-1) for t in logits_levels]


def all_responses(branching: int, depth: int) -> torch.Tensor:
    """``(b^L, L)`` long: every response, row ``n`` being leaf ``n`` (its steps in base b)."""
    n = torch.arange(branching**depth)
    powers = branching ** torch.arange(depth - 1, -1, -1)
    return (n.unsqueeze(-1) // powers) % branching


def prefix_nodes(paths_BL: torch.Tensor, branching: int) -> torch.Tensor:
    """``(B, L + 1)`` long: node id of the prefix ``y_{1:i}`` at level i (column 0: the root, 0)."""
    if paths_BL.dim() != 2:
        raise ValueError(f"prefix_nodes: expected (B, L) steps, got {tuple(paths_BL.shape)}")
    paths = paths_BL.long()
    if bool(((paths < 0) | (paths >= branching)).any()):
        raise ValueError(f"prefix_nodes: steps must lie in [0, {branching})")
    nodes = [torch.zeros(paths.shape[0], dtype=torch.long)]
    for i in range(paths.shape[1]):
        nodes.append(nodes[-1] * branching + paths[:, i])
    return torch.stack(nodes, dim=1)


def tree_values(probs_levels: Sequence[torch.Tensor], rewards: torch.Tensor) -> list[torch.Tensor]:
    """Exact values of every prefix node under the policy: ``V_L = r``, ``V_i(s) = sum_a pi(a|s) V_{i+1}(s a)``.

    Args:
        probs_levels: ``pi(a | s)`` per level (:func:`policy_probs`).
        rewards: ``(b^L,)`` reward of every response (leaf order of :func:`all_responses`).

    Returns:
        ``L + 1`` tensors, level i of shape ``(b^i,)``; ``[0][0]`` is ``V^pi(x)``.
    """
    b = _branching(probs_levels)
    L = len(probs_levels)
    if tuple(rewards.shape) != (b**L,):
        raise ValueError(f"tree_values: rewards must have shape ({b ** L},), got {tuple(rewards.shape)}")
    values = [rewards.to(probs_levels[-1].dtype)]
    for i in range(L - 1, -1, -1):
        values.append((probs_levels[i] * values[-1].view(b**i, b)).sum(-1))
    return values[::-1]


def prefix_q_values(values: Sequence[torch.Tensor], paths_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``Q^pi(x, y_{1:i})`` of each step prefix of each response, and ``V^pi(x)``.

    Returns ``(q_BL, v0_B)`` in the layout of :func:`shared.advantages.step_advantages`: column ``i``
    (0-based) holds the Q of the prefix through step ``i + 1``.
    """
    b = int(values[1].shape[0]) if len(values) > 1 else 1
    nodes = prefix_nodes(paths_BL, b)
    q = torch.stack([values[i][nodes[:, i]] for i in range(1, nodes.shape[1])], dim=1)
    return q, values[0][nodes[:, 0]]


def node_advantages(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``A(s, a) = V_{i+1}(s a) - V_i(s)`` for every node s of level i and step a: Eq. 3 on every edge.

    Returns L tensors, level i of shape ``(b^i, b)``.
    """
    L = len(values) - 1
    b = int(values[1].shape[0])
    return [values[i + 1].view(b**i, b) - values[i].unsqueeze(-1) for i in range(L)]


def step_logprobs_on_tree(logits_levels: Sequence[torch.Tensor], paths_BL: torch.Tensor) -> torch.Tensor:
    """``(B, l)`` ``log pi(y_i | x, y_{<i})`` of each step of each (partial) response of ``l <= L`` steps,
    differentiable in the logits."""
    b = _branching(logits_levels)
    if paths_BL.dim() != 2 or paths_BL.shape[1] > len(logits_levels):
        raise ValueError(f"step_logprobs_on_tree: expected (B, l <= {len(logits_levels)}) steps, got {tuple(paths_BL.shape)}")
    nodes = prefix_nodes(paths_BL, b)
    cols = [
        torch.log_softmax(logits_levels[i], dim=-1)[nodes[:, i], paths_BL[:, i].long()] for i in range(paths_BL.shape[1])
    ]
    if not cols:
        return torch.zeros(paths_BL.shape[0], 0, dtype=logits_levels[0].dtype)
    return torch.stack(cols, dim=1)


def response_logprobs(logits_levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(b^L,)`` ``log pi(y | x)`` of every response (leaf order of :func:`all_responses`)."""
    b = _branching(logits_levels)
    return step_logprobs_on_tree(logits_levels, all_responses(b, len(logits_levels))).sum(-1)


def response_probs(probs_levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(b^L,)`` ``pi(y | x)`` of every response from per-node conditionals."""
    _branching(probs_levels)  # checks the levels' shapes (the shape check at entry)
    out = torch.ones(1, dtype=probs_levels[0].dtype)
    for p in probs_levels:
        out = (out.unsqueeze(-1) * p).reshape(-1)
    return out


def rollout_successes(
    probs_levels: Sequence[torch.Tensor],
    rewards: torch.Tensor,
    paths_BL: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """``(B, L, K)`` rewards of K rollouts of the policy from every step prefix ``y_{1:i}`` (i = 1..L).

    Rollout k from prefix i samples ``y'_{i+1:L} ~ pi(. | x, y_{1:i})`` and records ``r(x, y_{1:i} y')``.
    At i = L (the whole response) every "rollout" is its own reward. The mean over K is the
    Monte-Carlo Q estimate (:func:`shared.advantages.mc_q_values`).
    """
    b = _branching(probs_levels)
    L = len(probs_levels)
    if k < 1:
        raise ValueError(f"rollout_successes: k must be >= 1, got {k}")
    nodes = prefix_nodes(paths_BL, b)
    B = paths_BL.shape[0]
    out = torch.empty(B, L, k, dtype=rewards.dtype)
    for i in range(1, L + 1):
        cur = nodes[:, i].repeat_interleave(k)
        for j in range(i, L):
            step = torch.multinomial(probs_levels[j][cur], 1, replacement=True, generator=generator).squeeze(-1)
            cur = cur * b + step
        out[:, i - 1, :] = rewards[cur].view(B, k)
    return out


def sample_responses(probs_levels: Sequence[torch.Tensor], n: int, *, generator: torch.Generator) -> torch.Tensor:
    """``(n, L)`` long: n responses sampled from the policy (the learner's samples for one question)."""
    b = _branching(probs_levels)
    cur = torch.zeros(n, dtype=torch.long)
    steps = []
    for p in probs_levels:
        a = torch.multinomial(p[cur], 1, replacement=True, generator=generator).squeeze(-1)
        steps.append(a)
        cur = cur * b + a
    return torch.stack(steps, dim=1)


def advantage_tilted_policy(
    probs_levels: Sequence[torch.Tensor], adv_levels: Sequence[torch.Tensor], beta: float
) -> list[torch.Tensor]:
    """``pi_ref(a | s) exp(A(s, a) / beta) / Z(s)`` at every node: the optimum of per-step DPO on
    advantage-labelled pairs and of advantage-weighted regression (the paper's theorem)."""
    if not beta > 0:
        raise ValueError(f"advantage_tilted_policy: beta must be > 0, got {beta}")
    out = []
    for p, a in zip(probs_levels, adv_levels):
        w = p * torch.exp((a - a.max(dim=-1, keepdim=True).values) / beta)
        out.append(w / w.sum(-1, keepdim=True))
    return out


def reward_tilted_policy(probs_levels: Sequence[torch.Tensor], rewards: torch.Tensor, beta: float) -> list[torch.Tensor]:
    """Per-node conditionals of ``pi_ref(y) exp(r(y) / beta) / Z``: the optimum of DPO on whole responses
    labelled by their rewards.

    With ``W_L = exp(r / beta)`` and ``W_i(s) = sum_a pi_ref(a|s) W_{i+1}(s a)``, the conditional is
    ``pi*(a | s) = pi_ref(a | s) W_{i+1}(s a) / W_i(s)``: each step is tilted by the *soft* value
    ``beta log W_{i+1}``, not by the advantage under pi_ref.
    """
    if not beta > 0:
        raise ValueError(f"reward_tilted_policy: beta must be > 0, got {beta}")
    b = _branching(probs_levels)
    L = len(probs_levels)
    r = rewards.to(probs_levels[-1].dtype)
    w = [torch.exp((r - r.max()) / beta)]
    for i in range(L - 1, -1, -1):
        w.append((probs_levels[i] * w[-1].view(b**i, b)).sum(-1))
    w = w[::-1]
    return [probs_levels[i] * w[i + 1].view(b**i, b) / w[i].unsqueeze(-1) for i in range(L)]
