"""Sampling stages: ``sample`` draws M solutions per D_syn question from a policy, ``grade`` grades them.

A truncated sample (``finish_reason == "length"``) is never graded correct (:func:`mathreason.evaluate.grade_rows`).
The stage keys include the resolved sampling backend and the grader's version, so changing either
re-samples or re-grades instead of reusing stale rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from mathreason.runs import ShardedRows, atomic_write_json, read_jsonl, write_jsonl_atomic
from mathreason.stages.base import Stage, StageError, require_file

__all__ = ["GradeStage", "SampleStage"]


class SampleStage(Stage):
    """Sample ``sample.n`` solutions per D_syn question from a policy (pi_sft by default)."""

    name = "sample"
    sections = ("seed", "data", "model", "sample")

    def check(self, ctx):
        ctx.dsyn()
        ctx.template()
        ctx.policy_path(ctx.cfg.sample.policy, for_check=True)

    def inputs(self, ctx):
        return {
            "policy": ctx.model_fingerprint(ctx.policy_path(ctx.cfg.sample.policy)),
            "dsyn": ctx.dsyn_fingerprint(),
            "template": ctx.template().fingerprint,
            "backend": ctx.backend_name(ctx.cfg.sample.backend),
        }

    def outputs(self, ctx):
        return ["samples.jsonl", "prompts.jsonl"]

    def execute(self, ctx, key):
        from mathreason.models import load_tokenizer
        from mathreason.sampling import SamplingParams, prompt_id, sample_to_store

        c = ctx.cfg.sample
        path = ctx.policy_path(c.policy)
        tok_path = ctx.policy_tokenizer(c.policy, path)
        tok = load_tokenizer(tok_path, trust_remote_code=ctx.cfg.model.trust_remote_code)
        prompts = ctx.encode_prompts(tok, ctx.dsyn())
        sdir = self.dir(ctx)
        write_jsonl_atomic(
            sdir / "prompts.jsonl",
            ({"problem_id": pid, "prompt_id": prompt_id(ids), "prompt": text, "prompt_ids": ids} for pid, text, ids in prompts),
        )
        params = SamplingParams(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, stop=ctx.stop(c.stop))
        from functools import partial

        from mathreason.executors import SampleWorker

        factory = ctx.sampler_factory(path, tok_path, c.backend)
        shards = ctx.shard_runner(partial(SampleWorker, factory, params, n=c.n, seed=ctx.cfg.seed, tag="sample"), c.backend)
        sampler = factory() if shards is None else None
        t0 = time.time()
        try:
            rows = sample_to_store(
                sampler,
                [(pid, ids) for pid, _, ids in prompts],
                n=c.n,
                params=params,
                seed=ctx.cfg.seed,
                tag="sample",
                store=ShardedRows(sdir / "shards"),
                key=key,
                chunk_size=c.chunk_size,
                progress=ctx.progress,
                desc="sample",
                shards=shards,
            )
        finally:
            (sampler if sampler is not None else shards).close()
        seconds = time.time() - t0
        write_jsonl_atomic(sdir / "samples.jsonl", rows)
        tokens = sum(len(r["token_ids"]) for r in rows)
        return {
            "backend": sampler.backend if sampler is not None else ctx.backend_name(c.backend),
            "questions": len(prompts),
            "rows": len(rows),
            "generated_tokens": tokens,
            "truncated": sum(r["finish_reason"] == "length" for r in rows),
            "sampling_seconds": round(seconds, 3),
        }


class GradeStage(Stage):
    """Grade every sample against its D_syn answer (positives and negatives)."""

    name = "grade"
    sections = ("data", "grade")

    def _samples(self, ctx) -> Path:
        return ctx.run.stage_dir("sample") / "samples.jsonl"

    def check(self, ctx):
        ctx.dsyn()
        require_file(ctx, self._samples(ctx), "sample")

    def inputs(self, ctx):
        from mathreason.grading import GRADER_VERSION

        return {"samples": ctx.run.fingerprint(self._samples(ctx)), "dsyn": ctx.dsyn_fingerprint(), "grader": GRADER_VERSION}

    def outputs(self, ctx):
        return ["graded.jsonl", "summary.json"]

    def execute(self, ctx, key):
        from tqdm.auto import tqdm

        from mathreason.evaluate import grade_rows, pass_at_k

        c = ctx.cfg.grade
        rows = read_jsonl(self._samples(ctx))
        gold = {p.id: p.answer for p in ctx.dsyn()}
        missing = sorted({r["problem_id"] for r in rows} - set(gold))
        if missing:
            raise StageError(f"{self._samples(ctx)}: samples of problems not in D_syn (e.g. {missing[0]!r}); re-run `mathreason sample`")
        sdir = self.dir(ctx)
        store = ShardedRows(sdir / "shards")
        chunks = [rows[i : i + c.chunk_size] for i in range(0, len(rows), c.chunk_size)]
        done = store.open(key, len(chunks))
        for i in tqdm([i for i in range(len(chunks)) if i not in done], desc="grade", unit="shard", disable=not ctx.progress):
            store.write(i, grade_rows(chunks[i], gold, ctx.cfg.data.dataset, workers=c.workers, timeout=c.timeout))
        graded = store.read()
        write_jsonl_atomic(sdir / "graded.jsonl", graded)
        per_q: dict[str, list[bool]] = {}
        for r in graded:
            per_q.setdefault(r["problem_id"], []).append(r["correct"])
        n = min((len(v) for v in per_q.values()), default=0)
        summary = {
            "rows": len(graded),
            "correct": sum(r["correct"] for r in graded),
            "accuracy": (sum(r["correct"] for r in graded) / len(graded)) if graded else 0.0,
            "questions": len(per_q),
            "questions_with_correct": sum(any(v) for v in per_q.values()),
            "questions_all_wrong": sum(not any(v) for v in per_q.values()),
            "timeouts": sum(r["reason"] == "timeout" for r in graded),
            "truncated": sum(r["finish_reason"] == "length" for r in graded),
            f"pass@{n}": (sum(pass_at_k(len(v), sum(v), n) for v in per_q.values()) / len(per_q)) if n else 0.0,
        }
        atomic_write_json(sdir / "summary.json", summary)
        return summary
