"""Split solutions into reasoning steps and map the steps onto tokens.

Splitting. Every splitter returns pieces that concatenate back to the input exactly
(``"".join(split_steps(text)) == text`` always); nothing is dropped or rewritten.

* ``newline`` (GSM8K-style text): one step per line; each step keeps its trailing newline, and blank
  lines stay with the step before them.
* ``latex`` (MATH-style text): a step ends at a line break or at the end of a sentence (``.``, ``!``
  or ``?`` followed by white space and a word that does not start in lower case), but never inside
  math (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``), inside a ``\\begin{..}...\\end{..}``
  environment, or inside an ``[asy]...[/asy]`` picture; common abbreviations (``e.g.``, ``i.e.``,
  ``Mr.``, ...) do not end a sentence. When the white space between two steps contains line breaks,
  the step ends after the last line break; otherwise the spaces open the next step (so that
  a BPE token such as ``" Then"`` falls into the step it begins).
* ``auto``: ``newline`` for GSM8K, ``latex`` for MATH; without a dataset, ``latex`` when the text
  contains LaTeX math, else ``newline``.

Afterwards pieces with fewer than ``min_chars`` non-space characters are merged into the step before
them (the first one into the next), and if there are more than ``max_steps`` the pieces are grouped
into exactly ``max_steps`` consecutive steps of roughly equal length (cuts at the piece boundaries
nearest to ``k * len(text) / max_steps``). Splitters are registered by name in :data:`SPLITTERS`
(see :func:`register_splitter`), so a run config can name the one it used.

Token mapping. :func:`step_ids_for_text` tokenises a text with a fast tokenizer's offset mapping and
gives every token the index of the step its first character belongs to (``-1`` for tokens outside
every step, e.g. the prompt or special tokens with an empty span). A token that straddles a step
boundary belongs to the step where it starts. This is the ``step_ids_BT`` convention of
:func:`shared.logprobs.step_logprobs`. For tokenizers whose offsets tile the text (byte-level BPE),
decoding the tokens of step 0, 1, ... in turn and concatenating reproduces the text exactly.
"""

from __future__ import annotations

import bisect
import re
from typing import Callable, Sequence

__all__ = [
    "split_steps",
    "get_splitter",
    "register_splitter",
    "SPLITTERS",
    "split_newline",
    "split_latex",
    "step_char_spans",
    "token_step_ids",
    "step_ids_for_text",
    "DEFAULT_MIN_CHARS",
]

DEFAULT_MIN_CHARS = {"newline": 1, "latex": 12}
"""Default ``min_chars`` per splitter: newline merges only blank pieces; latex merges tiny sentences."""


# --------------------------------------------------------------------------------------------------
# Post-processing shared by the splitters
# --------------------------------------------------------------------------------------------------


def _content_len(piece: str) -> int:
    return len(piece) - sum(1 for c in piece if c.isspace())


def _merge_short(pieces: list[str], min_chars: int) -> list[str]:
    """Merge pieces with fewer than ``min_chars`` non-space characters into the previous piece (the
    first ones into the next)."""
    out: list[str] = []
    carry = ""
    for piece in pieces:
        if _content_len(piece) < min_chars:
            if out:
                out[-1] += piece
            else:
                carry += piece
            continue
        out.append(carry + piece)
        carry = ""
    if carry:
        if out:
            out[-1] += carry
        else:
            out.append(carry)
    return out


def _cap(pieces: list[str], max_steps: int | None) -> list[str]:
    """At most ``max_steps`` consecutive groups of whole pieces, cut at the piece boundaries nearest to
    ``k * len(text) / max_steps`` (so the groups have roughly equal length)."""
    if max_steps is None or len(pieces) <= max_steps:
        return pieces
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    n, m = len(pieces), max_steps
    ends: list[int] = []
    pos = 0
    for piece in pieces:
        pos += len(piece)
        ends.append(pos)  # ends[j - 1] = characters before a cut after j pieces
    cuts: list[int] = []
    prev = 0
    for k in range(1, m):
        target = k * pos / m
        j = bisect.bisect_left(ends, target) + 1  # first cut at or past the target
        if j - 1 >= 1 and abs(ends[j - 2] - target) <= abs(ends[min(j, n) - 1] - target):
            j -= 1
        j = max(prev + 1, min(j, n - (m - k)))
        cuts.append(j)
        prev = j
    bounds = [0] + cuts + [n]
    return ["".join(pieces[a:b]) for a, b in zip(bounds, bounds[1:])]


