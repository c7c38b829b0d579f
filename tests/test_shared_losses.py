"""Losses and log-prob utilities against hand-computed values, equivalences and gradient hygiene."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared import logprobs as lp_mod
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


def _softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def _t(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# ---------------------------------------------------------------- logprobs


def test_token_logprobs_matches_log_softmax_and_ignores():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    labels = torch.randint(0, 7, (3, 5), generator=g)
    labels[1, 2] = -100
    out = token_logprobs(logits, labels)
    ref = F.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ref[1, 2] = 0.0
    torch.testing.assert_close(out, ref)
    assert out.dtype == torch.float32


def test_token_logprobs_hand_value_and_bf16():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # probs 1/4, 3/4
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75), abs=1e-6)
    out16 = token_logprobs(logits.bfloat16(), torch.tensor([[0]]))
    assert out16.dtype == torch.float32
    assert out16.item() == pytest.approx(math.log(0.25), abs=1e-2)


def test_token_logprobs_chunked_equals_unchunked(monkeypatch):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 6, (5, 4), generator=g)
    full = token_logprobs(logits, labels)
    monkeypatch.setattr(lp_mod, "_CHUNK_ELEMENTS", 30)  # forces one row per chunk
    chunked = lp_mod.token_logprobs(logits, labels)
    torch.testing.assert_close(full, chunked)
    chunked.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_token_logprobs_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="token_logprobs"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels outside"):
        token_logprobs(torch.zeros(1, 1, 4), torch.tensor([[4]]))


def test_sequence_and_step_logprobs_hand_case():
    logps = _t(-1.0, -2.0, -3.0, -4.0).unsqueeze(0)
    mask = torch.tensor([[0, 1, 1, 0]])
    assert sequence_logprobs(logps, mask).item() == pytest.approx(-5.0)
    # A masked -inf must not turn the sum into NaN.
    logps_inf = torch.tensor([[-1.0, float("-inf")]])
    assert sequence_logprobs(logps_inf, torch.tensor([[1, 0]])).item() == pytest.approx(-1.0)
    step_ids = torch.tensor([[-1, 0, 0, 2]])
    out = step_logprobs(logps, step_ids, num_steps=3)
    torch.testing.assert_close(out, torch.tensor([[-5.0, 0.0, -4.0]]))
    torch.testing.assert_close(step_mask_from_ids(step_ids, 3), torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="step ids"):
        step_logprobs(logps, torch.tensor([[0, 0, 0, 3]]), num_steps=3)


# ---------------------------------------------------------------- SFT


def test_sft_loss_hand_value_and_empty_row():
    logps = torch.tensor([[-1.0, -2.0, -9.0], [-5.0, -5.0, -5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    out = sft_loss(logps, mask)
    torch.testing.assert_close(out.loss_B, _t(1.5, 0.0), check_dtype=False)
    torch.testing.assert_close(out.num_tokens_B, _t(2.0, 0.0))
    out.loss_B.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.5, -0.5, 0.0], [0.0, 0.0, 0.0]]))


# ---------------------------------------------------------------- DPO family


PC, PR, RC, RR = -1.0, -2.0, -1.5, -1.5  # h = (PC - RC) - (PR - RR) = 0.5 - (-0.5) = 1.0


def _pair_tensors():
    return _t(PC), _t(PR), _t(RC), _t(RR)


def test_dpo_loss_hand_value_and_diagnostics():
    out = dpo_loss(*_pair_tensors(), beta=0.5)
    assert out.loss_B.item() == pytest.approx(_softplus(-0.5), abs=1e-6)  # -log sigma(0.5)
    assert out.chosen_rewards_B.item() == pytest.approx(0.25)
    assert out.rejected_rewards_B.item() == pytest.approx(-0.25)
    assert out.margins_B.item() == pytest.approx(0.5)
    assert out.accuracies_B.item() == 1.0


def test_dpo_label_smoothing_hand_value():
    out = dpo_loss(*_pair_tensors(), beta=0.5, label_smoothing=0.1)
    expected = 0.9 * _softplus(-0.5) + 0.1 * _softplus(0.5)
    assert out.loss_B.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*_pair_tensors(), beta=0.5, label_smoothing=0.5)


def test_ipo_loss_hand_value():
    assert ipo_loss(*_pair_tensors(), beta=0.5).loss_B.item() == pytest.approx(0.0, abs=1e-7)  # (1 - 1)^2
    assert ipo_loss(*_pair_tensors(), beta=0.25).loss_B.item() == pytest.approx(1.0, abs=1e-6)  # (1 - 2)^2


def test_dpop_loss_hand_value_and_reduces_to_dpo():
    pc, pr, rc, rr = _t(-2.0), _t(-3.0), _t(-1.0), _t(-1.5)  # h = -1 - (-1.5) = 0.5, penalty = 1
    out = dpop_loss(pc, pr, rc, rr, beta=0.5, lam=2.0)
    assert out.loss_B.item() == pytest.approx(_softplus(-0.5 * (0.5 - 2.0)), abs=1e-6)
    # Penalty inactive when the policy's chosen likelihood is above the reference's.
    a = dpop_loss(*_pair_tensors(), beta=0.5, lam=50.0).loss_B
    b = dpo_loss(*_pair_tensors(), beta=0.5).loss_B
    torch.testing.assert_close(a, b)


def test_preference_loss_dispatch():
    for kind, fn in (("sigmoid", dpo_loss), ("ipo", ipo_loss)):
        torch.testing.assert_close(preference_loss(*_pair_tensors(), loss_type=kind, beta=0.3).loss_B, fn(*_pair_tensors(), beta=0.3).loss_B)
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss(*_pair_tensors(), loss_type="hinge", beta=0.3)


@pytest.mark.parametrize("fn,kw", [(dpo_loss, {}), (ipo_loss, {}), (dpop_loss, {"lam": 5.0})])
def test_no_gradient_reaches_reference_inputs(fn, kw):
    pc, pr = _t(-1.0, -2.0).requires_grad_(), _t(-2.0, -1.0).requires_grad_()
    rc, rr = _t(-1.5, -1.0).requires_grad_(), _t(-1.5, -3.0).requires_grad_()
    fn(pc, pr, rc, rr, beta=0.2, **kw).loss_B.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert pc.grad is not None and pr.grad is not None


def test_preference_losses_reject_shape_mismatch_and_bad_beta():
    with pytest.raises(ValueError, match="dpo_loss"):
        dpo_loss(_t(1.0, 2.0), _t(1.0), _t(1.0), _t(1.0), beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*_pair_tensors(), beta=0.0)


# ---------------------------------------------------------------- per-step DPO


def _random_pair_batch(seed: int, B: int = 4, Tc: int = 6, Tr: int = 5):
    g = torch.Generator().manual_seed(seed)
    mk = lambda T: -torch.rand(B, T, generator=g) * 3  # noqa: E731
    return mk(Tc).requires_grad_(), mk(Tr).requires_grad_(), mk(Tc), mk(Tr)


def test_per_step_dpo_with_full_masks_equals_dpo():
    pc, pr, rc, rr = _random_pair_batch(0)
    ones_c, ones_r = torch.ones_like(pc, dtype=torch.bool), torch.ones_like(pr, dtype=torch.bool)
    for ls in (0.0, 0.2):
        a = per_step_dpo_loss(pc, pr, rc, rr, ones_c, ones_r, beta=0.3, label_smoothing=ls)
        b = dpo_loss(pc.sum(-1), pr.sum(-1), rc.sum(-1), rr.sum(-1), beta=0.3, label_smoothing=ls)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_per_step_dpo_masks_select_tokens_and_shared_prefix_cancels():
    pc, pr, rc, rr = _random_pair_batch(1)
    g = torch.Generator().manual_seed(2)
    mc = torch.rand(pc.shape, generator=g) > 0.4
    mr = torch.rand(pr.shape, generator=g) > 0.4
    a = per_step_dpo_loss(pc, pr, rc, rr, mc, mr, beta=0.1).loss_B
    b = dpo_loss(sequence_logprobs(pc, mc), sequence_logprobs(pr, mr), sequence_logprobs(rc, mc), sequence_logprobs(rr, mr), beta=0.1).loss_B
    torch.testing.assert_close(a, b)
    # Shared-prefix construction: the same prefix on both sides (policy and reference alike) cancels.
    prefix_pi, prefix_ref = -torch.rand(4, 3, generator=g), -torch.rand(4, 3, generator=g)
    cat = lambda p, x: torch.cat([p, x], dim=1)  # noqa: E731
    ones = lambda x: torch.ones_like(x, dtype=torch.bool)  # noqa: E731
    with_prefix = per_step_dpo_loss(
        cat(prefix_pi, pc), cat(prefix_pi, pr), cat(prefix_ref, rc), cat(prefix_ref, rr),
        ones(cat(prefix_pi, pc)), ones(cat(prefix_pi, pr)), beta=0.1,
    ).loss_B
    without = per_step_dpo_loss(pc, pr, rc, rr, ones(pc), ones(pr), beta=0.1).loss_B
    torch.testing.assert_close(with_prefix, without, atol=1e-5, rtol=1e-5)


def test_per_step_dpo_fully_masked_pair_is_finite_and_refs_get_no_grad():
    pc, pr, rc, rr = _random_pair_batch(3, B=2)
    rc.requires_grad_(), rr.requires_grad_()
    mc = torch.zeros_like(pc, dtype=torch.bool)
    mr = torch.zeros_like(pr, dtype=torch.bool)
    mc[0], mr[0] = True, True
    out = per_step_dpo_loss(pc, pr, rc, rr, mc, mr, beta=0.5)
    assert torch.isfinite(out.loss_B).all()
    assert out.loss_B[1].item() == 0.0  # nothing scored on either side: no preference, no loss
    assert out.loss_B[0].item() > 0.0
    out.loss_B.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert torch.all(pc.grad[1] == 0) and torch.isfinite(pc.grad).all()


def test_per_step_dpo_shape_checks():
    pc, pr, rc, rr = _random_pair_batch(4)
    with pytest.raises(ValueError, match="per_step_dpo_loss"):
        per_step_dpo_loss(pc, pr, rc[:, :-1], rr, torch.ones_like(pc), torch.ones_like(pr), beta=0.1)
    with pytest.raises(ValueError, match="batch sizes differ"):
        per_step_dpo_loss(pc, pr[:2], rc, rr[:2], torch.ones_like(pc), torch.ones_like(pr[:2]), beta=0.1)


# ---------------------------------------------------------------- advantage-weighted regression


def test_awr_with_zero_advantages_equals_sft():
    g = torch.Generator().manual_seed(5)
    logps = -torch.rand(3, 5, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    a = advantage_weighted_loss(logps, torch.zeros(3, 5), mask, beta=0.7)
    torch.testing.assert_close(a.loss_B, sft_loss(logps, mask).loss_B)
    torch.testing.assert_close(a.weights_BT, mask.float())


def test_awr_hand_value_clipping_and_empty_row():
    logps = torch.tensor([[-1.0, -2.0], [-1.0, -1.0]], requires_grad=True)
    adv = torch.tensor([[math.log(2.0), 10.0], [1.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [0, 0]])
    out = advantage_weighted_loss(logps, adv, mask, beta=1.0, max_weight=5.0)
    # weights: exp(log 2) = 2, exp(10) clipped to 5 -> loss = -(2 * -1 + 5 * -2) / 2 = 6
    assert out.loss_B[0].item() == pytest.approx(6.0, abs=1e-5)
    assert out.loss_B[1].item() == 0.0
    assert out.clipped_fraction_B[0].item() == pytest.approx(0.5)
    out.loss_B.sum().backward()
    assert adv.grad is None
    assert torch.isfinite(logps.grad).all()
