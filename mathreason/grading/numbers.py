"""Exact rational values of numeric answers and the decimal-approximation rule."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mathreason.grading.normalization import _Norm


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
    tower = _tower_value(s)
    if tower is not None:
        return _Number(Fraction(tower), False)
    return None


_TOWER_RE = re.compile(r"(\d{1,6}|\(-?\d{1,6}\)|\{\d{1,6}\})\^\{(.+)\}")
_TOWER_START_RE = re.compile(r"(?<![\d.])(\d{1,6}|\(-?\d{1,6}\))\^\{")
_TOWER_LITERAL_DIGITS = 100
"""A stack of powers inside an expression is replaced by its value only below this many digits."""


def _tower_value(s: str, depth: int = 0) -> int | None:
    """The value of a stack of integer powers (a canonical ``2^{3^{2}}`` -> 512) when it has at most
    ``_MAX_DIGITS`` digits, else ``None``; also ``None`` for anything that is not such a stack,
    including a single power ``2^{9}`` (left to the symbolic path). Never computes a number past
    the bound: each level's size is estimated from logarithms first."""
    if depth > 8 or len(s) > 200:
        return None
    if depth and re.fullmatch(r"\d{1,6}", s):
        return int(s)
    m = _TOWER_RE.fullmatch(s)
    if m is None or (depth == 0 and "^" not in m.group(2)):
        return None
    exp = _tower_value(m.group(2), depth + 1)
    base = int(m.group(1).strip("(){}"))
    if exp is None or exp < 0:
        return None
    if abs(base) < 2:
        return base**exp
    if exp > 10**5 or exp * math.log10(abs(base)) > _MAX_DIGITS:  # 2^(10^5) already has 30103 digits
        return None
    return base**exp


def _evaluate_towers(s: str) -> str:
    """``s`` with every stack of integer powers in it whose value has fewer than 100 digits replaced by
    that value: ``2^{3^{2}}+1`` -> ``512+1``, ``x^{2^{2^{2}}}`` -> ``x^{16}``. What is left (a stack
    too big to evaluate) is refused by the symbolic pre-screen as before."""
    if "^" not in s or len(s) > 400:
        return s
    out: list[str] = []
    pos = 0
    while True:
        m = _TOWER_START_RE.search(s, pos)
        if m is None:
            break
        depth, k = 0, m.end() - 1
        while k < len(s):
            depth += (s[k] == "{") - (s[k] == "}")
            if depth == 0:
                break
            k += 1
        if depth:
            break  # unbalanced: leave the rest as it is
        v = _tower_value(s[m.start() : k + 1]) if "^" in s[m.end() : k] else None
        if v is not None and len(str(abs(v))) < _TOWER_LITERAL_DIGITS:
            out.append(s[pos : m.start()] + (f"({v})" if v < 0 else str(v)))
            pos = k + 1
        else:
            out.append(s[pos : m.end()])  # look for smaller stacks inside the exponent
            pos = m.end()
    out.append(s[pos:])
    return "".join(out)


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
