"""Fine-tuning stages: SFT on D_syn (pi_sft), RFT on pi_sft's own positives, and advantage-filtered RFT.

All three fine-tune a causal LM with :func:`mathreason.training.train_causal_lm` (TRL's SFTTrainer,
loss on the completion only). Their targets are written in the dataset's one answer format
(:data:`mathreason.prompts.ANSWER_FORMATS`): a D_syn solution that does not state its final answer that
way gets a final line appended, so the SFT policy learns exactly the format the prompt asks for and the
grader reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mathreason.runs import read_jsonl, write_jsonl_atomic
from mathreason.stages.base import Context, Stage, StageError, require_file

__all__ = ["RFTAdvStage", "RFTStage", "SFTStage", "dsyn_examples", "select_by_advantage"]

logger = logging.getLogger(__name__)


def dsyn_examples(ctx: Context, tok) -> tuple[list[dict], list[dict]]:
    """SFT examples of the D_syn problems (solutions in the dataset's answer format) and their data rows."""
    from mathreason.prompts import answer_format
    from mathreason.training import encode_completion, make_example

    fmt = answer_format(ctx.cfg.data.dataset)
    examples, rows = [], []
    for p, (_, text, ids) in zip(ctx.dsyn(), ctx.encode_prompts(tok, ctx.dsyn())):
        solution = fmt.ensure(p.solution, p.answer)
        completion = encode_completion(tok, text, ids, solution)
        examples.append(make_example(ids, completion))
        rows.append({"problem_id": p.id, "sample_index": -1, "text": solution, "completion_ids": completion})
    return examples, rows


class SFTStage(Stage):
    """Fine-tune the base model on D_syn (prompt -> reference solution), giving pi_sft."""

    name = "sft"
    sections = ("seed", "data", "model", "sft")
    training = True

    def check(self, ctx):
        ctx.dsyn()
        ctx.template()
        ctx.base_model()

    def inputs(self, ctx):
        return {"base_model": ctx.model_fingerprint(ctx.base_model()), "dsyn": ctx.dsyn_fingerprint()}

    def outputs(self, ctx):
        return ["model"]

    def execute(self, ctx, key):
        from mathreason.models import load_tokenizer
        from mathreason.training import train_causal_lm

        tok = load_tokenizer(ctx.base_tokenizer(), trust_remote_code=ctx.cfg.model.trust_remote_code)
        examples, _ = dsyn_examples(ctx, tok)
        return train_causal_lm(
            examples,
            init_model=ctx.base_model(),
            tokenizer_path=ctx.base_tokenizer(),
            model_cfg=ctx.cfg.model,
            cfg=ctx.cfg.sft,
            out_dir=self.dir(ctx),
            key=key,
            seed=ctx.cfg.seed,
            log=lambda **kw: ctx.run.log_metrics("sft", event="train", **kw),
        )


class RFTStage(Stage):
    """Rejection fine-tuning: the base model fine-tuned on pi_sft's deduplicated correct samples."""

    name = "rft"
    sections = ("seed", "data", "model", "rft")
    training = True

    def _graded(self, ctx) -> Path:
        return ctx.run.stage_dir("grade") / "graded.jsonl"

    def _prompts(self, ctx) -> Path:
        return ctx.run.stage_dir("sample") / "prompts.jsonl"

    def _init(self, ctx, for_check: bool = False) -> str:
        return ctx.base_model() if ctx.cfg.rft.init == "base" else ctx.policy_path("sft", for_check=for_check)

    def check(self, ctx):
        ctx.dsyn()
        require_file(ctx, self._graded(ctx), "grade")
        require_file(ctx, self._prompts(ctx), "sample")
        self._init(ctx, for_check=True)

    def inputs(self, ctx):
        return {
            "graded": ctx.run.fingerprint(self._graded(ctx)),
            "prompts": ctx.run.fingerprint(self._prompts(ctx)),
            "init_model": ctx.model_fingerprint(self._init(ctx)),
            "dsyn": ctx.dsyn_fingerprint(),
        }

    def outputs(self, ctx):
        return ["data.jsonl", "model"]

    def execute(self, ctx, key):
        from mathreason.models import load_tokenizer
        from mathreason.rft import select_positives
        from mathreason.training import encode_completion, make_example, train_causal_lm

        c = ctx.cfg.rft
        graded = read_jsonl(self._graded(ctx))
        kept, counts = select_positives(
            graded,
            dataset=ctx.cfg.data.dataset,
            samples_per_question=c.samples_per_question,
            dedup=c.dedup,
            max_per_question=c.max_per_question,
        )
        if not kept and not c.include_dsyn:
            raise StageError(
                f"rft: none of the {len(graded)} graded samples is a usable positive ({counts}); nothing to train on "
                "(train pi_sft longer, sample more, or set rft.include_dsyn: true)"
            )
        prompts = {r["problem_id"]: r for r in read_jsonl(self._prompts(ctx))}
        tok_path = ctx.base_tokenizer() if c.init == "base" else self._init(ctx)
        tok = load_tokenizer(tok_path, trust_remote_code=ctx.cfg.model.trust_remote_code)
        eos_ids = {tok.eos_token_id}
        examples, data_rows = [], []
        for r in kept:
            p = prompts[r["problem_id"]]
            ids = r["token_ids"]
            if ids and ids[-1] in eos_ids:
                completion = list(ids)  # exactly what pi_sft generated, EOS included
            elif r["finish_reason"] == "stop" and ids:
                completion = list(ids) + [tok.eos_token_id]  # ended by a stop string: its exact ids (text == decode(ids)), then EOS
            else:
                completion = encode_completion(tok, p["prompt"], p["prompt_ids"], r["text"])
            examples.append(make_example(p["prompt_ids"], completion))
            data_rows.append(
                {"problem_id": r["problem_id"], "sample_index": r["sample_index"], "text": r["text"], "completion_ids": completion}
            )
        if c.include_dsyn:
            more_examples, more_rows = dsyn_examples(ctx, tok)
            examples.extend(more_examples)
            data_rows.extend(more_rows)
        sdir = self.dir(ctx)
        write_jsonl_atomic(sdir / "data.jsonl", data_rows)
        ctx.run.log_metrics("rft", event="data", **counts)
        summary = train_causal_lm(
            examples,
            init_model=self._init(ctx),
            tokenizer_path=tok_path,
            model_cfg=ctx.cfg.model,
            cfg=c.train,
            out_dir=sdir,
            key=key,
            seed=ctx.cfg.seed,
            log=lambda **kw: ctx.run.log_metrics("rft", event="train", **kw),
        )
        return {**{f"data_{k}": v for k, v in counts.items()}, **summary}


def select_by_advantage(
    rows: list[dict], *, responses: str, drop_quantile: float, max_per_question: int | None, seed: int
) -> tuple[list[dict], dict]:
    """Advantage-filtered RFT data: drop every response whose minimum step advantage ranks in the bottom
    ``drop_quantile`` of all considered responses.

    Responses are ranked by their minimum known step advantage; ties are broken by a seeded random order,
    so exactly ``floor(drop_quantile * n)`` responses are dropped. Responses with no known advantage are
    not considered. Returns ``(kept rows, counts)``.
    """
    import numpy as np

    from mathreason.sampling import row_seed

    cand = []
    for r in rows:
        if responses == "positives" and r["reward"] <= 0 or responses == "negatives" and r["reward"] > 0:
            continue
        known = [a for a in r["advantages"] if a is not None]
        if known:
            cand.append((min(known), r))
    rng = np.random.default_rng(row_seed(seed, "rft_adv") % (2**63))
    tiebreak = rng.permutation(len(cand))
    order = sorted(range(len(cand)), key=lambda i: (cand[i][0], tiebreak[i]))
    n_drop = int(np.floor(drop_quantile * len(cand)))
    keep_idx = sorted(order[n_drop:])
    kept, per_q = [], {}
    capped = 0
    for i in keep_idx:
        r = cand[i][1]
        n = per_q.get(r["problem_id"], 0)
        if max_per_question is not None and n >= max_per_question:
            capped += 1
            continue
        per_q[r["problem_id"]] = n + 1
        kept.append(r)
    threshold = cand[order[n_drop - 1]][0] if n_drop > 0 else None
    counts = {
        "considered": len(cand),
        "dropped": n_drop,
        "capped": capped,
        "kept": len(kept),
        "kept_positives": sum(r["reward"] > 0 for r in kept),
        "kept_negatives": sum(r["reward"] <= 0 for r in kept),
        "highest_dropped_min_advantage": threshold,
    }
    return kept, counts


class RFTAdvStage(Stage):
    """Advantage-filtered RFT (the paper's Fig. 11): clone pi_sft's responses whose steps all have high advantage."""

    name = "rft_adv"
    sections = ("seed", "data", "model", "rft_adv")
    training = True

    def _advantages(self, ctx):
        return ctx.run.stage_dir("advantages") / "advantages.jsonl"

    def _graded(self, ctx):
        return ctx.run.stage_dir("grade") / "graded.jsonl"

    def _prompts(self, ctx):
        return ctx.run.stage_dir("sample") / "prompts.jsonl"

    def _init(self, ctx, for_check: bool = False) -> str:
        return ctx.base_model() if ctx.cfg.rft_adv.init == "base" else ctx.policy_path("sft", for_check=for_check)

    def check(self, ctx):
        ctx.dsyn()
        if ctx.cfg.advantages.select != "all" and ctx.cfg.rft_adv.responses != "negatives":
            from mathreason.config import ConfigError

            raise ConfigError("field advantages.select: rft_adv filters positives too; set advantages.select: all (and schedule: all)")
        require_file(ctx, self._advantages(ctx), "advantages")
        require_file(ctx, self._graded(ctx), "grade")
        require_file(ctx, self._prompts(ctx), "sample")
        self._init(ctx, for_check=True)

    def inputs(self, ctx):
        return {
            "advantages": ctx.run.fingerprint(self._advantages(ctx)),
            "graded": ctx.run.fingerprint(self._graded(ctx)),
            "prompts": ctx.run.fingerprint(self._prompts(ctx)),
            "init_model": ctx.model_fingerprint(self._init(ctx)),
        }

    def outputs(self, ctx):
        return ["data.jsonl", "model"]

    def execute(self, ctx, key):
        from mathreason.models import load_tokenizer
        from mathreason.training import make_example, train_causal_lm

        c = ctx.cfg.rft_adv
        kept, counts = select_by_advantage(
            read_jsonl(self._advantages(ctx)),
            responses=c.responses,
            drop_quantile=c.drop_quantile,
            max_per_question=c.max_per_question,
            seed=ctx.cfg.seed,
        )
        if not kept:
            raise StageError(f"rft_adv: no response passes the advantage filter ({counts})")
        samples = {(r["problem_id"], int(r["sample_index"])): r for r in read_jsonl(self._graded(ctx))}
        prompts = {r["problem_id"]: r for r in read_jsonl(self._prompts(ctx))}
        tok_path = ctx.base_tokenizer() if c.init == "base" else self._init(ctx)
        tok = load_tokenizer(tok_path, trust_remote_code=ctx.cfg.model.trust_remote_code)
        examples, data_rows = [], []
        for a in kept:
            s = samples[(a["problem_id"], int(a["sample_index"]))]
            ids = list(s["token_ids"])
            if s["finish_reason"] == "stop" and ids and ids[-1] != tok.eos_token_id:
                ids.append(tok.eos_token_id)
            examples.append(make_example(prompts[a["problem_id"]]["prompt_ids"], ids))
            min_adv = min(x for x in a["advantages"] if x is not None)
            data_rows.append({"problem_id": a["problem_id"], "sample_index": a["sample_index"], "reward": a["reward"], "min_advantage": min_adv, "completion_ids": ids})
        sdir = self.dir(ctx)
        write_jsonl_atomic(sdir / "data.jsonl", data_rows)
        ctx.run.log_metrics("rft_adv", event="data", **{k: v for k, v in counts.items() if v is not None})
        summary = train_causal_lm(
            examples,
            init_model=self._init(ctx),
            tokenizer_path=tok_path,
            model_cfg=ctx.cfg.model,
            cfg=c.train,
            out_dir=sdir,
            key=key,
            seed=ctx.cfg.seed,
            log=lambda **kw: ctx.run.log_metrics("rft_adv", event="train", **kw),
        )
        return {**{f"data_{k}": v for k, v in counts.items()}, **summary}
