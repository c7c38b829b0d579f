"""Q-values, best-of-K, step advantages and the first pit: hand cases and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
from shared.logprobs import step_logprobs

# ---------------------------------------------------------------- hand cases


def test_mc_q_values_and_bok_hand_cases():
    succ = torch.tensor([[[1, 0, 0, 1], [0, 0, 0, 0]]], dtype=torch.bool)
    torch.testing.assert_close(mc_q_values(succ), torch.tensor([[0.5, 0.0]]))
    valid = torch.tensor([[[1, 1, 0, 0], [1, 0, 0, 0]]], dtype=torch.bool)
    torch.testing.assert_close(mc_q_values(succ, valid), torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(best_of_k_from_rollouts(succ), torch.tensor([[1.0, 0.0]]))
    assert best_of_k(0.5, 5) == pytest.approx(1 - 0.5**5)
    assert best_of_k(0.0, 5) == 0.0 and best_of_k(1.0, 5) == 1.0
    torch.testing.assert_close(best_of_k(torch.tensor([0.2, 0.9]), 2), torch.tensor([0.36, 0.99]))
    with pytest.raises(ValueError):
        best_of_k(0.5, 0)


def test_step_advantages_hand_case():
    q = torch.tensor([[0.6, 0.2, 0.0], [0.9, 0.3, 0.3]])
    v0 = torch.tensor([0.5, 0.3])
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    adv = step_advantages(q, v0, mask)
    # Row 2 skips the masked middle step: A_2 = Q_2 - Q_0.
    torch.testing.assert_close(adv, torch.tensor([[0.1, -0.4, -0.2], [0.6, 0.0, -0.6]]))


def test_first_pit_hand_cases():
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert first_pit(torch.tensor([[0.5, 0.2, 0.2, 0.7]]), mask).item() == 1  # tie: first wins
    assert first_pit(torch.zeros(1, 4), mask).item() == 0  # all-zero: the first step is the pit
    assert first_pit(torch.ones(1, 4), mask).item() == -1  # all-one: nothing is lost, no pit
    ragged = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    assert first_pit(torch.tensor([[0.5, 0.6, 0.0, 0.0]]), ragged).item() == 0  # masked zeros do not count
    assert first_pit(torch.tensor([[0.5, 0.2, 0.0, 0.0]]), mask, threshold=0.0).item() == 2
    assert first_pit(torch.tensor([[0.5, 0.2, 0.1, 0.3]]), mask, threshold=0.0).item() == -1
    assert first_pit(torch.tensor([[0.5]]), torch.zeros(1, 1, dtype=torch.bool)).item() == -1  # no valid steps
    assert first_pit(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool)).tolist() == [-1, -1]


def test_steps_to_tokens_and_through_mask():
    adv = torch.tensor([[0.1, -0.4, -0.2]])
    ids = torch.tensor([[-1, 0, 0, 1, 2, 2, -1]])
    torch.testing.assert_close(steps_to_tokens(adv, ids), torch.tensor([[0.0, 0.1, 0.1, -0.4, -0.2, -0.2, 0.0]]))
    assert steps_through_mask(ids, torch.tensor([1])).tolist() == [[False, True, True, True, False, False, False]]
    assert not steps_through_mask(ids, torch.tensor([-1])).any()


def test_exact_q_values_brute_force_chain():
    # A chain of 3 steps whose correct continuation is unique: Q_i = prod_{j > i} p_j.
    p = torch.tensor([[0.5, 0.8, 0.9]])
    out = exact_q_values(torch.log(p), torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(out.q_BS, torch.tensor([[0.72, 0.9, 1.0]]))
    assert out.v0_B.item() == pytest.approx(0.36)
    # Through tokens: two tokens in step 0, one each in steps 1 and 2.
    token_logps = torch.log(torch.tensor([[0.5, 1.0, 0.8, 0.9]]))
    steps = step_logprobs(token_logps, torch.tensor([[0, 0, 1, 2]]), 3)
    torch.testing.assert_close(exact_q_values(steps, torch.ones(1, 3, dtype=torch.bool)).q_BS, out.q_BS)


def test_mc_q_converges_to_exact_q():
    p = torch.tensor([[0.5, 0.8, 0.9, 0.95]])
    exact = exact_q_values(torch.log(p), torch.ones(1, 4, dtype=torch.bool)).q_BS
    g = torch.Generator().manual_seed(0)
    errors = []
    for K in (16, 256, 4096, 65536):
        # A rollout from the prefix through step i succeeds iff every later step is sampled correctly.
        later = torch.rand(1, 4, K, 4, generator=g) < p.view(1, 1, 1, 4)
        after_i = torch.arange(4).view(1, 4, 1, 1) < torch.arange(4).view(1, 1, 1, 4)
        succ = (later | ~after_i).all(-1)
        errors.append((mc_q_values(succ) - exact).abs().max().item())
    assert errors[-1] < 0.01
    assert errors[-1] < errors[0]


# ---------------------------------------------------------------- properties


@st.composite
def ragged_q(draw, binary: bool = False):
    B = draw(st.integers(1, 5))
    S = draw(st.integers(1, 7))
    vals = st.sampled_from([0.0, 1.0]) if binary else st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    q = torch.tensor(draw(st.lists(st.lists(vals, min_size=S, max_size=S), min_size=B, max_size=B)))
    lengths = draw(st.lists(st.integers(0, S), min_size=B, max_size=B))
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return q, mask


def _first_pit_reference(q_row, mask_row, threshold=None):
    valid = [(i, v) for i, (v, m) in enumerate(zip(q_row, mask_row)) if m]
    if not valid:
        return -1
    if threshold is not None:
        return next((i for i, v in valid if v <= threshold), -1)
    low = min(v for _, v in valid)
    if low >= 1.0:
        return -1
    return next(i for i, v in valid if v == low)


@settings(max_examples=300, deadline=None)
@given(ragged_q(), st.sampled_from([None, 0.0, 0.25]))
def test_first_pit_matches_reference(qm, threshold):
    q, mask = qm
    got = first_pit(q, mask, threshold=threshold).tolist()
    want = [_first_pit_reference(qr.tolist(), mr.tolist(), threshold) for qr, mr in zip(q, mask)]
    assert got == want
    for b, pit in enumerate(got):
        if pit >= 0:
            assert mask[b, pit]
            if threshold is None:
                assert q[b, pit] == q[b][mask[b]].min()
                assert torch.all(q[b, :pit][mask[b, :pit]] > q[b, pit])  # strictly first


@settings(max_examples=200, deadline=None)
@given(ragged_q(binary=True))
def test_first_pit_binary_bok_equals_threshold_zero(qm):
    # With binary BoK estimates the lowest-Q definition and "first step with Q = 0" agree whenever a zero exists.
    q, mask = qm
    lowest = first_pit(q, mask)
    zero = first_pit(q, mask, threshold=0.0)
    assert lowest.tolist() == zero.tolist()


@settings(max_examples=200, deadline=None)
@given(ragged_q(), st.lists(st.sampled_from([0.0, 0.3, 1.0]), min_size=5, max_size=5))
def test_step_advantages_telescope(qm, v0_list):
    q, mask = qm
    v0 = torch.tensor(v0_list[: q.shape[0]])
    adv = step_advantages(q, v0, mask)
    assert torch.all(adv[~mask] == 0)
    for b in range(q.shape[0]):
        n = int(mask[b].sum())
        total = adv[b].sum().item()
        expected = (q[b, n - 1].item() - v0[b].item()) if n > 0 else 0.0
        assert math.isclose(total, expected, abs_tol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 20))
def test_best_of_k_properties(q, k):
    v = best_of_k(q, k)
    assert q - 1e-12 <= v <= 1.0 + 1e-12
    assert best_of_k(q, k + 1) >= v - 1e-12
