"""The ``eval`` stage: greedy pass@1 and sampled pass@k of each policy on each benchmark."""

from __future__ import annotations

from typing import Any

from mathreason.runs import atomic_write_json, hash_json
from mathreason.stages.base import FORMAT_VERSION, Stage, policy_tag

__all__ = ["EvalStage"]


class EvalStage(Stage):
    """Greedy pass@1 and sampled pass@k of each policy on each benchmark."""

    name = "eval"
    sections = ("seed", "data", "model", "eval")

    def check(self, ctx):
        ctx.template()
        for b in ctx.cfg.eval.benchmarks:
            ctx.benchmark(b)
        for p in ctx.cfg.eval.policies:
            ctx.policy_path(p, for_check=True)

    def inputs(self, ctx):
        from mathreason.grading import GRADER_VERSION

        out = {"grader": GRADER_VERSION, "backend": ctx.backend_name(ctx.cfg.eval.backend), "template": ctx.template().fingerprint}
        for p in ctx.cfg.eval.policies:
            out[f"policy:{p}"] = ctx.model_fingerprint(ctx.policy_path(p))
        for b in ctx.cfg.eval.benchmarks:
            out[f"benchmark:{b}"] = "problems:" + hash_json([q.to_dict() for q in ctx.benchmark(b)])
        return out

    def outputs(self, ctx):
        return ["summary.json"]

    def execute(self, ctx, key):
        from mathreason.evaluate import evaluate_benchmark
        from mathreason.models import load_tokenizer

        c = ctx.cfg.eval
        sdir = self.dir(ctx)
        inputs = self.inputs(ctx)
        results: dict[str, dict[str, Any]] = {}
        tmpl = ctx.template()
        for pol in c.policies:
            path = ctx.policy_path(pol)
            tok_path = ctx.policy_tokenizer(pol, path)
            tok = load_tokenizer(tok_path, trust_remote_code=ctx.cfg.model.trust_remote_code)
            sampler = ctx.make_sampler(path, tok_path, c.backend)
            tag = policy_tag(pol)
            results[tag] = {}
            try:
                for bench in c.benchmarks:
                    probs = ctx.benchmark(bench)
                    prompts = ctx.encode_prompts(tok, probs)
                    sub_key = hash_json(
                        [
                            inputs[f"policy:{pol}"],
                            inputs[f"benchmark:{bench}"],
                            tmpl.fingerprint,
                            ctx.cfg.seed,
                            FORMAT_VERSION,
                            inputs["grader"],
                            inputs["backend"],
                        ]
                    )
                    summary = evaluate_benchmark(
                        sampler,
                        [(pid, ids) for pid, _, ids in prompts],
                        {p.id: p.answer for p in probs},
                        dataset=probs[0].dataset,
                        out_dir=sdir / tag / (bench if bench in ("gsm8k", "math", "math500", "tiny", "arith") else policy_tag(bench)),
                        key=sub_key,
                        seed=ctx.cfg.seed,
                        greedy=c.greedy,
                        num_samples=c.num_samples,
                        ks=c.pass_k,
                        temperature=c.temperature,
                        top_p=c.top_p,
                        max_tokens=c.max_tokens,
                        stop=ctx.stop(c.stop),
                        chunk_size=c.chunk_size,
                        grade_workers=c.grade_workers,
                        grade_timeout=c.grade_timeout,
                        progress=ctx.progress,
                        label=f"eval {tag}/{bench}",
                    )
                    summary = {"policy": pol, "benchmark": bench, "backend": sampler.backend, **summary}
                    results[tag][bench] = summary
                    flat = {"policy": pol, "benchmark": bench}
                    if "greedy" in summary:
                        flat.update(greedy_accuracy=summary["greedy"]["accuracy"], greedy_stderr=summary["greedy"]["stderr"])
                    if "sampled" in summary:
                        for k, v in summary["sampled"]["pass@k"].items():
                            flat[f"pass@{k}"] = v["value"]
                            flat[f"pass@{k}_stderr"] = v["stderr"]
                    ctx.run.log_metrics("eval", event="benchmark", **flat)
            finally:
                sampler.close()
        atomic_write_json(sdir / "summary.json", results)
        return {"policies": len(c.policies), "benchmarks": len(c.benchmarks)}
