"""stepcredit's shared core, used by both front ends.

Pure functions on tensors:

- :mod:`shared.logprobs`: token, sequence and per-step log-probabilities.
- :mod:`shared.losses`: SFT, DPO, IPO, DPO-Positive, per-step DPO, advantage-weighted regression.
- :mod:`shared.advantages`: Monte-Carlo and exact Q-values, best-of-K, step advantages, first pit.
- :mod:`shared.pairs`: preference-pair builders (random, max edit distance, first pit).
- :mod:`shared.efficiency`: power-law fits and the data-efficiency ratio.
- :mod:`shared.steptree`: tabular step trees on which Q, advantages and the losses' optima are exact
  (the teaching notebooks' toy problem).
- :mod:`shared.objectives`: objective specs (pool, Q, batch type, loss), typed batches, the registry type.

Run plumbing both front ends need (standard library only):

- :mod:`shared.configlib`: typed dataclass configs from sourced trees, overrides, ``--help`` text.
- :mod:`shared.runio`: atomic writes and append-only JSONL that survive a kill.

The core imports only torch, numpy and the standard library. Submodules load lazily on first use, so
``from shared.configlib import ...`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("advantages", "configlib", "efficiency", "logprobs", "losses", "objectives", "pairs", "runio", "steptree")

_EXPORTS = {
    "logprobs": ("token_logprobs", "sequence_logprobs", "step_logprobs", "step_mask_from_ids"),
    "losses": (
        "sft_loss", "dpo_loss", "ipo_loss", "dpop_loss", "preference_loss", "per_step_dpo_loss",
        "advantage_weighted_loss",
    ),
    "advantages": (
        "mc_q_values", "best_of_k", "best_of_k_from_rollouts", "exact_q_values", "step_advantages",
        "first_pit", "steps_to_tokens", "steps_through_mask",
    ),
    "pairs": (
        "Pair", "random_pairs", "max_edit_distance_pairs", "first_pit_pairs", "edit_distance",
        "PairRows", "PairBatch", "flatten_steps", "pair_token_rows", "collate_pair_rows",
    ),
    "efficiency": ("fit_power_law", "predict_error", "equivalent_size", "data_efficiency"),
    "objectives": ("ObjectiveSpec", "ObjectiveParams", "SequenceBatch", "PreferenceBatch"),
}
_OWNER = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = list(_SUBMODULES) + [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"shared.{name}")
    if name in _OWNER:
        return getattr(importlib.import_module(f"shared.{_OWNER[name]}"), name)
    raise AttributeError(f"module 'shared' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
