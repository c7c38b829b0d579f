"""Final-answer extraction and equivalence grading for GSM8K and MATH.

A wrong verdict silently turns a positive into a negative (or the reverse) for every later stage, so
this module is deliberately conservative and fully bounded:

* :func:`extract_answer` finds the final answer of a response or reference solution: the last
  ``\\boxed{...}``/``\\fbox{...}`` (nested braces, escaped braces), then ``#### ...``, then
  "The (final) answer is ...", then, for GSM8K only, the last number. For MATH a short one-line
  response with none of these markers is taken as a bare answer.
* :func:`grade` compares the extracted answer with the gold answer. Cheap deterministic paths come
  first (string normalisation, exact rational arithmetic on numbers, structural comparison of lists,
  sets, tuples, intervals and matrices, text answers); only what they cannot decide goes to
  math-verify (latex2sympy + sympy), and that always runs in a separate worker process with a soft
  timer inside it and a hard kill from outside, so a pathological answer costs at most the timeout.
  Model output never reaches ``eval``, ``sympify`` of a raw string or sympy's ``parse_expr``: the
  symbolic leaf uses math-verify with LaTeX extraction only (an ANTLR grammar), with latex2sympy's
  number parsing replaced by direct construction, inside an audit-hook sandbox that refuses
  compiling strings, processes, sockets and file writes.
* :func:`grade_many` grades large batches over a pool of worker processes with a per-item deadline;
  a worker that hangs or dies is replaced and only its current item is lost.

Equivalence policy (also in ``docs/grading.md``):

* Numbers are compared exactly as rationals: ``0.5 == 1/2 == \\frac12 == \\dfrac{1}{2}``,
  ``18.90 == 18.9``, ``1,000 == 1000 == \\$1,000.00``, ``2\\frac{1}{2} == 5/2`` (a digit string directly
  followed by ``\\frac{int}{int}`` is a mixed number), ``1.5e3 == 1.5\\times10^{3} == 1500``. A decimal
  literal matches a non-terminating fraction only to 6 significant places (``0.333333 == 1/3``;
  ``0.33 != 1/3``); two terminating numbers must be equal exactly.
* Percent is a unit: ``10\\% == 10``; when a percent sign is present on either side, ``10\\% == 0.1``
  is also accepted; without one, ``10 != 0.1``.
* Units, currency and degrees are dropped: ``5\\text{ cm} == 5``, ``\\$18.90 == 18.9``,
  ``30^\\circ == 30``, ``5 apples == 5``. No unit conversion and no degree/radian conversion.
* ``x = 3 == 3`` and ``x \\in [0,1] == [0,1]`` (a single-variable left side is dropped when the
  other side has none).
* Unbracketed comma lists are unordered (``1, -2 == -2, 1``); so are ``\\{...\\}`` sets and
  ``\\cup`` unions. Tuples, intervals and matrices are ordered and bracket-exact (``(1,2] != (1,2)``);
  a vector matrix matches the same tuple, a point ``(1, 2)`` the bare list ``1, 2``, an interval the
  equivalent inequality (``(1,2] == 1 < x \\le 2``), and one ``\\pm`` makes a two-element list.
* Text answers (``\\text{Monday}``, ``(A)``, ``\\text{(C)}``) compare case-insensitively on letters,
  digits and ``:``; a text answer never matches a non-text answer. When the gold is a bare choice
  letter A-E, a prediction that starts with a choice marker followed by a value
  (``\\textbf{(C)}\\ 12``, ``(C) 12``) is judged by its letter (a second choice in it never matches).
* A standalone ``i`` is the imaginary unit (``i^2 == -1``, ``e^{i\\pi} == -1``) unless either answer
  uses ``i`` as an index (``a_i``, ``\\sum_{i=1}``, ``i \\le n``); math-verify itself reads ``i`` as a
  plain symbol, so the symbolic leaf compares again with ``i`` replaced by sympy's ``I``.
* In a response with several boxes the last one counts; when the gold is a list and the response
  ends with a run of adjacent boxes (``\\boxed{-2} and \\boxed{1}``) the run is read as that list.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

__all__ = [
    "GRADER_VERSION",
    "Verdict",
    "extract_answer",
    "grade",
    "grade_many",
    "last_boxed",
    "boxed_contents",
    "normalize_answer",
    "parse_number",
    "dataset_family",
    "shutdown_workers",
]

logger = logging.getLogger(__name__)

GRADER_VERSION = "2026.12.1"
"""Changes whenever a verdict can change. Stage keys include it, so a grading fix re-grades stored samples
instead of reusing a stale ``graded.jsonl``."""

MAX_ANSWER_CHARS = 2000
"""Extracted answers longer than this are compared as normalised strings only."""
MAX_SYMBOLIC_CHARS = 400
"""Longest normalised answer that is handed to math-verify."""
_WORKER_GRACE_S = 1.0
"""Extra seconds a worker gets past the soft timeout before it is killed."""
_WORKER_STARTUP_S = 180.0
"""Longest wait for a fresh worker process to import sympy/math-verify (the CI machine is slow)."""
_WORKER_MEMORY_BYTES = 4 << 30
"""Address-space limit of a worker process (a runaway expansion fails with MemoryError instead)."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of grading one response.

    ``correct``: the extracted answer is equivalent to the gold answer. ``extracted``: the answer found
    in the response (``None`` if none was found or grading failed before extraction). ``reason``: how
    the decision was reached (``"normalized match"``, ``"numeric mismatch"``, ``"symbolic match"``,
    ``"no answer found"``, ``"timeout"``, ``"error: ..."``, ...).
    """

    correct: bool
    extracted: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"correct": self.correct, "extracted": self.extracted, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(bool(d["correct"]), d.get("extracted"), str(d.get("reason", "")))


def dataset_family(dataset: str | None) -> str:
    """Grading family of a dataset name: ``"gsm8k"`` for names starting with ``gsm``, else ``"math"``."""
    name = (dataset or "").strip().lower()
    return "gsm8k" if name.startswith("gsm") else "math"


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

_BOX_CMD_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)


def _brace_matches(text: str, start: int = 0) -> dict[int, int]:
    """Position of the matching ``}`` for every balanced ``{`` at or after ``start``.

    Backslash-escaped characters (``\\{``, ``\\}``, ``\\\\``) are skipped. Linear in ``len(text)``.
    """
    stack: list[int] = []
    match: dict[int, int] = {}
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}":
            if stack:
                match[stack.pop()] = m.start()
    return match


def _box_spans(text: str) -> list[tuple[int, int, int, int]]:
    """Every complete ``\\boxed``/``\\fbox`` in ``text`` as ``(start, end, content_start, content_end)``.

    ``\\boxed{...}`` needs a balanced closing brace (a truncated box is ignored); ``\\boxed 5`` takes
    the token up to the next space or ``$``. Spans, not slices: nested boxes cost no copying.
    """
    first = _BOX_CMD_RE.search(text)
    if first is None:
        return []
    match = _brace_matches(text, first.start())
    out: list[tuple[int, int, int, int]] = []
    n = len(text)
    for m in _BOX_CMD_RE.finditer(text, first.start()):
        j = m.end()
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "{":
            k = match.get(j)
            if k is not None:
                out.append((m.start(), k + 1, j + 1, k))
        elif j > m.end() and j < n:
            tok = re.match(r"[^\s$]+", text[j : j + 200])
            if tok:
                out.append((m.start(), j + tok.end(), j, j + tok.end()))
    return out


def _top_level_spans(text: str) -> tuple[list[tuple[int, int, int, int]], dict[int, tuple[int, int, int, int]]]:
    """Boxes not nested inside another box (by start), and every box keyed by its start."""
    spans = _box_spans(text)
    by_start = {sp[0]: sp for sp in spans}
    top: list[tuple[int, int, int, int]] = []
    for sp in spans:
        if top and sp[0] < top[-1][1]:
            continue  # nested in the previous top-level box
        top.append(sp)
    return top, by_start


def _unwrap_span(text: str, span: tuple[int, int, int, int], by_start: dict) -> str:
    """Content of a box; ``\\boxed{\\boxed{x}}`` -> ``x`` (while the content is exactly one box)."""
    c, d = span[2], span[3]
    for _ in range(1000):
        cs, de = c, d
        while cs < de and text[cs].isspace():
            cs += 1
        while de > cs and text[de - 1].isspace():
            de -= 1
        inner = by_start.get(cs)
        if inner is None or inner[1] != de:
            break
        c, d = inner[2], inner[3]
    return text[c:d].strip()


def _top_level_boxes(text: str) -> list[tuple[int, int, str]]:
    """Top-level boxes as ``(start, end, content)`` with nested ``\\boxed{\\boxed{..}}`` unwrapped."""
    top, by_start = _top_level_spans(text)
    return [(sp[0], sp[1], _unwrap_span(text, sp, by_start)) for sp in top]


def boxed_contents(text: str) -> list[str]:
    """Contents of every top-level ``\\boxed{}``/``\\fbox{}`` in order (nested boxes unwrapped)."""
    return [c for _, _, c in _top_level_boxes(text)]


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{}``/``\\fbox{}`` (the MATH gold convention), or ``None``."""
    top, by_start = _top_level_spans(text)
    return _unwrap_span(text, top[-1], by_start) if top else None


_BOX_SEP_RE = re.compile(
    r"[\s$,;]*(?:(?:and|or|&)|\\text\{\s*(?:and|or|,)?\s*\}|\\quad|\\qquad|\\,|\\;)?[\s$,;]*"
)


def _trailing_box_run(text: str) -> list[str]:
    """Contents of the run of adjacent boxes that ends with the last box (``\\boxed{1}, \\boxed{2}``)."""
    boxes = _top_level_boxes(text)
    if not boxes:
        return []
    run = [boxes[-1]]
    for b in reversed(boxes[:-1]):
        gap = text[b[1] : run[-1][0]]
        if len(gap) > 40 or not _BOX_SEP_RE.fullmatch(gap):
            break
        run.append(b)
    return [c for _, _, c in reversed(run)]


_ANSWER_IS_RE = re.compile(r"(?i)\banswers?\s*(?:is\b|are\b|:|=)\s*:?|\banswer\s+(?=\$|\\\[|\\\()")
_VERB_RE = re.compile(r"\b(?:is|are|equals|be)\s+")
_HASHES_RE = re.compile(r"####")
_MATH_OPEN = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}


