"""Sampled responses and the Q-values of their step prefixes (exact and Monte-Carlo).

A response is the path after the source: ``S = path_len - 1`` step tokens (the prompt is the
prefix through ``=`` plus the source, which is given).  It is correct iff it equals the true path.

- :func:`exact_step_q`: exact Q of every step prefix of every response, from one teacher-forced pass
  over the true paths (:func:`shared.advantages.exact_q_values`); a prefix that has left the true
  path has Q = 0.
- :func:`mc_step_q`: Monte-Carlo Q from K sampled rollouts per distinct step prefix
  (:func:`shared.advantages.mc_q_values`, or the binary best-of-K estimate
  :func:`shared.advantages.best_of_k_from_rollouts`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from shared.advantages import best_of_k, best_of_k_from_rollouts, exact_q_values, mc_q_values

from .evaluate import generate, teacher_forced
from .model import GPT
from .tokenizer import TokenizedGraphs


def sample_responses(
    model: GPT,
    data: TokenizedGraphs,
    graph_M: torch.Tensor,
    *,
    temperature: float,
    generator: torch.Generator,
    amp: bool | str = "auto",
    batch_size: int = 8192,
) -> torch.Tensor:
    """``(M, S)`` responses sampled for graphs ``graph_M`` (indices into ``data``), source given."""
    seq = data.tokens_NT[graph_M.to(data.tokens_NT.device)]
    out = generate(model, seq, data.P + 1, temperature=temperature, generator=generator, amp=amp, batch_size=batch_size)
    return out[:, data.P + 1 :].to(graph_M.device)


def on_path(data: TokenizedGraphs, graph_M: torch.Tensor, resp_MS: torch.Tensor) -> torch.Tensor:
    """``(M, S)`` bool: the prefix through step i equals the true path's.

    For queries with a shorter target (``data.target_len_N``) the steps after the goal are not
    compared: a response is correct (``on_path[:, -1]``) iff it reaches the goal along the true path.
    """
    true_MS = data.path_NL[graph_M.to(data.tokens_NT.device), 1:].to(resp_MS.device)
    eq = resp_MS == true_MS
    if data.target_len_N is not None:
        eq = eq | ~data.step_mask(graph_M).to(resp_MS.device)
    return torch.cumprod(eq.to(torch.int8), dim=1).bool()


class StepQ(NamedTuple):
    q_MS: torch.Tensor
    """(M, S) float64 Q of the prefix through each step."""
    v0_M: torch.Tensor
    """(M,) float64 value of the prompt (prefix + source)."""


def true_path_step_q(model: GPT, data: TokenizedGraphs, *, batch_size: int = 4096, amp: bool | str = "auto", bok_k: int = 0) -> StepQ:
    """Exact Q of each prefix of each graph's *true* path (``(N, S)``) and the value of its prompt."""
    tf = teacher_forced(model, data, batch_size=batch_size, amp=amp)
    lp = tf["logp_NL"][:, 1:]
    ex = exact_q_values(lp, torch.ones_like(lp, dtype=torch.bool))
    q, v0 = ex.q_BS, ex.v0_B
    if bok_k > 0:
        q, v0 = best_of_k(q, bok_k), best_of_k(v0, bok_k)
    return StepQ(q, v0)


def exact_step_q(true_q: StepQ, data: TokenizedGraphs, graph_M: torch.Tensor, resp_MS: torch.Tensor) -> StepQ:
    """Exact Q of every step prefix of the responses: the true path's Q while on it, 0 once off it."""
    g = graph_M.cpu()
    onp = on_path(data, g, resp_MS.cpu())
    q = torch.where(onp, true_q.q_MS[g], torch.zeros((), dtype=true_q.q_MS.dtype))
    return StepQ(q, true_q.v0_M[g])


def mc_step_q(
    model: GPT,
    data: TokenizedGraphs,
    graph_M: torch.Tensor,
    resp_MS: torch.Tensor,
    *,
    k: int,
    generator: torch.Generator,
    bok: bool = False,
    temperature: float = 1.0,
    amp: bool | str = "auto",
    batch_size: int = 8192,
) -> StepQ:
    """Monte-Carlo Q of every step prefix from ``k`` rollouts per distinct (graph, prefix).

    Rollouts from the same graph and prefix are shared between responses (deduplicated), so the
    cost scales with the number of distinct prefixes, not responses.  The prefix through the last
    step is a complete response: its "rollouts" are its own reward.  ``bok=True`` gives the binary
    best-of-k estimate (1 if any rollout succeeded) instead of the mean.
    """
    g = graph_M.cpu()
    resp = resp_MS.cpu()
    M, S = resp.shape
    P = data.P
    # Prefix levels 0..S-1 hold prefixes with 0..S-1 steps (level 0 is the prompt: gives v0).
    lv = torch.arange(S).repeat(M)  # number of given steps
    gm = g.repeat_interleave(S)
    steps = resp.repeat_interleave(S, dim=0)
    keep = torch.arange(S).unsqueeze(0) < lv.unsqueeze(1)
    key = torch.where(keep, steps, torch.full_like(steps, -1))
    rows = torch.cat([gm.unsqueeze(1), key], dim=1)
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
    U = uniq.shape[0]
    n_given = (uniq[:, 1:] >= 0).sum(1)
    seq = data.tokens_NT[uniq[:, 0].to(data.tokens_NT.device)].cpu().clone()
    seq[:, P + 1 :] = torch.where(uniq[:, 1:] >= 0, uniq[:, 1:], seq[:, P + 1 :])
    seq = seq.repeat_interleave(k, dim=0)
    start = (P + 1 + n_given).repeat_interleave(k)
    out = generate(model, seq, start, temperature=temperature, generator=generator, amp=amp, batch_size=batch_size).cpu()
    true = data.path_NL[uniq[:, 0].to(data.tokens_NT.device)].cpu().repeat_interleave(k, dim=0)
    hit = out[:, P:] == true
    if data.target_len_N is not None:  # positions after a query's goal are not part of its answer
        hit = hit | ~data.target_mask_NL[uniq[:, 0].to(data.tokens_NT.device)].cpu().repeat_interleave(k, dim=0)
    succ_UK = hit.all(1).view(U, k)
    succ = succ_UK[inverse].view(M, S, k)  # level j = prefix with j steps
    correct = on_path(data, g, resp)[:, -1]
    # Q of the prefix through step i uses level i+1; through the last step, the response's reward.
    succ_steps = torch.cat([succ[:, 1:], correct.view(M, 1, 1).expand(M, 1, k)], dim=1)
    est = best_of_k_from_rollouts if bok else mc_q_values
    q = est(succ_steps).double()
    v0 = est(succ[:, :1]).double().squeeze(1)
    return StepQ(q, v0)
