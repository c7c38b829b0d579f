"""Preference-pair builders for one question's positive and negative responses.

Responses are sequences of steps of any type (strings, token-id tuples, node ids, ...). Every builder
is deterministic given its inputs and, where it samples, a seed or a ``numpy.random.Generator``.

Builders return :class:`Pair` records that say which steps each side of a pair scores:

- the prompt of a pair is the question followed by ``pair.prefix`` (empty for whole-response pairs);
- the chosen side is ``pair.chosen`` and the rejected side ``pair.rejected`` (each a tuple of steps
  that continues the prompt).

Batching, used by both front ends: when a step is a token id (stargraph: a node) or a sequence of token
ids (mathreason: a tokenised step), :func:`pair_token_rows` turns a :class:`Pair` into the two token
rows ``prompt + prefix + chosen`` and ``prompt + prefix + rejected`` with per-token masks of the steps
each side scores, and :func:`collate_pair_rows` pads many such rows into a :class:`PairBatch` of
tensors. Masks are over a row's own token positions; a causal LM predicts row position ``t`` from
positions ``< t``, so its target (label) positions are ``1 .. T - 1`` and the caller shifts
(``mask_BT[:, 1:]`` against ``token_logprobs(logits[:, :-1], ids_BT[:, 1:])``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, NamedTuple, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the builders work without it
    import torch

__all__ = [
    "Pair",
    "PairStats",
    "random_pairs",
    "max_edit_distance_pairs",
    "first_pit_pairs",
    "edit_distance",
    "PairRows",
    "PairBatch",
    "flatten_steps",
    "pair_token_rows",
    "collate_pair_rows",
]

Response = Sequence[Any]
Step = Union[int, Sequence[int]]
"""A step of a tokenised response: one token id, or a sequence of token ids."""


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


# ---------------------------------------------------------------- batching pairs into token rows


class PairRows(NamedTuple):
    """The two token rows of one pair, with per-token masks of the scored steps (one entry per token)."""

    chosen_ids: list[int]
    """prompt + prefix + chosen, flattened to token ids."""
    rejected_ids: list[int]
    """prompt + prefix + rejected, flattened to token ids."""
    chosen_mask: list[bool]
    """``len(chosen_ids)`` flags: True on the tokens of ``pair.chosen`` (and of the prefix when scored)."""
    rejected_mask: list[bool]
    """``len(rejected_ids)`` flags: True on the tokens of ``pair.rejected`` (and of the prefix when scored)."""


class PairBatch(NamedTuple):
    """Right-padded token rows of ``B`` pairs; ``T`` may differ between the sides unless same length
    was asked for. Row positions, not label positions: see :func:`collate_pair_rows`."""

    chosen_BT: "torch.Tensor"
    """(B, T) long token ids of the chosen rows, ``pad_id`` after each row's end."""
    rejected_BT: "torch.Tensor"
    """(B, T) long token ids of the rejected rows, ``pad_id`` after each row's end."""
    chosen_mask_BT: "torch.Tensor"
    """(B, T) bool: True on the scored tokens of the chosen rows, False on padding."""
    rejected_mask_BT: "torch.Tensor"
    """(B, T) bool: True on the scored tokens of the rejected rows, False on padding."""
    chosen_attention_BT: "torch.Tensor"
    """(B, T) bool: True on the real tokens of the chosen rows, False on padding."""
    rejected_attention_BT: "torch.Tensor"
    """(B, T) bool: True on the real tokens of the rejected rows, False on padding."""


def _step_ids(fn: str, step: Any) -> list[int]:
    if isinstance(step, (str, bytes)):
        raise TypeError(f"{fn}: a step must be a token id or a sequence of token ids, got the string {step!r}")
    try:
        return [operator.index(step)]
    except TypeError:
        pass
    try:
        return [operator.index(t) for t in step]
    except TypeError:
        raise TypeError(f"{fn}: a step must be a token id or a sequence of token ids, got {step!r}") from None


def flatten_steps(steps: Iterable[Step]) -> list[int]:
    """Token ids of a sequence of steps, in order.

    A step is one token id (an ``int`` or anything with ``__index__``, e.g. a numpy integer: stargraph,
    where a step is a node) or a sequence of token ids (mathreason, where a step is a tokenised line).
    Both kinds may be mixed. Strings are refused (tokenise first).

    Example: ``flatten_steps([5, (6, 7), ()]) == [5, 6, 7]``.
    """
    out: list[int] = []
    for step in steps:
        out.extend(_step_ids("flatten_steps", step))
    return out


