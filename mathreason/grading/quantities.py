"""Quantities: numbers written as words, units of one dimension and amounts made of two units.

* :func:`words_to_int` reads an English cardinal: ``"twelve"`` -> 12, ``"three hundred and five"`` ->
  305, ``"twenty-one"`` -> 21, ``"minus five"`` -> -5. Fractions in words (``"one half"``) are not read.
* :func:`unit_of` names the dimension of a unit and its size in that dimension's base unit:
  ``"km"`` -> ``("length", 1000)``, ``"square feet"`` -> ``("area", 0.09290304)``, ``"cents"`` ->
  ``("money", 1/100)``. Only units whose size is fixed by definition are listed (no months, years, tons).
* :func:`rewrite_quantity` rewrites a whole answer that is a number in words, or an amount in two units
  of one dimension, as a decimal and one unit: ``"\\text{twelve}"`` -> ``"12"``, ``"8 dollars and 50
  cents"`` -> ``"8.5 dollars"``, ``"\\$8 and 50 cents"`` -> ``"8.5 dollars"``, ``"2 hours 30 minutes"``
  -> ``"2.5 hours"``, ``"twelve apples"`` -> ``"12 apples"`` (the noun then goes as a unit does), but not
  ``"one half"``, ``"two dozen"`` or ``"three squared"``, whose words change the number.

The factors are a small table written here (no units library is a dependency, and the grader's
parent process must stay light); every conversion is exact rational arithmetic.
"""

from __future__ import annotations

import re
from fractions import Fraction

# --------------------------------------------------------------------------------------------------
# number words
# --------------------------------------------------------------------------------------------------

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NEGATIVE = {"minus", "negative"}
_NUMBER_WORDS = set(_ONES) | set(_TENS) | set(_SCALES) | {"hundred", "and"} | _NEGATIVE


def words_to_int(text: str) -> int | None:
    """The integer an English cardinal names (``"one thousand two hundred and five"`` -> 1205), or
    ``None`` when ``text`` is anything else (``"one two"``, ``"one half"``, ``"and"``, ``""``)."""
    toks = [t for t in re.split(r"[\s\-]+", text.strip().lower()) if t]
    if not toks or len(toks) > 20:
        return None
    sign = 1
    if toks[0] in _NEGATIVE:
        sign, toks = -1, toks[1:]
    if not toks or toks[0] == "and" or toks[-1] == "and":
        return None
    total, group = 0, 0  # group: the part below the current scale word (0..999)
    last = None  # kind of the previous token: "one", "teen", "ten", "hundred", "scale", "and"
    last_scale = None
    for t in toks:
        if t in _ONES:
            v = _ONES[t]
            kind = "one" if v < 10 else "teen"
            if last in ("one", "teen") or (last == "ten" and kind == "teen") or (last == "ten" and group % 10):
                return None
            group += v
            last = kind
        elif t in _TENS:
            if last in ("one", "teen", "ten") or group % 100:
                return None
            group += _TENS[t]
            last = "ten"
        elif t == "hundred":
            if last not in ("one", "teen") or group >= 100 or group == 0:
                return None
            group *= 100
            last = "hundred"
        elif t in _SCALES:
            scale = _SCALES[t]
            if group == 0 or (last_scale is not None and scale >= last_scale):
                return None
            total += group * scale
            group, last, last_scale = 0, "scale", scale
        elif t == "and":
            if last not in ("hundred", "scale"):
                return None
            last = "and"
        else:
            return None
    return sign * (total + group)


# --------------------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------------------

