"""The symbolic leaf: math-verify (latex2sympy + sympy) on two canonical answers. Only ever run
inside a sandboxed worker process (or in-process with ``grade_many(workers=0)``); sympy is imported
lazily so that importing :mod:`mathreason.grading` stays light."""

from __future__ import annotations

import re


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


def math_verify_equal(gold: str, pred: str) -> bool:
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
    if imaginary_unit_applies(gold, pred):
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


def imaginary_unit_applies(gold: str, pred: str) -> bool:
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
