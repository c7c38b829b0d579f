"""Per-step credit on sampled responses: step boundaries on token ids, Q of step prefixes by rollouts,
advantages and first pits (Setlur et al. 2024, Sec. 5; the math computed by :mod:`shared.advantages`).

A valued response is a sample ``y`` of a question ``x`` (its exact token ids) cut into steps
``y_1 .. y_S``. Step boundaries come from a :mod:`mathreason.steps` splitter applied to the sample's text
and are mapped onto the sample's **own** token ids (never a re-tokenisation): ``step_ends[i]`` is the
number of completion tokens through step ``i``, a token belongs to the step in which its first character
lies, and trailing special tokens (EOS) belong to the last step. So the prefix through step ``i`` is
exactly ``token_ids[:step_ends[i]]``.

Values. ``Q_i`` is the success probability of completing the prefix through step ``i`` with the rollout
policy mu, estimated from K rollouts: best-of-K (1 if any succeeds: the paper's BoK(pi_sft), K = 5) or
the Monte-Carlo mean. ``V = Q_{-1}`` is the value of the question (rollouts from the empty prefix). The
last prefix is the whole response: its Q is the response's own reward, with no rollouts. Advantages
``A_i = Q_i - Q_{i-1}`` (Eq. 3) and the first pit (the first step with the lowest Q) come from
:func:`shared.advantages.step_advantages` and :func:`shared.advantages.first_pit`; a pit must have a
negative advantage, otherwise the response has no pit (it is reported, and pair builders drop it).

Rollouts. A prefix is identified by its token ids (question + prefix): identical prefixes are rolled out
once in the whole computation, with seeds derived from the prefix (``row_seed(seed, "rollout", prefix id,
j)``), never from the sample, so results do not depend on which response asked first. Each rollout's
``max_tokens`` is the response budget minus the prefix length; a rollout cut by it is a failure (the
grader's rule). Schedules decide which prefixes are rolled out, in rounds:

* ``all``: every prefix (and V), in one round;
* ``linear``: round 0 rolls out V and step 0 of every response, round r step r of every response whose
  first zero has not been found yet (a response stops at its first Q = 0). For binary best-of-K
  estimates this finds exactly the first pit that ``all`` finds (the same prefixes get the same rollouts);
  later Q's are not estimated (``null`` in the output). Exact relative to the estimates, not to the true
  Q: a sound prefix whose K rollouts all happen to fail is a zero for every schedule (with K = 5 and a
  per-rollout success rate of 0.7 that is 0.24% of prefixes);
* ``bisect``: binary search for the first zero over V, Q_0 .. Q_{S-1} (the last is the reward, 0 for a
  negative), assuming that no prefix recovers after a zero. About log2(S) rounds instead of up to S; where
  a response does recover, its pit can differ from ``linear``'s (benchmarks/pit_search.py measures how
  often), so it is an approximation, never assumed exact.

Crash safety: each round is a fixed plan of shards (:class:`mathreason.runs.ShardedRows` under
``<folder>/round-XXX``) whose key hashes the round's prefixes; a resumed computation replays finished
rounds from disk, keeps finished shards of the current round and redoes the rest, so a ``kill -9``
loses at most one shard and never duplicates a rollout.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shared.advantages import best_of_k_from_rollouts, first_pit, mc_q_values, step_advantages

__all__ = [
    "CreditSettings",
    "PrefixResult",
    "Response",
    "estimate_credit",
    "prefix_key",
    "step_token_ends",
]

logger = logging.getLogger(__name__)


# ====================================================================== steps on token ids


def step_token_ends(token_ids: Sequence[int], steps: Sequence[str], decode: Callable[[Sequence[int]], str]) -> list[int]:
    """Number of tokens through each step: the step boundaries of ``steps`` on the sample's own ids.

    ``steps`` must concatenate to ``decode(token_ids)`` (the sample's text; special tokens decode to
    nothing). Token ``t`` starts at character ``len(decode(token_ids[:t]))`` and belongs to the step
    containing that character; ``ends[i]`` counts the tokens of steps ``0..i``. Tokens after the text
    (EOS) join the last step, so ``ends[-1] == len(token_ids)``. A step in which no token starts (one
    token spans it) is merged into the next one, so ends are strictly increasing and every step owns at
    least one token; the result may therefore have fewer entries than ``steps``.

    Cost: O(S log T) decodes of prefixes (binary search per boundary), not O(T).
    """
    n = len(token_ids)
    if n == 0 or not steps:
        return []
    starts_cache: dict[int, int] = {}

    def start(t: int) -> int:
        if t not in starts_cache:
            starts_cache[t] = len(decode(list(token_ids[:t])))
        return starts_cache[t]

    ends: list[int] = []
    pos = 0
    for i, s in enumerate(steps):
        pos += len(s)
        if i == len(steps) - 1:
            end = n
        else:
            # First token that starts at or after the boundary (starts are non-decreasing in t).
            lo, hi = (ends[-1] if ends else 0), n
            while lo < hi:
                mid = (lo + hi) // 2
                if start(mid) >= pos:
                    hi = mid
                else:
                    lo = mid + 1
            end = lo
        if end > (ends[-1] if ends else 0):
            ends.append(end)
    return ends


# ====================================================================== inputs and results


@dataclass
class Response:
    """A sampled response to value."""

    problem_id: str
    sample_index: int
    prompt_ids: list[int]
    """The question exactly as the policy saw it."""
    token_ids: list[int]
    """The sample's completion ids (EOS included when it ended with EOS)."""
    step_ends: list[int]
    """Completion tokens through each step (:func:`step_token_ends`)."""
    reward: float
    """1.0 for a correct response, 0.0 otherwise (the Q of the last prefix)."""

    @property
    def num_steps(self) -> int:
        return len(self.step_ends)

    def prefix_ids(self, i: int) -> list[int]:
        """Completion ids of the prefix through step ``i`` (``i = -1``: the empty prefix)."""
        return list(self.token_ids[: (0 if i < 0 else self.step_ends[i])])