def _answer_segment(rest: str) -> str:
    """The answer that starts ``rest`` (the text after "answer is" / "####"): up to the end of the
    line or sentence, or the whole first math span when it starts with one."""
    rest = rest.lstrip(" \t*:")
    for open_, close in _MATH_OPEN.items():
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            # display math may span lines; inline math may not
            if end > 0 and (open_ in ("$$", "\\[") or "\n" not in rest[:end]):
                return rest[len(open_) : end].strip()
            break
    rest = rest.split("\n", 1)[0]
    m = re.search(r"\.(?=\s|$)", rest)  # end of sentence; a decimal point is followed by a digit
    if m:
        rest = rest[: m.start()]
    return rest.strip().strip("*").strip()


_INT_PART = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_GSM_NUM_RE = re.compile(
    r"-?\\[dt]?frac\{\s*-?[\d.,]+\s*\}\{\s*-?[\d.,]+\s*\}"
    r"|(?<![\w.\\])-?\d+ \d+/\d+(?![\d.,/])"  # mixed number 2 1/2
    r"|(?<![\w.\\])-?\$?" + _INT_PART + r"(?:\.\d+)?"
    r"(?:[eE][+-]?\d{1,4}(?![\w.])|\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*-?\d{1,4}\s*\}?)?"  # 1.5e3, 1.5 \times 10^{3}
    r"(?:\s*/\s*" + _INT_PART + r"(?:\.\d+)?)?(?:\s*\\?%)?"
    r"|(?<![\w.\\])-?\.\d+(?:\s*\\?%)?"
)
_GSM_NUM_SCAN_LIMIT = 20000
"""The last-number fallback reads only the last this-many characters of a long response."""


def _gsm8k_number(segment: str, last: bool = False) -> str | None:
    """The number token in ``segment``: the first one after the last ``=`` (or the last one)."""
    segment = segment.replace("\u2212", "-").replace("\u2013", "-")
    if not last and "=" in segment:
        segment = segment.rsplit("=", 1)[1]
    if last and len(segment) > _GSM_NUM_SCAN_LIMIT:
        segment = segment[-_GSM_NUM_SCAN_LIMIT:]
    toks = _GSM_NUM_RE.findall(segment)
    if not toks:
        return None
    tok = toks[-1] if last else toks[0]
    return tok.replace("$", "").strip()


def _looks_like_bare_answer(text: str) -> bool:
    s = text.strip()
    return 0 < len(s) <= 300 and "\n" not in s


def _extract(text: str, family: str, allow_bare: bool = True) -> tuple[str | None, list[str]]:
    """``(answer, trailing box run)`` of ``text`` (see :func:`extract_answer`)."""
    if not isinstance(text, str):
        return None, []
    run = _trailing_box_run(text)
    seg: str | None = None
    if run:
        seg = run[-1]
    else:
        hashes = list(_HASHES_RE.finditer(text))
        if hashes:
            seg = _answer_segment(text[hashes[-1].end() :])
        else:
            ans = None
            for ans in _ANSWER_IS_RE.finditer(text):
                pass
            if ans is not None:
                seg = _answer_segment(text[ans.end() :])
                if ans.group().rstrip().endswith(":") and seg and seg[0] not in "$\\":
                    # "Final Answer: the volume of $P$ is 120" -> 120
                    verbs = list(_VERB_RE.finditer(seg))
                    if verbs:
                        seg = _answer_segment(seg[verbs[-1].end() :])
                inner = last_boxed(seg) if seg else None
                if inner is not None:
                    seg = inner
    if family == "gsm8k":
        if seg is not None:
            num = _gsm8k_number(seg)
            return (num if num is not None else (seg or None)), run
        return _gsm8k_number(text, last=True), run
    if seg is None and allow_bare and _looks_like_bare_answer(text):
        seg = text.strip()
    return (seg if seg else None), run


def extract_answer(text: str, dataset: str, *, allow_bare: bool = True) -> str | None:
    """The final answer in a model response or reference solution, or ``None`` if there is none.

    Order: the last ``\\boxed{}``/``\\fbox{}``; else the text after the last ``####``; else after the
    last "answer is"/"answer:" (to the end of the sentence or line, or the first ``$...$`` there);
    else, for GSM8K, the last number in the text, and for MATH the whole text when it is a short
    single line (a bare answer). For GSM8K the number token of the found segment is returned (after
    the last ``=`` in it), e.g. ``"1,000"`` from ``"The answer is $1,000."``. ``allow_bare=False``
    turns the MATH bare-answer fallback off (for reading gold answers out of reference solutions).
    Never raises.
    """
    try:
        return _extract(text, dataset_family(dataset), allow_bare)[0]
    except Exception:  # pragma: no cover - defensive: extraction is pure string code
        logger.debug("extract_answer failed", exc_info=True)
        return None


def _prepare_gold(gold: str, family: str) -> str:
    """A gold answer may be bare LaTeX, a ``$...$`` span, a boxed answer or a whole reference solution."""
    g = gold.strip()
    if _BOX_CMD_RE.search(g):
        run = _trailing_box_run(g)
        if len(run) > 1:  # "the answers are \boxed{-2} and \boxed{1}": the gold is the list
            return ", ".join(run)
        if run:
            return run[0]
    if "####" in g:
        return _answer_segment(g.rsplit("####", 1)[1])
    return g


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u00f7": "\\div ", "\u22c5": "\\cdot ",
    "\u00b7": "\\cdot ", "\u221a": "\\sqrt", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b2": "^2", "\u00b3": "^3",
    "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ", "\u00b0": "^\\circ", "\uff0c": ",", "\u00a0": " ",
    "\u2009": " ", "\u202f": " ", "\u222a": "\\cup ", "\u2208": "\\in ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_TEXT_CMDS = r"text|textrm|textnormal|textbf|textit|textsf|texttt|mbox|mathrm|mathit|mathsf|mathbf|mathtt|operatorname|emph"
_UNIT_CMD_RE = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|textsf|mbox|mathrm)\s*\{([^{}]*)\}(\s*\^\s*\{?\s*[23]\s*\}?)?")
_TEXT_WRAP_RE = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\\\|\\[!,;:> ]|\\q?quad(?![A-Za-z])|\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])|~")
_SIZING_RE = re.compile(r"\\(?:left|right|middle|[Bb]igg?[lrm]?)(?![A-Za-z])\s*(\\?[.])?")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|\^\s*\{\s*o\s*\}$")
_PERCENT_RE = re.compile(r"\\?%|\\percent(?![A-Za-z])|(?<![A-Za-z])percent(?:age)?(?![A-Za-z])")
_DOLLAR_RE = re.compile(r"\\\$|\$|\\(?:textdollar|dollar)(?![A-Za-z])")
_CMD_ALIASES = [
    (re.compile(r"\\[dtc]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![A-Za-z])"), r"\\binom"),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
    (re.compile(r"\\(?:lvert|rvert|vert)(?![A-Za-z])"), "|"),
    (re.compile(r"\\(?:leq|leqslant)(?![A-Za-z])"), r"\\le"),
    (re.compile(r"\\(?:geq|geqslant)(?![A-Za-z])"), r"\\ge"),
    (re.compile(r"\\(?:neq)(?![A-Za-z])"), r"\\ne"),
    (re.compile(r"\{(?:bmatrix|Bmatrix|matrix|smallmatrix)\}"), "{pmatrix}"),
    (re.compile(r"\\(?:infinity|infty)(?![A-Za-z])|(?<![A-Za-z\\])(?:infinity|inf)(?![A-Za-z])"), r"\\infty"),
    (re.compile(r"\\varnothing(?![A-Za-z])|\\\{\s*\\\}|\\O(?![A-Za-z])"), r"\\emptyset"),
]
_FUNCTION_WORDS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "lg", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "max", "min", "gcd", "lcm", "det", "mod", "deg", "sqrt", "frac", "pi",
}
_UNIT_WORDS = {
    "cm", "mm", "km", "in", "inch", "inches", "ft", "feet", "foot", "yd", "yard", "yards", "mi", "mile", "miles",
    "kg", "gm", "mg", "lb", "lbs", "oz", "ml", "sec", "min", "hr", "hrs", "mph", "kph",
}
_SPACED_UNIT_LETTERS = {"m", "g", "l", "s", "h"}
_CHOICE_RE = re.compile(r"\(?([A-Z])\)?")