_LENGTH = {
    ("mm", "millimeter", "millimeters", "millimetre", "millimetres"): Fraction(1, 1000),
    ("cm", "centimeter", "centimeters", "centimetre", "centimetres"): Fraction(1, 100),
    ("m", "meter", "meters", "metre", "metres"): Fraction(1),
    ("km", "kilometer", "kilometers", "kilometre", "kilometres"): Fraction(1000),
    ("in", "inch", "inches"): Fraction(254, 10000),
    ("ft", "foot", "feet"): Fraction(3048, 10000),
    ("yd", "yard", "yards"): Fraction(9144, 10000),
    ("mi", "mile", "miles"): Fraction(1609344, 1000),
}
_OTHER = {
    "mass": {
        ("mg", "milligram", "milligrams"): Fraction(1, 1000),
        ("g", "gm", "gram", "grams"): Fraction(1),
        ("kg", "kilogram", "kilograms"): Fraction(1000),
        ("oz", "ounce", "ounces"): Fraction(28349523125, 10**9),
        ("lb", "lbs", "pound", "pounds"): Fraction(45359237, 10**5),
    },
    "time": {
        ("s", "sec", "secs", "second", "seconds"): Fraction(1),
        ("min", "mins", "minute", "minutes"): Fraction(60),
        ("h", "hr", "hrs", "hour", "hours"): Fraction(3600),
        ("day", "days"): Fraction(86400),
        ("week", "weeks"): Fraction(604800),
    },
    "volume": {
        ("ml", "milliliter", "milliliters", "millilitre", "millilitres"): Fraction(1, 1000),
        ("l", "liter", "liters", "litre", "litres"): Fraction(1),
        ("gallon", "gallons", "gal"): Fraction(3785411784, 10**9),
        ("quart", "quarts", "qt"): Fraction(946352946, 10**9),
        ("pint", "pints", "pt"): Fraction(473176473, 10**9),
        ("cup", "cups"): Fraction(2365882365, 10**10),
    },
    "money": {
        ("dollar", "dollars", "$"): Fraction(1),
        ("cent", "cents", "\u00a2"): Fraction(1, 100),
    },
}
_UNITS: dict[str, tuple[str, Fraction]] = {}
for _names, _f in _LENGTH.items():
    for _n in _names:
        _UNITS[_n] = ("length", _f)
for _dim, _table in _OTHER.items():
    for _names, _f in _table.items():
        for _n in _names:
            _UNITS[_n] = (_dim, _f)
_POWER_DIMS = {2: ("area", "square", "sq"), 3: ("volume", "cubic", "cu")}


def unit_of(text: str) -> tuple[str, Fraction] | None:
    """``(dimension, size in the base unit)`` of a unit written as text, or ``None`` if it is not one
    known unit: ``"km"``, ``"\\text{ cm}^2"`` -> area, ``"square feet"``, ``"cubic cm"``, ``"sq. in."``.
    Base units: metre, square metre, litre (``cm^3`` is a millilitre), gram, second, dollar."""
    t = re.sub(r"\\(?:text|textrm|textnormal|mbox|mathrm)\s*\{([^{}]*)\}", r"\1", text)
    t = re.sub(r"[{}\s.]+", " ", t).strip().lower()
    power = 1
    m = re.fullmatch(r"(.*?)\s*\^\s*([23])", t)
    if m:
        t, power = m.group(1).strip(), int(m.group(2))
    words = t.split()
    if words and power == 1:
        for p, (_, *prefixes) in _POWER_DIMS.items():
            if words[0] in prefixes:
                words, power = words[1:], p
    if len(words) != 1:
        return None
    unit = _UNITS.get(words[0])
    if unit is None:
        return None
    dim, factor = unit
    if power == 1:
        return unit
    if dim != "length":
        return None
    if power == 3:
        return "volume", factor**3 * 1000  # m^3 = 1000 L
    return "area", factor**2


# --------------------------------------------------------------------------------------------------
# whole answers that are quantities
# --------------------------------------------------------------------------------------------------

