"""Preference-pair builders for one question's positive and negative responses.

Responses are sequences of steps of any type (strings, token-id tuples, node ids, ...). Every builder
is deterministic given its inputs and, where it samples, a seed or a ``numpy.random.Generator``.

Builders return :class:`Pair` records that say which steps each side of a pair scores:

- the prompt of a pair is the question followed by ``pair.prefix`` (empty for whole-response pairs);
- the chosen side is ``pair.chosen`` and the rejected side ``pair.rejected`` (each a tuple of steps
  that continues the prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

__all__ = [
    "Pair",
    "PairStats",
    "random_pairs",
    "max_edit_distance_pairs",
    "first_pit_pairs",
    "edit_distance",
]

Response = Sequence[Any]


@dataclass(frozen=True)
class Pair:
    """One preference pair over step sequences."""

    prefix: tuple
    """Steps shared by both sides, appended to the question (empty for whole-response pairs)."""
    chosen: tuple
    """Steps of the chosen (preferred) continuation."""
    rejected: tuple
    """Steps of the rejected continuation."""
    chosen_index: int
    """Index of the positive the chosen side comes from (-1 for an external continuation)."""
    rejected_index: int
    """Index of the negative the rejected side comes from."""
    pit: int = -1
    """First-pit step index in the negative (-1 when pairs were not built from pits)."""
    construction: str = "full"
    """How the pair was built: "random", "max_edit_distance", "full" or "shared_prefix"."""


@dataclass
class PairStats:
    """What a builder did with its inputs (filled in when a ``stats`` object is passed)."""

    pairs: int = 0
    negatives_without_pit: int = 0
    negatives_without_continuation: int = 0


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("a seed (int) or numpy.random.Generator is required: pair sampling is never unseeded")
    return np.random.default_rng(seed)


def _default_key(response: Response) -> Sequence[Hashable]:
    """Edit-distance units: characters when every step is a string, else the flattened steps."""
    steps = list(response)
    if all(isinstance(s, str) for s in steps):
        return "".join(steps)
    flat: list = []
    for s in steps:
        if isinstance(s, (list, tuple)):
            flat.extend(s)
        else:
            flat.append(s)
    return flat


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit insert, delete, substitute) in O(len(a) len(b)) time, O(len(b)) memory.

    Rows are vectorised with numpy: within a row the insertion recurrence
    ``d[j] = min(d'[j], d[j - 1] + 1)`` is a running minimum of ``d'[j] - j``, plus ``j``.
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    # Map items to integer codes so comparisons vectorise for any hashable step type.
    codes: dict = {}
    a_codes = np.fromiter((codes.setdefault(x, len(codes)) for x in a), dtype=np.int64, count=len(a))
    b_codes = np.fromiter((codes.setdefault(x, len(codes)) for x in b), dtype=np.int64, count=m)
    j = np.arange(m + 1, dtype=np.int64)
    prev = j.copy()
    for i, ca in enumerate(a_codes, start=1):
        sub = prev[:-1] + (b_codes != ca)
        dele = prev[1:] + 1
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(sub, dele)
        cur = np.minimum.accumulate(cur - j) + j
        prev = cur
    return int(prev[-1])


def random_pairs(
    positives: Sequence[Response],
    negatives: Sequence[Response],
    *,
    seed: int | np.random.Generator | None,
    num_pairs: int | None = None,
) -> list[Pair]:
    """Uniformly random (positive, negative) pairs without replacement (the standard-DPO baseline).

    Args:
        positives, negatives: one question's correct and incorrect responses (lists of steps).
        seed: int seed or ``numpy.random.Generator``.
        num_pairs: how many distinct pairs; default ``len(negatives)`` (each negative about once),
            capped at ``len(positives) * len(negatives)``.
    """
    P, N = len(positives), len(negatives)
    if P == 0 or N == 0:
        return []
    rng = _rng(seed)
    n = min(P * N, N if num_pairs is None else int(num_pairs))
    if n <= N:
        # Every negative appears at most once, each with a random positive.
        neg_idx = rng.choice(N, size=n, replace=False)
        pos_idx = rng.integers(0, P, size=n)
    else:
        pos_idx, neg_idx = np.divmod(rng.choice(P * N, size=n, replace=False), N)
    return [
        Pair((), tuple(positives[p]), tuple(negatives[q]), int(p), int(q), construction="random")
        for p, q in zip(pos_idx.tolist(), neg_idx.tolist())
    ]


def max_edit_distance_pairs(
    positives: Sequence[Response],
    negatives: Sequence[Response],
    *,
    key: Callable[[Response], Sequence[Hashable]] | None = None,
) -> list[Pair]:
    """Pair each positive with the negative at the largest edit distance (Pal et al. 2024).

    Ties go to the lowest negative index, so the result is deterministic.

    Args:
        positives, negatives: one question's responses (lists of steps).
        key: maps a response to the sequence the distance is computed on; default: the characters of
            the concatenated text when steps are strings, else the flattened steps.
    """
    if not positives or not negatives:
        return []
    key = key or _default_key
    neg_keys = [key(n) for n in negatives]
    pairs = []
    for p_idx, pos in enumerate(positives):
        pk = key(pos)
        dists = [edit_distance(pk, nk) for nk in neg_keys]
        n_idx = int(np.argmax(dists))
        pairs.append(Pair((), tuple(pos), tuple(negatives[n_idx]), p_idx, n_idx, construction="max_edit_distance"))
    return pairs


def first_pit_pairs(
    positives: Sequence[Response],
    negatives: Sequence[Response],
    pits: Sequence[int],
    *,
    construction: str = "full",
    seed: int | np.random.Generator | None,
    continuations: Sequence[Sequence[Response]] | None = None,
    stats: PairStats | None = None,
) -> list[Pair]:
    """Per-step pairs that put the credit on each negative's first pit (one pair per usable negative).

    ``pits[n]`` is the first-pit step index of ``negatives[n]`` (from
    :func:`shared.advantages.first_pit`; ``-1`` = no pit: the negative is dropped).

    - ``construction="full"`` (the paper's Algorithm 1): prompt = question, chosen = a random positive
      in full, rejected = the negative truncated at and including its pit,
      ``negatives[n][:pit + 1]``.
    - ``construction="shared_prefix"`` (Self-Explore; the setting of the paper's theorem): prompt =
      question + ``negatives[n][:pit]``, chosen = a correct continuation of that prefix, rejected =
      the pit step alone, ``(negatives[n][pit],)``. Correct continuations are taken, in order of
      preference, from ``continuations[n]`` (e.g. successful rollouts from the prefix), else from
      the remainders of positives that start with the same prefix (for ``pit == 0`` every positive).
      A continuation whose first step equals the pit step is not used. Negatives with none are
      dropped (counted in ``stats``).

    Args:
        positives, negatives: one question's responses (lists of steps).
        pits: first-pit index per negative.
        construction: ``"full"`` or ``"shared_prefix"``.
        seed: int seed or ``numpy.random.Generator`` for the choice among candidates.
        continuations: optional per-negative lists of correct continuations of ``negatives[n][:pit]``.
        stats: optional :class:`PairStats` to fill.
    """
    if construction not in ("full", "shared_prefix"):
        raise ValueError(f"first_pit_pairs: construction must be 'full' or 'shared_prefix', got {construction!r}")
    if len(pits) != len(negatives):
        raise ValueError(f"first_pit_pairs: {len(pits)} pits for {len(negatives)} negatives")
    if continuations is not None and len(continuations) != len(negatives):
        raise ValueError(f"first_pit_pairs: {len(continuations)} continuation lists for {len(negatives)} negatives")
    rng = _rng(seed)
    stats = stats if stats is not None else PairStats()
    pairs: list[Pair] = []
    for n_idx, (neg, pit) in enumerate(zip(negatives, pits)):
        pit = int(pit)
        neg = tuple(neg)
        if pit < 0 or pit >= len(neg):
            stats.negatives_without_pit += 1
            continue
        if construction == "full":
            if not positives:
                stats.negatives_without_continuation += 1
                continue
            p_idx = int(rng.integers(0, len(positives)))
            pairs.append(Pair((), tuple(positives[p_idx]), neg[: pit + 1], p_idx, n_idx, pit, "full"))
            continue
        prefix, pit_step = neg[:pit], neg[pit]
        candidates: list[tuple[int, tuple]] = []
        if continuations is not None:
            candidates = [(-1, tuple(c)) for c in continuations[n_idx] if len(c) > 0 and tuple(c)[0] != pit_step]
        if not candidates:
            candidates = [
                (p_idx, tuple(pos)[pit:])
                for p_idx, pos in enumerate(positives)
                if len(pos) > pit and tuple(pos)[:pit] == prefix and tuple(pos)[pit] != pit_step
            ]
        if not candidates:
            stats.negatives_without_continuation += 1
            continue
        p_idx, cont = candidates[int(rng.integers(0, len(candidates)))]
        pairs.append(Pair(prefix, cont, (pit_step,), p_idx, n_idx, pit, "shared_prefix"))
    stats.pairs += len(pairs)
    return pairs