def _canon_args(s: str, depth: int = 0) -> str:
    """Brace the arguments of ``\\frac``, ``\\binom``, ``\\sqrt``, ``^`` and ``_``: ``\\frac12`` ->
    ``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``, ``x^2`` -> ``x^{2}``. Linear; gives up (returns the
    input) on malformed or very deep input."""
    if depth > 30:
        raise ValueError("too deep")
    out: list[str] = []
    i, n = 0, len(s)

    def read_arg(j: int) -> tuple[str, int]:
        while j < n and s[j] == " ":
            j += 1
        if j >= n:
            raise ValueError("missing argument")
        if s[j] == "{":
            d, k = 0, j
            while k < n:
                c = s[k]
                if c == "\\":
                    k += 2
                    continue
                if c == "{":
                    d += 1
                elif c == "}":
                    d -= 1
                    if d == 0:
                        return _canon_args(s[j + 1 : k], depth + 1), k + 1
                k += 1
            raise ValueError("unbalanced")
        if s[j] == "\\":
            m = re.match(r"\\(?:[A-Za-z]+|.)", s[j:], re.S)
            if m is None:
                raise ValueError("dangling backslash")
            return m.group(), j + m.end()
        return s[j], j + 1

    while i < n:
        c = s[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", s[i:])
            if m is None:
                out.append(c)
                i += 1
                continue
            name = m.group(1)
            j = i + m.end()
            if name in ("frac", "binom"):
                a, j = read_arg(j)
                b, j = read_arg(j)
                out.append(f"\\{name}{{{a}}}{{{b}}}")
            elif name == "sqrt":
                idx = ""
                k = j
                while k < n and s[k] == " ":
                    k += 1
                if k < n and s[k] == "[":
                    close = s.find("]", k)
                    if close < 0:
                        raise ValueError("unbalanced")
                    idx = "[" + s[k + 1 : close].strip() + "]"
                    j = close + 1
                a, j = read_arg(j)
                out.append(f"\\sqrt{idx}{{{a}}}")
            else:
                out.append(m.group())
            i = j
        elif c in "^_":
            a, j = read_arg(i + 1)
            out.append(f"{c}{{{a}}}")
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _strip_outer_math(s: str) -> str:
    s = s.strip()
    for _ in range(5):
        before = s
        for open_, close in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
            if s.startswith(open_) and s.endswith(close) and len(s) >= len(open_) + len(close):
                s = s[len(open_) : len(s) - len(close)].strip()
                break
        if s == before:
            break
    return s


@dataclass(frozen=True)
class _Norm:
    s: str  # canonical string
    percent: bool  # a percent sign was present
    texty: bool  # a text answer (words), compared as text


def _collapse_spaces(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    # thousands grouped with spaces: 1 000 000 -> 1000000
    s = re.sub(r"(?<![\d.])\d{1,3}(?: \d{3})+(?=\.\d|(?![\d.]))", lambda m: m.group().replace(" ", ""), s)
    # keep a space only where it separates two letters ("\pi r") or two digits ("1 2" is not 12)
    return re.sub(r"(?<![A-Za-z0-9]) | (?![A-Za-z0-9])|(?<=[A-Za-z]) (?=[0-9])|(?<=[0-9]) (?=[A-Za-z])", "", s)


def _strip_units(s: str) -> str:
    """Drop trailing unit text after a mathematical head: ``5\\text{ cm}^2`` -> ``5``, ``18 dollars`` -> ``18``."""
    for _ in range(4):
        m = None
        for m in _UNIT_CMD_RE.finditer(s):
            pass
        if m is None or m.end() != len(s.rstrip()):
            break
        head = s[: m.start()].rstrip()
        if not head or not re.search(r"[\d}\)\]A-Za-z]$", head) or not re.search(r"[A-Za-z]", m.group(1)):
            break
        if re.fullmatch(r"\s*(?:and|or)\s*|\s*\(\s*[A-Za-z]\s*\)\s*", m.group(1)):
            break  # a conjunction, or a choice label such as \textbf{(D)}: not a unit
        s = head
    # bare words after a number: "5 apples", "12.5 square feet", "3 cm^2"
    m = re.fullmatch(r"(.*?[\d}])\s*((?:[A-Za-z]+\.?)(?:\s+[A-Za-z]+\.?)*)(\s*\^\s*\{?[23]\}?)?\s*", s)
    if m:
        head, words = m.group(1), m.group(2)
        wl = [w.rstrip(".").lower() for w in words.split()]
        spaced = s[len(head) : len(head) + 1].isspace()
        if (
            all(w not in _FUNCTION_WORDS for w in wl)
            and not re.search(r"\\[A-Za-z]*$", head)
            and (spaced and all(len(w) >= 2 or w in _SPACED_UNIT_LETTERS for w in wl) or all(w in _UNIT_WORDS for w in wl))
            and (_parse_number_str(_collapse_spaces(head)) is not None or spaced)
        ):
            s = head
    return s


def normalize_answer(answer: str) -> str:
    """Canonical string form of an answer (what the string and numeric paths of :func:`grade` compare)."""
    return _normalize(answer).s


@functools.lru_cache(maxsize=8192)
def _normalize(answer: str) -> _Norm:
    s = answer
    if len(s) > MAX_ANSWER_CHARS:
        return _Norm(s.strip(), False, False)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)
    s = _strip_outer_math(s.replace("\n", " "))
    if _BOX_CMD_RE.search(s):
        inner = last_boxed(s)
        if inner is not None:
            s = inner
    s = _strip_outer_math(s)
    s = re.sub(r"\s*\{\s*,\s*\}\s*|,\\!\s*", ",", s)  # LaTeX thousands separators {,} and ,\!
    s = _SPACING_RE.sub(lambda m: m.group() if m.group() == "\\\\" else "" if m.group() == "\\!" else " ", s)
    s = _SIZING_RE.sub("", s)
    for pat, rep in _CMD_ALIASES:
        s = pat.sub(rep, s)
    s = re.sub(r"\\(?:hbox|vbox)\s*\{", r"\\text{", s)
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub(" ", s)
    s = _DEGREE_RE.sub(" ", s)
    s = _DOLLAR_RE.sub(" ", s)
    s = s.strip().rstrip(".,;").strip()
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}|(?<=[\s\d}])(?:and|or)(?=[\s\-\d\\$(])", ",", s)
    # a number written inside text: \text{5 cm} -> 5 cm (then the unit goes)
    s = re.sub(r"\\(?:text|textrm|textnormal|mbox)\s*\{\s*([-+]?\d[\d.,]*(?:\s*[A-Za-z][A-Za-z .]*)?)\}", r"\1", s)
    # mixed numbers with a space: 2 1/2 -> 2\frac{1}{2} (before spaces between digits disappear)
    s = re.sub(r"(?<![\d.,/])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\d.,/])", r"\1\\frac{\2}{\3}", s)
    s = _strip_units(s)
    s = re.sub(r"\s*\^\s*\{?\s*\\?circ\s*\}?\s*$", "", s)
    had_text = bool(re.search(r"\\(?:text|textrm|textnormal|textbf|textit|textsf|texttt|mbox|emph)\s*\{[^{}]*[A-Za-z]{2,}", s))
    for _ in range(3):
        s = _TEXT_WRAP_RE.sub(lambda m: m.group(1), s)
    s = re.sub(r"\\(?:mathbf|boldsymbol|vec|overrightarrow)\s*(?=\{)", "", s)
    # thousands separators: 1,000 and 12,345.67 (a whole answer only; "1, 000" with a space is a list)
    if re.fullmatch(r"\s*[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*", s):
        s = s.replace(",", "")
    s = _collapse_spaces(s)
    s = re.sub(r",{2,}", ",", s).strip(",")
    s = re.sub(r"^\+(?=[\d.\\])", "", s)
    try:
        s = _canon_args(s)
    except (ValueError, RecursionError):
        pass
    choice = _CHOICE_RE.fullmatch(s)
    if choice:
        s = choice.group(1)
    bare = re.sub(r"\\(?:begin|end)\{[A-Za-z*]*\}|\\[A-Za-z]+", " ", s)
    words = [w for w in re.findall(r"[A-Za-z]{2,}", bare)]
    texty = (had_text and bool(words)) or any(len(w) >= 3 and w.lower() not in _FUNCTION_WORDS for w in words)
    if re.fullmatch(r"[A-Z](?:,[A-Z])+", s):
        texty = False  # a list of choice letters: compared as a list
    return _Norm(s, percent, texty)


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUM_RE = re.compile(r"([+-]?)(" + _NUM + r")")
_SCI_RE = re.compile(r"([+-]?)(" + _NUM + r")(?:[eE]|\\times10\^|\\cdot10\^|\*10\^|\\times\{10\}\^)\{?([+-]?\d{1,4})\}?")
_POW10_RE = re.compile(r"([+-]?)10\^\{([+-]?\d{1,4})\}")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{([+-]?)(" + _NUM + r")\}\{([+-]?)(" + _NUM + r")\}")
_SLASH_RE = re.compile(r"([+-]?)\(?([+-]?)(" + _NUM + r")\)?/\(?([+-]?)(" + _NUM + r")\)?")
_MIXED_RE = re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_REPEATING_RE = re.compile(r"([+-]?)(\d*)\.(\d*)\\(?:overline|bar|dot)\{(\d{1,50})\}")
_MAX_DIGITS = 4000


@dataclass(frozen=True)
class _Number:
    value: Fraction
    decimal: bool  # written with a decimal point (an approximation may be intended)


def _to_fraction(tok: str) -> Fraction | None:
    if len(tok) > _MAX_DIGITS:
        return None
    try:
        return Fraction(Decimal(tok))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def _sign(*signs: str) -> int:
    return -1 if sum(1 for x in signs if x == "-") % 2 else 1


def _parse_number_str(s: str) -> _Number | None:
    """A canonical string (see :func:`_normalize`) as an exact rational, or ``None`` if it is not a
    plain number, fraction, mixed number or number in scientific notation."""
    if not s or len(s) > _MAX_DIGITS + 20:
        return None
    if s.startswith("(") and s.endswith(")") and s.count("(") == 1:
        s = s[1:-1]
    m = _NUM_RE.fullmatch(s)
    if m:
        v = _to_fraction(m.group(2))
        return None if v is None else _Number(_sign(m.group(1)) * v, "." in m.group(2))
    m = _FRAC_RE.fullmatch(s) or _SLASH_RE.fullmatch(s)
    if m:
        num, den = _to_fraction(m.group(3)), _to_fraction(m.group(5))
        if num is None or den is None or den == 0:
            return None
        dec = "." in m.group(3) or "." in m.group(5)
        return _Number(_sign(m.group(1), m.group(2), m.group(4)) * num / den, dec)
    m = _MIXED_RE.fullmatch(s)
    if m:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0 or num >= den:
            return None  # 3\frac{5}{4} is not a mixed number; leave it to the symbolic path
        return _Number(_sign(m.group(1)) * (whole + Fraction(num, den)), False)
    m = _REPEATING_RE.fullmatch(s)
    if m:  # 0.1\overline{6} = 1/6
        whole, fixed, rep = m.group(2) or "0", m.group(3), m.group(4)
        if len(whole) + len(fixed) > 100:
            return None
        base = Fraction(int(whole + fixed), 10 ** len(fixed))
        tail = Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        return _Number(_sign(m.group(1)) * (base + tail), False)
    m = _SCI_RE.fullmatch(s) or _POW10_RE.fullmatch(s)
    if m:
        if m.re is _POW10_RE:
            mant, exp = Fraction(1), int(m.group(2))
            dec = False
        else:
            mant_f = _to_fraction(m.group(2))
            if mant_f is None:
                return None
            mant, exp, dec = mant_f, int(m.group(3)), "." in m.group(2)
        if abs(exp) > 1000:
            return None
        return _Number(_sign(m.group(1)) * mant * Fraction(10) ** exp, dec)
    return None


def parse_number(answer: str) -> Fraction | None:
    """The exact value of a numeric answer (``"1,000"``, ``"\\$18.90"``, ``"\\frac{3}{4}"``, ``"2\\frac12"``,
    ``"1.5e3"``, ``"10\\%"`` -> 10), or ``None`` when the answer is not a plain number."""
    try:
        n = _parse_number_str(_normalize(answer).s)
    except Exception:
        return None
    return None if n is None else n.value


def _is_terminating(v: Fraction) -> bool:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


_MIN_SIGNIFICANT = 6
"""A decimal stands for a non-terminating fraction only with at least this many significant digits."""


def _decimal_places(v: Fraction) -> int:
    k, x = 0, v
    while x.denominator != 1 and k < 60:
        x *= 10
        k += 1
    return k


def _approximates(d: Fraction, exact: Fraction) -> bool:
    """``d`` (a terminating decimal) is ``exact`` rounded or truncated to d's decimal places, with at
    least six significant digits: ``0.333333 ~ 1/3``, ``0.666667 ~ 2/3``; ``0.33 !~ 1/3``."""
    k = _decimal_places(d)
    digits = str(abs(d * 10**k).numerator).rstrip("0") if d else ""
    if len(digits) < _MIN_SIGNIFICANT and not (k >= _MIN_SIGNIFICANT and abs(exact) < 1):
        return False
    return abs(d - exact) <= Fraction(1, 10**k)


def _numbers_equal(a: _Number, b: _Number) -> bool:
    if a.value == b.value:
        return True
    if not (a.decimal or b.decimal):
        return False
    ta, tb = _is_terminating(a.value), _is_terminating(b.value)
    if ta == tb:
        return False  # two exact decimals (0.33 != 0.333), or two non-terminating values that differ
    d, exact = (a.value, b.value) if ta else (b.value, a.value)
    return (a.decimal if ta else b.decimal) and _approximates(d, exact)


def _numeric_verdict(g: _Norm, gv: _Number, p: _Norm, pv: _Number) -> bool:
    if _numbers_equal(gv, pv):
        return True
    if g.percent or p.percent:  # 10% == 0.1 when a percent sign is written on either side
        hundred = Fraction(100)
        if g.percent and _numbers_equal(_Number(gv.value / hundred, gv.decimal), pv):
            return True
        if p.percent and _numbers_equal(gv, _Number(pv.value / hundred, pv.decimal)):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Structure: lists, sets, tuples, intervals, matrices
# --------------------------------------------------------------------------------------------------

_OPEN = "([{"
_CLOSE = ")]}"


def _split_top(s: str, seps: tuple[str, ...]) -> list[str] | None:
    """Split ``s`` at top-level separators (outside (), [], {}, \\{\\}); ``None`` if unbalanced."""
    parts: list[str] = []
    depth = 0
    start = 0
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if s.startswith("\\{", i) or s.startswith("\\}", i):
                depth += 1 if s[i + 1] == "{" else -1
                i += 2
                continue
            matched = next((sep for sep in seps if s.startswith(sep, i)), None)
            if depth == 0 and matched is not None and not s[i + len(matched) : i + len(matched) + 1].isalpha():
                parts.append(s[start:i])
                i += len(matched)
                start = i
                continue
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
        elif depth == 0:
            matched = next((sep for sep in seps if s.startswith(sep, i)), None)
            if matched is not None:
                parts.append(s[start:i])
                i += len(matched)
                start = i
                continue
        i += 1
    if depth != 0:
        return None
    parts.append(s[start:])
    return parts


def _is_multi(s: str) -> bool:
    """A tuple, interval or set of at least two items, or a matrix (never equal to a single number)."""
    if _matrix_cells(s) is not None:
        return True
    b = _bracketed(s)
    if b is None:
        return False
    items = _split_top(b[1], (",",))
    return items is not None and len(items) >= 2


def _expand_pm(items: list[str] | None) -> list[str] | None:
    """A single answer with one ``\\pm`` (or ``\\mp``) is the list of its two values:
    ``1\\pm\\sqrt{2}`` -> ``[1+\\sqrt{2}, 1-\\sqrt{2}]``."""
    if items is None or len(items) != 1:
        return items
    s = items[0]
    pm = re.findall(r"\\(?:pm|mp)(?![A-Za-z])", s)
    if len(pm) != 1:
        return items
    plus = re.sub(r"\\(?:pm|mp)(?![A-Za-z])", "+", s)
    minus = re.sub(r"\\(?:pm|mp)(?![A-Za-z])", "-", s)
    return [re.sub(r"^\+", "", plus), minus]


def _bracketed(s: str) -> tuple[str, str, str] | None:
    """``(open, inner, close)`` when ``s`` is one bracketed group: ``(a,b]``, ``[a,b]``, ``\\{a,b\\}``."""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        if _split_top(inner, (",",)) is not None:
            return "\\{", inner, "\\}"
        return None
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
        # the outer brackets must enclose everything: no top-level bracket closes early
        depth = 0
        for c in inner:
            if c in _OPEN:
                depth += 1
            elif c in _CLOSE:
                depth -= 1
                if depth < 0:
                    return None
        if depth == 0:
            return s[0], inner, s[-1]
    return None


_MATRIX_RE = re.compile(r"\\begin\{(pmatrix)\}(.*)\\end\{pmatrix\}")


def _matrix_cells(s: str) -> list[list[str]] | None:
    m = _MATRIX_RE.fullmatch(s)
    if not m or "\\begin" in m.group(2):
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2))]
    if rows and not rows[-1].strip():
        rows = rows[:-1]
    return [[c.strip() for c in r.split("&")] for r in rows]


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


