"""Finding the final answer in a response or a reference solution (boxes, "####", "the answer is")."""

from __future__ import annotations

import logging
import re

from mathreason.grading.quantities import rewrite_quantity
from mathreason.grading.verdict import dataset_family

logger = logging.getLogger(__name__)


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
    r"(?:[\s$,;&~]|\\[,;:! \\]|\\q?quad(?![A-Za-z])|\\[()\[\]]"
    r"|\\(?:text|textbf|textrm|textit|mbox|mathrm)\{\s*(?:and|or|,)?\s*\}"
    r"|(?<![A-Za-z])(?:and|or)(?![A-Za-z])|[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=)*"
)
"""What may stand between two boxes of one answer: spacing, commas, "and"/"or" (also as ``\\text{ and }``),
math delimiters (``\\) and \\(``) and the name of the next item (``\\quad y_2 = \\boxed{..}``)."""


def _trailing_box_run(text: str) -> list[str]:
    """Contents of the run of adjacent boxes that ends with the last box (``\\boxed{1}, \\boxed{2}``)."""
    boxes = _top_level_boxes(text)
    if not boxes:
        return []
    run = [boxes[-1]]
    for b in reversed(boxes[:-1]):
        gap = text[b[1] : run[-1][0]]
        if len(gap) > 60 or not _BOX_SEP_RE.fullmatch(gap):
            break
        run.append(b)
    return [c for _, _, c in reversed(run)]


_ANSWER_IS_RE = re.compile(r"(?i)\banswers?\s*(?:is\b|are\b|:|=)\s*:?|\banswer\s+(?=\$|\\\[|\\\()")
_VERB_RE = re.compile(r"\b(?:is|are|equals|be)\s+")
_HASHES_RE = re.compile(r"####")
_MATH_OPEN = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}


def _find_unescaped(text: str, delim: str, start: int) -> int:
    """Index of the first ``delim`` at or after ``start`` not escaped by a backslash (``\\$`` is a
    dollar sign inside math, not the end of it), or -1."""
    i = text.find(delim, start)
    while i >= 0:
        k = i
        while k > 0 and text[k - 1] == "\\":
            k -= 1
        if (i - k) % 2 == 0:
            return i
        i = text.find(delim, i + 1)
    return -1


def _answer_segment(rest: str) -> str:
    """The answer that starts ``rest`` (the text after "answer is" / "####"): up to the end of the
    line or sentence, or the whole first math span when it starts with one."""
    rest = rest.lstrip(" \t*:")
    for open_, close in _MATH_OPEN.items():
        if rest.startswith(open_):
            end = _find_unescaped(rest, close, len(open_))
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
            seg = rewrite_quantity(seg) or seg  # "twelve", "8 dollars and 50 cents"
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
    if _ANSWER_IS_RE.search(g):  # a reference text: "... Final Answer: The final answer is $28\\%$. I hope ..."
        found = _extract(g, family, allow_bare=False)[0]
        if found:
            return found
    return g


def _safe_extract(response, dataset) -> str | None:
    """:func:`extract_answer`, or ``None`` for a non-string (for verdicts of failed items)."""
    try:
        return extract_answer(response, dataset) if isinstance(response, str) else None
    except BaseException:  # noqa: BLE001
        return None
