"""RFT positive selection (dedup, caps) and evaluation metrics (unbiased pass@k, standard errors)."""

from __future__ import annotations

import itertools
import math
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathreason.evaluate import mean_and_stderr, pass_at_k, summarise
from mathreason.rft import equation_signature, normalise_text, select_positives


@given(n=st.integers(1, 30), data=st.data())
@settings(max_examples=200, deadline=None)
def test_pass_at_k_matches_the_combinatorial_definition(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    expected = 1.0 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_subset_probability_by_enumeration():
    outcomes = [1, 0, 0, 1, 0]
    n, c = len(outcomes), sum(outcomes)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 1, 1) == 0.25
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_mean_and_stderr():
    m, se = mean_and_stderr([1, 0, 1, 1])
    assert m == 0.75
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))  # ddof=1: sqrt(p(1-p)/(N-1))
    assert math.isnan(mean_and_stderr([1.0])[1])


def test_summarise_greedy_and_sampled():
    greedy = [{"problem_id": "a", "correct": True, "finish_reason": "stop"}, {"problem_id": "b", "correct": False, "finish_reason": "length"}]
    sampled = [{"problem_id": q, "correct": ok} for q, oks in (("a", [1, 1, 0, 0]), ("b", [0, 0, 0, 1])) for ok in oks]
    s = summarise(greedy, sampled, [1, 2, 4])
    assert s["greedy"]["accuracy"] == 0.5 and s["greedy"]["truncated"] == 1 and s["greedy"]["problems"] == 2
    assert s["sampled"]["samples_per_problem"] == 4
    assert s["sampled"]["pass@k"]["1"]["value"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["sampled"]["pass@k"]["2"]["value"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert s["sampled"]["pass@k"]["4"]["value"] == 1.0
    with pytest.raises(ValueError, match="different sample counts"):
        summarise(None, sampled[:-1], [1])


def _row(q, i, text, correct=True, finish="stop"):
    return {"problem_id": q, "sample_index": i, "text": text, "correct": correct, "finish_reason": finish}


def test_normalisation_and_equations():
    assert normalise_text("  The  Answer\n is 5 ") == "the answer is 5"
    assert equation_signature("a <<2 + 3=5>>5 then <<5*2=10>>10") == ("2+3=5", "5*2=10")
    assert equation_signature("no equations") == ()


def test_select_positives_dedups_caps_and_filters():
    rows = [
        _row("q1", 0, "Tom has 2+3 = <<2+3=5>>5.\n#### 5"),
        _row("q1", 1, "tom has 2+3 =   <<2+3=5>>5.\n#### 5"),  # same normalised text
        _row("q1", 2, "So 2 and 3 make <<2+3=5>>5.\n#### 5"),  # same equation chain
        _row("q1", 3, "Adding: <<3+2=5>>5\n#### 5"),  # a different chain
        _row("q1", 4, "wrong <<2+2=4>>4\n#### 4", correct=False),
        _row("q1", 5, "Five, after a long <<1+4=5>>", finish="length"),  # truncated
        _row("q2", 1, "answer 7 (second)"),
        _row("q2", 0, "answer 7"),
        _row("q3", 0, "nope", correct=False),
    ]
    kept, counts = select_positives(rows, dataset="gsm8k")
    assert [(r["problem_id"], r["sample_index"]) for r in kept] == [("q1", 0), ("q1", 3), ("q2", 0), ("q2", 1)]
    assert counts["correct"] == 7 and counts["duplicates"] == 2 and counts["truncated_dropped"] == 1
    assert counts["questions_with_positive"] == 2 and counts["kept"] == 4
    # Equation dedup is GSM8K-only; text dedup still applies on MATH.
    kept_math, _ = select_positives(rows, dataset="math")
    assert ("q1", 2) in {(r["problem_id"], r["sample_index"]) for r in kept_math}
    assert ("q1", 1) not in {(r["problem_id"], r["sample_index"]) for r in kept_math}
    # Cap, first-M, no dedup, truncated kept.
    kept_cap, counts_cap = select_positives(rows, dataset="gsm8k", max_per_question=1)
    assert [(r["problem_id"], r["sample_index"]) for r in kept_cap] == [("q1", 0), ("q2", 0)]
    assert counts_cap["capped"] == 2
    kept_m, _ = select_positives(rows, dataset="gsm8k", samples_per_question=1, dedup="none")
    assert [(r["problem_id"], r["sample_index"]) for r in kept_m] == [("q1", 0), ("q2", 0)]
    kept_all, _ = select_positives(rows, dataset="gsm8k", dedup="none", include_truncated=True)
    assert len(kept_all) == 7
    with pytest.raises(ValueError):
        select_positives(rows, dataset="gsm8k", dedup="fuzzy")