class _Deadline(BaseException):
    """Raised when the comparison runs out of time (a BaseException so generic handlers pass it on)."""


def _text_key(s: str) -> str:
    return re.sub(r"[^a-z0-9:]", "", s.lower())


_CHOICE_GOLD_RE = re.compile(r"[A-E]")
"""A normalised gold that is a bare multiple-choice letter (``\\text{(C)}``, ``(C)``, ``C``, ... all normalise to ``C``)."""
_CHOICE_HEAD_RE = re.compile(r"\(([A-Z])\)|([A-Z])\)")
_WRAPPED_LETTER_RE = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|textsf|textit|mbox|mathrm|mathbf|mathsf)\s*\{\s*\(?\s*([A-Z])\s*\)?\s*\}"
)
_OTHER_CHOICE_RE = re.compile(r"\([A-Z]\)|(?<![A-Za-z\\])[A-Z]\)|(?:^|[,;])\(?[A-Z](?![A-Za-z0-9])")


def _leading_choice(pred: str, p: _Norm) -> str | None:
    """The letter of a choice marker that starts a prediction and is followed by a value:
    ``\\textbf{(C)}\\ 12``, ``\\text{(C) } 12``, ``(C) 12``, ``C) 12``, ``\\textbf{C}~12`` -> ``"C"``.

    ``None`` when there is no such marker, nothing follows it (a bare ``(C)`` is compared as usual),
    or the rest names another choice (``(C) or (D)``, ``(C), D``): a hedge is never read as one
    letter. Only consulted when the gold is a bare choice letter."""
    m = _CHOICE_HEAD_RE.match(p.s)
    if m:
        letter, rest = m.group(1) or m.group(2), p.s[m.end() :]
    else:
        raw = _strip_outer_math(_UNICODE_RE.sub(lambda u: _UNICODE[u.group()], pred))
        w = _WRAPPED_LETTER_RE.match(raw)
        if w is None:
            return None
        letter, rest = w.group(1), _normalize(raw[w.end() :]).s
    if not re.search(r"[A-Za-z0-9]", rest) or _OTHER_CHOICE_RE.search(rest.strip()):
        return None
    return letter


