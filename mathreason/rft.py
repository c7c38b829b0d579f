"""Rejection fine-tuning data: pi_sft's own correct samples, deduplicated and capped per question.

From the graded samples of each question (in sample-index order) :func:`select_positives` keeps

1. the first ``samples_per_question`` samples (M; None = all that were drawn),
2. the correct ones (optionally dropping those cut by ``max_tokens``, which never emitted EOS),
3. the first of every group of duplicates: two samples are duplicates when their normalised text is
   equal (lower case, whitespace collapsed), or, with ``text+equations`` on GSM8K, when they contain
   the same non-empty sequence of calculator equations ``<<a=b>>`` (whitespace removed) -- the
   criterion of Yuan et al. 2023's RFT, where equal equation chains mean the same reasoning path,
4. at most ``max_per_question`` of what is left.

Defaults (``rft`` section of the presets): M = ``sample.n`` = 8 samples per question at temperature
0.7 (the paper's practical recipe draws 8 samples per question; the same pass later supplies the
negatives for per-step DPO), text+equation dedup, and a cap of 4 distinct positives per question so
that easy questions, which yield many near-identical positives, do not dominate D+. RFT then fine-tunes
the **base** model (not pi_sft) on D+, as in the paper: RFT is compared with SFT at equal data, both
starting from the same pre-trained weights.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["equation_signature", "normalise_text", "select_positives"]

_EQ_RE = re.compile(r"<<([^<>]*)>>")
_WS_RE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space and the ends stripped."""
    return _WS_RE.sub(" ", text).strip().lower()


def equation_signature(text: str) -> tuple[str, ...]:
    """The sequence of GSM8K calculator equations ``<<a=b>>`` in ``text``, whitespace removed."""
    return tuple(_WS_RE.sub("", m) for m in _EQ_RE.findall(text))


def select_positives(
    rows: Iterable[Mapping[str, Any]],
    *,
    dataset: str,
    samples_per_question: int | None = None,
    dedup: str = "text+equations",
    max_per_question: int | None = None,
    include_truncated: bool = False,
) -> tuple[list[dict], dict[str, Any]]:
    """Pick RFT positives from graded sample rows.

    Args:
        rows: dicts with at least ``problem_id``, ``sample_index``, ``text``, ``correct`` and
            ``finish_reason``.
        dataset: ``gsm8k`` or ``math`` (equation dedup applies to gsm8k only).
        samples_per_question: use sample indices ``< M`` only (None = all).
        dedup: ``none``, ``text`` or ``text+equations``.
        max_per_question: cap on kept positives per question (None = no cap).
        include_truncated: keep correct samples whose ``finish_reason`` is ``length``.

    Returns:
        ``(kept rows in question then sample-index order, counts)``.
    """
    if dedup not in ("none", "text", "text+equations"):
        raise ValueError(f"select_positives: dedup must be none, text or text+equations, got {dedup!r}")
    by_q: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    order: list[str] = []
    for r in rows:
        pid = r["problem_id"]
        if pid not in by_q:
            order.append(pid)
        by_q[pid].append(r)
    counts = {"questions": len(order), "considered": 0, "correct": 0, "truncated_dropped": 0, "duplicates": 0, "capped": 0}
    kept: list[dict] = []
    questions_with_positive = 0
    use_eq = dedup == "text+equations" and dataset.lower().startswith("gsm")
    for pid in order:
        samples: Sequence[Mapping[str, Any]] = sorted(by_q[pid], key=lambda r: r["sample_index"])
        if samples_per_question is not None:
            samples = [r for r in samples if r["sample_index"] < samples_per_question]
        counts["considered"] += len(samples)
        seen_text: set[str] = set()
        seen_eq: set[tuple[str, ...]] = set()
        mine: list[dict] = []
        for r in samples:
            if not r["correct"]:
                continue
            counts["correct"] += 1
            if r["finish_reason"] == "length" and not include_truncated:
                counts["truncated_dropped"] += 1
                continue
            if dedup != "none":
                t = normalise_text(r["text"])
                eq = equation_signature(r["text"]) if use_eq else ()
                if t in seen_text or (eq and eq in seen_eq):
                    counts["duplicates"] += 1
                    continue
                seen_text.add(t)
                if eq:
                    seen_eq.add(eq)
            if max_per_question is not None and len(mine) >= max_per_question:
                counts["capped"] += 1
                continue
            mine.append(dict(r))
        questions_with_positive += bool(mine)
        kept.extend(mine)
    counts["kept"] = len(kept)
    counts["questions_with_positive"] = questions_with_positive
    return kept, counts
