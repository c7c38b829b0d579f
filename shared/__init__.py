"""stepcredit's shared core: pure functions on tensors used by both front ends.

- :mod:`shared.logprobs`: token, sequence and per-step log-probabilities.
- :mod:`shared.losses`: SFT, DPO, IPO, DPO-Positive, per-step DPO, advantage-weighted regression.
- :mod:`shared.advantages`: Monte-Carlo and exact Q-values, best-of-K, step advantages, first pit.
- :mod:`shared.pairs`: preference-pair builders (random, max edit distance, first pit).
- :mod:`shared.efficiency`: power-law fits and the data-efficiency ratio.

Imports only torch and numpy.
"""

from shared import advantages, efficiency, logprobs, losses, pairs
from shared.advantages import (
    best_of_k,
    best_of_k_from_rollouts,
    exact_q_values,
    first_pit,
    mc_q_values,
    step_advantages,
    steps_through_mask,
    steps_to_tokens,
)
from shared.efficiency import data_efficiency, equivalent_size, fit_power_law, predict_error
from shared.logprobs import sequence_logprobs, step_logprobs, step_mask_from_ids, token_logprobs
from shared.losses import (
    advantage_weighted_loss,
    dpo_loss,
    dpop_loss,
    ipo_loss,
    per_step_dpo_loss,
    preference_loss,
    sft_loss,
)
from shared.pairs import Pair, edit_distance, first_pit_pairs, max_edit_distance_pairs, random_pairs

__all__ = [
    "advantages", "efficiency", "logprobs", "losses", "pairs",
    "token_logprobs", "sequence_logprobs", "step_logprobs", "step_mask_from_ids",
    "sft_loss", "dpo_loss", "ipo_loss", "dpop_loss", "preference_loss", "per_step_dpo_loss", "advantage_weighted_loss",
    "mc_q_values", "best_of_k", "best_of_k_from_rollouts", "exact_q_values", "step_advantages", "first_pit",
    "steps_to_tokens", "steps_through_mask",
    "Pair", "random_pairs", "max_edit_distance_pairs", "first_pit_pairs", "edit_distance",
    "fit_power_law", "predict_error", "equivalent_size", "data_efficiency",
]
