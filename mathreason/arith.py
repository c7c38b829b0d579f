"""A learnable multi-step arithmetic word-problem task in GSM8K format (the ``arith`` D_syn source).

Each problem follows one person's count of one kind of item through ``n`` operations (``n`` between
``min_steps`` and ``max_steps``: the number of steps sets the difficulty), with optional distractor
sentences about other people's items. The reference solution has one equation per line, GSM8K style with
a calculator annotation, and ends with ``#### N``::

    Question: Mia has 7 shells. Tom has 4 cards. Mia buys 5 more shells. Mia gets 2 bags with 3 shells
              in each bag. Then Mia's shells double. How many shells does Mia have now?
    Solution: Buys 5: 7+5=<<7+5=12>>12
              Bags: 2*3=<<2*3=6>>6
              Adds 6: 12+6=<<12+6=18>>18
              Doubles: 18*2=<<18*2=36>>36
              #### 36

``n`` counts equations (lines): "bags" is two of them. Operations: buy (+), give away (-), double or
triple (*), bags (*, then +) and "put into b equal boxes and keep one" (/, only when it divides).

Solutions are correct by construction (every value is computed, checked to stay in ``[0, max_value]``)
and graded by the project's grader like any GSM8K solution. Generation is seeded with a
``numpy.random.Generator``; train and test problems come from one stream and never share a question.

Ground truth for credit assignment: :func:`first_wrong_line` compares a sampled response with the
reference line by line (the i-th equation must compute the reference's i-th value, and its arithmetic
must be right; the ``####`` line must give the answer), so a study can check that the first pit found by
rollouts lands on the first wrong equation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mathreason.runs import dumps, write_jsonl_atomic

__all__ = ["ArithSpec", "arith_rows", "first_wrong_line", "reference_values", "wrong_calculation_lines", "write_arith_problems"]

_NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Eva", "Leo", "Zoe")
_ITEMS = ("apples", "pens", "books", "cards", "shells", "coins", "stamps", "marbles")
_EQ_RE = re.compile(r"<<\s*(-?\d+)\s*([+\-*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*>>")
_FINAL_RE = re.compile(r"^####\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class ArithSpec:
    """What problems the generator draws (see the module docstring)."""

    min_steps: int = 2
    max_steps: int = 4
    max_operand: int = 9
    """New numbers in a problem are drawn from 2 .. max_operand."""
    max_start: int = 20
    """The starting count is drawn from 2 .. max_start."""
    max_value: int = 99
    """Every intermediate value stays in 0 .. max_value (operations that would leave it are redrawn)."""
    max_distractors: int = 1
    """Up to this many sentences about other people's items (numbers the solution must ignore)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_operand < 2 or self.max_start < 2 or self.max_value < max(self.max_start, 4):
            raise ValueError("max_operand and max_start must be >= 2 and max_value >= max(max_start, 4)")
        if self.max_distractors < 0:
            raise ValueError("max_distractors must be >= 0")


def _step(rng: np.random.Generator, spec: ArithSpec, x: int, name: str, item: str, room: int) -> tuple[str, list[str], list[int]] | None:
    """One operation on the count ``x``: (sentence, solution lines, values), or None if it does not fit
    (a value outside ``[0, max_value]``, a remainder, or a two-line operation with only one line of room)."""
    kind = int(rng.integers(5))
    b = int(rng.integers(2, spec.max_operand + 1))
    if kind == 0:
        y = x + b
        return f"{name} buys {b} more {item}.", [f"Buys {b}: {x}+{b}=<<{x}+{b}={y}>>{y}"], [y]
    if kind == 1:
        if b > x:
            return None
        y = x - b
        return f"{name} gives {b} {item} away.", [f"Gives {b}: {x}-{b}=<<{x}-{b}={y}>>{y}"], [y]
    if kind == 2:
        k = int(rng.integers(2, 4))
        y = x * k
        word = {2: "double", 3: "triple"}[k]
        return f"Then {name}'s {item} {word}.", [f"{word.capitalize()}s: {x}*{k}=<<{x}*{k}={y}>>{y}"], [y]
    if kind == 3:  # two equations: the bags' content, then the new count
        if room < 2:
            return None
        c = int(rng.integers(2, 5))
        p = c * b
        y = x + p
        lines = [f"Bags: {c}*{b}=<<{c}*{b}={p}>>{p}", f"Adds {p}: {x}+{p}=<<{x}+{p}={y}>>{y}"]
        return f"{name} gets {c} bags with {b} {item} in each bag.", lines, [p, y]
    if x < 2 or x % b:
        return None
    y = x // b
    return f"{name} puts them into {b} equal boxes and keeps one box.", [f"Keeps 1 of {b}: {x}/{b}=<<{x}/{b}={y}>>{y}"], [y]


def _problem(rng: np.random.Generator, spec: ArithSpec) -> tuple[str, str, str, dict]:
    name, other = (str(v) for v in rng.choice(_NAMES, size=2, replace=False))
    item, other_item = (str(v) for v in rng.choice(_ITEMS, size=2, replace=False))
    n = int(rng.integers(spec.min_steps, spec.max_steps + 1))
    x = int(rng.integers(2, spec.max_start + 1))
    sentences = [f"{name} has {x} {item}."]
    lines, values = [], []
    while len(lines) < n:
        out = _step(rng, spec, x, name, item, n - len(lines))
        if out is None or not all(0 <= v <= spec.max_value for v in out[2]):
            continue
        s, new_lines, new_values = out
        sentences.append(s)
        lines += new_lines
        values += new_values
        x = new_values[-1]
    for _ in range(int(rng.integers(0, spec.max_distractors + 1))):
        z = int(rng.integers(2, spec.max_start + 1))
        at = int(rng.integers(1, len(sentences) + 1))
        sentences.insert(at, f"{other} has {z} {other_item}.")
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    solution = "\n".join(lines) + f"\n#### {x}"
    return question, solution, str(x), {"steps": n, "values": values}


