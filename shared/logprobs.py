"""Token, sequence and step log-probabilities from logits.

Shape suffixes: ``B`` batch, ``T`` tokens, ``V`` vocabulary, ``S`` steps.

Alignment convention: ``token_logprobs`` does **not** shift. The logits at position ``t`` score the
label at position ``t``. For a causal LM whose logits at position ``t`` predict token ``t + 1``, the
caller passes ``logits[:, :-1]`` and ``input_ids[:, 1:]`` (and shifts masks and step ids the same way,
i.e. uses ``mask[:, 1:]`` / ``step_ids[:, 1:]``).
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs", "sequence_logprobs", "step_logprobs", "step_mask_from_ids"]

_CHUNK_ELEMENTS = 1 << 26
"""Largest number of float32 logits normalised at once by :func:`token_logprobs`."""


def token_logprobs(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Log-probability of each label under already-aligned logits.

    ``logps_BT[b, t] = log softmax(logits_BTV[b, t])[labels_BT[b, t]]``, and 0 where
    ``labels_BT == ignore_index``.

    Args:
        logits_BTV: ``(B, T, V)`` unnormalised scores; position ``t`` scores ``labels_BT[:, t]``.
        labels_BT: ``(B, T)`` integer labels, ``ignore_index`` where there is nothing to score.
        ignore_index: label value that marks ignored positions.

    Returns:
        ``(B, T)`` float32 log-probabilities (gradients flow to ``logits_BTV``).

    The normaliser is computed in float32 over chunks of rows, so bf16 logits lose no precision and the
    peak extra memory stays bounded (about 2^26 float32 elements) for large vocabularies.
    """
    if logits_BTV.dim() != 3 or labels_BT.dim() != 2 or logits_BTV.shape[:2] != labels_BT.shape:
        raise ValueError(
            f"token_logprobs: expected logits (B, T, V) and labels (B, T) with matching B, T; "
            f"got {tuple(logits_BTV.shape)} and {tuple(labels_BT.shape)}"
        )
    ignore_BT = labels_BT == ignore_index
    safe_labels_BT = labels_BT.masked_fill(ignore_BT, 0).long()
    V = logits_BTV.shape[-1]
    # Value check on CPU only: on CUDA it would force a device sync in every training step.
    if not labels_BT.is_cuda and bool(((safe_labels_BT < 0) | (safe_labels_BT >= V)).any()):
        raise ValueError(f"token_logprobs: labels outside [0, {V}) that are not ignore_index={ignore_index}")
    # Chunk over the batch so the float32 normaliser never needs more than _CHUNK_ELEMENTS at once.
    B, T = labels_BT.shape
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, T * V))
    chunks = []
    for start in range(0, B, rows_per_chunk):
        logits_CTV = logits_BTV[start : start + rows_per_chunk].float()
        labels_CT = safe_labels_BT[start : start + rows_per_chunk]
        picked_CT = logits_CTV.gather(-1, labels_CT.unsqueeze(-1)).squeeze(-1)
        chunks.append(picked_CT - torch.logsumexp(logits_CTV, dim=-1))
    logps_BT = torch.cat(chunks) if chunks else logits_BTV.new_zeros((B, T), dtype=torch.float32)
    return logps_BT.masked_fill(ignore_BT, 0.0)


def sequence_logprobs(logps_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Sum of token log-probs over the masked positions: ``sum_t mask[b, t] * logps[b, t]``.

    Args:
        logps_BT: ``(B, T)`` token log-probabilities.
        mask_BT: ``(B, T)`` bool or {0, 1} mask of the tokens that count.

    Returns:
        ``(B,)`` sequence log-probabilities; a fully masked row gives 0.
    """
    if logps_BT.shape != mask_BT.shape or logps_BT.dim() != 2:
        raise ValueError(f"sequence_logprobs: expected matching (B, T); got {tuple(logps_BT.shape)}, {tuple(mask_BT.shape)}")
    # where() rather than a product: a masked -inf (or NaN) log-prob must not poison the sum.
    return torch.where(mask_BT.bool(), logps_BT, torch.zeros_like(logps_BT)).sum(-1)


def step_logprobs(logps_BT: torch.Tensor, step_ids_BT: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Sum of token log-probs per reasoning step.

    ``out[b, s] = sum_{t : step_ids[b, t] == s} logps[b, t]``; tokens with step id ``-1`` belong to no
    step and are dropped.

    Args:
        logps_BT: ``(B, T)`` token log-probabilities.
        step_ids_BT: ``(B, T)`` integer step index of each token, ``-1`` = not in any step.
        num_steps: ``S``, the number of step slots in the output (ids must be ``< S``).

    Returns:
        ``(B, S)`` step log-probabilities; steps with no token give 0.
    """
    if logps_BT.shape != step_ids_BT.shape or logps_BT.dim() != 2:
        raise ValueError(f"step_logprobs: expected matching (B, T); got {tuple(logps_BT.shape)}, {tuple(step_ids_BT.shape)}")
    if num_steps < 0:
        raise ValueError(f"step_logprobs: num_steps must be >= 0, got {num_steps}")
    ids_BT = step_ids_BT.long()
    if not ids_BT.is_cuda and bool(((ids_BT < -1) | (ids_BT >= num_steps)).any()):
        raise ValueError(f"step_logprobs: step ids must lie in [-1, {num_steps})")
    B = logps_BT.shape[0]
    out_BS1 = logps_BT.new_zeros(B, num_steps + 1)
    # Slot 0 collects the "no step" tokens and is dropped.
    out_BS1 = out_BS1.scatter_add(1, ids_BT + 1, logps_BT)
    return out_BS1[:, 1:]


def step_mask_from_ids(step_ids_BT: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``(B, S)`` bool mask of the steps that own at least one token in ``step_ids_BT``."""
    if step_ids_BT.dim() != 2:
        raise ValueError(f"step_mask_from_ids: expected (B, T); got {tuple(step_ids_BT.shape)}")
    ids_BT = step_ids_BT.long()
    counts_BS1 = torch.zeros(ids_BT.shape[0], num_steps + 1, dtype=torch.long, device=ids_BT.device)
    counts_BS1.scatter_add_(1, ids_BT + 1, torch.ones_like(ids_BT))
    return counts_BS1[:, 1:] > 0