@dataclass
class PrefixResult:
    """The K rollouts of one prefix, graded."""

    successes: list[bool]
    finish_reasons: list[str]
    tokens: int
    """Tokens generated by the K rollouts."""
    continuations: list[list[int]] = field(default_factory=list)
    """Token ids of the first successful rollouts (up to ``keep_continuations``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "successes": self.successes,
            "finish_reasons": self.finish_reasons,
            "tokens": self.tokens,
            "continuations": self.continuations,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PrefixResult":
        return cls(list(d["successes"]), list(d["finish_reasons"]), int(d["tokens"]), [list(c) for c in d["continuations"]])


@dataclass(frozen=True)
class CreditSettings:
    """How Q is estimated."""

    rollouts: int = 5
    estimator: str = "best_of_k"
    """``best_of_k`` or ``mc_mean``."""
    schedule: str = "linear"
    """``linear``, ``all`` or ``bisect``."""
    seed: int = 0
    budget: int = 512
    """Token budget of a whole response; a rollout from a prefix of length L gets ``budget - L``."""
    chunk_size: int = 256
    """Prefixes per shard."""

    def __post_init__(self) -> None:
        if self.rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {self.rollouts}")
        if self.estimator not in ("best_of_k", "mc_mean"):
            raise ValueError(f"estimator must be best_of_k or mc_mean, got {self.estimator!r}")
        if self.schedule not in ("linear", "all", "bisect"):
            raise ValueError(f"schedule must be linear, all or bisect, got {self.schedule!r}")
        if self.estimator == "mc_mean" and self.schedule != "all":
            raise ValueError("the mc_mean estimator needs schedule 'all' (a non-binary first pit needs every prefix)")


def prefix_key(prompt_ids: Sequence[int], prefix_ids: Sequence[int]) -> str:
    """Content id of a rollout prompt (question + step prefix), 20 hex digits."""
    h = hashlib.sha256((",".join(map(str, prompt_ids)) + "|" + ",".join(map(str, prefix_ids))).encode())
    return h.hexdigest()[:20]


RolloutFn = Callable[[list[tuple[Response, int]]], list[PrefixResult]]
"""Rolls out a list of ``(response, step index)`` prefixes (step -1 = the empty prefix); one result each."""


# ====================================================================== schedules


class _State:
    """What is known about one response: Q estimates (index 0 = V, i + 1 = step i) and where to look next."""

    def __init__(self, r: Response):
        self.r = r
        S = r.num_steps
        self.known: dict[int, float] = {S - 1: float(r.reward)} if S else {}
        self.lo, self.hi = -2, S - 1  # bisect: Q(lo) = 1 (virtual), Q(hi) = 0
        self.next = 0  # linear: next step to roll out
        self.done = S == 0
        self.evaluated: list[int] = []  # step indices rolled out (-1 = V)


def _binary(settings: CreditSettings) -> bool:
    return settings.estimator == "best_of_k"


def _wanted(st: _State, settings: CreditSettings, round_index: int) -> list[int]:
    """Step indices (-1 = V) of ``st``'s response to roll out in this round."""
    if st.done:
        return []
    S = st.r.num_steps
    if settings.schedule == "all":
        return list(range(-1, S - 1)) if round_index == 0 else []
    if settings.schedule == "linear":
        want = [-1] if round_index == 0 else []
        if st.next < S - 1:
            want.append(st.next)
        return want
    # bisect over indices -1 .. S-1 with Q(S-1) = reward
    if st.r.reward > 0:
        return []  # a response that succeeds has no first zero to search for
    if st.lo + 1 >= st.hi:
        return []
    return [(st.lo + st.hi) // 2]


def _q_from(result: PrefixResult, settings: CreditSettings) -> float:
    s_1SK = torch.tensor([[result.successes]], dtype=torch.float64)
    if _binary(settings):
        return float(best_of_k_from_rollouts(s_1SK)[0, 0])
    return float(mc_q_values(s_1SK)[0, 0])


def _update(st: _State, settings: CreditSettings, q_of: Mapping[int, float]) -> None:
    """Record this round's Q's and advance the response's schedule."""
    for i, q in q_of.items():
        st.known[i] = q
        st.evaluated.append(i)
    S = st.r.num_steps
    if settings.schedule == "all":
        st.done = True
    elif settings.schedule == "linear":
        if st.next in q_of:
            zero = q_of[st.next] <= 0.0
            st.next += 1
            if zero or st.next >= S - 1:
                st.done = True
        elif st.next >= S - 1:
            st.done = True
    else:
        for i, q in q_of.items():
            if q <= 0.0:
                st.hi = i
            else:
                st.lo = i
        if st.r.reward > 0 or st.lo + 1 >= st.hi:
            st.done = True


# ====================================================================== the computation


def estimate_credit(
    responses: Sequence[Response],
    rollout: RolloutFn | None,
    settings: CreditSettings,
    *,
    folder: str | Path | None = None,
    key: str = "",
    progress: bool = False,
    shards=None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Value every response's step prefixes with ``rollout``; returns ``(rows, summary)``.

    ``rollout`` is called with lists of at most ``settings.chunk_size`` unique prefixes per call (a
    shard). With ``folder``, every shard is written atomically under ``<folder>/round-XXX`` and a
    repeated call resumes (see the module docstring). Each row: ``problem_id``, ``sample_index``,
    ``reward``, ``step_ends``, ``num_steps``, ``v`` (or null), ``q`` (per step; null = not estimated),
    ``successes`` (successful rollouts per step, null = none run), ``advantages`` (null where a
    neighbour's Q is unknown), ``pit`` (-1 = none), ``pit_advantage``, ``no_pit_reason``,
    ``pit_continuations`` (successful rollouts from the prefix just before the pit), ``rollouts``
    (rollouts of this response's prefixes, shared ones included), ``k``, ``estimator``, ``schedule``.

    ``shards`` (a :class:`mathreason.executors.ShardRunner` whose workers' ``run(prefixes)`` is a
    rollout function, e.g. Ray actors each owning a sampler) computes a round's shards concurrently
    instead of ``rollout``; this process still writes each shard once, so the rows are the same.
    """
    from tqdm.auto import tqdm

    from mathreason.executors import LocalShards
    from mathreason.runs import ShardedRows, hash_json

    if (rollout is None) == (shards is None):
        raise ValueError("estimate_credit: pass exactly one of rollout and shards")
    runner = shards if shards is not None else LocalShards(lambda: _FnWorker(rollout))
    K = settings.rollouts
    states = [_State(r) for r in responses]
    cache: dict[str, PrefixResult] = {}
    # Totals count every rollout of the computation (shards replayed from disk included), so a resumed
    # computation reports what an uninterrupted one does; *_this_run count what this call generated.
    stats = {"rounds": 0, "unique_prefixes": 0, "rollouts_generated": 0, "rollout_tokens": 0,
             "rollouts_generated_this_run": 0, "rollout_tokens_this_run": 0}
    bar = tqdm(desc=f"advantages ({settings.schedule})", unit="prefix", disable=not progress)
    round_index = 0
    while True:
        wants = [(st, _wanted(st, settings, round_index)) for st in states]
        if not any(w for _, w in wants):
            break
        # Unique prefixes of this round not known from earlier rounds, in first-asked order.
        todo: dict[str, tuple[Response, int]] = {}
        for st, w in wants:
            for i in w:
                k = prefix_key(st.r.prompt_ids, st.r.prefix_ids(i))
                if k not in cache and k not in todo:
                    todo[k] = (st.r, i)
        keys = list(todo)
        chunks = [keys[j : j + settings.chunk_size] for j in range(0, len(keys), settings.chunk_size)]
        store = None
        done: set[int] = set()
        if folder is not None and chunks:
            store = ShardedRows(Path(folder) / f"round-{round_index:03d}")
            plan = hash_json([key, settings.__dict__, round_index, keys])
            done = store.open(plan, len(chunks), meta={"round": round_index, "prefixes": len(keys)})
        for ci in sorted(done):
            for row in store.read_shard(ci):
                res = cache[row["prefix"]] = PrefixResult.from_dict(row)
                stats["rollouts_generated"] += K
                stats["rollout_tokens"] += res.tokens
            bar.update(len(chunks[ci]))
        items = [(ci, [todo[k] for k in chunk]) for ci, chunk in enumerate(chunks) if ci not in done]
        for ci, results in runner.map(items, str(store.folder) if store is not None else None):
            chunk = chunks[ci]
            if len(results) != len(chunk):
                raise RuntimeError(f"rollout returned {len(results)} results for {len(chunk)} prefixes")
            for k, res in zip(chunk, results):
                if len(res.successes) != K:
                    raise RuntimeError(f"rollout returned {len(res.successes)} rollouts for a prefix, expected {K}")
                cache[k] = res
                stats["rollouts_generated"] += K
                stats["rollout_tokens"] += res.tokens
                stats["rollouts_generated_this_run"] += K
                stats["rollout_tokens_this_run"] += res.tokens
            if store is not None:
                store.write(ci, [{"prefix": k, **cache[k].to_dict()} for k in chunk])
            bar.update(len(chunk))
        stats["unique_prefixes"] += len(keys)
        for st, w in wants:
            if w:
                _update(st, settings, {i: _q_from(cache[prefix_key(st.r.prompt_ids, st.r.prefix_ids(i))], settings) for i in w})
        round_index += 1
    bar.close()
    stats["rounds"] = round_index
    rows = [_row(st, settings, cache) for st in states]
    return rows, _summary(rows, stats, settings)


class _FnWorker:
    """A rollout function as a shard worker."""

    def __init__(self, fn: RolloutFn) -> None:
        self.run = fn

    def close(self) -> None:
        pass


def _successes(cache: Mapping[str, PrefixResult], r: Response, i: int) -> int:
    return sum(cache[prefix_key(r.prompt_ids, r.prefix_ids(i))].successes)


def _row(st: _State, settings: CreditSettings, cache: Mapping[str, PrefixResult]) -> dict[str, Any]:
    r = st.r
    S = r.num_steps
    K = settings.rollouts
    q_list: list[float | None] = [st.known.get(i) for i in range(S)]
    v = st.known.get(-1)
    succ: list[int | None] = []
    for i in range(S):
        succ.append(_successes(cache, r, i) if i < S - 1 and i in st.evaluated else None)
    row: dict[str, Any] = {
        "problem_id": r.problem_id,
        "sample_index": r.sample_index,
        "reward": r.reward,
        "step_ends": list(r.step_ends),
        "num_steps": S,
        "v": v,
        "v_successes": _successes(cache, r, -1) if -1 in st.evaluated else None,
        "q": q_list,
        "successes": succ,
        "k": K,
        "estimator": settings.estimator,
        "schedule": settings.schedule,
        "rollouts": K * len(set(st.evaluated)),
    }
    if S == 0:
        row.update(advantages=[], pit=-1, pit_advantage=None, no_pit_reason="empty response", pit_continuations=[])
        return row
    # Advantages and the first pit through shared.advantages, on the known values (unknown = masked).
    known_BS = torch.tensor([[q is not None for q in q_list]])
    q_BS = torch.tensor([[q if q is not None else 0.0 for q in q_list]], dtype=torch.float64)
    v0_B = torch.tensor([v if v is not None else math.nan], dtype=torch.float64)
    full_mask_BS = torch.ones_like(known_BS)
    adv_BS = step_advantages(q_BS, v0_B, full_mask_BS)  # A_i = Q_i - Q_{i-1}, Q_{-1} = V
    advs: list[float | None] = []
    for i in range(S):
        prev_known = (v is not None) if i == 0 else (q_list[i - 1] is not None)
        a = float(adv_BS[0, i])
        advs.append(a if (q_list[i] is not None and prev_known and not math.isnan(a)) else None)
    pit = int(first_pit(q_BS, known_BS)[0])
    reason = None
    pit_adv = None
    if pit < 0:
        reason = "no step loses value"
    else:
        pit_adv = advs[pit]
        if pit_adv is None and settings.schedule == "bisect" and v is not None and v <= 0.0:
            # bisect stopped at V = 0: under its no-recovery assumption every Q is 0, no step loses value.
            reason = "advantage at the pit is not negative"
            pit = -1
        elif pit_adv is None:
            reason = "advantage at the pit unknown"
            pit = -1
        elif pit_adv >= 0:
            reason = "advantage at the pit is not negative"
            pit = -1
    row.update(advantages=advs, pit=pit, pit_advantage=pit_adv if pit >= 0 else None, no_pit_reason=reason)
    conts: list[list[int]] = []
    if pit >= 0:
        res = cache.get(prefix_key(r.prompt_ids, r.prefix_ids(pit - 1)))
        conts = [list(c) for c in res.continuations] if res is not None else []
    row["pit_continuations"] = conts
    return row


def _summary(rows: Sequence[Mapping[str, Any]], stats: Mapping[str, int], settings: CreditSettings) -> dict[str, Any]:
    neg = [r for r in rows if r["reward"] <= 0]
    with_pit = [r for r in neg if r["pit"] >= 0]
    reasons: dict[str, int] = {}
    for r in neg:
        if r["pit"] < 0:
            reasons[r["no_pit_reason"]] = reasons.get(r["no_pit_reason"], 0) + 1
    rel = [(r["pit"] + 1) / r["num_steps"] for r in with_pit]
    return {
        "responses": len(rows),
        "negatives": len(neg),
        "negatives_with_pit": len(with_pit),
        "negatives_without_pit": len(neg) - len(with_pit),
        "no_pit_reasons": reasons,
        "mean_steps": (sum(r["num_steps"] for r in rows) / len(rows)) if rows else 0.0,
        "mean_pit_position": (sum(rel) / len(rel)) if rel else None,
        "rollouts_per_response": (sum(r["rollouts"] for r in rows) / len(rows)) if rows else 0.0,
        "k": settings.rollouts,
        "estimator": settings.estimator,
        "schedule": settings.schedule,
        **stats,
    }
