"""The ``advantages`` stage: per-step credit of sampled responses by rollouts from their step prefixes.

For every selected response of ``grade/graded.jsonl`` (default: the negatives that ended, of the first
M samples per question) it splits the response into steps on its own token ids, estimates the Q-value
of each step prefix from K rollouts of the rollout policy (default best-of-K with K = 5 from pi_sft),
and computes advantages and the first pit (:mod:`mathreason.credit`, on :mod:`shared.advantages`).
Writes ``advantages.jsonl`` (one row per valued response), ``summary.json`` and, while running,
``rounds/round-XXX/shard-*.jsonl`` (every rollout result, atomic, resumable).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from mathreason.runs import atomic_write_json, read_jsonl, write_jsonl_atomic
from mathreason.stages.base import Context, Stage, StageError, require_file

__all__ = ["AdvantagesStage", "RolloutWorker", "build_responses", "completion_decoder", "make_rollout_fn", "select_rows"]


def completion_decoder(tok):
    """``ids -> text`` as the samplers decode completions (special tokens dropped)."""

    def decode(ids) -> str:
        return tok.decode(list(ids), skip_special_tokens=True)

    return decode


def select_rows(graded: list[dict], *, select: str, samples_per_question: int | None, include_truncated: bool) -> list[dict]:
    """The graded samples to value: negatives (or all), first M per question, ended ones unless truncated are allowed."""
    out = []
    for r in graded:
        if samples_per_question is not None and r["sample_index"] >= samples_per_question:
            continue
        if select == "negatives" and r["correct"]:
            continue
        if r["finish_reason"] != "stop" and not include_truncated:
            continue
        out.append(r)
    return out


def build_responses(rows: list[dict], prompts: dict[str, dict], decode, *, splitter: str, dataset: str, max_steps, min_chars):
    """:class:`mathreason.credit.Response` objects: steps split on the decoded sample, mapped onto its own ids."""
    from mathreason.credit import Response, step_token_ends
    from mathreason.steps import split_steps

    out = []
    for r in rows:
        ids = list(r["token_ids"])
        text = decode(ids)  # == r["text"] for every sampler (the samplers' invariant); the ids are the truth
        steps = split_steps(text, splitter, dataset=dataset, max_steps=max_steps, min_chars=min_chars) if text else []
        ends = step_token_ends(ids, steps, decode)
        out.append(
            Response(
                problem_id=r["problem_id"],
                sample_index=int(r["sample_index"]),
                prompt_ids=list(prompts[r["problem_id"]]["prompt_ids"]),
                token_ids=ids,
                step_ends=ends,
                reward=1.0 if r["correct"] else 0.0,
            )
        )
    return out


def make_rollout_fn(sampler, decode, *, gold_by_id, dataset, params, settings, keep_continuations=1, grade_workers=None, grade_timeout=5.0):
    """A :data:`mathreason.credit.RolloutFn` that samples K rollouts per prefix and grades each as a whole response.

    Request of a prefix: the question's ids + the prefix ids, seeds ``row_seed(seed, "rollout", prefix id,
    j)``, ``max_tokens`` = budget - prefix length. A rollout is graded on prefix text + rollout text; a
    truncated rollout is a failure (:func:`mathreason.evaluate.grade_rows`).
    """
    from mathreason.credit import PrefixResult, prefix_key
    from mathreason.evaluate import grade_rows
    from mathreason.sampling import Request, row_seed

    K = settings.rollouts

    def rollout(prefixes):
        reqs, texts = [], []
        for r, i in prefixes:
            pre = r.prefix_ids(i)
            key = prefix_key(r.prompt_ids, pre)
            seeds = [row_seed(settings.seed, "rollout", key, j) for j in range(K)]
            reqs.append(Request(list(r.prompt_ids) + pre, seeds, max_tokens=max(1, settings.budget - len(pre))))
            texts.append(decode(pre))
        outs = sampler.generate(reqs, params)
        rows, prefix_texts = [], []
        for (r, _), comps, ptxt in zip(prefixes, outs, texts):
            for c in comps:
                rows.append({"problem_id": r.problem_id, "text": c.text, "finish_reason": c.finish_reason})
                prefix_texts.append(ptxt)
        graded = grade_rows(rows, gold_by_id, dataset, workers=grade_workers, timeout=grade_timeout, prefix_by_row=prefix_texts)
        results = []
        for n, comps in enumerate(outs):
            g = graded[n * K : (n + 1) * K]
            succ = [bool(x["correct"]) for x in g]
            conts = [list(c.token_ids) for c, ok in zip(comps, succ) if ok][:keep_continuations]
            results.append(
                PrefixResult(
                    successes=succ,
                    finish_reasons=[c.finish_reason for c in comps],
                    tokens=sum(len(c.token_ids) for c in comps),
                    continuations=conts,
                )
            )
        return results

    return rollout


class RolloutWorker:
    """A rollout function (:func:`make_rollout_fn`) with its own sampler and tokenizer, built on first use:
    the worker of one process, or of one Ray actor (:class:`mathreason.executors.ActorShards`)."""

    def __init__(self, sampler_factory, tokenizer_path: str, *, trust_remote_code: bool = False, **rollout_kwargs) -> None:
        self._factory = sampler_factory
        self._tok = (tokenizer_path, trust_remote_code)
        self._kwargs = rollout_kwargs
        self._sampler = None
        self._fn = None

    def run(self, prefixes):
        if self._fn is None:
            from mathreason.models import load_tokenizer

            decode = completion_decoder(load_tokenizer(self._tok[0], trust_remote_code=self._tok[1]))
            self._sampler = self._factory()
            self._fn = make_rollout_fn(self._sampler, decode, **self._kwargs)
        return self._fn(prefixes)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
            self._fn = None


class AdvantagesStage(Stage):
    """Q of step prefixes by rollouts, advantages (Eq. 3) and first pits of the sampled responses."""

    name = "advantages"
    sections = ("seed", "data", "model", "sample", "advantages")

    def _graded(self, ctx) -> Path:
        return ctx.run.stage_dir("grade") / "graded.jsonl"

    def _prompts(self, ctx) -> Path:
        return ctx.run.stage_dir("sample") / "prompts.jsonl"

    def check(self, ctx: Context) -> None:
        ctx.dsyn()
        ctx.template()
        require_file(ctx, self._graded(ctx), "grade")
        require_file(ctx, self._prompts(ctx), "sample")
        ctx.policy_path(ctx.cfg.advantages.policy, for_check=True)
        from mathreason.steps import get_splitter

        try:
            get_splitter(ctx.cfg.advantages.splitter)
        except KeyError as e:
            from mathreason.config import ConfigError

            raise ConfigError(f"field advantages.splitter: {e.args[0]}") from None

    def inputs(self, ctx: Context) -> dict[str, str]:
        from mathreason.grading import GRADER_VERSION

        a = ctx.cfg.advantages
        return {
            "graded": ctx.run.fingerprint(self._graded(ctx)),
            "prompts": ctx.run.fingerprint(self._prompts(ctx)),
            "policy": ctx.model_fingerprint(ctx.policy_path(a.policy)),
            "dsyn": ctx.dsyn_fingerprint(),
            "template": ctx.template().fingerprint,
            "grader": GRADER_VERSION,
            "backend": ctx.backend_name(a.backend),
        }

    def outputs(self, ctx: Context) -> list[str]:
        return ["advantages.jsonl", "summary.json"]

    def execute(self, ctx: Context, key: str) -> dict[str, Any]:
        from mathreason.credit import CreditSettings, estimate_credit
        from mathreason.models import load_tokenizer
        from mathreason.sampling import SamplingParams

        a = ctx.cfg.advantages
        graded = read_jsonl(self._graded(ctx))
        prompts = {r["problem_id"]: r for r in read_jsonl(self._prompts(ctx))}
        rows = select_rows(graded, select=a.select, samples_per_question=a.samples_per_question, include_truncated=a.include_truncated)
        path = ctx.policy_path(a.policy)
        tok_path = ctx.policy_tokenizer(a.policy, path)
        tok = load_tokenizer(tok_path, trust_remote_code=ctx.cfg.model.trust_remote_code)
        decode = completion_decoder(tok)
        responses = build_responses(
            rows, prompts, decode, splitter=a.splitter, dataset=ctx.cfg.data.dataset, max_steps=a.max_steps, min_chars=a.min_chars
        )
        budget = a.max_tokens or ctx.cfg.sample.max_tokens
        settings = CreditSettings(
            rollouts=a.rollouts, estimator=a.estimator, schedule=a.schedule, seed=ctx.cfg.seed, budget=budget, chunk_size=a.chunk_size
        )
        params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_tokens=budget, stop=ctx.stop(a.stop))
        sdir = self.dir(ctx)
        gold = {p.id: p.answer for p in ctx.dsyn()}
        missing = sorted({r.problem_id for r in responses} - set(gold))
        if missing:
            raise StageError(f"{self._graded(ctx)}: rows of problems not in D_syn (e.g. {missing[0]!r}); re-run sample and grade")
        worker = functools.partial(
            RolloutWorker,
            ctx.sampler_factory(path, tok_path, a.backend),
            tok_path,
            trust_remote_code=ctx.cfg.model.trust_remote_code,
            gold_by_id=gold,
            dataset=ctx.cfg.data.dataset,
            params=params,
            settings=settings,
            keep_continuations=a.keep_continuations,
            grade_workers=ctx.cfg.grade.workers,
            grade_timeout=ctx.cfg.grade.timeout,
        )
        shards = ctx.shard_runner(worker, a.backend) if responses else None  # Ray actors with actors.count > 0
        local = worker() if shards is None else None  # builds its sampler on first use: none without responses
        try:
            out, summary = estimate_credit(
                responses, local.run if local is not None else None, settings, folder=sdir / "rounds", key=key, progress=ctx.progress, shards=shards
            )
        finally:
            (local if local is not None else shards).close()
        write_jsonl_atomic(sdir / "advantages.jsonl", out)
        summary = {"backend": ctx.backend_name(a.backend) if responses else None, "selected": len(rows), **summary}
        atomic_write_json(sdir / "summary.json", summary)
        ctx.run.log_metrics("advantages", event="summary", **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        return {k: v for k, v in summary.items() if not isinstance(v, dict)}
