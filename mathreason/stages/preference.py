"""Preference stages: ``pairs`` builds the pair files, ``pref`` trains one preference method.

``pairs`` writes ``pairs/<kind>.jsonl`` for every kind in ``pairs.kinds`` (:mod:`mathreason.pairdata`) and
``pairs/summary.json``. ``pref`` trains ``pref.objective`` on ``pairs/<pref.pairs>.jsonl`` (or, for
``awr``, on ``advantages/advantages.jsonl``) from ``pref.init`` with that same model as the reference
(:mod:`mathreason.preference`), into ``pref/<pref.name>/model``; a run folder can hold one ``pref`` run
per name (per-step DPO and each baseline side by side), each its own stage record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mathreason.runs import atomic_write_json, hash_json, read_jsonl, write_jsonl_atomic
from mathreason.stages.base import Context, Stage, StageError, require_file

logger = logging.getLogger(__name__)

__all__ = ["PairsStage", "PrefStage"]


def _first_pit(kinds) -> bool:
    return any(k.startswith("first_pit") for k in kinds)


class PairsStage(Stage):
    """First-pit (both constructions), random and max-edit-distance preference pairs, token ids throughout."""

    name = "pairs"
    sections = ("seed", "data", "sample", "advantages", "pairs")

    def _graded(self, ctx) -> Path:
        return ctx.run.stage_dir("grade") / "graded.jsonl"

    def _prompts(self, ctx) -> Path:
        return ctx.run.stage_dir("sample") / "prompts.jsonl"

    def _advantages(self, ctx) -> Path:
        return ctx.run.stage_dir("advantages") / "advantages.jsonl"

    def check(self, ctx: Context) -> None:
        ctx.dsyn()
        ctx.template()
        require_file(ctx, self._graded(ctx), "grade")
        require_file(ctx, self._prompts(ctx), "sample")
        ctx.policy_path(ctx.cfg.sample.policy, for_check=True)
        if _first_pit(ctx.cfg.pairs.kinds):
            require_file(ctx, self._advantages(ctx), "advantages")

    def inputs(self, ctx: Context) -> dict[str, str]:
        out = {
            "graded": ctx.run.fingerprint(self._graded(ctx)),
            "prompts": ctx.run.fingerprint(self._prompts(ctx)),
            "tokenizer": ctx.model_fingerprint(ctx.policy_path(ctx.cfg.sample.policy)),
            "dsyn": ctx.dsyn_fingerprint(),
        }
        if _first_pit(ctx.cfg.pairs.kinds):
            out["advantages"] = ctx.run.fingerprint(self._advantages(ctx))
        return out

    def outputs(self, ctx: Context) -> list[str]:
        return [f"{k}.jsonl" for k in ctx.cfg.pairs.kinds] + ["summary.json"]

    def execute(self, ctx: Context, key: str) -> dict[str, Any]:
        from mathreason.credit import step_token_ends
        from mathreason.models import load_tokenizer
        from mathreason.pairdata import build_pairs, seed_function, split_ids, with_eos
        from mathreason.prompts import answer_format
        from mathreason.stages.credit import completion_decoder, select_rows
        from mathreason.steps import split_steps
        from mathreason.training import encode_completion

        c, a = ctx.cfg.pairs, ctx.cfg.advantages
        dataset = ctx.cfg.data.dataset
        pol = ctx.cfg.sample.policy
        tok = load_tokenizer(ctx.policy_tokenizer(pol, ctx.policy_path(pol)), trust_remote_code=ctx.cfg.model.trust_remote_code)
        decode = completion_decoder(tok)
        eos_ids = sorted({int(tok.eos_token_id)})

        def steps_of(ids: list[int], finish: str, ends: list[int] | None = None):
            if ends is None:
                text = decode(ids)
                pieces = split_steps(text, a.splitter, dataset=dataset, max_steps=a.max_steps, min_chars=a.min_chars) if text else []
                ends = step_token_ends(ids, pieces, decode)
            ids, ends = with_eos(ids, ends, finish, int(tok.eos_token_id), eos_ids)
            return split_ids(ids, ends)

        graded = read_jsonl(self._graded(ctx))
        prompt_rows = {r["problem_id"]: r for r in read_jsonl(self._prompts(ctx))}
        prompts = {q: list(r["prompt_ids"]) for q, r in prompt_rows.items()}
        M = a.samples_per_question
        positives: dict[str, list] = {}
        seen: dict[str, set] = {}
        if c.positives in ("samples", "samples+dsyn"):
            for r in select_rows(graded, select="all", samples_per_question=M, include_truncated=False):
                if not r["correct"]:
                    continue
                st = steps_of(list(r["token_ids"]), r["finish_reason"])
                if st and st not in seen.setdefault(r["problem_id"], set()):
                    seen[r["problem_id"]].add(st)
                    positives.setdefault(r["problem_id"], []).append((st, {"sample_index": r["sample_index"]}))
        if c.positives in ("dsyn", "samples+dsyn"):
            fmt = answer_format(dataset)
            for p in ctx.dsyn():
                if p.id not in prompt_rows:
                    continue
                pr = prompt_rows[p.id]
                ids = encode_completion(tok, pr["prompt"], pr["prompt_ids"], fmt.ensure(p.solution, p.answer))
                st = steps_of(ids, "stop")
                if st and st not in seen.setdefault(p.id, set()):
                    seen[p.id].add(st)
                    positives.setdefault(p.id, []).append((st, {"dsyn": True}))
        negatives: dict[str, list] = {}
        if any(k in c.kinds for k in ("random", "max_edit_distance")):
            for r in select_rows(graded, select="negatives", samples_per_question=M, include_truncated=a.include_truncated):
                st = steps_of(list(r["token_ids"]), r["finish_reason"])
                if st:
                    negatives.setdefault(r["problem_id"], []).append((st, {"sample_index": r["sample_index"]}))
        valued: dict[str, list] = {}
        if _first_pit(c.kinds):
            by_key = {(r["problem_id"], r["sample_index"]): r for r in graded}
            for v in read_jsonl(self._advantages(ctx)):
                if v["reward"] > 0:
                    continue
                s = by_key.get((v["problem_id"], v["sample_index"]))
                if s is None:
                    raise StageError(f"{self._advantages(ctx)}: row {v['problem_id']}/{v['sample_index']} has no graded sample; re-run advantages")
                st = steps_of(list(s["token_ids"]), s["finish_reason"], list(v["step_ends"]))
                conts = [steps_of(list(ids), "stop") for ids in v.get("pit_continuations", [])]
                valued.setdefault(v["problem_id"], []).append((st, int(v["pit"]), [x for x in conts if x], {"sample_index": v["sample_index"]}))
        rows, counts = build_pairs(
            kinds=c.kinds,
            prompts=prompts,
            positives=positives,
            negatives=negatives,
            valued=valued,
            seed_for=seed_function(ctx.cfg.seed),
            random_pairs_per_question=c.random_pairs_per_question,
        )
        sdir = self.dir(ctx)
        for kind in c.kinds:
            write_jsonl_atomic(sdir / f"{kind}.jsonl", rows[kind])
        summary = {
            "questions": len(prompts),
            "questions_with_positive": sum(1 for v in positives.values() if v),
            "positives": sum(len(v) for v in positives.values()),
            "kinds": counts,
        }
        if "random" in rows and "max_edit_distance" in rows and rows["max_edit_distance"]:
            # With one positive and one negative per question (e.g. advantages.samples_per_question = 2) the
            # two baselines see the very same pairs; say so instead of reporting two arms that are one.
            rnd = {(r["problem_id"], json.dumps(r["chosen"]), json.dumps(r["rejected"])) for r in rows["random"]}
            same = sum((r["problem_id"], json.dumps(r["chosen"]), json.dumps(r["rejected"])) in rnd for r in rows["max_edit_distance"])
            summary["max_edit_pairs_also_random"] = same / len(rows["max_edit_distance"])
            if same == len(rows["max_edit_distance"]):
                logger.warning(
                    "pairs: every max_edit_distance pair is also a random pair (questions have one positive and one "
                    "negative among advantages.samples_per_question = %s samples): dpo and dpo_max_edit train on the same data", M)
        atomic_write_json(sdir / "summary.json", summary)
        for kind, cnt in counts.items():
            ctx.run.log_metrics("pairs", event="kind", kind=kind, **cnt)
        return {f"{k}_pairs": v["pairs"] for k, v in counts.items()} | {"positives": summary["positives"]}


class PrefStage(Stage):
    """Per-step DPO or a baseline (``pref.objective``) from ``pref.init``, into ``pref/<pref.name>``."""

    name = "pref"
    sections = ("seed", "model", "pref")
    training = True

    def record_name(self, ctx: Context) -> str:
        return f"pref/{ctx.cfg.pref.name}"

    def _data(self, ctx) -> list[tuple[str, Path]]:
        p = ctx.cfg.pref
        if p.objective == "awr":
            return [
                ("advantages", ctx.run.stage_dir("advantages") / "advantages.jsonl"),
                ("grade", ctx.run.stage_dir("grade") / "graded.jsonl"),
                ("sample", ctx.run.stage_dir("sample") / "prompts.jsonl"),
            ]
        return [("pairs", ctx.run.stage_dir("pairs") / f"{p.pairs}.jsonl")]

    def check(self, ctx: Context) -> None:
        p = ctx.cfg.pref
        if p.objective != "awr" and p.pairs not in ctx.cfg.pairs.kinds:
            from mathreason.config import ConfigError

            raise ConfigError(f"field pref.pairs: {p.pairs!r} is not built by the pairs stage (pairs.kinds: {ctx.cfg.pairs.kinds})")
        if p.objective == "awr" and ctx.cfg.advantages.select != "all":
            from mathreason.config import ConfigError

            raise ConfigError("field advantages.select: awr trains on every valued response; set advantages.select: all (and schedule: all)")
        for producer, path in self._data(ctx):
            require_file(ctx, path, producer)
        ctx.policy_path(p.init, for_check=True)

    def inputs(self, ctx: Context) -> dict[str, str]:
        out = {f"data:{path.name}": ctx.run.fingerprint(path) for _, path in self._data(ctx)}
        out["init"] = ctx.model_fingerprint(ctx.policy_path(ctx.cfg.pref.init))
        return out

    def outputs(self, ctx: Context) -> list[str]:
        return ["model"]

    def execute(self, ctx: Context, key: str) -> dict[str, Any]:
        from mathreason.preference import awr_items, pair_items, train_preference

        p = ctx.cfg.pref
        init = ctx.policy_path(p.init)
        inputs = self.inputs(ctx)
        ref_cache = None
        if p.objective == "awr":
            (_, adv_path), (_, graded_path), (_, prompts_path) = self._data(ctx)
            samples = {(r["problem_id"], int(r["sample_index"])): r for r in read_jsonl(graded_path)}
            prompts = {r["problem_id"]: r["prompt_ids"] for r in read_jsonl(prompts_path)}
            items, dropped = awr_items(read_jsonl(adv_path), samples, prompts, p.train.max_length)
        else:
            (_, pairs_path), = self._data(ctx)
            items, dropped = pair_items(read_jsonl(pairs_path), p.train.max_length)
            ref_key = hash_json([inputs[f"data:{pairs_path.name}"], inputs["init"], p.train.max_length, "ref-v1"])[:20]
            ref_cache = ctx.run.root / "ref_logps" / f"{ref_key}.pt"
        if not items:
            raise StageError(
                f"pref {p.name}: no training data in {self._data(ctx)[0][1]} ({dropped} items dropped as longer than "
                "pref.train.max_length); check the pairs/advantages summary (no negatives with a pit, or no positives), "
                "sample more, or raise max_length"
            )
        ctx.run.log_metrics(self.record_name(ctx), event="data", items=len(items), dropped_too_long=dropped)
        summary = train_preference(
            items,
            pref=p,
            init_model=init,
            tokenizer_path=ctx.policy_tokenizer(p.init, init),
            model_cfg=ctx.cfg.model,
            out_dir=self.dir(ctx),
            ref_cache=ref_cache,
            key=key,
            seed=ctx.cfg.seed,
            log=lambda **kw: ctx.run.log_metrics(self.record_name(ctx), event="train", **kw),
        )
        return {"dropped_too_long": dropped, **summary}