_ASSIGN_RE = re.compile(
    r"([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+|\((?:[A-Za-z],)+[A-Za-z]\))\s*(?:=|\\in(?![A-Za-z]))([^=]+)"
)


def _symbolic_risk(s: str) -> str | None:
    """Why ``s`` must not be handed to sympy (``None`` if it may be)."""
    if len(s) > MAX_SYMBOLIC_CHARS:
        return "answer too long"
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth -= 1
    if best > 12:
        return "nesting too deep"
    if re.search(r"\d{120}", s):
        return "number too long"
    if s.count("^") > 12:
        return "too many powers"
    product = 1.0
    for m in re.finditer(r"\^\{", s):
        j, d = m.end(), 1
        while j < len(s) and d:
            d += {"{": 1, "}": -1}.get(s[j], 0)
            j += 1
        expo = s[m.end() : j - 1]
        if "^" in expo or "!" in expo or "\\uparrow" in expo or "\\exp" in expo:
            return "power tower"
        for num in re.findall(r"\d+(?:\.\d+)?", expo):
            if len(num) > 5 or float(num) > 20000:
                return "huge exponent"
            product *= max(1.0, float(num))
    if product > 1e6:
        return "huge exponents"  # (10^{1000})^{1000}
    for m in re.finditer(r"!", s):
        k = m.start()
        digits = re.search(r"(\d*)\s*$", s[max(0, k - 8) : k])
        num = digits.group(1) if digits else ""
        if not num:
            before = s[:k].rstrip()
            if before[-1:] in (")", "}"):
                close, open_ = before[-1], "(" if before[-1] == ")" else "{"
                depth, j = 0, len(before) - 1
                while j >= 0:
                    depth += (before[j] == close) - (before[j] == open_)
                    if depth == 0:
                        break
                    j -= 1
                if not re.search(r"[A-Za-z]", re.sub(r"\\(?:frac|cdot|times|left|right)", "", before[j:])):
                    return "factorial of a number expression"  # (10^{5})! or (2+3)!!
            continue
        if len(num) > 5 or int(num) > 20000:
            return "huge factorial"
    if re.search(r"\\(?:binom|choose)\{[^}]*\d{6,}|\\(?:binom|choose)\{[^}]*\^", s):
        return "huge binomial"
    return None


class _Clock:
    """A deadline that the symbolic leaf may push back (by the time spent starting a worker)."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline


class _Comparator:
    """Equivalence of a gold and a predicted answer; ``leaf`` decides what only sympy can."""

    def __init__(self, leaf: Callable[[str, str], bool], clock: _Clock):
        self.leaf = leaf
        self.clock = clock
        self.used_symbolic = False

    def _check_time(self) -> None:
        if self.clock.deadline is not None and time.monotonic() > self.clock.deadline:
            raise _Deadline()

    def equiv(self, gold: str, pred: str, depth: int = 0) -> tuple[bool, str]:
        self._check_time()
        if depth > 4:
            return False, "structure too deep"
        if gold.strip() == pred.strip() and gold.strip():
            return True, "exact match"
        g, p = _normalize(gold), _normalize(pred)
        if not g.s or not p.s:
            return False, "empty answer"
        if g.s == p.s:
            return True, "normalized match"
        if _CHOICE_GOLD_RE.fullmatch(g.s):
            # a multiple-choice gold against "(C) 12": the letter decides
            letter = _leading_choice(pred, p)
            if letter is not None:
                return (True, "choice match") if letter == g.s else (False, "choice mismatch")
        # x = 3 vs 3; x \in [0,1] vs [0,1]
        ga, pa = _ASSIGN_RE.fullmatch(g.s), _ASSIGN_RE.fullmatch(p.s)
        if pa and not ga and "=" not in g.s and "\\in" not in g.s:
            return self.equiv(gold, pa.group(2), depth + 1)
        if ga and not pa and "=" not in p.s and "\\in" not in p.s:
            return self.equiv(ga.group(2), pred, depth + 1)
        if len(g.s) > MAX_ANSWER_CHARS or len(p.s) > MAX_ANSWER_CHARS:
            return False, "mismatch (answer too long for anything but string comparison)"
        gv, pv = _parse_number_str(g.s), _parse_number_str(p.s)
        if gv is not None and pv is not None:
            return (True, "numeric match") if _numeric_verdict(g, gv, p, pv) else (False, "numeric mismatch")
        if g.texty or p.texty:
            if _text_key(g.s) and _text_key(g.s) == _text_key(p.s):
                return True, "text match"
            return False, "text mismatch"
        structural = self._structural(g, p, depth)
        if structural is not None:
            return structural
        if (gv is not None and _is_multi(p.s)) or (pv is not None and _is_multi(g.s)):
            return False, "type mismatch (a number against a tuple, interval or matrix)"
        risk = _symbolic_risk(g.s) or _symbolic_risk(p.s)
        if risk is not None:
            return False, f"mismatch (not compared symbolically: {risk})"
        self._check_time()
        self.used_symbolic = True
        if self.leaf(g.s, p.s):
            return True, "symbolic match"
        return False, "symbolic mismatch"

    def _match_unordered(self, gs: list[str], ps: list[str], depth: int) -> bool:
        if len(gs) != len(ps) or len(gs) > 16:
            return False
        used = [False] * len(ps)

        def rec(i: int) -> bool:
            if i == len(gs):
                return True
            for j, pj in enumerate(ps):
                if not used[j] and self.equiv(gs[i], pj, depth + 1)[0]:
                    used[j] = True
                    if rec(i + 1):
                        return True
                    used[j] = False
            return False

        return rec(0)

    def _match_ordered(self, gs: list[str], ps: list[str], depth: int) -> bool:
        return len(gs) == len(ps) and all(self.equiv(a, b, depth + 1)[0] for a, b in zip(gs, ps))

    def _structural(self, g: _Norm, p: _Norm, depth: int) -> tuple[bool, str] | None:
        """Lists, sets, unions, tuples/intervals and matrices; ``None`` when not applicable."""
        # matrices
        gm, pm = _matrix_cells(g.s), _matrix_cells(p.s)
        if gm is not None or pm is not None:
            if gm is None or pm is None:
                # a vector written as a tuple: \begin{pmatrix}1\\2\end{pmatrix} vs (1, 2)
                cells, other = (gm, p.s) if gm is not None else (pm, g.s)
                ob = _bracketed(other)
                flat = [c for row in cells for c in row]
                if ob and ob[0] == "(" and ob[2] == ")" and (len(cells) == 1 or all(len(r) == 1 for r in cells)):
                    items = _split_top(ob[1], (",",))
                    if items is not None and len(items) == len(flat) > 1:
                        gs, ps = (flat, items) if gm is not None else (items, flat)
                        ok = self._match_ordered(gs, ps, depth)
                        return (True, "vector match") if ok else (False, "vector mismatch")
                return None
            same_shape = len(gm) == len(pm) and all(len(a) == len(b) for a, b in zip(gm, pm))
            if not same_shape:
                return False, "matrix shape mismatch"
            ok = all(self._match_ordered(a, b, depth) for a, b in zip(gm, pm))
            return (True, "matrix match") if ok else (False, "matrix mismatch")
        # unions of intervals/sets: unordered
        gu, pu = _split_top(g.s, ("\\cup",)), _split_top(p.s, ("\\cup",))
        if gu and pu and (len(gu) > 1 or len(pu) > 1):
            # a union on one side, inequalities joined by "or"/commas on the other: x<-2 or x>3
            if len(gu) > 1 and len(pu) == 1:
                pu = _split_top(p.s, (",",)) or pu
            elif len(pu) > 1 and len(gu) == 1:
                gu = _split_top(g.s, (",",)) or gu
            ok = self._match_unordered(gu, pu, depth)
            return (True, "union match") if ok else (False, "union mismatch")
        # bare comma lists (unordered); a \{...\} set on the other side counts as a list
        gl, pl = _split_top(g.s, (",", ";")), _split_top(p.s, (",", ";"))
        gb, pb = _bracketed(g.s), _bracketed(p.s)
        gl, pl = _expand_pm(gl), _expand_pm(pl)
        if gl and pl and len(gl) == 1 and len(pl) > 1 and gb and gb[0] == "(" and not pb:
            # a point given as a bare list: (1, 2) vs "1, 2" or "x=1, y=2" (ordered)
            gi = _split_top(gb[1], (",",))
            if gi is not None and len(gi) == len(pl):
                ok = self._match_ordered(gi, pl, depth)
                return (True, "tuple match") if ok else (False, "tuple mismatch")
        if gl and pl and (len(gl) > 1 or len(pl) > 1):
            if pb and pb[0] == "\\{" and len(gl) > 1:
                pl = _split_top(pb[1], (",",)) or pl
            if gb and gb[0] == "\\{" and len(pl) > 1:
                gl = _split_top(gb[1], (",",)) or gl
            ok = self._match_unordered([x for x in gl if x], [x for x in pl if x], depth)
            return (True, "list match") if ok else (False, "list mismatch")
        # bracketed groups
        if gb and pb:
            gi, pi = _split_top(gb[1], (",",)), _split_top(pb[1], (",",))
            if gi is None or pi is None:
                return None
            if len(gi) == 1 and len(pi) == 1 and gb[0] in "([" and pb[0] in "([":
                return None  # (x+1) is just parentheses: leave it to the symbolic path
            if gb[0] == "\\{" and pb[0] == "\\{":
                ok = self._match_unordered(gi, pi, depth)
                return (True, "set match") if ok else (False, "set mismatch")
            if (gb[0], gb[2]) != (pb[0], pb[2]):
                return False, "bracket mismatch"
            ok = self._match_ordered(gi, pi, depth)
            return (True, "tuple/interval match") if ok else (False, "tuple/interval mismatch")
        return None


def _grade_core(response: str, gold: str, family: str, leaf: Callable[[str, str], bool], clock: _Clock) -> Verdict:
    """The grading logic shared by the parent process and the workers (exceptions propagate)."""
    extracted, run = _extract(response, family)
    if extracted is None:
        return Verdict(False, None, "no answer found")
    gold_ans = _prepare_gold(gold, family)
    if not gold_ans:
        return Verdict(False, extracted, "empty gold answer")
    cmp = _Comparator(leaf, clock)
    ok, why = cmp.equiv(gold_ans, extracted)
    if not ok and len(run) > 1:
        # the gold is a list and the response ends with adjacent boxes: read the run as that list
        gl = _split_top(_normalize(gold_ans).s, (",", ";"))
        if gl is not None and len(gl) == len(run):
            joined = ", ".join(run)
            ok2, why2 = cmp.equiv(gold_ans, joined)
            if ok2:
                return Verdict(True, joined, why2 + " (adjacent boxes)")
    return Verdict(ok, extracted, why)


# --------------------------------------------------------------------------------------------------
# Symbolic leaf (math-verify), only ever run inside a worker process
# --------------------------------------------------------------------------------------------------

_MV_CONFIG = None
_NUMBER_TOKEN_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _literal_number(self, text: str):
    """Replacement for latex2sympy's ``parse_number``, which calls ``sympy.Number(str)`` and so
    ``sympify``/``eval`` on the number token: build the sympy number without evaluating any string."""
    import sympy

    text = text.replace(",", "")
    if text.isdigit():
        return sympy.Integer(int(text))  # int() refuses > 4300 digits: a parse failure, not a hang
    if _NUMBER_TOKEN_RE.fullmatch(text):
        return sympy.Float(text)
    raise ValueError(f"not a number literal: {text[:40]!r}")


def _setup_math_verify() -> None:
    global _MV_CONFIG
    from latex2sympy2_extended import latex2sympy2 as l2s
    from math_verify import LatexExtractionConfig

    l2s._Latex2Sympy.parse_number = _literal_number
    _MV_CONFIG = [LatexExtractionConfig(boxed_match_priority=0)]


def _mv_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence of two canonical answers (LaTeX extraction only: no ``parse_expr``)."""
    from math_verify import parse

    if _MV_CONFIG is None:
        _setup_math_verify()
    g = parse(f"${gold}$", extraction_config=_MV_CONFIG, parsing_timeout=None)
    p = parse(f"${pred}$", extraction_config=_MV_CONFIG, parsing_timeout=None)
    if not g or not p:
        return False
    if _mv_verify(g, p):
        return True
    if _imaginary_unit_applies(gold, pred):
        # math-verify reads i as a plain (non-real) symbol, so i^2 != -1: read it as sympy's I
        try:
            (g_unit, g_changed), (p_unit, p_changed) = _with_imaginary_unit(g), _with_imaginary_unit(p)
        except Exception:  # e.g. x > i or [0, i]: no longer a valid relation or interval
            return False
        if g_changed or p_changed:
            return _mv_verify(g_unit, p_unit)
    return False