def pair_token_rows(prompt_ids: Sequence[int], pair: Pair, *, score_prefix: bool = False) -> PairRows:
    """The chosen and rejected token rows of one pair, and the masks of the tokens each side scores.

    With ``p = len(prompt_ids)``, ``f = len(flatten_steps(pair.prefix))`` and ``c`` the number of
    tokens of ``pair.chosen``, the chosen row is ``prompt_ids + prefix + chosen`` (``p + f + c``
    tokens) and its mask is True on row positions ``p + f .. p + f + c - 1`` (and on ``p .. p + f - 1``
    too with ``score_prefix``); likewise for the rejected side. Prompt tokens are never scored. A
    shared prefix is unscored by default, so per-step DPO compares only the continuations: under a
    causal model the prefix's log-probs are the same on both sides and cancel in the DPO / IPO
    margin anyway, and scoring them would change only one-sided terms (rewards, DPO-Positive's
    penalty, an SFT term).

    Masks are over the row's own positions: for a causal LM, label position ``t - 1`` of the shifted
    targets ``ids[1:]`` corresponds to row position ``t``, so use ``mask[1:]`` (row position 0 is
    never a target, and is a prompt token unless the prompt is empty).

    Args:
        prompt_ids: token ids of the question (the pair's prompt before ``pair.prefix``).
        pair: a :class:`Pair` whose steps are token ids or sequences of token ids (see
            :func:`flatten_steps`).
        score_prefix: also mark the prefix tokens on both sides.
    """
    prompt = [operator.index(t) for t in prompt_ids]
    prefix = flatten_steps(pair.prefix)
    chosen = flatten_steps(pair.chosen)
    rejected = flatten_steps(pair.rejected)
    head_mask = [False] * len(prompt) + [bool(score_prefix)] * len(prefix)
    return PairRows(
        prompt + prefix + chosen,
        prompt + prefix + rejected,
        head_mask + [True] * len(chosen),
        head_mask + [True] * len(rejected),
    )


def collate_pair_rows(
    rows: Sequence[PairRows],
    *,
    pad_id: int,
    length: int | None = None,
    same_length: bool = False,
) -> PairBatch:
    """Right-pad the rows of ``B`` pairs into a :class:`PairBatch` of tensors (on the CPU).

    ``chosen_BT[b, : n_b] = rows[b].chosen_ids`` and ``chosen_BT[b, n_b :] = pad_id`` with
    ``n_b = len(rows[b].chosen_ids)``; ``chosen_mask_BT`` is ``rows[b].chosen_mask`` then False, and
    ``chosen_attention_BT[b, t] = t < n_b``; likewise for the rejected side.

    Widths ``T``:

    - ``length=None``: each side is as wide as its longest row (the two sides' ``T`` may differ);
    - ``length=None, same_length=True``: both sides are as wide as the longest row of either, so
      ``torch.cat([chosen_BT, rejected_BT])`` is one ``(2B, T)`` forward pass;
    - ``length=n`` (an int): every row is padded to exactly ``n`` (both sides); a longer row raises
      ``ValueError`` naming it.

    Masks are over row positions; for next-token log-probs of a causal LM the caller shifts (label
    positions are row positions ``1 .. T - 1``, so use ``mask_BT[:, 1:]``), or slices a fixed window
    (``mask_BT[:, s:]`` against targets ``ids_BT[:, s:]``).

    Args:
        rows: one :class:`PairRows` per pair (from :func:`pair_token_rows`); at least one.
        pad_id: token id written after each row's end.
        length: the fixed width ``T``, or None to pad to the longest row.
        same_length: with ``length=None``, give both sides the same width.
    """
    import torch

    if len(rows) == 0:
        raise ValueError("collate_pair_rows: no rows (at least one pair is required)")
    pad_id = operator.index(pad_id)
    for b, r in enumerate(rows):
        if len(r.chosen_mask) != len(r.chosen_ids) or len(r.rejected_mask) != len(r.rejected_ids):
            raise ValueError(
                f"collate_pair_rows: row {b} has {len(r.chosen_ids)} chosen ids with {len(r.chosen_mask)} mask flags and "
                f"{len(r.rejected_ids)} rejected ids with {len(r.rejected_mask)} mask flags (one flag per token)"
            )
    longest_c = max(len(r.chosen_ids) for r in rows)
    longest_r = max(len(r.rejected_ids) for r in rows)
    if length is None:
        T_c, T_r = (max(longest_c, longest_r),) * 2 if same_length else (longest_c, longest_r)
    else:
        length = operator.index(length)
        if length < 0:
            raise ValueError(f"collate_pair_rows: length must be >= 0, got {length}")
        for b, r in enumerate(rows):
            for side, ids in (("chosen", r.chosen_ids), ("rejected", r.rejected_ids)):
                if len(ids) > length:
                    raise ValueError(f"collate_pair_rows: row {b}'s {side} side has {len(ids)} tokens, more than length={length}")
        T_c = T_r = length

    def side(ids_rows: list[list[int]], mask_rows: list[list[bool]], T: int):
        ids_BT = torch.tensor([list(ids) + [pad_id] * (T - len(ids)) for ids in ids_rows], dtype=torch.long).reshape(len(ids_rows), T)
        mask_BT = torch.tensor([[bool(m) for m in mask] + [False] * (T - len(mask)) for mask in mask_rows], dtype=torch.bool).reshape(len(ids_rows), T)
        attention_BT = torch.arange(T).unsqueeze(0) < torch.tensor([len(ids) for ids in ids_rows]).unsqueeze(1)
        return ids_BT, mask_BT, attention_BT

    c_ids, c_mask, c_att = side([r.chosen_ids for r in rows], [r.chosen_mask for r in rows], T_c)
    r_ids, r_mask, r_att = side([r.rejected_ids for r in rows], [r.rejected_mask for r in rows], T_r)
    return PairBatch(c_ids, r_ids, c_mask, r_mask, c_att, r_att)
