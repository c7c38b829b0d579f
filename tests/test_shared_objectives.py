"""shared.objectives: specs are validated, typed batches select/move/serialise, and each objective's loss is
the shared.losses function it names (hand-checked on small tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from shared.losses import advantage_weighted_loss, per_step_dpo_loss, sft_loss
from shared.objectives import (
    ObjectiveParams,
    ObjectiveSpec,
    PreferenceBatch,
    SequenceBatch,
    awr_objective,
    chosen_nll_objective,
    nll_objective,
    preference_objective,
    registry,
)

PARAMS = ObjectiveParams(beta=0.5, label_smoothing=0.1, dpop_lambda=2.0, sft_weight=0.25, awr_max_weight=3.0)


def _pairs(B: int = 3, L: int = 4):
    g = torch.Generator().manual_seed(0)
    pi_c, pi_r, ref_c, ref_r = (-torch.rand(B, L, generator=g) for _ in range(4))
    mc = torch.rand(B, L, generator=g) > 0.3
    mr = torch.rand(B, L, generator=g) > 0.3
    sft = torch.ones(B, L, dtype=torch.bool)
    batch = PreferenceBatch(torch.zeros(B, L + 2, dtype=torch.long), torch.ones(B, L + 2, dtype=torch.long), mc, mr, ref_c, ref_r, sft_mask_BL=sft)
    return batch, pi_c, pi_r


def test_spec_validation():
    with pytest.raises(ValueError, match="takes a SequenceBatch"):
        ObjectiveSpec("x", "samples", False, PreferenceBatch, nll_objective)
    with pytest.raises(ValueError, match="loss_type"):
        ObjectiveSpec("x", "pairs", False, PreferenceBatch, preference_objective)
    with pytest.raises(ValueError, match="loss_type"):
        ObjectiveSpec("x", "pairs", False, PreferenceBatch, preference_objective, loss_type="hinge")
    with pytest.raises(ValueError, match="twice"):
        registry(ObjectiveSpec("a", "sft", False, SequenceBatch, nll_objective), ObjectiveSpec("a", "sft", False, SequenceBatch, nll_objective))
    reg = registry(ObjectiveSpec("a", "pairs", False, PreferenceBatch, preference_objective, loss_type="ipo"))
    assert reg["a"].needs_ref and reg["a"].pairs
    with pytest.raises(TypeError):
        reg["b"] = reg["a"]  # read-only


def test_batches_select_move_and_round_trip():
    batch, _, _ = _pairs()
    assert len(batch) == 3
    sub = batch.select(torch.tensor([2, 0]))
    assert isinstance(sub, PreferenceBatch) and len(sub) == 2
    assert torch.equal(sub.chosen_mask_BL, batch.chosen_mask_BL[[2, 0]]) and sub.chosen_attention_BT is None
    back = PreferenceBatch.from_tensors(batch.tensors(), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(back.tensors().values(), batch.tensors().values()))
    with pytest.raises(ValueError, match="unknown fields"):
        SequenceBatch.from_tensors({"seq": torch.zeros(1)})


def test_sequence_objectives_are_the_shared_losses():
    g = torch.Generator().manual_seed(1)
    lp = -torch.rand(2, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.randn(2, 5, generator=g)
    nll = ObjectiveSpec("sft", "sft", False, SequenceBatch, nll_objective)
    out = nll(SequenceBatch(torch.zeros(2, 6), mask), lp, PARAMS)
    assert torch.equal(out.loss, sft_loss(lp, mask).loss_B.mean()) and out.sft_term is None
    assert math.isclose(float(out.loss), float(-(lp * mask).sum(1).div(mask.sum(1)).mean()), rel_tol=1e-6)
    awr = ObjectiveSpec("awr", "samples", True, SequenceBatch, awr_objective)
    out = awr(SequenceBatch(torch.zeros(2, 6), mask, adv_BL=adv), lp, PARAMS)
    ref = advantage_weighted_loss(lp, adv, mask, beta=0.5, max_weight=3.0)
    assert torch.equal(out.loss, ref.loss_B.mean()) and torch.equal(out.out.clipped_fraction_B, ref.clipped_fraction_B)
    with pytest.raises(ValueError, match="advantages"):
        awr(SequenceBatch(torch.zeros(2, 6), mask), lp, PARAMS)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "dpop"])
@pytest.mark.parametrize("sft_term", [False, True])
def test_preference_objective_is_per_step_dpo_plus_the_sft_term(loss_type, sft_term):
    batch, pi_c, pi_r = _pairs()
    spec = ObjectiveSpec("p", "first_pit_pairs", True, PreferenceBatch, preference_objective, loss_type=loss_type, sft_term=sft_term)
    out = spec(batch, (pi_c, pi_r), PARAMS)
    ref = per_step_dpo_loss(
        pi_c, pi_r, batch.ref_chosen_BL, batch.ref_rejected_BL, batch.chosen_mask_BL, batch.rejected_mask_BL,
        beta=0.5, label_smoothing=0.1 if loss_type == "sigmoid" else 0.0, loss_type=loss_type, lam=2.0,
    )
    assert torch.equal(out.term, ref.loss_B.mean())
    if sft_term:  # the SFT term scores sft_mask_BL (all positions here), weighted by sft_weight
        s = sft_loss(pi_c, batch.sft_mask_BL).loss_B.mean()
        assert torch.equal(out.sft_term, s) and torch.equal(out.loss, ref.loss_B.mean() + 0.25 * s)
    else:
        assert out.sft_term is None and torch.equal(out.loss, out.term)


def test_chosen_nll_ignores_the_negatives_and_preference_needs_a_reference():
    batch, pi_c, pi_r = _pairs()
    spec = ObjectiveSpec("sft", "pairs", False, PreferenceBatch, chosen_nll_objective)
    assert not spec.needs_ref
    a = spec(batch, (pi_c, pi_r), PARAMS).loss
    assert torch.equal(a, spec(batch, (pi_c, pi_r * 7), PARAMS).loss)
    assert torch.equal(a, sft_loss(pi_c, batch.chosen_mask_BL).loss_B.mean())
    no_ref = PreferenceBatch(batch.chosen_BT, batch.rejected_BT, batch.chosen_mask_BL, batch.rejected_mask_BL)
    dpo = ObjectiveSpec("dpo", "pairs", False, PreferenceBatch, preference_objective, loss_type="sigmoid")
    with pytest.raises(ValueError, match="reference"):
        dpo(no_ref, (pi_c, pi_r), PARAMS)
    with pytest.raises(TypeError, match="PreferenceBatch"):
        dpo(SequenceBatch(batch.chosen_BT, batch.chosen_mask_BL), pi_c, PARAMS)


def test_stargraph_registry_covers_the_config_objectives():
    from stargraph.config import OBJECTIVES
    from stargraph.objectives import SPECS

    assert tuple(SPECS) == OBJECTIVES
    first_pit = {"per_step_dpo", "per_step_dpo_sft", "per_step_dpop", "per_step_ipo", "sft_pairs", "sft_critical_pairs"}
    assert {n for n, s in SPECS.items() if s.needs_q} == first_pit | {"awr"}
    assert {n for n, s in SPECS.items() if s.pairs} == first_pit | {"dpo"}
    assert {n for n, s in SPECS.items() if s.needs_ref} == first_pit - {"sft_pairs", "sft_critical_pairs"} | {"dpo"}


def test_mathreason_registry_covers_the_pref_objectives():
    import typing

    from mathreason.credit_config import PrefConfig
    from mathreason.preference import LOSS_TYPE, SPECS, objective_spec

    assert set(SPECS) == set(typing.get_args(typing.get_type_hints(PrefConfig)["objective"]))
    assert LOSS_TYPE == {"per_step_dpo": "sigmoid", "dpo": "sigmoid", "ipo": "ipo", "dpop": "dpop"}
    assert not SPECS["sft"].needs_ref and SPECS["sft"].pairs and not SPECS["awr"].pairs
    # pref.sft_weight > 0 adds the chosen side's NLL to the preference losses only
    assert objective_spec(PrefConfig(objective="dpo", sft_weight=0.5)).sft_term
    assert not objective_spec(PrefConfig(objective="dpo")).sft_term
    assert not objective_spec(PrefConfig(objective="sft", sft_weight=0.5)).sft_term
