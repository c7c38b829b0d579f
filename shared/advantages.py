"""Per-step value estimates and credit assignment (Setlur et al. 2024, Sec. 5).

A response is a sequence of steps y = (y_1, ..., y_S). The Q-value of the step prefix y_{1:i} is
the expected final reward of completing it with a rollout policy mu:
``Q_i = E_{y_{i+1:} ~ mu(. | x, y_{1:i})}[r(x, y)]``; ``Q_0 = V(x)`` is the value of the question.
The advantage of step i is ``A_i = Q_i - Q_{i-1}`` (paper Eq. 3). The paper's rollout policy is
BoK(pi_sft) with K = 5: a prefix succeeds if any of K rollouts from it succeeds.

Shape suffixes: ``B`` responses, ``S`` steps (ragged responses use a ``step_mask_BS``), ``K`` rollouts
per step prefix, ``T`` tokens.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch

__all__ = [
    "ExactQ",
    "mc_q_values",
    "best_of_k",
    "best_of_k_from_rollouts",
    "exact_q_values",
    "step_advantages",
    "first_pit",
    "steps_to_tokens",
    "steps_through_mask",
]

Number = Union[float, torch.Tensor]


def _check_mask(fn: str, q_BS: torch.Tensor, step_mask_BS: torch.Tensor) -> None:
    if q_BS.dim() != 2 or q_BS.shape != step_mask_BS.shape:
        raise ValueError(f"{fn}: expected q and step_mask of one (B, S) shape, got {tuple(q_BS.shape)}, {tuple(step_mask_BS.shape)}")


def mc_q_values(successes_BSK: torch.Tensor, valid_BSK: torch.Tensor | None = None) -> torch.Tensor:
    """Monte-Carlo Q-value of each step prefix: the mean success of its K rollouts.

    ``Q[b, i] = (1 / K) sum_k successes[b, i, k]`` estimates the rollout policy's Q of the prefix
    through step i. With ``valid_BSK`` only valid rollouts count (prefixes with none get 0).

    Args:
        successes_BSK: ``(B, S, K)`` bool or {0, 1}: rollout k from the prefix through step i succeeded.
        valid_BSK: optional ``(B, S, K)`` mask of rollouts that were actually run.

    Returns:
        ``(B, S)`` float Q estimates in [0, 1].
    """
    if successes_BSK.dim() != 3 or successes_BSK.shape[-1] < 1:
        raise ValueError(f"mc_q_values: expected (B, S, K) with K >= 1, got {tuple(successes_BSK.shape)}")
    s_BSK = successes_BSK.float()
    if valid_BSK is None:
        return s_BSK.mean(-1)
    if valid_BSK.shape != successes_BSK.shape:
        raise ValueError(f"mc_q_values: valid mask shape {tuple(valid_BSK.shape)} != {tuple(successes_BSK.shape)}")
    v_BSK = valid_BSK.float()
    return (s_BSK * v_BSK).sum(-1) / v_BSK.sum(-1).clamp(min=1.0)


def best_of_k(q: Number, k: int) -> Number:
    """Q-value under the best-of-K rollout policy BoK(mu): ``1 - (1 - q)^k``.

    A prefix succeeds under BoK if any of k independent rollouts of mu from it succeeds. Works
    elementwise on floats and tensors.
    """
    if k < 1:
        raise ValueError(f"best_of_k: k must be >= 1, got {k}")
    return 1.0 - (1.0 - q) ** k


def best_of_k_from_rollouts(successes_BSK: torch.Tensor) -> torch.Tensor:
    """Binary BoK estimate from K rollouts per prefix: 1 if any rollout succeeded (the paper's
    BoK(pi_sft) with K = 5). Returns ``(B, S)`` float in {0, 1}."""
    if successes_BSK.dim() != 3 or successes_BSK.shape[-1] < 1:
        raise ValueError(f"best_of_k_from_rollouts: expected (B, S, K) with K >= 1, got {tuple(successes_BSK.shape)}")
    return successes_BSK.bool().any(-1).float()


class ExactQ(NamedTuple):
    q_BS: torch.Tensor
    """(B, S) Q of the prefix through each step (1 for the last valid step; 0 on masked steps)."""
    v0_B: torch.Tensor
    """(B,) value of the question: the probability of the whole correct response."""


def exact_q_values(step_logps_BS: torch.Tensor, step_mask_BS: torch.Tensor) -> ExactQ:
    """Exact Q-values when the correct continuation of every correct prefix is unique.

    If exactly one completion of y*_{1:i} is correct (true of the star-graph path task), then
    ``Q_i = prod_{j > i} pi(y*_j | x, y*_{<j}) = exp(sum_{j > i} log pi(y*_j | ...))``: one
    teacher-forced pass over the correct response y* gives every Q at once. ``V(x) = exp(sum_j ...)``.
    Prefixes that have left y* have Q = 0, which the caller handles.

    Args:
        step_logps_BS: ``(B, S)`` log-prob of each step of y* under the policy (e.g.
            :func:`shared.logprobs.step_logprobs`).
        step_mask_BS: ``(B, S)`` valid steps.

    Returns:
        :class:`ExactQ` with ``q_BS`` and ``v0_B``.
    """
    _check_mask("exact_q_values", step_logps_BS, step_mask_BS)
    mask_BS = step_mask_BS.bool()
    lp_BS = torch.where(mask_BS, step_logps_BS, torch.zeros_like(step_logps_BS))
    total_B = lp_BS.sum(-1)
    through_BS = torch.cumsum(lp_BS, dim=-1)  # log-prob of steps 1..i
    q_BS = torch.exp(total_B.unsqueeze(-1) - through_BS)
    q_BS = torch.where(mask_BS, q_BS, torch.zeros_like(q_BS))
    return ExactQ(q_BS, torch.exp(total_B))


def step_advantages(q_BS: torch.Tensor, v0_B: torch.Tensor, step_mask_BS: torch.Tensor) -> torch.Tensor:
    """Per-step advantages ``A_i = Q_i - Q_{i-1}`` with ``Q_0 = V(x)`` (paper Eq. 3).

    ``Q_{i-1}`` is the Q of the closest earlier valid step (``v0`` if there is none), so masks need not
    be contiguous. Masked steps get advantage 0.

    Args:
        q_BS: ``(B, S)`` Q-values of the step prefixes.
        v0_B: ``(B,)`` value of each question.
        step_mask_BS: ``(B, S)`` valid steps.

    Returns:
        ``(B, S)`` advantages.
    """
    _check_mask("step_advantages", q_BS, step_mask_BS)
    if v0_B.shape != q_BS.shape[:1]:
        raise ValueError(f"step_advantages: v0 shape {tuple(v0_B.shape)} != ({q_BS.shape[0]},)")
    B, S = q_BS.shape
    mask_BS = step_mask_BS.bool()
    idx_BS = torch.arange(S, device=q_BS.device).expand(B, S)
    last_valid_BS = torch.cummax(torch.where(mask_BS, idx_BS, torch.full_like(idx_BS, -1)), dim=1).values
    prev_BS = torch.cat([torch.full_like(idx_BS[:, :1], -1), last_valid_BS[:, :-1]], dim=1)
    q_prev_BS = torch.where(
        prev_BS >= 0, q_BS.gather(1, prev_BS.clamp(min=0)), v0_B.to(q_BS.dtype).unsqueeze(-1).expand(B, S)
    )
    return torch.where(mask_BS, q_BS - q_prev_BS, torch.zeros_like(q_BS))


def first_pit(
    q_BS: torch.Tensor,
    step_mask_BS: torch.Tensor,
    *,
    threshold: float | None = None,
    max_q: float = 1.0,
) -> torch.Tensor:
    """Index of the first pit of each response: the step where its value bottoms out.

    Without ``threshold``: the first valid step whose Q equals the lowest Q of the response (ties:
    the first wins). A response whose lowest Q is ``>= max_q`` never loses any probability of
    success and has no pit. With ``threshold``: the first valid step with ``Q <= threshold`` (with
    binary BoK estimates and ``threshold=0``, the first step from which no rollout succeeds, as in
    Self-Explore). Responses without a pit (or without valid steps) get ``-1``; such negatives are
    dropped by the pair builders.

    Meant for incorrect responses (the pair builders' input). On a correct response the lowest-Q step
    may still *gain* value over the state before it (its advantage, :func:`step_advantages`, can be
    positive), so a returned index there is not a step that loses value.

    Args:
        q_BS: ``(B, S)`` Q-values of the step prefixes.
        step_mask_BS: ``(B, S)`` valid steps.
        threshold: optional Q level at or below which a step is a pit.
        max_q: the largest possible Q (1 for success probabilities).

    Returns:
        ``(B,)`` long step indices, ``-1`` for no pit.
    """
    _check_mask("first_pit", q_BS, step_mask_BS)
    mask_BS = step_mask_BS.bool()
    B, S = q_BS.shape
    if S == 0:
        return torch.full((B,), -1, dtype=torch.long, device=q_BS.device)
    if threshold is None:
        masked_BS = torch.where(mask_BS, q_BS, torch.full_like(q_BS, float("inf")))
        min_B = masked_BS.min(dim=-1).values
        hit_BS = mask_BS & (masked_BS == min_B.unsqueeze(-1))
        has_B = mask_BS.any(-1) & (min_B < max_q)
    else:
        hit_BS = mask_BS & (q_BS <= threshold)
        has_B = hit_BS.any(-1)
    idx_B = hit_BS.to(torch.int8).argmax(dim=-1)  # argmax returns the first maximal index
    return torch.where(has_B, idx_B, torch.full_like(idx_B, -1))


def steps_to_tokens(adv_BS: torch.Tensor, step_ids_BT: torch.Tensor) -> torch.Tensor:
    """Broadcast per-step values to tokens: ``out[b, t] = adv[b, step_ids[b, t]]``, 0 where the id is -1.

    Args:
        adv_BS: ``(B, S)`` per-step values (advantages, Q-values, ...).
        step_ids_BT: ``(B, T)`` step index of each token, ``-1`` = none.

    Returns:
        ``(B, T)`` per-token values.
    """
    if adv_BS.dim() != 2 or step_ids_BT.dim() != 2 or adv_BS.shape[0] != step_ids_BT.shape[0]:
        raise ValueError(f"steps_to_tokens: expected (B, S) and (B, T); got {tuple(adv_BS.shape)}, {tuple(step_ids_BT.shape)}")
    ids_BT = step_ids_BT.long()
    S = adv_BS.shape[1]
    if S == 0:
        return adv_BS.new_zeros(step_ids_BT.shape)
    if not ids_BT.is_cuda and bool(((ids_BT < -1) | (ids_BT >= S)).any()):
        raise ValueError(f"steps_to_tokens: step ids must lie in [-1, {S})")
    out_BT = adv_BS.gather(1, ids_BT.clamp(min=0))
    return torch.where(ids_BT >= 0, out_BT, torch.zeros_like(out_BT))


def steps_through_mask(step_ids_BT: torch.Tensor, last_step_B: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool mask of tokens in steps ``0..last_step[b]`` (inclusive).

    With ``last_step = first_pit(...)`` this selects a negative truncated at and including its pit
    (the rejected side of the paper's Algorithm 1). Rows with ``last_step = -1`` select nothing.
    """
    if step_ids_BT.dim() != 2 or last_step_B.shape != step_ids_BT.shape[:1]:
        raise ValueError(f"steps_through_mask: expected (B, T) and (B,); got {tuple(step_ids_BT.shape)}, {tuple(last_step_B.shape)}")
    ids_BT = step_ids_BT.long()
    return (ids_BT >= 0) & (ids_BT <= last_step_B.long().unsqueeze(-1))
