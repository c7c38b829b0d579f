"""Structure of an answer: top-level lists, sets, tuples, intervals, ``\\pm`` pairs and matrices."""

from __future__ import annotations

import re


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


def _bare_set(s: str) -> tuple[str, str, str] | None:
    """``("{", inner, "}")`` when ``s`` is a set written with bare braces, ``{2, 3, 5}`` (one brace group
    around everything, with a top-level comma), else ``None``."""
    if len(s) < 3 or s[0] != "{" or s[-1] != "}":
        return None
    depth, comma = 0, False
    for k, c in enumerate(s):
        if c == "\\":
            continue
        depth += (c in _OPEN) - (c in _CLOSE)
        if depth == 0 and k < len(s) - 1:
            return None  # the first brace closes before the end: {a}{b}
        comma = comma or (c == "," and depth == 1)
    return ("{", s[1:-1], "}") if comma and depth == 0 else None


_SET_OPENS = ("\\{", "{")
"""How a set opens: ``\\{1, 2\\}``, or bare braces ``{1, 2}``."""


_MATRIX_RE = re.compile(r"\\begin\{(pmatrix)\}(.*)\\end\{pmatrix\}")


def _matrix_cells(s: str) -> list[list[str]] | None:
    m = _MATRIX_RE.fullmatch(s)
    if not m or "\\begin" in m.group(2):
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2))]
    if rows and not rows[-1].strip():
        rows = rows[:-1]
    return [[c.strip() for c in r.split("&")] for r in rows]