_TEXT_WRAP_RE = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|mbox|mathrm)\s*\{([^{}]*)\}")
_NW = "(?:" + "|".join(sorted(_NUMBER_WORDS - {"and"}, key=len, reverse=True)) + r")(?![a-z])"
_WORDS = _NW + r"(?:[\s\-]+(?:and\s+)?" + _NW + ")*"
_NUM = r"(\d+(?:\.\d+)?|" + _WORDS + ")"
_UNIT = "(?:" + "|".join(sorted((u for u in _UNITS if u.isalpha()), key=len, reverse=True)) + r")(?![a-z])"
_AMOUNT_RE = re.compile(
    r"(?P<cur>\\?\$)?\s*" + _NUM + r"\s*(?P<u1>" + _UNIT + r")?\s*,?\s*(?:and\s+)?" + _NUM + r"\s*(?P<u2>" + _UNIT + ")"
)
_WORDS_RE = re.compile(r"(?P<n>" + _WORDS + r")(?:\s+(?P<rest>[a-z]+(?:\s+[a-z]+){0,3}))?")
_NOT_A_NOUN_RE = re.compile(
    r"half|halves|quarters?|thirds?|firsts?|seconds?|[a-z]*th|[a-z]*ths|dozens?|score|squared|cubed|times|over|plus"
    r"|minus|point|divided|and|or|to|of|by|per|out|more|less|fewer|hundreds|thousands|millions|billions|x|i"
)
"""Words after a number word that change its value (``one half``, ``two dozen``, ``three squared``):
such an answer is not read as a number."""


def _value(tok: str) -> Fraction | None:
    if re.fullmatch(r"\d+(?:\.\d+)?", tok):
        return Fraction(tok)
    n = words_to_int(tok)
    return None if n is None else Fraction(n)


def _decimal(v: Fraction) -> str:
    """``v`` as a decimal string when it terminates (``17/2`` -> ``8.5``), else ``\\frac{p}{q}``."""
    d, k2, k5 = v.denominator, 0, 0
    while d % 2 == 0:
        d, k2 = d // 2, k2 + 1
    while d % 5 == 0:
        d, k5 = d // 5, k5 + 1
    if d != 1:
        return f"\\frac{{{v.numerator}}}{{{v.denominator}}}"
    k = max(k2, k5)
    digits = str(int(abs(v) * 10**k)).rjust(k + 1, "0")
    return ("-" if v < 0 else "") + (digits[:-k] + "." + digits[-k:] if k else digits)


def rewrite_quantity(s: str) -> str | None:
    """A whole answer that is a number in words or an amount in two units of one dimension, rewritten
    as a decimal and (for amounts) the larger unit; ``None`` when ``s`` is neither (see the module)."""
    if len(s) > 200 or not re.search(r"[A-Za-z]", s):
        return None
    plain = _TEXT_WRAP_RE.sub(lambda m: f" {m.group(1)} ", s)
    plain = re.sub(r"\\[ ,;:!]|~", " ", plain)
    plain = re.sub(r"\s+", " ", plain).strip().rstrip(".").strip().lower()
    m = _AMOUNT_RE.fullmatch(plain)
    if m:
        a, b = _value(m.group(2)), _value(m.group(4))
        u1 = m.group("u1") or ("dollars" if m.group("cur") else None)
        if m.group("cur") and m.group("u1") and _UNITS.get(m.group("u1"), ("",))[0] != "money":
            u1 = None
        units = [unit_of(u) if u else None for u in (u1, m.group("u2"))]
        if a is not None and b is not None and units[0] and units[1]:
            (d1, f1), (d2, f2) = units
            if d1 == d2 and f2 < f1 and b * f2 < f1:
                return f"{_decimal(a + b * f2 / f1)} {u1}"
    m = _WORDS_RE.fullmatch(plain)
    if m and re.search(r"[a-z]", m.group("n")):
        n = words_to_int(m.group("n"))
        rest = m.group("rest")
        if n is None:
            return None
        if rest is None:
            return str(n)
        if unit_of(rest) is not None or not any(_NOT_A_NOUN_RE.fullmatch(w) for w in rest.split()):
            return f"{n} {rest}"  # "twelve apples" -> "12 apples" (the words then go as units do)
    return None