def _finish(text: str, cuts: list[int], min_chars: int, max_steps: int | None) -> list[str]:
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(text))) + [len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    pieces = _merge_short(pieces, min_chars)
    pieces = _cap(pieces, max_steps)
    assert "".join(pieces) == text
    return pieces


# --------------------------------------------------------------------------------------------------
# Splitters
# --------------------------------------------------------------------------------------------------


def split_newline(text: str, *, max_steps: int | None = None, min_chars: int | None = None, **_: object) -> list[str]:
    """One step per line (each keeps its trailing ``\\n``; blank lines join the step before them)."""
    if not text:
        return []
    cuts = [m.end() for m in re.finditer(r"\n", text)]
    return _finish(text, cuts, DEFAULT_MIN_CHARS["newline"] if min_chars is None else min_chars, max_steps)


_MATH_TOKEN_RE = re.compile(
    r"\\\\|\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\\begin\s*\{([^{}]*)\}|\\end\s*\{([^{}]*)\}|\[asy\]|\[/asy\]"
)
_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "mr", "mrs", "ms", "dr", "prof", "st", "fig", "eq", "approx", "resp",
    "a.m", "p.m", "ca", "viz", "al",
}


def _protected_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges where no step may end: math, environments and ``[asy]`` pictures. An unclosed
    region runs to the end of the text."""
    spans: list[tuple[int, int]] = []
    mode: str | None = None  # "$", "$$", "\\[", "\\(", "env", "asy"
    env_stack: list[str] = []
    start = 0
    closers = {"$": "$", "$$": "$$", "\\[": "\\]", "\\(": "\\)"}
    for m in _MATH_TOKEN_RE.finditer(text):
        tok = m.group()
        if tok in ("\\\\", "\\$"):
            continue
        if mode is None:
            if tok in closers:
                mode, start = tok, m.start()
            elif tok.startswith("\\begin"):
                mode, start, env_stack = "env", m.start(), [m.group(1).strip()]
            elif tok == "[asy]":
                mode, start = "asy", m.start()
        elif mode == "env":
            if tok.startswith("\\begin"):
                env_stack.append(m.group(1).strip())
            elif tok.startswith("\\end"):
                name = m.group(2).strip()
                if name in env_stack:
                    while env_stack and env_stack.pop() != name:
                        pass
                if not env_stack:
                    spans.append((start, m.end()))
                    mode = None
        elif mode == "asy":
            if tok == "[/asy]":
                spans.append((start, m.end()))
                mode = None
        elif tok == closers[mode]:
            spans.append((start, m.end()))
            mode = None
    if mode is not None:
        spans.append((start, len(text)))
    return spans


_SENTENCE_END_RE = re.compile(r"[.!?](?=\s)")


def _sentence_end_ok(text: str, i: int) -> bool:
    """Whether the ``.``/``!``/``?`` at ``i`` (followed by white space) ends a sentence."""
    j = i + 1
    n = len(text)
    while j < n and text[j].isspace():
        j += 1
    if j >= n:
        return False  # trailing punctuation: nothing to split off
    nxt = text[j]
    if nxt.islower():
        return False
    if text[i] == ".":
        k = i
        while k > 0 and (text[k - 1].isalpha() or text[k - 1] == "."):
            k -= 1
        word = text[k:i].lower()
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and text[k - 1 : k] in ("", " ", "(")):
            return False  # e.g. / i.e. / initials
        if i > 0 and text[i - 1].isdigit() and nxt.isdigit():
            return False
    return True


def split_latex(text: str, *, max_steps: int | None = None, min_chars: int | None = None, **_: object) -> list[str]:
    """Sentence/line steps that never split math, environments or ``[asy]`` blocks (module docstring)."""
    if not text:
        return []
    spans = _protected_spans(text)
    starts = [a for a, _ in spans]

    def protected(pos: int) -> bool:
        """Is a cut before character ``pos`` inside a protected span?"""
        k = bisect.bisect_right(starts, pos - 1) - 1
        return k >= 0 and spans[k][0] < pos < spans[k][1]

    cuts: list[int] = []
    for m in re.finditer(r"\n[ \t\r\f\v\n]*", text):
        # cut after the last newline of the white-space run
        run = m.group()
        cut = m.start() + run.rfind("\n") + 1
        if not protected(m.start()) and not protected(cut):
            cuts.append(cut)
    for m in _SENTENCE_END_RE.finditer(text):
        i = m.start()
        if protected(i + 1) or not _sentence_end_ok(text, i):
            continue
        j = i + 1
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] in "\r\n":
            continue  # the newline rule cuts here
        cuts.append(i + 1)  # spaces open the next step
    return _finish(text, cuts, DEFAULT_MIN_CHARS["latex"] if min_chars is None else min_chars, max_steps)


_LATEX_HINT_RE = re.compile(r"\$|\\\[|\\\(|\\begin|\\boxed|\\frac")


def split_auto(
    text: str, *, dataset: str | None = None, max_steps: int | None = None, min_chars: int | None = None, **_: object
) -> list[str]:
    """``newline`` for GSM8K, ``latex`` for MATH; without a dataset, by whether the text has LaTeX."""
    if dataset is not None:
        use_newline = dataset.strip().lower().startswith("gsm")
    else:
        use_newline = _LATEX_HINT_RE.search(text) is None
    fn = split_newline if use_newline else split_latex
    return fn(text, max_steps=max_steps, min_chars=min_chars)


SPLITTERS: dict[str, Callable[..., list[str]]] = {
    "newline": split_newline,
    "latex": split_latex,
    "auto": split_auto,
}


def register_splitter(name: str, fn: Callable[..., list[str]]) -> None:
    """Add a splitter ``fn(text, *, max_steps=None, min_chars=None, dataset=None) -> list[str]``.
    :func:`split_steps` checks that its pieces concatenate back to the text."""
    if name in SPLITTERS and SPLITTERS[name] is not fn:
        raise ValueError(f"a splitter named {name!r} is already registered")
    SPLITTERS[name] = fn


def get_splitter(name: str) -> Callable[..., list[str]]:
    """The registered splitter ``name`` (``KeyError`` listing the known names otherwise)."""
    try:
        return SPLITTERS[name]
    except KeyError:
        raise KeyError(f"unknown step splitter {name!r}; known: {', '.join(sorted(SPLITTERS))}") from None


def split_steps(
    text: str,
    splitter: str = "auto",
    *,
    dataset: str | None = None,
    max_steps: int | None = None,
    min_chars: int | None = None,
) -> list[str]:
    """Split ``text`` into steps with the named splitter; ``"".join(steps) == text`` always.

    Args:
        text: a solution (response) text.
        splitter: ``"newline"``, ``"latex"``, ``"auto"`` or a name added with :func:`register_splitter`.
        dataset: ``"gsm8k"``/``"math"``; used by ``auto``.
        max_steps: cap on the number of steps (pieces are grouped into at most this many).
        min_chars: pieces with fewer non-space characters are merged into a neighbour (``None``: the
            splitter's default, :data:`DEFAULT_MIN_CHARS`).
    """
    if not isinstance(text, str):
        raise TypeError(f"split_steps: text must be a str, got {type(text).__name__}")
    fn = get_splitter(splitter)
    steps = fn(text, dataset=dataset, max_steps=max_steps, min_chars=min_chars)
    if "".join(steps) != text:
        raise ValueError(f"splitter {splitter!r} broke the round trip (its steps do not concatenate to the text)")
    if max_steps is not None and len(steps) > max_steps:
        raise ValueError(f"splitter {splitter!r} returned {len(steps)} steps, more than max_steps={max_steps}")
    return steps


# --------------------------------------------------------------------------------------------------
# Token mapping
# --------------------------------------------------------------------------------------------------


def step_char_spans(steps: Sequence[str]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` character span of each step in ``"".join(steps)``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for s in steps:
        spans.append((pos, pos + len(s)))
        pos += len(s)
    return spans


def token_step_ids(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Per token, the index of the span containing the token's first character (``-1`` if none, or if
    the token's span is empty, as for special tokens). ``spans`` must be sorted and disjoint."""
    starts = [a for a, _ in spans]
    for k in range(1, len(spans)):
        if spans[k][0] < spans[k - 1][1]:
            raise ValueError("token_step_ids: spans must be sorted and disjoint")
    out: list[int] = []
    for s, e in offsets:
        if e <= s:
            out.append(-1)
            continue
        k = bisect.bisect_right(starts, s) - 1
        out.append(k if k >= 0 and s < spans[k][1] else -1)
    return out


def _encode_with_offsets(tokenizer, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    try:
        import tokenizers  # noqa: PLC0415 - light, optional

        if isinstance(tokenizer, tokenizers.Tokenizer):
            enc = tokenizer.encode(text, add_special_tokens=add_special_tokens)
            return list(enc.ids), [tuple(o) for o in enc.offsets]
    except ImportError:  # pragma: no cover
        pass
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("step_ids_for_text needs a fast tokenizer (offset mapping); got " + type(tokenizer).__name__)
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def step_ids_for_text(
    tokenizer,
    text: str,
    steps: list[str],
    *,
    add_special_tokens: bool = False,
    start: int | None = None,
) -> tuple[list[int], list[int]]:
    """Tokenise ``text`` and give each token its step index (``-1`` = no step).

    ``steps`` must concatenate to ``text`` or to a part of it: by default to ``text`` itself or to its
    end (``text = prompt + response`` with ``steps`` splitting the response: prompt tokens get ``-1``);
    ``start`` gives the character where the steps begin explicitly.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` or a transformers fast tokenizer.
        add_special_tokens: passed to the tokenizer (special tokens get ``-1``).

    Returns:
        ``(input_ids, step_ids)``, one entry per token.
    """
    joined = "".join(steps)
    if start is None:
        if text == joined:
            start = 0
        elif text.endswith(joined):
            start = len(text) - len(joined)
        else:
            raise ValueError("step_ids_for_text: the steps do not concatenate to the text or to its end; pass start=")
    elif text[start : start + len(joined)] != joined:
        raise ValueError(f"step_ids_for_text: the steps do not appear in the text at character {start}")
    spans = [(a + start, b + start) for a, b in step_char_spans(steps)]
    ids, offsets = _encode_with_offsets(tokenizer, text, add_special_tokens)
    return ids, token_step_ids(offsets, spans)