def _mv_verify(g: list, p: list) -> bool:
    from math_verify import verify

    if _numerically_different(g[0], p[0]):
        return False
    return bool(verify(g, p, timeout_seconds=None, allow_set_relation_comp=True))


_STANDALONE_I_RE = re.compile(r"(?<![A-Za-z\\])i(?![A-Za-z])")
_RELATION = r"(?:=|<|>|\\le(?![A-Za-z])|\\ge(?![A-Za-z])|\\ne(?![A-Za-z])|\\in(?![A-Za-z])|\\to(?![A-Za-z]))"
_INDEX_I_RE = re.compile(
    r"_\s*(?:i(?![A-Za-z])|\{[^{}]*(?<![A-Za-z\\])i(?![A-Za-z])[^{}]*\})"  # a_i, x_{i+1}, \sum_{i=1}
    r"|(?<![A-Za-z\\])i\s*" + _RELATION  # i = 1, i \le n, i \in S
)


def _imaginary_unit_applies(gold: str, pred: str) -> bool:
    """Whether a standalone ``i`` may be read as the imaginary unit: it occurs (``3+4i``, ``i^{2}``,
    ``e^{i\\pi}``) and neither answer uses ``i`` as an index (a subscript ``a_i``, the bound variable
    of ``\\sum_{i=1}``, or the subject of a relation ``i = 1``, ``i \\le n``)."""
    if not (_STANDALONE_I_RE.search(gold) or _STANDALONE_I_RE.search(pred)):
        return False
    return not (_INDEX_I_RE.search(gold) or _INDEX_I_RE.search(pred))


def _with_imaginary_unit(parsed: list) -> tuple[list, bool]:
    """math-verify's parse result with every free symbol named ``i`` replaced by ``sympy.I``, and
    whether anything was replaced. Strings in the list are kept as they are."""
    import sympy

    out, changed = [], False
    for item in parsed:
        if isinstance(item, (sympy.Basic, sympy.MatrixBase)):
            subs = {s: sympy.I for s in item.free_symbols if isinstance(s, sympy.Symbol) and s.name == "i"}
            if subs:
                item = item.xreplace(subs)
                changed = True
        out.append(item)
    return out, changed


_PROBE_POINTS = ((0.7316, 1.2913, 0.4177, 1.8591, 0.9533), (1.4142, 0.5219, 1.1731, 0.6662, 1.6074))


def _numerically_different(a, b) -> bool:
    """A quick disproof before sympy's ``simplify``: two scalar expressions whose values differ at a
    positive probe point (relative difference > 1e-3) cannot be equal, whatever simplify would do.
    Anything that is not a plain scalar expression, or does not evaluate to a finite number, is
    inconclusive (``False``) and goes on to math-verify."""
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.has(sympy.UnevaluatedExpr) or b.has(sympy.UnevaluatedExpr):
        return False  # math-verify's percent convention: leave those to it
    syms = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    if len(syms) > len(_PROBE_POINTS[0]):
        return False
    try:
        for point in _PROBE_POINTS:
            subs = {s: sympy.Float(v, 20) for s, v in zip(syms, point)}
            va = complex(sympy.N(a.subs(subs), 20))
            vb = complex(sympy.N(b.subs(subs), 20))
            if not all(map(lambda z: abs(z) < 1e300 and z == z, (va, vb))):
                return False
            if abs(va - vb) > 1e-3 * max(1.0, abs(va), abs(vb)):
                return True
            if not syms:
                return False
    except Exception:
        return False
    return False


class _SoftTimeout(BaseException):
    pass


# Sandbox of a worker process (an audit hook, armed once the worker has imported what it needs):
# compiling code from a string is refused except for boilerplate sources generated by the standard
# library and sympy themselves from fixed templates (namedtuple, dataclass, ``from sympy import *``,
# sympy's monomial arithmetic) and module-level code of libraries being imported, and so are
# processes, sockets and opening files for writing. Grading needs none of these, so a refusal means
# something tried to execute or act on model output; it is counted and the item fails closed.
_SANDBOX = {"armed": False, "refused": 0, "last": ""}
_ALLOWED_DYNAMIC_SOURCE_RE = re.compile(
    r"from sympy import \*\Z"  # sympy's parse_expr boilerplate
    r"|lambda _cls, [\w, ]*: _tuple_new\(_cls, \([\w, ]*\)\)\Z"  # collections.namedtuple
    r"|def __create_fn__\("  # dataclasses
    r"|def monomial_[a-z]+\([\w, ]*\):\n(?:(?![^\n]*__)(?![^\n]*import)[^'\"\n]*\n?)+\Z"  # sympy.polys.monomials
    r"|rs_[a-z]+\Z"  # sympy.polys.ring_series looks its series functions up by name
)
_REFUSED_EVENTS = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "socket.connect", "socket.bind", "shutil.rmtree", "os.remove", "os.rename", "os.rmdir", "os.mkdir",
    "os.chmod", "os.truncate", "ctypes.dlopen", "webbrowser.open",
}


def _inside_import() -> bool:
    """Whether the current call comes from a module being imported (module-level library code)."""
    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen importlib"):
            return True
        f = f.f_back
    return False


