"""Evaluation metrics: greedy pass@1, sampled pass@k (unbiased estimator), standard errors.

pass@k (Chen et al. 2021, Eq. 1): with ``n`` samples of which ``c`` are correct,
``pass@k = 1 - C(n - c, k) / C(n, k)``, the probability that at least one of ``k`` samples drawn
without replacement from the ``n`` is correct; averaged over problems it is an unbiased estimate of
the pass@k of the policy. It is computed as ``1 - prod_{i = n-c+1}^{n} (1 - k / i)`` for numerical
stability.

Standard error of a benchmark score: the sample standard deviation (``ddof=1``) of the per-problem
values divided by ``sqrt(number of problems)``; for greedy accuracy (values 0/1) this is
``sqrt(p (1 - p) / (N - 1))``. It measures the spread over problems only (the benchmark as a sample of
problems), not the randomness of sampling within a problem.

The ``eval`` stage (:mod:`mathreason.stages`) writes, per policy and benchmark, one jsonl row per
sample (problem id, sample index, text, extracted answer, verdict, finish reason, seed) and a summary
made by :func:`summarise`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["evaluate_benchmark", "grade_rows", "mean_and_stderr", "pass_at_k", "summarise"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al. 2021)."""
    if not (0 <= c <= n) or n < 1:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and n >= 1, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1 over sqrt(N)); stderr is NaN for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def summarise(
    greedy_rows: Iterable[Mapping[str, Any]] | None,
    sampled_rows: Iterable[Mapping[str, Any]] | None,
    ks: Sequence[int],
) -> dict[str, Any]:
    """Benchmark summary from per-sample rows (``problem_id``, ``correct``, ``finish_reason``).

    Returns ``{"greedy": {"accuracy", "stderr", "problems", "truncated"}, "sampled": {"samples_per_problem",
    "accuracy", "stderr", "pass@k": {k: {"value", "stderr"}}}}`` for the parts that were run.
    """
    out: dict[str, Any] = {}
    if greedy_rows is not None:
        rows = list(greedy_rows)
        vals = [float(bool(r["correct"])) for r in rows]
        m, se = mean_and_stderr(vals)
        out["greedy"] = {
            "accuracy": m,
            "stderr": se,
            "problems": len(rows),
            "truncated": sum(r["finish_reason"] == "length" for r in rows),
        }
    if sampled_rows is not None:
        per_q: dict[str, list[bool]] = defaultdict(list)
        for r in sampled_rows:
            per_q[r["problem_id"]].append(bool(r["correct"]))
        if per_q:
            ns = {len(v) for v in per_q.values()}
            if len(ns) != 1:
                raise ValueError(f"summarise: problems have different sample counts {sorted(ns)}")
            n = ns.pop()
            acc_m, acc_se = mean_and_stderr([sum(v) / n for v in per_q.values()])
            pk = {}
            for k in ks:
                m, se = mean_and_stderr([pass_at_k(n, sum(v), k) for v in per_q.values()])
                pk[str(k)] = {"value": m, "stderr": se}
            out["sampled"] = {
                "problems": len(per_q),
                "samples_per_problem": n,
                "accuracy": acc_m,
                "stderr": acc_se,
                "pass@k": pk,
            }
    return out


# ---------------------------------------------------------------- grading rows and running a benchmark


def grade_rows(
    rows: list[dict],
    gold_by_id: Mapping[str, str],
    dataset: str,
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    prefix_by_row: Sequence[str] | None = None,
) -> list[dict]:
    """Add ``gold``, ``extracted``, ``correct`` and ``reason`` to sample rows (the grader never raises).

    A row whose ``finish_reason`` is ``length`` (cut by ``max_tokens``, it never finished) is never
    correct, whatever its text contains: ``correct`` is False and ``reason`` is ``truncated`` (the
    answer that would have been extracted is still reported). ``prefix_by_row`` (one string per row)
    is prepended to each row's text before grading: a rollout is graded as the whole response, the
    step prefix it continued plus its own text.
    """
    from mathreason.grading import grade_many

    golds = [gold_by_id[r["problem_id"]] for r in rows]
    texts = [r["text"] for r in rows] if prefix_by_row is None else [p + r["text"] for p, r in zip(prefix_by_row, rows, strict=True)]
    verdicts = grade_many(texts, golds, dataset, workers=workers, timeout=timeout)
    out = []
    for r, g, v in zip(rows, golds, verdicts):
        truncated = r.get("finish_reason") == "length"
        out.append(
            {
                **r,
                "gold": g,
                "extracted": v.extracted,
                "correct": bool(v.correct) and not truncated,
                "reason": "truncated" if truncated else v.reason,
            }
        )
    return out


def evaluate_benchmark(
    sampler,
    items: Sequence[tuple[str, Sequence[int]]],
    gold_by_id: Mapping[str, str],
    *,
    dataset: str,
    out_dir,
    key: str,
    seed: int,
    greedy: bool,
    num_samples: int,
    ks: Sequence[int],
    temperature: float,
    top_p: float,
    max_tokens: int,
    stop: Sequence[str],
    chunk_size: int,
    grade_workers: int | None,
    grade_timeout: float,
    progress: bool = True,
    label: str = "eval",
) -> dict[str, Any]:
    """Greedy and/or sampled solutions for every item, graded, written to ``out_dir``; returns the summary.

    Writes ``greedy.jsonl`` and/or ``sampled.jsonl`` (one row per sample: problem id, sample index,
    prompt id, text, token ids, finish reason, seed, gold, extracted answer, verdict) and
    ``summary.json``. Both loops write shards under ``out_dir`` and resume after a kill.
    """
    from pathlib import Path

    from mathreason.runs import ShardedRows, atomic_write_json, hash_json, write_jsonl_atomic
    from mathreason.sampling import SamplingParams, sample_to_store

    out_dir = Path(out_dir)

    def transform(rows: list[dict]) -> list[dict]:
        return grade_rows(rows, gold_by_id, dataset, workers=grade_workers, timeout=grade_timeout)

    greedy_rows = sampled_rows = None
    if greedy:
        params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens, stop=tuple(stop))
        greedy_rows = sample_to_store(
            sampler, items, n=1, params=params, seed=seed, tag="eval-greedy",
            store=ShardedRows(out_dir / "greedy.shards"), key=hash_json([key, "greedy", params.__dict__]),
            chunk_size=chunk_size, transform=transform, progress=progress, desc=f"{label} greedy",
        )
        write_jsonl_atomic(out_dir / "greedy.jsonl", greedy_rows)
    if num_samples > 0:
        params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop))
        sampled_rows = sample_to_store(
            sampler, items, n=num_samples, params=params, seed=seed, tag="eval-sampled",
            store=ShardedRows(out_dir / "sampled.shards"), key=hash_json([key, "sampled", num_samples, params.__dict__]),
            chunk_size=chunk_size, transform=transform, progress=progress, desc=f"{label} sampled",
        )
        write_jsonl_atomic(out_dir / "sampled.jsonl", sampled_rows)
    summary = summarise(greedy_rows, sampled_rows, ks if num_samples > 0 else ())
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
