"""Pairs of steps to padded token rows and per-step masks (shared.pairs.pair_token_rows /
collate_pair_rows), the one batching path both front ends use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shared
from shared.logprobs import token_logprobs
from shared.losses import dpo_loss, per_step_dpo_loss
from shared.pairs import Pair, PairBatch, PairRows, collate_pair_rows, first_pit_pairs, flatten_steps, pair_token_rows

F, T_ = False, True


def _pair(prefix, chosen, rejected) -> Pair:
    return Pair(tuple(prefix), tuple(chosen), tuple(rejected), 0, 0)


# ---------------------------------------------------------------- flatten_steps


def test_flatten_steps_ints_sequences_and_mixed():
    assert flatten_steps([3, 1, 4]) == [3, 1, 4]
    assert flatten_steps([(5, 6), (7,), ()]) == [5, 6, 7]
    assert flatten_steps([5, (6, 7), [8], np.int64(9), (np.int32(10),)]) == [5, 6, 7, 8, 9, 10]
    assert flatten_steps([]) == [] and flatten_steps(()) == []
    assert all(type(t) is int for t in flatten_steps([np.int64(1), (np.int16(2),)]))


@pytest.mark.parametrize("bad", [["a=1\n"], [(1, "x")], [1.5], [(1.0,)]])
def test_flatten_steps_refuses_non_token_steps(bad):
    with pytest.raises(TypeError, match="token id"):
        flatten_steps(bad)


# ---------------------------------------------------------------- pair_token_rows


def test_rows_for_int_steps_by_hand():
    # stargraph: a step is a node id
    r = pair_token_rows([9, 8], _pair((), (1, 2, 3), (1, 4)))
    assert r == PairRows([9, 8, 1, 2, 3], [9, 8, 1, 4], [F, F, T_, T_, T_], [F, F, T_, T_])
    assert isinstance(r.chosen_ids, list) and all(type(m) is bool for m in r.chosen_mask)


def test_rows_for_tuple_steps_by_hand():
    # mathreason: a step is a tuple of token ids
    pair = _pair(((5, 6),), ((7,), (8, 9)), ((10, 11, 12),))
    r = pair_token_rows((100,), pair)
    assert r.chosen_ids == [100, 5, 6, 7, 8, 9] and r.chosen_mask == [F, F, F, T_, T_, T_]
    assert r.rejected_ids == [100, 5, 6, 10, 11, 12] and r.rejected_mask == [F, F, F, T_, T_, T_]
    s = pair_token_rows((100,), pair, score_prefix=True)
    assert s.chosen_ids == r.chosen_ids and s.rejected_ids == r.rejected_ids
    assert s.chosen_mask == [F, T_, T_, T_, T_, T_] and s.rejected_mask == [F, T_, T_, T_, T_, T_]


def test_score_prefix_without_a_prefix_changes_nothing_and_prompt_is_never_scored():
    pair = _pair((), (1, 2), (3,))
    assert pair_token_rows([7, 7], pair, score_prefix=True) == pair_token_rows([7, 7], pair)
    r = pair_token_rows([], _pair((4,), (1,), (2,)), score_prefix=True)  # empty prompt
    assert r == PairRows([4, 1], [4, 2], [T_, T_], [T_, T_])


def test_shared_prefix_pairs_leave_the_prefix_unscored():
    positives = [(1, 2, 3, 4)]
    negatives = [(1, 2, 9, 9), (5, 5, 5, 5)]
    pairs = first_pit_pairs(positives, negatives, [2, 0], construction="shared_prefix", seed=0)
    by_neg = {p.rejected_index: p for p in pairs}
    r = pair_token_rows([0], by_neg[0])  # prefix (1, 2), chosen (3, 4), rejected (9,)
    assert r == PairRows([0, 1, 2, 3, 4], [0, 1, 2, 9], [F, F, F, T_, T_], [F, F, F, T_])
    r0 = pair_token_rows([0], by_neg[1])  # pit at the first step: no prefix
    assert r0 == PairRows([0, 1, 2, 3, 4], [0, 5], [F, T_, T_, T_, T_], [F, T_])


# ---------------------------------------------------------------- collate_pair_rows


ROWS = [
    PairRows([1, 2, 3], [1, 2], [F, T_, T_], [F, T_]),
    PairRows([4, 5], [4, 5, 6, 7], [F, T_], [F, F, T_, T_]),
]


def _check_batch(b: PairBatch) -> None:
    for name in ("chosen_BT", "rejected_BT"):
        assert getattr(b, name).dtype == torch.long
    for name in ("chosen_mask_BT", "rejected_mask_BT", "chosen_attention_BT", "rejected_attention_BT"):
        assert getattr(b, name).dtype == torch.bool
    assert b.chosen_BT.shape == b.chosen_mask_BT.shape == b.chosen_attention_BT.shape
    assert b.rejected_BT.shape == b.rejected_mask_BT.shape == b.rejected_attention_BT.shape
    # masks never reach padding
    assert not (b.chosen_mask_BT & ~b.chosen_attention_BT).any() and not (b.rejected_mask_BT & ~b.rejected_attention_BT).any()


def test_collate_pads_each_side_to_its_longest_row():
    b = collate_pair_rows(ROWS, pad_id=0)
    _check_batch(b)
    assert b.chosen_BT.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert b.rejected_BT.tolist() == [[1, 2, 0, 0], [4, 5, 6, 7]]
    assert b.chosen_mask_BT.tolist() == [[F, T_, T_], [F, T_, F]]
    assert b.rejected_mask_BT.tolist() == [[F, T_, F, F], [F, F, T_, T_]]
    assert b.chosen_attention_BT.tolist() == [[T_, T_, T_], [T_, T_, F]]
    assert b.rejected_attention_BT.tolist() == [[T_, T_, F, F], [T_, T_, T_, T_]]


def test_collate_same_length_gives_both_sides_one_width():
    b = collate_pair_rows(ROWS, pad_id=-1, same_length=True)
    _check_batch(b)
    assert b.chosen_BT.tolist() == [[1, 2, 3, -1], [4, 5, -1, -1]]
    assert b.rejected_BT.tolist() == [[1, 2, -1, -1], [4, 5, 6, 7]]
    assert b.chosen_mask_BT.tolist() == [[F, T_, T_, F], [F, T_, F, F]]
    assert b.chosen_attention_BT.tolist() == [[T_, T_, T_, F], [T_, T_, F, F]]
    assert torch.cat([b.chosen_BT, b.rejected_BT]).shape == (4, 4)  # one forward pass


def test_collate_fixed_length_and_the_too_long_error():
    b = collate_pair_rows(ROWS, pad_id=9, length=6)
    _check_batch(b)
    assert b.chosen_BT.tolist() == [[1, 2, 3, 9, 9, 9], [4, 5, 9, 9, 9, 9]]
    assert b.rejected_BT.tolist() == [[1, 2, 9, 9, 9, 9], [4, 5, 6, 7, 9, 9]]
    assert b.rejected_mask_BT.tolist() == [[F, T_, F, F, F, F], [F, F, T_, T_, F, F]]
    exact = collate_pair_rows(ROWS, pad_id=9, length=4)  # the longest row fits exactly
    assert exact.rejected_BT.tolist() == [[1, 2, 9, 9], [4, 5, 6, 7]] and exact.chosen_BT.shape == (2, 4)
    with pytest.raises(ValueError, match="row 1's rejected side has 4 tokens, more than length=3"):
        collate_pair_rows(ROWS, pad_id=9, length=3)


def test_collate_input_errors():
    with pytest.raises(ValueError, match="no rows"):
        collate_pair_rows([], pad_id=0)
    with pytest.raises(ValueError, match=r"row 0 has 2 chosen ids with 1 mask flags.*\(one flag per token\)"):
        collate_pair_rows([PairRows([1, 2], [1], [F], [T_])], pad_id=0)
    with pytest.raises(ValueError, match="length must be >= 0"):
        collate_pair_rows(ROWS, pad_id=0, length=-1)


def test_new_names_are_exported_lazily_from_shared():
    for name in ("PairRows", "PairBatch", "flatten_steps", "pair_token_rows", "collate_pair_rows"):
        assert name in shared.__all__ and getattr(shared, name) is getattr(shared.pairs, name)


# ---------------------------------------------------------------- per-step DPO on collated batches


class ToyCausalLM:
    """logits[b, t] = W[ids[b, t]] + U[t]: position t sees only token t (causal by construction)."""

    def __init__(self, V: int, T: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(V, V, generator=g, dtype=torch.float64)
        self.U = torch.randn(T, V, generator=g, dtype=torch.float64)

    def __call__(self, ids_BT: torch.Tensor) -> torch.Tensor:
        return self.W[ids_BT] + self.U[: ids_BT.shape[1]]

    def sequence_logp(self, ids: list[int], start: int) -> float:
        """Hand sum of log p(ids[t] | ids[:t]) for t >= start, on the unpadded row."""
        logits = self(torch.tensor([ids]))[0]
        return sum(float(torch.log_softmax(logits[t - 1], -1)[ids[t]]) for t in range(start, len(ids)))


def test_per_step_dpo_on_whole_response_masks_equals_dpo_on_sequence_logprobs():
    V, pad = 12, 11
    rng = np.random.default_rng(0)
    prompts, pairs = [], []
    for _ in range(6):
        prompts.append(rng.integers(0, pad, size=rng.integers(1, 4)).tolist())
        steps = lambda: tuple(tuple(rng.integers(0, pad, size=rng.integers(1, 3)).tolist()) for _ in range(rng.integers(1, 4)))
        pairs.append(_pair((), steps(), steps()))
    rows = [pair_token_rows(p, pr) for p, pr in zip(prompts, pairs)]
    b = collate_pair_rows(rows, pad_id=pad, same_length=True)
    pi, ref = ToyCausalLM(V, 16, 1), ToyCausalLM(V, 16, 2)
    B = len(rows)

    def token_lps(model):  # one forward pass over both sides; labels are row positions 1 .. T - 1
        ids_BT = torch.cat([b.chosen_BT, b.rejected_BT])
        lp = token_logprobs(model(ids_BT[:, :-1]), ids_BT[:, 1:])
        return lp[:B], lp[B:]

    (pc, pr_), (rc, rr) = token_lps(pi), token_lps(ref)
    out = per_step_dpo_loss(pc, pr_, rc, rr, b.chosen_mask_BT[:, 1:], b.rejected_mask_BT[:, 1:], beta=0.3)

    def seq(model, side):
        return torch.tensor([model.sequence_logp(getattr(r, f"{side}_ids"), len(p)) for r, p in zip(rows, prompts)], dtype=torch.float64)

    ref_out = dpo_loss(seq(pi, "chosen"), seq(pi, "rejected"), seq(ref, "chosen"), seq(ref, "rejected"), beta=0.3)
    torch.testing.assert_close(out.loss_B.double(), ref_out.loss_B, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.margins_B.double(), ref_out.margins_B, rtol=1e-5, atol=1e-6)
    # per side with separate widths gives the same sums
    b2 = collate_pair_rows(rows, pad_id=pad)
    lp_c = token_logprobs(pi(b2.chosen_BT[:, :-1]), b2.chosen_BT[:, 1:])
    torch.testing.assert_close((lp_c * b2.chosen_mask_BT[:, 1:]).sum(1).double(), seq(pi, "chosen"), rtol=1e-5, atol=1e-6)