def _sandbox_hook(event: str, args: tuple) -> None:  # pragma: no cover - runs in the worker
    if not _SANDBOX["armed"]:
        return
    if event == "compile":
        src, filename = args[0], args[1]
        if str(filename).startswith("<"):
            text = src.decode("utf-8", "replace") if isinstance(src, (bytes, bytearray)) else src
            if not (isinstance(text, str) and _ALLOWED_DYNAMIC_SOURCE_RE.match(text)) and not _inside_import():
                _SANDBOX["refused"] += 1
                _SANDBOX["last"] = f"compile {str(text)[:80]!r}"
                raise RuntimeError("grading sandbox: refused to compile dynamic code")
    elif event in _REFUSED_EVENTS:
        _SANDBOX["refused"] += 1
        _SANDBOX["last"] = event
        raise PermissionError(f"grading sandbox: refused {event}")
    elif event == "open":
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
        )
        if writes:
            _SANDBOX["refused"] += 1
            _SANDBOX["last"] = f"open {args[0]!r} for writing"
            raise PermissionError("grading sandbox: refused to open a file for writing")


def _on_alarm(signum, frame):  # pragma: no cover - runs in the worker
    raise _SoftTimeout()


def _run_with_alarm(fn: Callable[[], object], seconds: float):
    """Run ``fn`` under a SIGALRM soft timer (worker main thread only)."""
    if seconds is not None and seconds > 0:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_handle(req: dict) -> dict:
    refused_before = _SANDBOX["refused"]
    out = _worker_handle_op(req)
    if _SANDBOX["refused"] != refused_before and req.get("op") in ("sym", "grade"):
        # the sandbox stopped something while this item was graded: fail closed and say so
        why = f"sandbox refused {_SANDBOX['last']}"
        if "verdict" in out:
            out["verdict"] = dict(out["verdict"], correct=False, reason=f"error: {why}")
        else:
            out = {"id": out.get("id"), "result": None, "reason": f"error: {why}"}
    return out


def _worker_handle_op(req: dict) -> dict:
    op = req.get("op")
    timeout = float(req.get("timeout") or 0)
    if op == "sym":
        g, p = req["args"]
        try:
            res = _run_with_alarm(lambda: _mv_equal(g, p), timeout)
            return {"id": req["id"], "result": bool(res)}
        except _SoftTimeout:
            return {"id": req["id"], "result": None, "reason": "timeout"}
        except BaseException as e:  # noqa: BLE001 - everything becomes a verdict
            return {"id": req["id"], "result": None, "reason": f"error: {type(e).__name__}"}
    if op == "grade":
        response, gold, dataset = req["args"]
        clock = _Clock(time.monotonic() + timeout if timeout > 0 else None)
        try:
            v = _run_with_alarm(lambda: _grade_core(response, gold, dataset_family(dataset), _mv_equal, clock), timeout)
        except (_SoftTimeout, _Deadline):
            v = Verdict(False, _safe_extract(response, dataset), "timeout")
        except BaseException as e:  # noqa: BLE001
            v = Verdict(False, _safe_extract(response, dataset), f"error: {type(e).__name__}: {_short(e)}")
        return {"id": req["id"], "verdict": v.to_dict()}
    if op == "ping":
        return {"id": req.get("id"), "pong": True}
    if op == "stats":
        return {"id": req.get("id"), "sandbox": dict(_SANDBOX)}
    if op == "sandbox_selftest":  # diagnostics: show that the sandbox refuses eval and file writes
        out = {}
        for name, fn in (("eval", lambda: eval("1 + 1")), ("write", lambda: open(req["path"], "w").close())):
            try:
                fn()
                out[name] = "allowed"
            except (RuntimeError, PermissionError) as e:
                out[name] = f"refused: {e}"
        return {"id": req.get("id"), "selftest": out}
    if op == "sleep":  # diagnostics: a worker that stops answering (tests of the supervisor)
        time.sleep(float(req.get("seconds", 0)))
        return {"id": req.get("id"), "slept": True}
    if op == "exit":  # diagnostics: a worker that dies mid-queue
        os._exit(int(req.get("code", 3)))
    return {"id": req.get("id"), "error": f"unknown op {op!r}"}


def _safe_extract(response, dataset) -> str | None:
    try:
        return extract_answer(response, dataset) if isinstance(response, str) else None
    except BaseException:  # noqa: BLE001
        return None


def _short(e: BaseException) -> str:
    try:
        return str(e)[:200]
    except Exception:
        return "?"


def _worker_main() -> None:  # pragma: no cover - runs in a subprocess
    """Entry point of a grading worker: JSON requests on stdin, one JSON result per line on stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the protocol stream
    sys.stdout = sys.stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    except Exception:
        pass
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.WARNING)
    sys.addaudithook(_sandbox_hook)
    for g, p in (("\\frac{1}{2}", "0.5"), ("x^{2}-1", "(x-1)(x+1)"), ("[0,1)", "(0,1]"), ("\\{1,2\\}", "\\{2,1\\}")):
        _mv_equal(g, p)  # import and warm math-verify before saying ready
    _SANDBOX["armed"] = True
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            out = _worker_handle(req)
        except BaseException as e:  # noqa: BLE001
            out = {"id": None, "error": f"{type(e).__name__}: {_short(e)}"}
        proto.write(json.dumps(out) + "\n")


# --------------------------------------------------------------------------------------------------
# Worker processes (parent side)
# --------------------------------------------------------------------------------------------------

_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = f"import sys; sys.path.insert(0, {_REPO_ROOT!r}); from mathreason.grading import _worker_main; _worker_main()"


class _WorkerDied(Exception):
    pass


class _Worker:
    """One grading worker process speaking JSON lines over pipes (parent side)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.owner_pid = os.getpid()
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.outbuf = b""
        self.item_started = 0.0
        try:
            line = self.readline(time.monotonic() + _WORKER_STARTUP_S)
        except _WorkerDied:
            line = None
        if line is None or not json.loads(line).get("ready"):
            self.kill()
            raise RuntimeError("grading worker failed to start")
        os.set_blocking(self.proc.stdin.fileno(), False)

    def alive(self) -> bool:
        """Running, and started by this process (a forked child must not share its parent's pipes)."""
        return self.owner_pid == os.getpid() and self.proc.poll() is None

    def kill(self) -> None:
        if self.owner_pid != os.getpid():
            return  # inherited through fork: the parent owns it
        try:
            self.proc.kill()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass

    def pop_line(self) -> bytes | None:
        nl = self.buf.find(b"\n")
        if nl < 0:
            return None
        line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
        return line

    def read_some(self) -> None:
        data = os.read(self.fd, 1 << 16)
        if not data:
            raise _WorkerDied(f"worker exited with code {self.proc.poll()}")
        self.buf += data

    def readline(self, deadline: float) -> bytes | None:
        """Next line, or ``None`` at the deadline; raises :class:`_WorkerDied` on EOF."""
        while True:
            line = self.pop_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                self.read_some()

    def queue(self, obj: dict) -> None:
        self.outbuf += (json.dumps(obj) + "\n").encode()

    def flush_some(self) -> None:
        if not self.outbuf:
            return
        try:
            n = os.write(self.proc.stdin.fileno(), self.outbuf[: 1 << 16])
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError) as e:
            raise _WorkerDied(f"worker pipe closed: {e}") from e
        self.outbuf = self.outbuf[n:]

    def call(self, obj: dict, deadline: float) -> dict | None:
        """Send one request and wait for its answer; ``None`` at the deadline (the worker is then
        killed by the caller)."""
        self.queue(obj)
        while self.outbuf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            _, w, _ = select.select([], [self.proc.stdin.fileno()], [], remaining)
            if w:
                self.flush_some()
        line = self.readline(deadline)
        return None if line is None else json.loads(line)


_single_lock = threading.Lock()
_single: _Worker | None = None
_pool: list[_Worker] = []
_pool_lock = threading.Lock()
_req_counter = 0


def _get_single() -> _Worker:
    global _single
    if _single is None or not _single.alive():
        if _single is not None:
            _single.kill()  # reaps a dead worker; a no-op for one inherited through fork
        _single = _Worker()
    return _single


def shutdown_workers() -> None:
    """Stop every grading worker process this process started (they also stop when it exits)."""
    global _single
    with _single_lock:
        if _single is not None:
            _single.kill()
            _single = None
    with _pool_lock:
        while _pool:
            _pool.pop().kill()


atexit.register(shutdown_workers)


def _leaf_via_worker(clock: _Clock) -> Callable[[str, str], bool]:
    def leaf(g: str, p: str) -> bool:
        global _single, _req_counter
        with _single_lock:
            t0 = time.monotonic()
            try:
                worker = _get_single()
            except Exception as e:  # cannot start processes here: fall back to an in-process timer
                return _leaf_in_process(g, p, clock.deadline, e)
            clock.deadline += time.monotonic() - t0  # starting a worker is not comparison time
            deadline = clock.deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            _req_counter += 1
            try:
                out = worker.call({"id": _req_counter, "op": "sym", "args": [g, p], "timeout": remaining}, deadline + _WORKER_GRACE_S)
            except _WorkerDied:
                worker.kill()
                _single = None
                raise RuntimeError("grading worker died")
            if out is None:
                worker.kill()
                _single = None
                raise _Deadline()
        if out.get("result") is None:
            if out.get("reason") == "timeout":
                raise _Deadline()
            raise RuntimeError(out.get("reason") or out.get("error") or "worker error")
        return bool(out["result"])

    return leaf


def _leaf_in_process(g: str, p: str, deadline: float, why: Exception) -> bool:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"no grading worker ({why}) and not in the main thread")
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        return bool(_run_with_alarm(lambda: _mv_equal(g, p), max(0.01, deadline - time.monotonic())))
    except _SoftTimeout:
        raise _Deadline()
    finally:
        signal.signal(signal.SIGALRM, old)


