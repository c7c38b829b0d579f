"""Training objectives as pure functions on log-probability tensors.

Every loss returns a small ``NamedTuple`` whose ``loss_B`` holds one unreduced loss per example (the
caller reduces, e.g. ``out.loss_B.mean()``) and whose other fields are detached diagnostics.
Reference-model quantities (``ref_*``) are detached inside each function, so no gradient can reach
them whatever the caller passes.

Shape suffixes: ``B`` batch (pairs for preference losses), ``T`` tokens. Chosen and rejected token
tensors of a pair may have different lengths ``T``.

Notation: ``pi_*`` are policy log-probabilities log pi_theta(y|x), ``ref_*`` the reference model's
log pi_ref(y|x), ``beta`` the KL coefficient. With h = [log pi(y+) - log pi_ref(y+)] -
[log pi(y-) - log pi_ref(y-)] (the difference of implicit rewards divided by beta):

- DPO (Rafailov et al. 2023, Eq. 7):      -log sigma(beta h)
- cDPO (label smoothing eps):             -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
- IPO (Azar et al. 2023, Eq. 17):         (h - 1 / (2 beta))^2
- DPO-Positive (Pal et al. 2024, Eq. 3):  -log sigma(beta (h - lam max(0, log pi_ref(y+) - log pi(y+))))
- Per-step DPO (Setlur et al. 2024):      DPO on masked sums of token log-probs, so that a pair can
  score a whole positive against a negative truncated at its first pit, or a shared prefix's
  continuation against the pit step alone.
- Advantage-weighted regression (Peng et al. 2019; Setlur et al. 2024, Sec. 6): per-token weights
  exp(A / beta), clipped, on the token log-likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from shared.logprobs import sequence_logprobs

__all__ = [
    "SFTOutput",
    "PreferenceOutput",
    "AdvantageWeightedOutput",
    "sft_loss",
    "dpo_loss",
    "ipo_loss",
    "dpop_loss",
    "preference_loss",
    "per_step_dpo_loss",
    "advantage_weighted_loss",
]


class SFTOutput(NamedTuple):
    loss_B: torch.Tensor
    """(B,) mean token negative log-likelihood per sequence (0 for a fully masked row)."""
    num_tokens_B: torch.Tensor
    """(B,) number of tokens that counted."""


class PreferenceOutput(NamedTuple):
    loss_B: torch.Tensor
    """(B,) loss per pair."""
    chosen_rewards_B: torch.Tensor
    """(B,) detached implicit reward of the chosen side, beta * (log pi(y+) - log pi_ref(y+))."""
    rejected_rewards_B: torch.Tensor
    """(B,) detached implicit reward of the rejected side."""
    margins_B: torch.Tensor
    """(B,) detached chosen_rewards_B - rejected_rewards_B."""
    accuracies_B: torch.Tensor
    """(B,) detached float: 1 where the chosen reward exceeds the rejected reward."""


class AdvantageWeightedOutput(NamedTuple):
    loss_B: torch.Tensor
    """(B,) weighted mean token negative log-likelihood per sequence."""
    weights_BT: torch.Tensor
    """(B, T) detached per-token weights min(exp(A / beta), max_weight), 0 outside the mask."""
    clipped_fraction_B: torch.Tensor
    """(B,) detached fraction of counted tokens whose weight hit max_weight."""
    num_tokens_B: torch.Tensor
    """(B,) number of tokens that counted."""


def _check_same_shape(fn: str, dims: int, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != dims or any(s != first for s in shapes.values()):
        raise ValueError(f"{fn}: expected {dims}-d tensors of one shape, got {shapes}")


def sft_loss(logps_BT: torch.Tensor, mask_BT: torch.Tensor) -> SFTOutput:
    """Mean token negative log-likelihood per sequence (supervised fine-tuning).

    ``loss[b] = -sum_t mask[b, t] logps[b, t] / max(1, sum_t mask[b, t])``.

    Args:
        logps_BT: ``(B, T)`` token log-probabilities of the targets.
        mask_BT: ``(B, T)`` bool or {0, 1} mask of the target tokens.
    """
    _check_same_shape("sft_loss", 2, logps_BT=logps_BT, mask_BT=mask_BT)
    num_tokens_B = mask_BT.to(logps_BT.dtype).sum(-1)
    loss_B = -sequence_logprobs(logps_BT, mask_BT) / num_tokens_B.clamp(min=1.0)
    return SFTOutput(loss_B, num_tokens_B.detach())


def _preference_output(
    loss_B: torch.Tensor,
    pi_chosen_B: torch.Tensor,
    pi_rejected_B: torch.Tensor,
    ref_chosen_B: torch.Tensor,
    ref_rejected_B: torch.Tensor,
    beta: float,
) -> PreferenceOutput:
    chosen_rewards_B = beta * (pi_chosen_B - ref_chosen_B).detach()
    rejected_rewards_B = beta * (pi_rejected_B - ref_rejected_B).detach()
    margins_B = chosen_rewards_B - rejected_rewards_B
    return PreferenceOutput(loss_B, chosen_rewards_B, rejected_rewards_B, margins_B, (margins_B > 0).to(loss_B.dtype))


def _check_pairs(fn: str, beta: float, **tensors: torch.Tensor) -> None:
    _check_same_shape(fn, 1, **tensors)
    if not beta > 0:
        raise ValueError(f"{fn}: beta must be > 0, got {beta}")


def dpo_loss(
    pi_chosen_B: torch.Tensor,
    pi_rejected_B: torch.Tensor,
    ref_chosen_B: torch.Tensor,
    ref_rejected_B: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceOutput:
    """Sigmoid DPO (Rafailov et al. 2023, Eq. 7) with conservative label smoothing (cDPO).

    ``h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)``;
    ``loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)`` with ``eps = label_smoothing``
    (the probability that a preference label is flipped).

    Args:
        pi_chosen_B, pi_rejected_B: ``(B,)`` policy sequence log-probs of chosen / rejected responses.
        ref_chosen_B, ref_rejected_B: ``(B,)`` reference log-probs (detached here).
        beta: KL coefficient, > 0.
        label_smoothing: eps in [0, 0.5).
    """
    _check_pairs(
        "dpo_loss", beta, pi_chosen_B=pi_chosen_B, pi_rejected_B=pi_rejected_B,
        ref_chosen_B=ref_chosen_B, ref_rejected_B=ref_rejected_B,
    )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    ref_chosen_B, ref_rejected_B = ref_chosen_B.detach(), ref_rejected_B.detach()
    logits_B = beta * ((pi_chosen_B - ref_chosen_B) - (pi_rejected_B - ref_rejected_B))
    loss_B = -(1.0 - label_smoothing) * F.logsigmoid(logits_B) - label_smoothing * F.logsigmoid(-logits_B)
    return _preference_output(loss_B, pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta)


def ipo_loss(
    pi_chosen_B: torch.Tensor,
    pi_rejected_B: torch.Tensor,
    ref_chosen_B: torch.Tensor,
    ref_rejected_B: torch.Tensor,
    *,
    beta: float,
) -> PreferenceOutput:
    """IPO (Azar et al. 2023, Eq. 17 with tau = beta): ``loss = (h - 1 / (2 beta))^2``.

    ``h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)``. Azar et al. use sequence
    log-probs; TRL averages over tokens. Pass whichever you intend (e.g. ``sequence_logprobs / length``).

    Args: as :func:`dpo_loss`.
    """
    _check_pairs(
        "ipo_loss", beta, pi_chosen_B=pi_chosen_B, pi_rejected_B=pi_rejected_B,
        ref_chosen_B=ref_chosen_B, ref_rejected_B=ref_rejected_B,
    )
    ref_chosen_B, ref_rejected_B = ref_chosen_B.detach(), ref_rejected_B.detach()
    h_B = (pi_chosen_B - ref_chosen_B) - (pi_rejected_B - ref_rejected_B)
    loss_B = (h_B - 1.0 / (2.0 * beta)) ** 2
    return _preference_output(loss_B, pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta)


def dpop_loss(
    pi_chosen_B: torch.Tensor,
    pi_rejected_B: torch.Tensor,
    ref_chosen_B: torch.Tensor,
    ref_rejected_B: torch.Tensor,
    *,
    beta: float,
    lam: float,
) -> PreferenceOutput:
    """DPO-Positive (Pal et al. 2024, "Smaug", Eq. 3).

    ``loss = -log sigma(beta * (h - lam * max(0, ref_chosen - pi_chosen)))``: the penalty is active
    only when the policy's likelihood of the chosen response falls below the reference's, which is
    the failure mode of DPO on pairs with small edit distance.

    Args: as :func:`dpo_loss`, plus ``lam >= 0`` (Pal et al. use 50 for MetaMath, 5 for ARC/HellaSwag).
    """
    _check_pairs(
        "dpop_loss", beta, pi_chosen_B=pi_chosen_B, pi_rejected_B=pi_rejected_B,
        ref_chosen_B=ref_chosen_B, ref_rejected_B=ref_rejected_B,
    )
    if lam < 0:
        raise ValueError(f"dpop_loss: lam must be >= 0, got {lam}")
    ref_chosen_B, ref_rejected_B = ref_chosen_B.detach(), ref_rejected_B.detach()
    h_B = (pi_chosen_B - ref_chosen_B) - (pi_rejected_B - ref_rejected_B)
    penalty_B = torch.clamp(ref_chosen_B - pi_chosen_B, min=0.0)
    loss_B = -F.logsigmoid(beta * (h_B - lam * penalty_B))
    return _preference_output(loss_B, pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta)


def preference_loss(
    pi_chosen_B: torch.Tensor,
    pi_rejected_B: torch.Tensor,
    ref_chosen_B: torch.Tensor,
    ref_rejected_B: torch.Tensor,
    *,
    loss_type: str = "sigmoid",
    beta: float,
    label_smoothing: float = 0.0,
    lam: float = 0.0,
) -> PreferenceOutput:
    """Dispatch to :func:`dpo_loss` (``"sigmoid"``), :func:`ipo_loss` (``"ipo"``) or :func:`dpop_loss` (``"dpop"``)."""
    if loss_type == "sigmoid":
        return dpo_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta=beta, label_smoothing=label_smoothing)
    if loss_type == "ipo":
        return ipo_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta=beta)
    if loss_type == "dpop":
        return dpop_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta=beta, lam=lam)
    raise ValueError(f"preference_loss: unknown loss_type {loss_type!r}; expected 'sigmoid', 'ipo' or 'dpop'")


def per_step_dpo_loss(
    pi_chosen_BT: torch.Tensor,
    pi_rejected_BT: torch.Tensor,
    ref_chosen_BT: torch.Tensor,
    ref_rejected_BT: torch.Tensor,
    chosen_mask_BT: torch.Tensor,
    rejected_mask_BT: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    lam: float = 0.0,
) -> PreferenceOutput:
    """Per-step DPO (Setlur et al. 2024, Sec. 5 / Algorithm 1): DPO on masked sums of token log-probs.

    ``pi_c = sum_t chosen_mask[b, t] pi_chosen[b, t]`` (likewise for the other three), then
    :func:`dpo_loss` (or IPO / DPO-Positive with ``loss_type``). The masks select what each side of a
    pair scores, which covers both pair constructions:

    - ``"full"`` (the paper's Algorithm 1): chosen = the whole positive response, rejected = the
      negative truncated at and including its first pit step;
    - ``"shared_prefix"`` (Self-Explore; the paper's theorem): both sides continue the question plus
      the steps before the pit; chosen = a correct continuation, rejected = the pit step. Prefix
      tokens may be in or out of the masks: identical prefix terms cancel in ``h``.

    With masks covering whole responses this is exactly :func:`dpo_loss` on sequence log-probs. A
    pair whose two masks are both empty scores nothing and gets loss 0 (and no gradient).

    Args:
        pi_chosen_BT, ref_chosen_BT, chosen_mask_BT: ``(B, Tc)`` token log-probs and mask, chosen side.
        pi_rejected_BT, ref_rejected_BT, rejected_mask_BT: ``(B, Tr)``, rejected side.
        beta, label_smoothing, loss_type, lam: as :func:`preference_loss`.
    """
    _check_same_shape(
        "per_step_dpo_loss", 2, pi_chosen_BT=pi_chosen_BT, ref_chosen_BT=ref_chosen_BT, chosen_mask_BT=chosen_mask_BT
    )
    _check_same_shape(
        "per_step_dpo_loss", 2, pi_rejected_BT=pi_rejected_BT, ref_rejected_BT=ref_rejected_BT,
        rejected_mask_BT=rejected_mask_BT,
    )
    if pi_chosen_BT.shape[0] != pi_rejected_BT.shape[0]:
        raise ValueError(
            f"per_step_dpo_loss: chosen and rejected batch sizes differ: {pi_chosen_BT.shape[0]} vs {pi_rejected_BT.shape[0]}"
        )
    out = preference_loss(
        sequence_logprobs(pi_chosen_BT, chosen_mask_BT),
        sequence_logprobs(pi_rejected_BT, rejected_mask_BT),
        sequence_logprobs(ref_chosen_BT.detach(), chosen_mask_BT),
        sequence_logprobs(ref_rejected_BT.detach(), rejected_mask_BT),
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        lam=lam,
    )
    # A pair with no scored token on either side expresses no preference: loss 0 (not log 2).
    empty_B = ~(chosen_mask_BT.bool().any(-1) | rejected_mask_BT.bool().any(-1))
    return out._replace(loss_B=torch.where(empty_B, torch.zeros_like(out.loss_B), out.loss_B))


def advantage_weighted_loss(
    logps_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    beta: float,
    max_weight: float = 20.0,
) -> AdvantageWeightedOutput:
    """Advantage-weighted regression on tokens (Peng et al. 2019; Setlur et al. 2024, Theorem 6.1).

    ``w[b, t] = min(exp(A[b, t] / beta), max_weight)`` (detached);
    ``loss[b] = -sum_t mask w logps / max(1, sum_t mask)``. Its population optimum is
    ``pi_ref(a|s) exp(A(s, a) / beta) / Z(s)``, the same policy that per-step DPO on advantage-labelled
    pairs converges to. Token advantages may come from per-step advantages through
    :func:`shared.advantages.steps_to_tokens`. With ``A = 0`` every weight is 1 and this equals
    :func:`sft_loss`.

    Args:
        logps_BT: ``(B, T)`` token log-probs under the policy.
        adv_BT: ``(B, T)`` advantages (detached here).
        mask_BT: ``(B, T)`` tokens that count.
        beta: temperature, > 0.
        max_weight: clip for the exponential weights, > 0.
    """
    _check_same_shape("advantage_weighted_loss", 2, logps_BT=logps_BT, adv_BT=adv_BT, mask_BT=mask_BT)
    if not beta > 0 or not max_weight > 0:
        raise ValueError(f"advantage_weighted_loss: beta and max_weight must be > 0, got {beta}, {max_weight}")
    maskf_BT = mask_BT.to(logps_BT.dtype)
    raw_BT = torch.exp(adv_BT.detach().to(logps_BT.dtype) / beta)
    weights_BT = torch.clamp(raw_BT, max=max_weight) * maskf_BT
    num_tokens_B = maskf_BT.sum(-1)
    denom_B = num_tokens_B.clamp(min=1.0)
    safe_logps_BT = torch.where(mask_BT.bool(), logps_BT, torch.zeros_like(logps_BT))
    loss_B = -(weights_BT * safe_logps_BT).sum(-1) / denom_B
    clipped_B = ((raw_BT >= max_weight).to(logps_BT.dtype) * maskf_BT).sum(-1) / denom_B
    return AdvantageWeightedOutput(loss_B, weights_BT.detach(), clipped_B.detach(), num_tokens_B.detach())
