"""The in-process comparator: equivalence of a gold and a predicted answer (pure, bounded)."""

from __future__ import annotations

import re
import time
from typing import Callable

from mathreason.grading.extraction import _extract, _prepare_gold
from mathreason.grading.normalization import (
    MAX_ANSWER_CHARS,
    _UNICODE,
    _UNICODE_RE,
    _Norm,
    _normalize,
    _strip_outer_math,
)
from mathreason.grading.numbers import _evaluate_towers, _Number, _numeric_verdict, _parse_number_str
from mathreason.grading.structures import (
    _SET_OPENS,
    _bare_set,
    _bracketed,
    _expand_pm,
    _is_multi,
    _matrix_cells,
    _split_top,
)
from mathreason.grading.verdict import Verdict, dataset_family

MAX_SYMBOLIC_CHARS = 400
"""Longest normalised answer that is handed to the symbolic leaf."""


class Deadline(BaseException):
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


_NAME = r"(?:(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{[^{}=]+\}|_[A-Za-z0-9])?)"
_ASSIGN_RE = re.compile(
    r"(" + _NAME + r"(?::" + _NAME + r")*|\((?:[A-Za-z],)+[A-Za-z]\))\s*(?:=|\\in(?![A-Za-z]))([^=]+)"
)
"""A name on the left of ``=`` (or ``\\in``): ``x``, ``a_{37}``, ``S_{MBCN}``, a ratio of names ``V_{1}:V_{2}``,
``\\alpha``, or a tuple of letters ``(x,y)``."""


def symbolic_risk(s: str) -> str | None:
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


