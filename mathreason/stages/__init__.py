"""Pipeline stages, one module per family, and their registry.

==============  ==========================================================================
module          stages
==============  ==========================================================================
``finetune``    ``sft`` (pi_sft on D_syn), ``rft`` (pi_sft's positives), ``rft_adv`` (advantage-filtered)
``samples``     ``sample`` (M solutions per question), ``grade``
``credit``      ``advantages`` (Q of step prefixes by rollouts, advantages, first pits)
``preference``  ``pairs`` (first-pit, random and max-edit-distance pairs), ``pref`` (per-step DPO and baselines)
``evaluation``  ``eval`` (greedy pass@1, sampled pass@k)
==============  ==========================================================================

The machinery that runs any stage over a run folder (keys, skipping, records, metrics) is in
:mod:`mathreason.stages.base`. A new stage subclasses :class:`Stage` and is added to :data:`STAGES`.
"""

from __future__ import annotations

from mathreason.stages.base import (
    FORMAT_VERSION,
    RUN_POLICIES,
    Context,
    Stage,
    StageError,
    check_stages,
    is_run_policy,
    policy_tag,
    run_stage,
    stage_key,
)
from mathreason.stages.credit import AdvantagesStage
from mathreason.stages.evaluation import EvalStage
from mathreason.stages.finetune import RFTAdvStage, RFTStage, SFTStage
from mathreason.stages.preference import PairsStage, PrefStage
from mathreason.stages.samples import GradeStage, SampleStage

__all__ = [
    "FORMAT_VERSION",
    "RUN_POLICIES",
    "STAGES",
    "Context",
    "Stage",
    "StageError",
    "check_stages",
    "is_run_policy",
    "policy_tag",
    "run_stage",
    "stage_key",
]

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        SFTStage(),
        SampleStage(),
        GradeStage(),
        AdvantagesStage(),
        PairsStage(),
        PrefStage(),
        RFTStage(),
        RFTAdvStage(),
        EvalStage(),
    )
}
"""Registered stages by name, in pipeline order (the order of :data:`mathreason.config.STAGES`)."""