def grade(response: str, gold: str, dataset: str, *, timeout: float = 5.0) -> Verdict:
    """Grade one response against a gold answer. Never raises.

    Args:
        response: a whole solution or a bare answer.
        gold: the gold answer: bare LaTeX (no ``$`` needed), a boxed answer, or a reference solution.
        dataset: ``"gsm8k"`` or ``"math"`` (any name starting with ``gsm`` grades like GSM8K).
        timeout: seconds allowed for the comparison (the worker start-up, once per process, is not
            counted). Past it the verdict is ``Verdict(False, extracted, "timeout")``.
    """
    extracted = None
    try:
        if not isinstance(response, str) or not isinstance(gold, str):
            return Verdict(False, None, "error: response and gold must be strings")
        clock = _Clock(time.monotonic() + float(timeout))
        return _grade_core(response, gold, dataset_family(dataset), _leaf_via_worker(clock), clock)
    except _Deadline:
        return Verdict(False, _safe_extract(response, dataset), "timeout")
    except BaseException as e:  # noqa: BLE001 - a verdict never raises
        if isinstance(e, KeyboardInterrupt):
            raise
        return Verdict(False, extracted if extracted is not None else _safe_extract(response, dataset), f"error: {type(e).__name__}: {_short(e)}")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except Exception:
        return max(1, os.cpu_count() or 1)


def grade_many(
    responses: Sequence[str],
    golds: Sequence[str],
    dataset: str | Sequence[str],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    chunksize: int = 16,
    progress: bool = False,
) -> list[Verdict]:
    """Grade many responses over worker processes; the order of the inputs is preserved.

    Each item has ``timeout`` seconds inside its worker (a soft timer), and the worker is killed and
    replaced if it overruns that by more than a grace second; only that item is lost
    (``Verdict(False, extracted, "timeout")``). A worker that dies yields ``"error: ..."`` for its
    current item and the rest of its queue is re-sent to another worker. ``workers=None`` uses one
    worker per available CPU; ``workers=0`` grades in this process (soft timer only, main thread
    only; for debugging). Workers stay alive between calls (see :func:`shutdown_workers`).
    """
    n = len(responses)
    if len(golds) != n:
        raise ValueError(f"grade_many: {n} responses but {len(golds)} golds")
    datasets = [dataset] * n if isinstance(dataset, str) else list(dataset)
    if len(datasets) != n:
        raise ValueError(f"grade_many: {n} responses but {len(datasets)} dataset names")
    if n == 0:
        return []
    if workers == 0:
        return [_grade_in_process_safe(r, g, d, timeout) for r, g, d in zip(responses, golds, datasets)]
    results: list[Verdict | None] = [None] * n
    todo: list[int] = []
    for i in range(n):
        if not isinstance(responses[i], str) or not isinstance(golds[i], str):
            results[i] = Verdict(False, None, "error: response and gold must be strings")
        else:
            todo.append(i)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=n, desc="grading", initial=n - len(todo))
        except Exception:
            bar = None
    requests = [
        {"id": i, "op": "grade", "args": [responses[i], golds[i], str(datasets[i])], "timeout": float(timeout)}
        for i in todo
    ]
    nworkers = max(1, min(workers or _default_workers(), (len(todo) + chunksize - 1) // max(1, chunksize)))

    def on_result(req: dict, msg: dict | None, failure: str | None) -> None:
        i = req["id"]
        if msg is not None and isinstance(msg.get("verdict"), dict):
            results[i] = Verdict.from_dict(msg["verdict"])
        else:
            why = failure or (msg or {}).get("error") or "no verdict"
            reason = "timeout" if why == "timeout" else (why if why.startswith("error") else f"error: {why}")
            results[i] = Verdict(False, _safe_extract(responses[i], datasets[i]), reason)
        if bar is not None:
            bar.update(1)

    try:
        if requests:
            _run_pool(requests, nworkers, timeout + _WORKER_GRACE_S, on_result, chunksize=chunksize)
        for i in range(n):  # only when no worker process could be started at all
            if results[i] is None:
                results[i] = _grade_in_process_safe(responses[i], golds[i], datasets[i], timeout)
    finally:
        if bar is not None:
            bar.close()
    return [r if r is not None else Verdict(False, None, "error: not graded") for r in results]


def _run_pool(
    requests: list[dict],
    nworkers: int,
    hard_timeout: float,
    on_result: Callable[[dict, dict | None, str | None], None],
    *,
    chunksize: int = 16,
) -> None:
    """Run ``requests`` (worker protocol messages with unique ``id``) over ``nworkers`` worker processes.

    ``on_result(request, reply, None)`` is called once per request with the worker's reply, or
    ``on_result(request, None, failure)`` when the request ran past ``hard_timeout`` seconds
    (``failure == "timeout"``) or its worker died (``"error: ..."``). A worker is busy with the first
    request of its queue from the moment the previous reply arrived (or the queue was filled); a
    killed or dead worker is replaced and the rest of its queue is sent again. Requests left when no
    worker can be started are reported as ``"error: no grading worker"``.
    """
    pending: deque[dict] = deque(requests)
    left = [len(requests)]
    done: set = set()

    def report(req: dict, msg: dict | None, failure: str | None) -> None:
        if req["id"] in done:
            return
        done.add(req["id"])
        left[0] -= 1
        on_result(req, msg, failure)

    with _pool_lock:
        live: list[_Worker] = []
        while _pool and len(live) < nworkers:
            w = _pool.pop()
            if w.alive() and not w.buf and not w.outbuf:
                live.append(w)
            else:
                w.kill()
        while len(live) < nworkers:
            try:
                live.append(_Worker())
            except Exception:
                break
        sel = selectors.DefaultSelector()
        max_inflight = max(1, chunksize) * 2
        inflight: dict[int, deque[dict]] = {}

        def register(w: _Worker) -> None:
            inflight[id(w)] = deque()
            sel.register(w.fd, selectors.EVENT_READ, w)

        def replace(w: _Worker, failure: str) -> None:
            try:
                sel.unregister(w.fd)
            except Exception:
                pass
            w.kill()
            q = inflight.pop(id(w), deque())
            if q:
                report(q.popleft(), None, failure)
                for req in reversed(q):
                    pending.appendleft(req)
            live.remove(w)
            if pending or any(inflight.values()):
                try:
                    nw = _Worker()
                except Exception:
                    return
                live.append(nw)
                register(nw)

        for w in live:
            register(w)
        try:
            while left[0] > 0 and live:
                now = time.monotonic()
                for w in list(live):
                    q = inflight[id(w)]
                    if len(q) < chunksize and pending:
                        if not q:
                            w.item_started = now
                        while pending and len(q) < max_inflight:
                            req = pending.popleft()
                            q.append(req)
                            w.queue(req)
                    try:
                        w.flush_some()
                    except _WorkerDied as e:
                        replace(w, f"error: {e}")
                busy = [w for w in live if inflight.get(id(w))]
                if not busy:
                    if not pending:
                        break
                    continue
                wait = min(w.item_started + hard_timeout for w in busy) - time.monotonic()
                if any(w.outbuf for w in busy):
                    wait = min(wait, 0.02)
                for key, _ in sel.select(timeout=max(0.0, wait)):
                    w = key.data
                    if w not in live:
                        continue
                    try:
                        w.read_some()
                    except _WorkerDied as e:
                        replace(w, f"error: {e}")
                        continue
                    q = inflight[id(w)]
                    while True:
                        line = w.pop_line()
                        if line is None:
                            break
                        try:
                            msg = json.loads(line)
                        except ValueError:
                            continue
                        if q and msg.get("id") == q[0]["id"]:
                            report(q.popleft(), msg, None)
                            w.item_started = time.monotonic()
                        elif q and msg.get("id") is None and msg.get("error"):
                            report(q.popleft(), None, f"error: {msg['error']}")
                            w.item_started = time.monotonic()
                now = time.monotonic()
                for w in list(live):
                    if inflight.get(id(w)) and now - w.item_started > hard_timeout:
                        replace(w, "timeout")
        finally:
            sel.close()
            for w in live:
                if w.alive() and not inflight.get(id(w)) and not w.outbuf and not w.buf:
                    _pool.append(w)
                else:
                    w.kill()
    for req in list(pending):
        report(req, None, "error: no grading worker")


def _grade_in_process(response: str, gold: str, dataset: str, timeout: float) -> Verdict:
    """Grade in this process with a soft SIGALRM timer (main thread) and no hard kill."""
    if threading.current_thread() is not threading.main_thread():
        return grade(response, gold, dataset, timeout=timeout)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        clock = _Clock(time.monotonic() + timeout)
        return _run_with_alarm(lambda: _grade_core(response, gold, dataset_family(dataset), _mv_equal, clock), timeout)
    except (_SoftTimeout, _Deadline):
        return Verdict(False, _safe_extract(response, dataset), "timeout")
    except Exception as e:  # noqa: BLE001
        return Verdict(False, _safe_extract(response, dataset), f"error: {type(e).__name__}: {_short(e)}")
    finally:
        signal.signal(signal.SIGALRM, old)


def _grade_in_process_safe(response, gold, dataset, timeout) -> Verdict:
    if not isinstance(response, str) or not isinstance(gold, str):
        return Verdict(False, None, "error: response and gold must be strings")
    return grade(response, gold, dataset, timeout=timeout)
