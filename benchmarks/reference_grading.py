"""Grade every real reference solution against its own gold and against another problem's gold.

* GSM8K test (1319): every solution must be correct against its own gold, and wrong against a
  different problem's gold unless the two golds are the same number.
* MATH test (5000): the own-gold rate (target >= 99.5%), every miss listed; against another
  problem's gold, every "correct" is listed with whether the two golds are the same answer written
  identically or differently (those must be checked by eye; the script prints them all).
* MATH-500 (500): own gold given as the dataset's ``answer`` field.
* ``--train`` adds GSM8K train (7473) and MATH train (7498 well-formed rows).

The other problem is a seeded derangement (no problem is paired with itself). JSON goes to stdout
and, with ``--out``, to a file.

Usage::

    python benchmarks/reference_grading.py --out reference_grading.json
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mathreason.data import default_data_dir, load_gsm8k, load_math, load_math500  # noqa: E402
from mathreason.grading import grade_many, normalize_answer, parse_number  # noqa: E402


def derangement(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [(i + 1 + rng.randrange(n - 1)) % n for i in range(n)]


def same_answer(a: str, b: str) -> str | None:
    """How two golds are the same answer (``None`` if this script cannot tell)."""
    if a.strip() == b.strip():
        return "identical"
    if normalize_answer(a) == normalize_answer(b):
        return "equal after normalisation"
    va, vb = parse_number(a), parse_number(b)
    if va is not None and va == vb:
        return "same number"
    return None


def check(name: str, probs, dataset: str, workers: int | None, timeout: float, seed: int) -> dict:
    t = time.perf_counter()
    own = grade_many([p.solution for p in probs], [p.answer for p in probs], dataset, workers=workers, timeout=timeout)
    perm = derangement(len(probs), seed)
    other = grade_many([p.solution for p in probs], [probs[j].answer for j in perm], dataset, workers=workers, timeout=timeout)
    elapsed = time.perf_counter() - t
    misses = [
        {"id": p.id, "gold": p.answer, "extracted": v.extracted, "reason": v.reason}
        for p, v in zip(probs, own)
        if not v.correct
    ]
    positives = []
    unexplained = 0
    for i, v in enumerate(other):
        if v.correct:
            a, b = probs[i].answer, probs[perm[i]].answer
            how = same_answer(a, b)
            unexplained += how is None
            positives.append({"id": probs[i].id, "own_gold": a, "other_gold": b, "reason": v.reason, "same_answer": how or "CHECK BY EYE"})
    same_but_rejected = [
        {"id": probs[i].id, "own_gold": probs[i].answer, "other_gold": probs[perm[i]].answer, "reason": v.reason}
        for i, v in enumerate(other)
        if not v.correct and same_answer(probs[i].answer, probs[perm[i]].answer)
    ]
    return {
        "name": name,
        "problems": len(probs),
        "own_gold_correct": len(probs) - len(misses),
        "own_gold_rate": round((len(probs) - len(misses)) / len(probs), 5),
        "own_gold_misses": misses,
        "other_gold_correct": len(positives),
        "other_gold_positives": positives,
        "other_gold_positives_not_explained_by_equal_answers": unexplained,
        "other_gold_equal_answers_graded_wrong": same_but_rejected,
        "own_gold_reasons": dict(collections.Counter(v.reason for v in own).most_common()),
        "other_gold_reasons": dict(collections.Counter(v.reason for v in other).most_common()),
        "seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", action="store_true", help="also the GSM8K and MATH train splits")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    d = args.data_dir or default_data_dir()
    if not (d / "gsm8k" / "test.jsonl").is_file():
        sys.exit(f"real data not found under {d} (set STEPCREDIT_DATA to the folder holding gsm8k/ and math/)")
    runs = [
        ("gsm8k test", load_gsm8k("test", d / "gsm8k" / "test.jsonl"), "gsm8k"),
        ("math test", load_math("test", d / "math" / "hendrycks_MATH_test.jsonl"), "math"),
        ("math500", load_math500(d / "math" / "prm800k_math_splits_test.jsonl"), "math"),
    ]
    if args.train:
        runs += [
            ("gsm8k train", load_gsm8k("train", d / "gsm8k" / "train.jsonl"), "gsm8k"),
            ("math train", load_math("train", d / "math" / "hendrycks_MATH_train.jsonl", skip_malformed=True), "math"),
        ]
    report = {"benchmark": "reference_grading", "seed": args.seed, "results": [check(n, p, ds, args.workers, args.timeout, args.seed) for n, p, ds in runs]}
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
