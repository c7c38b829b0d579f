"""A handful of generated GSM8K-style problems for the ``tiny`` preset (tests, laptops, CI).

One-step word problems with small numbers, written like GSM8K reference solutions (a calculator
annotation ``<<a+b=c>>`` and a final ``#### c`` line), so the real loader, grader, RFT dedup and prompt
templates all run on them. Generation is seeded with a ``numpy.random.Generator``; train and test
problems are drawn from one stream and never share a question.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mathreason.runs import dumps, write_jsonl_atomic

__all__ = ["tiny_problem_rows", "write_tiny_problems"]

_NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Eva")
_ITEMS = ("apples", "pens", "books", "cards", "shells", "coins")


def _one(rng: np.random.Generator) -> tuple[str, str, str]:
    name = _NAMES[int(rng.integers(len(_NAMES)))]
    item = _ITEMS[int(rng.integers(len(_ITEMS)))]
    kind = int(rng.integers(3))
    a = int(rng.integers(2, 20))
    b = int(rng.integers(2, 10))
    if kind == 0:
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        c = a + b
        s = f"{name} has {a}+{b} = <<{a}+{b}={c}>>{c} {item}.\n#### {c}"
    elif kind == 1:
        a = a + b
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        c = a - b
        s = f"{name} has {a}-{b} = <<{a}-{b}={c}>>{c} {item} left.\n#### {c}"
    else:
        q = f"{name} buys {b} bags with {a} {item} in each bag. How many {item} does {name} buy?"
        c = a * b
        s = f"{name} buys {b}*{a} = <<{b}*{a}={c}>>{c} {item}.\n#### {c}"
    return q, s, str(c)


def tiny_problem_rows(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train rows, test rows)`` as D_syn jsonl records (``id``, ``question``, ``solution``, ``answer``, ``dataset``)."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        q, s, a = _one(rng)
        if q in seen:
            continue
        seen.add(q)
        split = "train" if len(rows) < n_train else "test"
        idx = len(rows) if split == "train" else len(rows) - n_train
        rows.append({"id": f"tiny/{split}/{idx}", "question": q, "solution": s, "answer": a, "dataset": "gsm8k"})
    return rows[:n_train], rows[n_train:]


def write_tiny_problems(folder: str | Path, n_train: int, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``tiny_train.jsonl`` and ``tiny_test.jsonl`` into ``folder`` (atomically); returns their paths."""
    folder = Path(folder)
    train, test = tiny_problem_rows(n_train, n_test, seed)
    paths = folder / "tiny_train.jsonl", folder / "tiny_test.jsonl"
    for path, rows in zip(paths, (train, test)):
        new = "".join(dumps(r) + "\n" for r in rows)
        if not path.exists() or path.read_text() != new:
            write_jsonl_atomic(path, rows)
    return paths
