"""What a sampler is asked and what it returns, and where a completion ends.

:class:`Request`, :class:`SamplingParams`, :class:`Completion` and the row seed, shared by every backend of
:mod:`mathreason.sampling`, and the stop rules both backends apply: :class:`_RowStops` (the transformers
stopping criterion), :func:`align_to_stop` and :func:`_finish` (cut a generated row at its cap, EOS or
first stop string, with ``text == decode(token_ids)``). The module docstring of
:mod:`mathreason.sampling` states the schema; everything here is re-exported there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Completion", "Request", "Row", "SamplingParams", "align_to_stop", "expected_tokens", "row_seed"]

def row_seed(*parts: Any) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (e.g. run seed, problem id, sample index)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by all requests of one ``generate`` call."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Request:
    """A prompt as token ids, one seed per wanted sample, and optionally the request's own token cap.

    The cap of the request's rows is ``min(params.max_tokens, max_tokens)`` (see :meth:`cap`); a
    step-prefix rollout passes the sample budget minus the prefix length.
    """

    prompt_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    max_tokens: int | None

    def __init__(self, prompt_ids: Sequence[int], seeds: Sequence[int], max_tokens: int | None = None):
        object.__setattr__(self, "prompt_ids", tuple(int(t) for t in prompt_ids))
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        if not self.prompt_ids:
            raise ValueError("a request needs at least one prompt token")
        if not self.seeds:
            raise ValueError("a request needs at least one seed (one per sample)")
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or int(max_tokens) != max_tokens:
                raise ValueError(f"a request's max_tokens must be an integer or None, got {max_tokens!r}")
            if max_tokens < 1:
                raise ValueError(f"a request's max_tokens must be >= 1 (or None for params.max_tokens), got {max_tokens}")
            max_tokens = int(max_tokens)
        object.__setattr__(self, "max_tokens", max_tokens)

    def cap(self, params: SamplingParams) -> int:
        """The token cap of this request's rows under ``params``: ``min(params.max_tokens, max_tokens)``."""
        return params.max_tokens if self.max_tokens is None else min(params.max_tokens, self.max_tokens)


@dataclass
class Completion:
    """One sample; ``text == tokenizer.decode(token_ids, skip_special_tokens=True)`` (see the module docstring)."""

    text: str
    token_ids: list[int]
    finish_reason: str
    """``stop`` or ``length``."""
    stop_reason: str | None
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "finish_reason": self.finish_reason,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
        }


Row = tuple[tuple[int, ...], int, int]
"""One generation row: ``(prompt_ids, seed, token cap)``."""


class _RowStops:
    """Stopping criterion with :func:`_finish`'s rules: row ``b`` is finished once it has generated
    ``caps[b]`` tokens, an EOS id, or ids whose decoded text (special tokens skipped) contains a stop string.

    Unlike transformers' ``stop_strings`` (which matches raw token strings, special tokens' text included,
    and also across the prompt's end), a row stops exactly when :func:`_finish` will find the stop string,
    so a row is never cut short without a hit. Trailing U+FFFD (an incomplete multi-byte character, which
    the next token may complete) is left out of the match, as vLLM's detokenizer holds such bytes back.
    Each step decodes the rows still running (one ``batch_decode``); finished rows are not looked at again.
    """

    def __init__(self, prompt_len: int, caps: Sequence[int], stop: Sequence[str], tokenizer, eos_ids: Sequence[int]):
        self.prompt_len = prompt_len
        self.caps = list(caps)
        self.stop = tuple(stop)
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.gen: list[list[int]] = [[] for _ in self.caps]
        self.done = [False] * len(self.caps)
        self.seen = 0

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        n = input_ids.shape[1] - self.prompt_len
        cols = input_ids[:, self.prompt_len + self.seen :].tolist()
        self.seen = n
        running = []
        for b, new in enumerate(cols):
            if self.done[b]:
                continue
            self.gen[b].extend(new)
            if n >= self.caps[b] or any(t in self.eos_ids for t in new):
                self.done[b] = True
            elif self.stop:
                running.append(b)
        if running:
            texts = self.tokenizer.batch_decode([self.gen[b] for b in running], skip_special_tokens=True)
            for b, text in zip(running, texts):
                text = text.rstrip("\ufffd")
                if any(x in text for x in self.stop if x):
                    self.done[b] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def align_to_stop(token_ids: Sequence[int], text_before_stop: str, tokenizer) -> tuple[list[int], str]:
    """The ids and text of a sample that hit a stop string: ``(ids, tokenizer.decode(ids))``.

    ``token_ids`` are the generated ids (any that complete or follow the stop string included, no EOS);
    ``text_before_stop`` is the sample's text before the stop string. ``ids`` is the longest prefix of
    ``token_ids`` whose decoded text (special tokens skipped) is a prefix of ``text_before_stop``: the
    tokens lying wholly before the stop string's first character. A token that straddles the stop
    string's start is dropped, so the text returned is ``text_before_stop`` less at most that token's
    leading characters. Used by both backends, so ``text == decode(token_ids)`` always holds.

    Binary search over prefix decodes (``O(log n)`` decodes), on the prefix's text with trailing U+FFFD
    removed (a prefix ending inside a multi-byte character decodes to replacement characters that the
    next token turns into the real one), then a step back over any such incomplete character.
    """
    ids = [int(t) for t in token_ids]
    decoded: dict[int, str] = {}

    def decode(k: int) -> str:
        if k not in decoded:
            decoded[k] = tokenizer.decode(ids[:k], skip_special_tokens=True)
        return decoded[k]

    lo, hi = 0, len(ids)  # invariant: prefix lo fits; every prefix longer than hi does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_before_stop.startswith(decode(mid).rstrip("\ufffd")):
            lo = mid
        else:
            hi = mid - 1
    k = lo
    while k > 0 and not text_before_stop.startswith(decode(k)):
        k -= 1
    return ids[:k], decode(k)


def _first_stop(text: str, stop: Sequence[str]) -> tuple[int, str] | None:
    """``(position, stop string)`` of the earliest stop string in ``text`` (the first listed on a tie)."""
    hits = [(text.find(s), i, s) for i, s in enumerate(stop) if s and s in text]
    if not hits:
        return None
    pos, _, s = min(hits)
    return pos, s


def _finish(gen: list[int], eos_ids: Sequence[int], cap: int, stop: Sequence[str], tokenizer, seed: int) -> Completion:
    """Cut a raw generated row at its cap, EOS or the first stop string; decide the finish reason (vLLM's rules)."""
    gen = gen[:cap]
    eos_at = next((t for t, tok in enumerate(gen) if tok in eos_ids), None)
    body = gen if eos_at is None else gen[:eos_at]
    text = tokenizer.decode(body, skip_special_tokens=True)
    hit = _first_stop(text, stop)
    if hit is not None:
        pos, s = hit
        ids, text = align_to_stop(body, text[:pos], tokenizer)
        return Completion(text, ids, "stop", s, seed)
    if eos_at is not None:
        ids = gen[: eos_at + 1]
        return Completion(tokenizer.decode(ids, skip_special_tokens=True), ids, "stop", None, seed)
    return Completion(text, body, "length" if len(gen) >= cap else "stop", None, seed)


def expected_tokens(completions: Sequence[Sequence[Completion]]) -> int:
    """Total generated tokens (for throughput)."""
    return sum(len(c.token_ids) for cs in completions for c in cs)
