"""Grader throughput: verdicts per minute of ``grade_many`` on this machine's cores.

The workload is built from the real GSM8K and MATH test sets (``$STEPCREDIT_DATA``, default
``../shared/data``): every response is a full reference solution, graded against its own gold (40%),
another problem's gold (40%, nearly always wrong) or its own gold rewritten in an equivalent form
(20%: ``$...$``-wrapped, ``\\dfrac``, a decimal for a fraction, a trailing unit, thousands commas), so
the string, numeric, structural and symbolic paths all get exercised in realistic proportions. A third
workload grades MATH solutions against other problems' golds only (the slow case). One
small warm-up call (which starts the worker processes) is not timed. The sequential ``grade()`` rate
on a slice is reported for comparison. JSON goes to stdout and, with ``--out``, to a file.

Usage::

    python benchmarks/grading_throughput.py                    # 5000 MATH + 5000 GSM8K items, all cores
    python benchmarks/grading_throughput.py --n 2000 --workers 2 --out grading_throughput.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mathreason.data import default_data_dir, load_gsm8k, load_math  # noqa: E402
from mathreason.grading import default_workers, grade, grade_many, parse_number  # noqa: E402


def _rewrite(gold: str, rng: random.Random) -> str:
    """An equivalent way of writing ``gold`` (what a model might output instead)."""
    value = parse_number(gold)
    options = [f"${gold}$", gold.replace("\\frac", "\\dfrac"), f"\\boxed{{{gold}}}"]
    if value is not None:
        if value.denominator in (1, 2, 4, 5, 8, 10, 20, 25, 50, 100):
            options.append(f"{float(value):g}")
        if value.denominator == 1 and abs(value) >= 1000:
            options.append(f"{int(value):,}")
        options.append(f"{gold} \\text{{ units}}")
    if re.fullmatch(r"-?\d+", gold):
        options.append(f"\\frac{{{2 * int(gold)}}}{{2}}")
    return rng.choice(options)


def build_workload(problems, n: int, rng: random.Random, mix: bool = True) -> tuple[list[str], list[str], list[str]]:
    """``mix``: 40% own gold, 40% another problem's gold, 20% rewritten own gold; else other gold only
    (the slow case: nearly every pair is a mismatch that the cheap paths may not settle)."""
    responses, golds, kinds = [], [], []
    for k in range(n):
        i = rng.randrange(len(problems))
        p = problems[i]
        u = rng.random() if mix else 0.5
        if u < 0.4:
            gold, kind = p.answer, "own gold"
        elif u < 0.8:
            j = (i + 1 + rng.randrange(len(problems) - 1)) % len(problems)
            gold, kind = problems[j].answer, "other gold"
        else:
            gold, kind = _rewrite(p.answer, rng), "rewritten own gold"
        responses.append(p.solution)
        golds.append(gold)
        kinds.append(kind)
    return responses, golds, kinds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="folder with gsm8k/ and math/ (default $STEPCREDIT_DATA or ../shared/data)")
    ap.add_argument("--n", type=int, default=5000, help="items per dataset")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: available CPUs)")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--chunksize", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=300, help="items graded one by one with grade() for comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    data_dir = args.data_dir or default_data_dir()
    gpath, mpath = data_dir / "gsm8k" / "test.jsonl", data_dir / "math" / "hendrycks_MATH_test.jsonl"
    if not (gpath.is_file() and mpath.is_file()):
        sys.exit(f"real data not found under {data_dir} (set STEPCREDIT_DATA to the folder holding gsm8k/ and math/)")
    rng = random.Random(args.seed)
    sets = {"gsm8k": load_gsm8k("test", gpath), "math": load_math("test", mpath)}
    workers = args.workers or default_workers()
    load_before = os.getloadavg()
    grade_many(["\\boxed{1}"] * (2 * workers), ["1"] * (2 * workers), "math", workers=workers, chunksize=1)  # warm-up

    report: dict = {
        "benchmark": "grading_throughput",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus_available": default_workers(),
            "load_average_before": [round(x, 2) for x in load_before],
        },
        "settings": {"n_per_dataset": args.n, "workers": workers, "timeout_s": args.timeout, "chunksize": args.chunksize, "seed": args.seed},
        "datasets": {},
    }
    total_items, total_s = 0, 0.0
    for name, family, probs, mix in (
        ("gsm8k", "gsm8k", sets["gsm8k"], True),
        ("math", "math", sets["math"], True),
        ("math, other gold only", "math", sets["math"], False),
    ):
        responses, golds, kinds = build_workload(probs, args.n, rng, mix)
        t = time.perf_counter()
        verdicts = grade_many(responses, golds, family, workers=workers, timeout=args.timeout, chunksize=args.chunksize)
        elapsed = time.perf_counter() - t
        total_items += len(verdicts)
        total_s += elapsed
        by_kind = collections.defaultdict(lambda: [0, 0])
        for v, kind in zip(verdicts, kinds):
            by_kind[kind][0] += v.correct
            by_kind[kind][1] += 1
        seq = list(zip(responses, golds))[: args.sequential]
        t = time.perf_counter()
        for r, g in seq:
            grade(r, g, family, timeout=args.timeout)
        seq_s = time.perf_counter() - t
        report["datasets"][name] = {
            "items": len(verdicts),
            "seconds": round(elapsed, 2),
            "verdicts_per_minute": round(60 * len(verdicts) / elapsed),
            "correct_by_kind": {k: f"{c}/{n}" for k, (c, n) in sorted(by_kind.items())},
            "reasons": dict(collections.Counter(v.reason for v in verdicts).most_common()),
            "sequential_grade_verdicts_per_minute": round(60 * len(seq) / seq_s) if seq else None,
        }
    report["verdicts_per_minute"] = round(60 * total_items / total_s)
    report["note"] = "verdicts_per_minute is over all three workloads; the per-dataset rates are the ones to compare."
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
