"""Canonical string form of an answer: wrappers, spacing, units, text, percent, degrees and money."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from mathreason.grading.extraction import _BOX_CMD_RE, last_boxed
from mathreason.grading.numbers import _parse_number_str
from mathreason.grading.quantities import rewrite_quantity, unit_of

MAX_ANSWER_CHARS = 2000
"""Extracted answers longer than this are compared as normalised strings only."""


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
_SPACING_RE = re.compile(r"\\\\|\\[!,;:> ]|\\q?quad|\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])|~")
_SIZING_RE = re.compile(r"\\(?:left|right|middle|[Bb]igg?[lrm]?)(?![A-Za-z])\s*(\\?[.])?")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|\^\s*\{\s*o\s*\}$")
_PERCENT_RE = re.compile(r"\\?%|\\percent(?![A-Za-z])|(?<![A-Za-z])percent(?:age)?(?![A-Za-z])")
_DOLLAR_RE = re.compile(r"\\\$|\$|\\(?:textdollar|dollar)(?![A-Za-z])")
_CURRENCY_RE = re.compile(r"\\\$|\\(?:textdollar|dollar)(?![A-Za-z])")
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)(?![A-Za-z])")
_DEGREE_ARG_RE = re.compile(
    r"(\d+(?:\.\d+)?|\{[^{}]*\}|\([^()]*\))\s*"
    r"(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ(?![A-Za-z])|\\degree(?![A-Za-z]))"
)
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
    unit: tuple[str, Fraction] | None = None  # the unit dropped from a number: (dimension, size), see unit_of


def _collapse_spaces(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    # thousands grouped with spaces: 1 000 000 -> 1000000
    s = re.sub(r"(?<![\d.])\d{1,3}(?: \d{3})+(?=\.\d|(?![\d.]))", lambda m: m.group().replace(" ", ""), s)
    # keep a space only where it separates two letters ("\pi r") or two digits ("1 2" is not 12)
    return re.sub(r"(?<![A-Za-z0-9]) | (?![A-Za-z0-9])|(?<=[A-Za-z]) (?=[0-9])|(?<=[0-9]) (?=[A-Za-z])", "", s)


def _strip_units(s: str) -> tuple[str, list[str]]:
    """Drop trailing unit text after a mathematical head: ``5\\text{ cm}^2`` -> ``5``, ``18 dollars`` -> ``18``.
    Returns the head and the unit texts dropped (last first)."""
    dropped: list[str] = []
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
        dropped.append(m.group(1) + (m.group(2) or ""))
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
            dropped.append(words + (m.group(3) or ""))
            s = head
    return s, dropped


def _degrees_in_trig(s: str) -> str:
    """In an answer with a trigonometric function, degrees are its arguments: ``\\sin 30^\\circ`` ->
    ``\\sin (\\frac{30\\pi}{180})`` (elsewhere a degree sign is dropped as a unit)."""
    if not _TRIG_RE.search(s):
        return s
    return _DEGREE_ARG_RE.sub(lambda m: f"(\\frac{{{m.group(1)}\\pi}}{{180}})", s)


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
    s = re.sub(r"(?<!\\)\\[()\[\]]", " ", s)  # inner math delimiters: \(1\) and \(-2\) -> 1 and -2
    s = re.sub(r"\s*\{\s*,\s*\}\s*|,\\!\s*", ",", s)  # LaTeX thousands separators {,} and ,\!
    s = _SPACING_RE.sub(lambda m: m.group() if m.group() == "\\\\" else "" if m.group() == "\\!" else " ", s)
    s = _SIZING_RE.sub("", s)
    for pat, rep in _CMD_ALIASES:
        s = pat.sub(rep, s)
    s = re.sub(r"\\(?:hbox|vbox)\s*\{", r"\\text{", s)
    s = rewrite_quantity(s) or s  # "twelve" -> 12, "8 dollars and 50 cents" -> 8.5 dollars
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub(" ", s)
    s = _degrees_in_trig(s)
    s = _DEGREE_RE.sub(" ", s)
    money = bool(_CURRENCY_RE.search(s))
    s = _DOLLAR_RE.sub(" ", s)
    s = s.strip().rstrip(".,;").strip()
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}|(?<=[\s\d})\]])(?:and|or)(?=[\s\-\d\\$([])", ",", s)
    # a number written inside text: \text{5 cm} -> 5 cm (then the unit goes)
    s = re.sub(r"\\(?:text|textrm|textnormal|mbox)\s*\{\s*([-+]?\d[\d.,]*(?:\s*[A-Za-z][A-Za-z .]*)?)\}", r"\1", s)
    # mixed numbers with a space: 2 1/2 -> 2\frac{1}{2} (before spaces between digits disappear)
    s = re.sub(r"(?<![\d.,/])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\d.,/])", r"\1\\frac{\2}{\3}", s)
    s, dropped = _strip_units(s)
    units = [u for u in map(unit_of, dropped) if u is not None]
    unit = None
    if len(units) == 1 and len(dropped) == 1:
        unit = units[0]  # the one unit dropped: (dimension, size), for conversions
    elif money and not dropped:
        unit = ("money", Fraction(1))  # \$18.90
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
    bare = re.sub(r"\\(?:begin|end)\{[A-Za-z*]*\}|\\[A-Za-z]+|_\{[^{}]*\}", " ", s)  # subscripts are names
    words = [w for w in re.findall(r"[A-Za-z]{2,}", bare)]
    texty = (had_text and bool(words)) or any(len(w) >= 3 and w.lower() not in _FUNCTION_WORDS for w in words)
    if re.fullmatch(r"[A-Z](?:,[A-Z])+", s):
        texty = False  # a list of choice letters: compared as a list
    return _Norm(s, percent, texty, unit)


def parse_number(answer: str) -> Fraction | None:
    """The exact value of a numeric answer (``"1,000"``, ``"\\$18.90"``, ``"\\frac{3}{4}"``, ``"2\\frac12"``,
    ``"1.5e3"``, ``"10\\%"`` -> 10), or ``None`` when the answer is not a plain number."""
    try:
        n = _parse_number_str(_normalize(answer).s)
    except Exception:
        return None
    return None if n is None else n.value