def arith_rows(n_train: int, n_test: int, spec: ArithSpec | None = None, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train rows, test rows)`` as D_syn jsonl records (``id, question, solution, answer, dataset, meta``)."""
    spec = spec or ArithSpec()
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    tries = 0
    while len(rows) < n_train + n_test:
        tries += 1
        if tries > 50 * (n_train + n_test) + 1000:
            raise ValueError(f"arith: could not draw {n_train + n_test} distinct problems from {spec}; widen the ranges")
        q, s, a, meta = _problem(rng, spec)
        if q in seen:
            continue
        seen.add(q)
        split = "train" if len(rows) < n_train else "test"
        idx = len(rows) if split == "train" else len(rows) - n_train
        rows.append({"id": f"arith/{split}/{idx}", "question": q, "solution": s, "answer": a, "dataset": "gsm8k", "meta": meta})
    return rows[:n_train], rows[n_train:]


def write_arith_problems(folder: str | Path, n_train: int, n_test: int, spec: ArithSpec | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Write ``arith_train.jsonl`` and ``arith_test.jsonl`` into ``folder`` (atomically, only when changed)."""
    folder = Path(folder)
    train, test = arith_rows(n_train, n_test, spec, seed)
    paths = folder / "arith_train.jsonl", folder / "arith_test.jsonl"
    for path, rows in zip(paths, (train, test)):
        new = "".join(dumps(r) + "\n" for r in rows)
        if not path.exists() or path.read_text() != new:
            write_jsonl_atomic(path, rows)
    return paths


# ---------------------------------------------------------------- ground truth for credit assignment


def reference_values(solution: str) -> list[int]:
    """The value computed by each equation line of a reference solution, in order."""
    return [int(m.group(4)) for m in _EQ_RE.finditer(solution)]


def _arith_ok(a: int, op: str, b: int, c: int) -> bool:
    if op == "+":
        return a + b == c
    if op == "-":
        return a - b == c
    if op == "*":
        return a * b == c
    return b != 0 and a == b * c


def wrong_calculation_lines(text: str) -> list[int]:
    """Indices of the non-blank lines of ``text`` whose last calculator annotation ``<<a op b=c>>`` is
    arithmetically wrong (no reference needed: e.g. a rollout that lands on the right answer through a
    second, compensating error)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    out = []
    for i, ln in enumerate(lines):
        ms = list(_EQ_RE.finditer(ln))
        if ms and not _arith_ok(int(ms[-1].group(1)), ms[-1].group(2), int(ms[-1].group(3)), int(ms[-1].group(4))):
            out.append(i)
    return out


WRONG_KINDS = ("calculation", "plan", "copy", "format", "ended", "answer", "extra")
"""What goes wrong at a response's first wrong line (:func:`first_wrong`): *calculation*: the calculator
annotation ``<<a op b=c>>`` is arithmetically wrong; *plan*: it is right but computes another value than the
reference's at that line (a wrong operand or operation, or the steps in another order); *copy*: the visible
result after the annotation differs from ``c``; *format*: an equation line without an annotation; *ended*:
the response stops before the line; *answer*: the ``#### N`` line is malformed or N is not the last value;
*extra*: a further line where ``#### N`` should be."""


def first_wrong(response: str, solution: str) -> tuple[int, str] | None:
    """``(index, kind)`` of the first line of ``response`` that goes wrong against the reference
    ``solution`` (kinds: :data:`WRONG_KINDS`), or None when every line is right; see :func:`first_wrong_line`."""
    values = reference_values(solution)
    lines = [ln for ln in response.split("\n") if ln.strip()]
    for i, want in enumerate(values):
        if i >= len(lines):
            return i, "ended"
        ms = list(_EQ_RE.finditer(lines[i]))
        if not ms:
            return i, ("answer" if _FINAL_RE.match(lines[i].strip()) else "format")
        m = ms[-1]
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        shown = lines[i][m.end() :].strip().rstrip(".")
        if not _arith_ok(a, op, b, c):
            return i, "calculation"
        if c != want:
            return i, "plan"
        if shown != str(c):
            return i, "copy"
    n = len(values)
    if n >= len(lines):
        return n, "ended"
    m = _FINAL_RE.match(lines[n].strip())
    if m is None:
        return n, ("extra" if _EQ_RE.search(lines[n]) else "answer")
    if int(m.group(1)) != (values[-1] if values else None):
        return n, "answer"
    return None


def first_wrong_line(response: str, solution: str) -> int | None:
    """Index of the first line of ``response`` that goes wrong against the reference ``solution`` (None: none).

    Line ``i < n`` (``n`` equations in the reference) is right when its last calculator annotation
    ``<<a op b=c>>`` is arithmetically right, ``c`` equals the reference's i-th value, and the visible
    result after the annotation repeats ``c``; line ``n`` must be ``#### <answer>``. A missing line (the
    response ended early) counts as wrong at that index; blank lines are not lines. A response whose
    lines are all right returns None (even if it goes on after the answer line, which never happens
    for an ended response, as ``####`` is its last line).
    """
    hit = first_wrong(response, solution)
    return None if hit is None else hit[0]
