"""Preference pairs of one run folder, token ids throughout, built by :mod:`shared.pairs`.

Responses are sequences of steps, each step a tuple of token ids (the sample's own ids cut at its step
ends). Per question:

* positives: pi_sft's correct samples that ended (``pairs.positives: samples``, the paper's D+), and/or
  the D_syn solution in the dataset's answer format; duplicates (same ids) are dropped;
* negatives: the valued negatives of ``advantages/advantages.jsonl`` for first-pit pairs (their pits), the
  incorrect samples that ended for random and max-edit-distance pairs.

A response that ended with EOS keeps it in its last step; one that ended with a stop string gets EOS
appended to its last step (it did end). So a rejected side truncated at a pit before the last step has
no EOS, and a whole response always does.

Kinds (``pairs/<kind>.jsonl``): ``first_pit_full`` (Algorithm 1: a random positive vs the negative
through its pit), ``first_pit_shared_prefix`` (prompt + the steps before the pit, a correct continuation
-- a successful rollout from that prefix, else a positive sharing it -- vs the pit step),
``random`` (standard DPO: random positive/negative pairs, one per negative by default) and
``max_edit_distance`` (each positive with its most distant negative, Pal et al. 2024). Choices are
seeded per question and kind, so a question's pairs do not depend on the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from shared.pairs import Pair, PairStats, first_pit_pairs, max_edit_distance_pairs, random_pairs

__all__ = ["Steps", "build_pairs", "pair_from_row", "pair_to_row", "split_ids", "with_eos"]

Steps = tuple[tuple[int, ...], ...]


def split_ids(ids: Sequence[int], ends: Sequence[int]) -> Steps:
    """``ids`` cut at ``ends`` (tokens through each step) into a tuple of steps."""
    out, a = [], 0
    for e in ends:
        out.append(tuple(int(t) for t in ids[a:e]))
        a = e
    return tuple(out)


def with_eos(ids: Sequence[int], ends: Sequence[int], finish_reason: str, eos_id: int, eos_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """A response's ids and step ends with EOS appended to its last step when it ended on a stop string."""
    ids, ends = list(ids), list(ends)
    if finish_reason == "stop" and ids and ids[-1] not in eos_ids and ends:
        ids.append(eos_id)
        ends[-1] += 1
    return ids, ends


def pair_to_row(problem_id: str, kind: str, prompt_ids: Sequence[int], pair: Pair, sources: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "problem_id": problem_id,
        "kind": kind,
        "prompt_ids": list(prompt_ids),
        "prefix": [list(s) for s in pair.prefix],
        "chosen": [list(s) for s in pair.chosen],
        "rejected": [list(s) for s in pair.rejected],
        "pit": pair.pit,
        "construction": pair.construction,
        **sources,
    }


def pair_from_row(row: Mapping[str, Any]) -> Pair:
    """The :class:`shared.pairs.Pair` stored in a ``pairs/<kind>.jsonl`` row."""
    t = lambda steps: tuple(tuple(s) for s in steps)  # noqa: E731
    return Pair(t(row["prefix"]), t(row["chosen"]), t(row["rejected"]), -1, -1, int(row.get("pit", -1)), row.get("construction", "full"))


def build_pairs(
    *,
    kinds: Sequence[str],
    prompts: Mapping[str, Sequence[int]],
    positives: Mapping[str, list[tuple[Steps, dict]]],
    negatives: Mapping[str, list[tuple[Steps, dict]]],
    valued: Mapping[str, list[tuple[Steps, int, list[Steps], dict]]],
    seed_for: Callable[[str, str], int],
    random_pairs_per_question: int | None = None,
) -> tuple[dict[str, list[dict]], dict[str, dict[str, int]]]:
    """All pair kinds for every question; returns ``({kind: rows}, {kind: counts})``.

    Args:
        kinds: pair kinds to build.
        prompts: question ids -> prompt ids.
        positives: question -> ``[(steps, source info)]`` chosen candidates.
        negatives: question -> ``[(steps, source info)]`` whole incorrect responses (random / max-edit pairs).
        valued: question -> ``[(steps, pit, continuations (each as steps), source info)]`` negatives with
            their first pit (-1 = none) for first-pit pairs.
        seed_for: ``(kind, question id) -> int`` seed of a question's random choices.
    """
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    counts: dict[str, dict[str, int]] = {}
    qids = sorted(set(prompts))
    for kind in kinds:
        c = defaultdict(int)
        stats = PairStats()
        for q in qids:
            pos = positives.get(q, [])
            pos_steps = [p for p, _ in pos]
            if kind in ("first_pit_full", "first_pit_shared_prefix"):
                vals = valued.get(q, [])
                if not vals:
                    continue
                c["questions_with_negatives"] += 1
                negs = [v[0] for v in vals]
                pits = [v[1] for v in vals]
                conts = [v[2] for v in vals]
                construction = "full" if kind == "first_pit_full" else "shared_prefix"
                pairs = first_pit_pairs(
                    pos_steps, negs, pits, construction=construction, seed=seed_for(kind, q),
                    continuations=conts if construction == "shared_prefix" else None, stats=stats,
                )
                for pr in pairs:
                    src = {"chosen_source": pos[pr.chosen_index][1] if pr.chosen_index >= 0 else {"rollout": True},
                           "rejected_source": vals[pr.rejected_index][3]}
                    rows[kind].append(pair_to_row(q, kind, prompts[q], pr, src))
            else:
                negs_q = negatives.get(q, [])
                if not negs_q:
                    continue
                c["questions_with_negatives"] += 1
                if not pos:
                    c["negatives_without_positive"] += len(negs_q)
                    continue
                neg_steps = [n for n, _ in negs_q]
                if kind == "random":
                    pairs = random_pairs(pos_steps, neg_steps, seed=seed_for(kind, q), num_pairs=random_pairs_per_question)
                else:
                    pairs = max_edit_distance_pairs(pos_steps, neg_steps)
                for pr in pairs:
                    src = {"chosen_source": pos[pr.chosen_index][1], "rejected_source": negs_q[pr.rejected_index][1]}
                    rows[kind].append(pair_to_row(q, kind, prompts[q], pr, src))
        c["pairs"] = len(rows[kind])
        c["questions_with_pairs"] = len({r["problem_id"] for r in rows[kind]})
        if kind.startswith("first_pit"):
            c["negatives_without_pit"] = stats.negatives_without_pit
            c["negatives_without_continuation"] = stats.negatives_without_continuation
        counts[kind] = dict(c)
    return rows, counts


def seed_function(seed: int) -> Callable[[str, str], int]:
    """``(kind, question id) -> seed`` derived from the run seed (order-independent)."""
    from mathreason.sampling import row_seed

    return lambda kind, q: int(np.uint64(row_seed(seed, "pairs", kind, q)) % np.uint64(2**63))
