"""The testbed's post-training objectives: one :class:`shared.objectives.ObjectiveSpec` entry each.

``pool`` is where an objective's examples come from: ``sft`` (the SFT queries themselves, no sampled
pool), ``correct`` (the pool's correct samples), ``samples`` (every sample, with step advantages),
``pairs`` (the true path against whole wrong samples, :func:`shared.pairs.random_pairs` or
:func:`shared.pairs.max_edit_distance_pairs`) or ``first_pit_pairs`` (:func:`shared.pairs.first_pit_pairs`).
``sft_pairs`` / ``sft_critical_pairs`` build per-step DPO's pairs and train on their chosen sides only
(:func:`shared.objectives.chosen_nll_objective`): the same positives, on the same graphs, without the negatives.
Adding an objective is one entry here plus its name in :data:`stargraph.config.Objective` (the config
module stays free of torch for a fast ``--help``); the check below keeps the two in step.
"""

from __future__ import annotations

from shared.objectives import (
    ObjectiveSpec,
    PreferenceBatch,
    SequenceBatch,
    awr_objective,
    chosen_nll_objective,
    nll_objective,
    preference_objective,
    registry,
)

from .config import OBJECTIVES


def _preference(name: str, pool: str, loss_type: str, sft_term: bool = False) -> ObjectiveSpec:
    return ObjectiveSpec(name, pool, needs_q=pool == "first_pit_pairs", batch_type=PreferenceBatch, loss=preference_objective, loss_type=loss_type, sft_term=sft_term)


SPECS = registry(
    ObjectiveSpec("sft", "sft", needs_q=False, batch_type=SequenceBatch, loss=nll_objective),
    ObjectiveSpec("sft_critical", "sft", needs_q=False, batch_type=SequenceBatch, loss=nll_objective, tokens="critical"),
    ObjectiveSpec("rft", "correct", needs_q=False, batch_type=SequenceBatch, loss=nll_objective),
    _preference("dpo", "pairs", "sigmoid"),
    _preference("per_step_dpo", "first_pit_pairs", "sigmoid"),
    _preference("per_step_dpo_sft", "first_pit_pairs", "sigmoid", sft_term=True),
    _preference("per_step_dpop", "first_pit_pairs", "dpop"),
    _preference("per_step_ipo", "first_pit_pairs", "ipo"),
    ObjectiveSpec("awr", "samples", needs_q=True, batch_type=SequenceBatch, loss=awr_objective),
    # per-step DPO's control without the negatives: NLL of the pairs' chosen sides (the true paths of the graphs
    # where the policy erred, once per pair), every target token or the critical token only
    ObjectiveSpec("sft_pairs", "first_pit_pairs", needs_q=True, batch_type=PreferenceBatch, loss=chosen_nll_objective),
    ObjectiveSpec("sft_critical_pairs", "first_pit_pairs", needs_q=True, batch_type=PreferenceBatch, loss=chosen_nll_objective, tokens="critical"),
)
"""Objective name -> spec, in the order of :data:`stargraph.config.OBJECTIVES`."""

if tuple(SPECS) != OBJECTIVES:
    raise RuntimeError(f"stargraph.objectives.SPECS {tuple(SPECS)} and stargraph.config.OBJECTIVES {OBJECTIVES} differ")


def spec_of(objective: str) -> ObjectiveSpec:
    try:
        return SPECS[objective]
    except KeyError:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(SPECS)}") from None
