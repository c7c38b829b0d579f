"""Pair builders and the data-efficiency metric."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.efficiency import data_efficiency, equivalent_size, fit_power_law, predict_error
from shared.pairs import PairStats, edit_distance, first_pit_pairs, max_edit_distance_pairs, random_pairs

# ---------------------------------------------------------------- edit distance


def _levenshtein_reference(a, b) -> int:
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


@settings(max_examples=300, deadline=None)
@given(st.text("abc", max_size=12), st.text("abc", max_size=12))
def test_edit_distance_matches_reference(a, b):
    assert edit_distance(a, b) == _levenshtein_reference(a, b)


def test_edit_distance_hand_cases_and_step_units():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance([(1, 2), (3,)], [(1, 2), (4,)]) == 1  # hashable steps as units


# ---------------------------------------------------------------- builders

POS = [["a=1\n", "b=2\n", "ans 3"], ["a=1\n", "c=2\n", "ans 3"]]
NEG = [["a=1\n", "b=5\n", "ans 6"], ["x=9\n", "y=9\n", "ans 18 is the final value"], ["a=1\n", "b=2\n", "ans 4"]]


def test_random_pairs_deterministic_and_valid():
    a = random_pairs(POS, NEG, seed=3)
    b = random_pairs(POS, NEG, seed=3)
    assert a == b and len(a) == len(NEG)
    assert sorted(p.rejected_index for p in a) == [0, 1, 2]  # each negative once
    for p in a:
        assert p.chosen == tuple(POS[p.chosen_index]) and p.rejected == tuple(NEG[p.rejected_index])
    many = random_pairs(POS, NEG, seed=np.random.default_rng(0), num_pairs=100)
    assert len(many) == 6 and len({(p.chosen_index, p.rejected_index) for p in many}) == 6
    assert random_pairs([], NEG, seed=0) == []
    with pytest.raises(ValueError, match="seed"):
        random_pairs(POS, NEG, seed=None)


def test_max_edit_distance_pairs_picks_farthest():
    pairs = max_edit_distance_pairs(POS, NEG)
    assert [p.rejected_index for p in pairs] == [1, 1]
    assert all(p.construction == "max_edit_distance" and p.prefix == () for p in pairs)
    # Ties go to the lowest index.
    tie = max_edit_distance_pairs([["ab"]], [["ax"], ["ay"]])
    assert tie[0].rejected_index == 0


def test_first_pit_pairs_full_construction():
    stats = PairStats()
    pairs = first_pit_pairs(POS, NEG, [1, -1, 2], construction="full", seed=0, stats=stats)
    assert [p.rejected_index for p in pairs] == [0, 2]
    assert pairs[0].rejected == ("a=1\n", "b=5\n")  # truncated at and including the pit
    assert pairs[1].rejected == tuple(NEG[2])
    assert all(p.chosen in {tuple(x) for x in POS} and p.prefix == () for p in pairs)
    assert stats.negatives_without_pit == 1 and stats.pairs == 2
    assert pairs == first_pit_pairs(POS, NEG, [1, -1, 2], construction="full", seed=0)


def test_first_pit_pairs_shared_prefix_construction():
    stats = PairStats()
    pairs = first_pit_pairs(POS, NEG, [1, 0, 2], construction="shared_prefix", seed=0, stats=stats)
    by_neg = {p.rejected_index: p for p in pairs}
    # Negative 0: prefix ("a=1\n",), pit step "b=5\n"; both positives share the prefix.
    p0 = by_neg[0]
    assert p0.prefix == ("a=1\n",) and p0.rejected == ("b=5\n",)
    assert p0.chosen in {("b=2\n", "ans 3"), ("c=2\n", "ans 3")}
    # Negative 1: pit at step 0, so any positive is a continuation of the bare question.
    assert by_neg[1].prefix == () and by_neg[1].rejected == ("x=9\n",)
    # Negative 2: prefix ("a=1\n", "b=2\n") is shared with positive 0 only.
    assert by_neg[2].prefix == ("a=1\n", "b=2\n") and by_neg[2].chosen == ("ans 3",) and by_neg[2].chosen_index == 0
    # External continuations take precedence; one that repeats the pit step is not used.
    ext = first_pit_pairs(POS, NEG[:1], [1], construction="shared_prefix", seed=0,
                          continuations=[[("b=5\n", "ans 6"), ("d=2\n", "ans 3")]])
    assert ext[0].chosen == ("d=2\n", "ans 3") and ext[0].chosen_index == -1
    # No positive shares the prefix: dropped and counted.
    none = first_pit_pairs([["z\n"]], NEG[:1], [1], construction="shared_prefix", seed=0, stats=stats)
    assert none == [] and stats.negatives_without_continuation == 1


def test_first_pit_pairs_validates_arguments():
    with pytest.raises(ValueError, match="construction"):
        first_pit_pairs(POS, NEG, [0, 0, 0], construction="half", seed=0)
    with pytest.raises(ValueError, match="pits"):
        first_pit_pairs(POS, NEG, [0], seed=0)


# ---------------------------------------------------------------- efficiency


def test_fit_power_law_recovers_known_law():
    sizes = np.array([1e3, 2e3, 4e3, 8e3, 16e3])
    errors = 2.5 * sizes ** (-0.15)
    fit = fit_power_law(sizes, errors)
    assert fit.a == pytest.approx(2.5, rel=1e-9) and fit.alpha == pytest.approx(0.15, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and (fit.min_size, fit.max_size) == (1e3, 16e3)
    noisy = errors * np.exp(np.random.default_rng(0).normal(0, 0.01, size=5))
    assert fit_power_law(sizes, noisy).alpha == pytest.approx(0.15, abs=0.05)
    assert predict_error(fit, 4e3) == pytest.approx(2.5 * 4e3 ** (-0.15))


def test_data_efficiency_eight_fold_and_regimes():
    sizes = [1e3, 2e3, 4e3, 8e3, 16e3, 32e3]
    fit = fit_power_law(sizes, [0.9 * s ** (-0.1) for s in sizes])
    # A method that, with 2k problems, reaches the error SFT reaches with 16k problems is 8x as efficient.
    eff = data_efficiency(fit, 2e3, 0.9 * 16e3 ** (-0.1))
    assert eff.ratio == pytest.approx(8.0, rel=1e-9)
    assert eff.equivalent_size == pytest.approx(16e3, rel=1e-9)
    assert not eff.extrapolated and eff.regime == "interpolation"
    beyond = data_efficiency(fit, 16e3, 0.9 * 128e3 ** (-0.1))
    assert beyond.ratio == pytest.approx(8.0, rel=1e-9) and beyond.extrapolated and beyond.regime == "extrapolation-above"
    worse = data_efficiency(fit, 1e3, 0.9 * 500 ** (-0.1))
    assert worse.ratio == pytest.approx(0.5, rel=1e-9) and worse.regime == "extrapolation-below"
    assert equivalent_size(fit, 0.9 * 4e3 ** (-0.1)) == pytest.approx(4e3, rel=1e-9)


def test_efficiency_input_errors():
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([5, 5], [0.1, 0.2])
    with pytest.raises(ValueError, match="> 0"):
        fit_power_law([1, 2], [0.1, 0.0])
    flat = fit_power_law([1, 2, 4], [0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="flat"):
        data_efficiency(flat, 1, 0.2)