class Clock:
    """A deadline that the symbolic leaf may push back (by the time spent starting a worker)."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline


class _Comparator:
    """Equivalence of a gold and a predicted answer; ``leaf`` decides what only sympy can."""

    def __init__(self, leaf: Callable[[str, str], bool], clock: Clock):
        self.leaf = leaf
        self.clock = clock
        self.used_symbolic = False

    def _check_time(self) -> None:
        if self.clock.deadline is not None and time.monotonic() > self.clock.deadline:
            raise Deadline()

    def equiv(self, gold: str, pred: str, depth: int = 0, units: tuple = (None, None)) -> tuple[bool, str]:
        """``(equivalent, reason)``; ``units`` are the units dropped from the answers this one came from
        (``t = 2\\text{ hours}`` is compared as ``2`` in hours)."""
        self._check_time()
        if depth > 4:
            return False, "structure too deep"
        if gold.strip() == pred.strip() and gold.strip():
            return True, "exact match"
        g, p = _normalize(gold), _normalize(pred)
        if not g.s or not p.s:
            return False, "empty answer"
        gu, pu = g.unit or units[0], p.unit or units[1]
        converts = bool(gu and pu and gu[0] == pu[0] and gu[1] != pu[1])
        if g.s == p.s and not converts:
            return True, "normalized match"
        if _CHOICE_GOLD_RE.fullmatch(g.s):
            # a multiple-choice gold against "(C) 12": the letter decides
            letter = _leading_choice(pred, p)
            if letter is not None:
                return (True, "choice match") if letter == g.s else (False, "choice mismatch")
        # x = 3 vs 3; x \in [0,1] vs [0,1]
        ga, pa = _ASSIGN_RE.fullmatch(g.s), _ASSIGN_RE.fullmatch(p.s)
        if pa and not ga and "=" not in g.s and "\\in" not in g.s:
            return self.equiv(gold, pa.group(2), depth + 1, (gu, pu))
        if ga and not pa and "=" not in p.s and "\\in" not in p.s:
            return self.equiv(ga.group(2), pred, depth + 1, (gu, pu))
        if len(g.s) > MAX_ANSWER_CHARS or len(p.s) > MAX_ANSWER_CHARS:
            return False, "mismatch (answer too long for anything but string comparison)"
        gv, pv = _parse_number_str(g.s), _parse_number_str(p.s)
        if gv is not None and pv is not None:
            if converts:
                # one dimension, two units: 1 km == 1000 m, 2 h == 120 min, \$0.80 == 80 cents
                gv, pv = _Number(gv.value * gu[1], gv.decimal), _Number(pv.value * pu[1], pv.decimal)
                if _numeric_verdict(g, gv, p, pv):
                    return True, "numeric match (units converted)"
                return False, "numeric mismatch"
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
        # stacks of powers small enough to evaluate go to sympy as their values: 2^{3^{2}}+1 -> 512+1
        gs, ps = _evaluate_towers(g.s), _evaluate_towers(p.s)
        risk = symbolic_risk(gs) or symbolic_risk(ps)
        if risk is not None:
            return False, f"mismatch (not compared symbolically: {risk})"
        self._check_time()
        self.used_symbolic = True
        if self.leaf(gs, ps):
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
        gb, pb = _bracketed(g.s) or _bare_set(g.s), _bracketed(p.s) or _bare_set(p.s)
        gl, pl = _expand_pm(gl), _expand_pm(pl)
        if gl and pl and len(gl) == 1 and len(pl) > 1 and gb and gb[0] == "(" and not pb:
            # a point given as a bare list: (1, 2) vs "1, 2" or "x=1, y=2" (ordered)
            gi = _split_top(gb[1], (",",))
            if gi is not None and len(gi) == len(pl):
                ok = self._match_ordered(gi, pl, depth)
                return (True, "tuple match") if ok else (False, "tuple mismatch")
        if gl and pl and (len(gl) > 1 or len(pl) > 1):
            if pb and pb[0] in _SET_OPENS and len(gl) > 1:
                pl = _split_top(pb[1], (",",)) or pl
            if gb and gb[0] in _SET_OPENS and len(pl) > 1:
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
            if gb[0] in _SET_OPENS and pb[0] in _SET_OPENS:
                ok = self._match_unordered(gi, pi, depth)
                return (True, "set match") if ok else (False, "set mismatch")
            if "{" in (gb[0], pb[0]):
                return None  # bare braces against a tuple or interval: left to the symbolic path
            if (gb[0], gb[2]) != (pb[0], pb[2]):
                return False, "bracket mismatch"
            ok = self._match_ordered(gi, pi, depth)
            return (True, "tuple/interval match") if ok else (False, "tuple/interval mismatch")
        return None


def no_symbolic(gold: str, pred: str) -> bool:
    """A symbolic leaf that never confirms an equivalence (only the deterministic paths decide)."""
    return False


def compare(
    gold: str, pred: str, *, leaf: Callable[[str, str], bool] = no_symbolic, clock: Clock | None = None
) -> tuple[bool, str]:
    """``(equivalent, reason)`` for a gold answer and an extracted predicted answer, in this process.

    ``leaf(gold, pred)`` decides what only sympy can, on two canonical strings that passed
    :func:`symbolic_risk`; the default decides nothing (:func:`no_symbolic`), the graders pass
    math-verify run in a sandboxed worker. Raises :class:`Deadline` when ``clock`` runs out."""
    return _Comparator(leaf, clock or Clock(None)).equiv(gold, pred)


def grade_in_process(
    response: str,
    gold: str,
    dataset: str,
    *,
    leaf: Callable[[str, str], bool] = no_symbolic,
    clock: Clock | None = None,
) -> Verdict:
    """The grading logic of :func:`mathreason.grading.grade`, run in this process with the symbolic
    ``leaf`` given (see :func:`compare`): extraction, the gold, the comparison and the box-run rule.
    Pure and bounded; :class:`Deadline` (when ``clock`` runs out) and whatever ``leaf`` raises propagate.
    :func:`~mathreason.grading.grade` runs it in the calling process with a leaf that asks a sandboxed
    worker; :func:`~mathreason.grading.grade_many` runs it inside the workers with math-verify as the leaf."""
    family = dataset_family(dataset)
    clock = clock or Clock(None)
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
        gs = _normalize(gold_ans).s
        gl = _split_top(gs, (",", ";"))
        gb = _bracketed(gs) or _bare_set(gs)
        if gl is not None and len(gl) == 1 and gb is not None and (gb[0] in _SET_OPENS or gb[0] == "("):
            gl = _split_top(gb[1], (",",))  # a set {1,2,3} or a point (1,2) against \boxed{1}, \boxed{2}, ...
        if gl is not None and len(gl) == len(run):
            joined = ", ".join(run)
            ok2, why2 = cmp.equiv(gold_ans, joined)
            if ok2:
                return Verdict(True, joined, why2 + " (adjacent boxes)")
    return Verdict(ok, extracted, why)
