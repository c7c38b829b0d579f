"""Pipeline stages (sft, sample, grade, rft, eval) and the machinery that runs a stage over a run folder.

A :class:`Stage` declares the config sections it depends on, checks its inputs cheaply
(:meth:`Stage.check`: data parse, models resolvable, upstream outputs present or scheduled), reports
its inputs' fingerprints and its outputs, and does its work in :meth:`Stage.execute`. :func:`run_stage`
wraps every stage the same way:

1. ``check`` (errors here come before any work),
2. key = hash(stage name, format version, its config sections, its inputs' fingerprints),
3. skip when ``<stage>/stage.json`` says *done* under the same key and every output still has the
   fingerprint recorded then,
4. otherwise record *running*, write the resolved config, ``execute`` (which resumes from its own
   shards or checkpoints when they were written under the same key), fingerprint the outputs, record
   *done*, append to ``metrics.jsonl``.

New stages (per-step advantages, per-step DPO, scaling sweeps) plug in by subclassing :class:`Stage`
and registering in :data:`STAGES`.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from mathreason.config import Config, ConfigError, dump_yaml, to_dict
from mathreason.runs import (
    RunFolder,
    ShardedRows,
    StageRecord,
    atomic_write_json,
    atomic_write_text,
    hash_json,
    is_main_process,
    read_jsonl,
    write_jsonl_atomic,
)

__all__ = ["STAGES", "Context", "Stage", "StageError", "check_stages", "run_stage"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when a stage's outputs change format, so old outputs are not reused."""


class StageError(RuntimeError):
    """A stage cannot run (missing upstream output, no usable data, ...); the message says what to do."""


# ====================================================================== shared context


class Context:
    """The config, the run folder and lazily loaded shared inputs of one command."""

    def __init__(self, cfg: Config, *, progress: bool = True, scheduled: Sequence[str] = ()):
        self.cfg = cfg
        self.run = RunFolder(cfg.run_dir)
        self.progress = progress
        self.scheduled: set[str] = set(scheduled)
        """Stages that run earlier in this command (their outputs count as available in checks)."""
        self._dsyn: list | None = None
        self._dsyn_fp: str | None = None
        self._tiny_paths: tuple[Path, Path] | None = None
        self._base: str | None = None
        self._benchmarks: dict[str, list] = {}
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)

    # ---------------------------------------------------------------- prompts

    def template(self):
        from mathreason.data import get_prompt_template

        try:
            return get_prompt_template(self.cfg.data.prompt_template)
        except KeyError as e:
            raise ConfigError(f"field data.prompt_template: {e.args[0]}") from None

    def stop(self, configured: Sequence[str] | None) -> tuple[str, ...]:
        return tuple(self.template().stop if configured is None else configured)

    # ---------------------------------------------------------------- data

    def tiny_paths(self) -> tuple[Path, Path]:
        from mathreason.tiny import write_tiny_problems

        if self._tiny_paths is None:
            # Every rank of a distributed launch writes the same bytes atomically: no rank waits on another.
            d = self.cfg.data
            self._tiny_paths = write_tiny_problems(self.run.root / "data", d.tiny_train_size, d.tiny_test_size, seed=self.cfg.seed)
        return self._tiny_paths

    def dsyn(self) -> list:
        """The D_syn problems this run uses (the nested subset), also written to ``data/dsyn.jsonl``."""
        if self._dsyn is not None:
            return self._dsyn
        import numpy as np

        from mathreason.data import load_jsonl_problems, load_problems, save_problems_jsonl

        d = self.cfg.data
        if d.dsyn == "tiny":
            if d.dataset != "gsm8k":
                raise ConfigError("field data.dataset: the tiny problems are GSM8K-style; set data.dataset: gsm8k")
            problems = load_jsonl_problems(self.tiny_paths()[0], dataset="gsm8k", source="tiny", skip_malformed=d.skip_malformed)
        elif d.dsyn in ("gsm8k", "math"):
            if d.dsyn != d.dataset:
                raise ConfigError(f"field data.dsyn: {d.dsyn!r} does not match data.dataset {d.dataset!r}")
            problems = load_problems(d.dsyn, split=d.dsyn_split, skip_malformed=d.skip_malformed)
        else:
            path = Path(d.dsyn).expanduser()
            if not path.is_file():
                raise ConfigError(f"field data.dsyn: no such file {str(path)!r} (and not one of gsm8k, math, tiny)")
            problems = load_problems(str(path), dataset=d.dataset, skip_malformed=d.skip_malformed)
        skipped = list(getattr(problems, "skipped", []))
        if skipped:
            logger.warning("D_syn %s: skipped %d malformed rows (data.skip_malformed), e.g. %s", d.dsyn, len(skipped), skipped[0])
        problems = list(problems)
        if not problems:
            raise StageError(f"D_syn {d.dsyn!r} has no problems")
        if d.subset_size is not None:
            if d.subset_size > len(problems):
                raise ConfigError(f"field data.subset_size: {d.subset_size} but D_syn {d.dsyn!r} has only {len(problems)} problems")
            # Nested subsets: the first n problems of one seeded permutation.
            perm = np.random.default_rng(d.subset_seed).permutation(len(problems))
            problems = [problems[int(i)] for i in perm[: d.subset_size]]
        self._dsyn = problems
        self._dsyn_fp = hash_json([p.to_dict() for p in problems])
        path = self.run.root / "data" / "dsyn.jsonl"
        fp_file = self.run.root / "data" / "dsyn.fingerprint"
        if not (path.exists() and fp_file.exists() and fp_file.read_text().strip() == self._dsyn_fp):
            save_problems_jsonl(problems, path)  # atomic; identical bytes from every rank
            atomic_write_text(fp_file, self._dsyn_fp + "\n")
        return problems

    def dsyn_fingerprint(self) -> str:
        self.dsyn()
        return f"problems:{self._dsyn_fp}"

    def benchmark(self, name: str) -> list:
        """Test problems of an evaluation benchmark (``eval.limit`` applied)."""
        if name not in self._benchmarks:
            from mathreason.data import load_jsonl_problems, load_problems

            if name == "tiny":
                probs = load_jsonl_problems(self.tiny_paths()[1], dataset="gsm8k", source="tiny")
            elif name in ("gsm8k", "math"):
                probs = load_problems(name, split="test")
            elif name in ("math500", "math-500"):
                probs = load_problems("math500")
            else:
                path = Path(name).expanduser()
                if not path.is_file():
                    raise ConfigError(f"field eval.benchmarks: {name!r} is not gsm8k, math, math500, tiny or an existing jsonl file")
                probs = load_problems(str(path), dataset=self.cfg.data.dataset)
            probs = list(probs)
            if not probs:
                raise StageError(f"benchmark {name!r} has no problems")
            if self.cfg.eval.limit is not None:
                probs = probs[: self.cfg.eval.limit]
            self._benchmarks[name] = probs
        return self._benchmarks[name]

    # ---------------------------------------------------------------- models

    def base_model(self) -> str:
        """Path or hub id of the base model (the tiny one is built into ``<run_dir>/base/model``)."""
        if self._base is None:
            m = self.cfg.model
            if m.is_tiny:
                from mathreason.models import ensure_tiny_base

                tmpl = self.template()
                train, test = self.tiny_paths()
                corpus = []
                for path in (train, test):
                    for row in read_jsonl(path):
                        corpus.append(tmpl.render(row["question"]) + row["solution"])
                self._base = str(ensure_tiny_base(m, self.run.root / "base" / "model", corpus, self.cfg.seed))
            else:
                from mathreason.models import check_model_available

                try:
                    self._base = check_model_available(m.name_or_path, m.revision)
                except FileNotFoundError as e:
                    raise ConfigError(f"field model.name_or_path: {e}") from None
        return self._base

    def base_tokenizer(self) -> str:
        return self.cfg.model.tokenizer or self.base_model()

    def model_fingerprint(self, path: str) -> str:
        rev = self.cfg.model.revision if path == self.cfg.model.name_or_path else None
        return self.run.fingerprint(path, revision=rev)

    def policy_path(self, name: str, *, for_check: bool = False) -> str:
        """``sft``/``rft`` -> this run's stage output; ``base`` -> the base model; else a path or hub id."""
        if name in ("sft", "rft"):
            path = self.run.stage_dir(name) / "model"
            if (path / "config.json").exists():
                return str(path)
            if for_check and name in self.scheduled:
                return str(path)
            raise StageError(f"policy {name!r}: {path} does not exist yet; run `mathreason {name}` first")
        if name == "base":
            return self.base_model()
        from mathreason.models import check_model_available

        try:
            return check_model_available(name, None)
        except FileNotFoundError as e:
            raise StageError(f"policy {name!r}: {e}") from None

    def policy_tokenizer(self, name: str, path: str) -> str:
        if name == "base":
            return self.base_tokenizer()
        return path

    def make_sampler(self, path: str, tokenizer_path: str, backend_cfg):
        from mathreason.sampling import make_sampler

        m = self.cfg.model
        return make_sampler(
            path,
            backend=backend_cfg.backend,
            tokenizer_path=tokenizer_path,
            dtype=m.dtype,
            batch_size=backend_cfg.batch_size,
            tensor_parallel_size=backend_cfg.tensor_parallel_size,
            gpu_memory_utilization=backend_cfg.gpu_memory_utilization,
            max_model_len=backend_cfg.max_model_len,
            enable_prefix_caching=backend_cfg.enable_prefix_caching,
            seed=self.cfg.seed,
            trust_remote_code=m.trust_remote_code,
            revision=m.revision if path == m.name_or_path else None,
            attn_implementation=m.attn_implementation,
        )

    def encode_prompts(self, tokenizer, problems) -> list[tuple[str, str, list[int]]]:
        """``(problem id, prompt text, prompt ids)`` for every problem."""
        from mathreason.training import encode_prompt

        tmpl = self.template()
        out = []
        for p in problems:
            text = tmpl.render(p.question)
            out.append((p.id, text, encode_prompt(tokenizer, text)))
        return out


# ====================================================================== the stage machinery


class Stage:
    """Base class of a pipeline stage (see the module docstring)."""

    name: ClassVar[str] = "?"
    sections: ClassVar[tuple[str, ...]] = ()
    """Top-level config sections that the stage's outputs depend on (part of its key)."""
    training: ClassVar[bool] = False
    """Runs under ``accelerate launch`` when ``pipeline.launcher`` is set."""

    def check(self, ctx: Context) -> None:
        """Cheap validation of config and inputs; raises before any work."""

    def inputs(self, ctx: Context) -> dict[str, str]:
        """``{input name: fingerprint}``."""
        return {}

    def outputs(self, ctx: Context) -> list[str]:
        """Output paths relative to the stage folder."""
        return []

    def execute(self, ctx: Context, key: str) -> dict[str, Any]:
        raise NotImplementedError

    def dir(self, ctx: Context) -> Path:
        return ctx.run.stage_dir(self.name)


def stage_key(stage: Stage, ctx: Context, inputs: dict[str, str]) -> str:
    full = to_dict(ctx.cfg)
    return hash_json(
        {"stage": stage.name, "format": FORMAT_VERSION, "config": {s: full[s] for s in stage.sections}, "inputs": inputs}
    )


def _outputs_match(stage: Stage, ctx: Context, rec: StageRecord) -> bool:
    sdir = stage.dir(ctx)
    for rel in stage.outputs(ctx):
        p = sdir / rel
        if not p.exists() or rec.outputs.get(rel) != ctx.run.fingerprint(p):
            return False
    return True


def run_stage(stage: Stage, ctx: Context, *, force: bool = False) -> dict[str, Any]:
    """Check, skip if up to date, else run ``stage`` and record it; returns ``{"stage", "status", "summary"}``."""
    stage.check(ctx)
    inputs = stage.inputs(ctx)
    key = stage_key(stage, ctx, inputs)
    sdir = stage.dir(ctx)
    rec = ctx.run.record(stage.name)
    if not force and rec is not None and rec.status == "done" and rec.key == key and _outputs_match(stage, ctx, rec):
        logger.info("%s: up to date (key %s), skipped", stage.name, key[:12])
        ctx.run.log_metrics(stage.name, event="skipped", key=key)
        return {"stage": stage.name, "status": "skipped", "summary": rec.summary}
    if force and sdir.exists() and is_main_process():
        shutil.rmtree(sdir)
    started = time.time()
    if is_main_process():
        sdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sdir / "config.yaml", dump_yaml(ctx.cfg))
    ctx.run.write_record(StageRecord(stage.name, "running", key, inputs=inputs, started=started))
    ctx.run.log_metrics(stage.name, event="start", key=key)
    summary = stage.execute(ctx, key)
    outputs = {rel: ctx.run.fingerprint(sdir / rel) for rel in stage.outputs(ctx)}
    finished = time.time()
    summary = {**summary, "seconds": round(finished - started, 3)}
    ctx.run.write_record(
        StageRecord(stage.name, "done", key, inputs=inputs, outputs=outputs, summary=summary, started=started, finished=finished)
    )
    ctx.run.log_metrics(stage.name, event="done", key=key, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    return {"stage": stage.name, "status": "done", "summary": summary}


def check_stages(names: Sequence[str], ctx: Context) -> None:
    """Check every stage of a chain before any of them runs (later stages may use earlier outputs)."""
    for name in names:
        STAGES[name].check(ctx)
        ctx.scheduled.add(name)


# ====================================================================== the stages


def _require_file(ctx: Context, path: Path, producer: str) -> None:
    if not path.exists() and producer not in ctx.scheduled:
        raise StageError(f"{path} does not exist; run `mathreason {producer}` first")


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
        from mathreason.training import encode_completion, make_example, train_causal_lm

        tok = load_tokenizer(ctx.base_tokenizer(), trust_remote_code=ctx.cfg.model.trust_remote_code)
        examples = []
        for p, (_, text, ids) in zip(ctx.dsyn(), ctx.encode_prompts(tok, ctx.dsyn())):
            examples.append(make_example(ids, encode_completion(tok, text, ids, p.solution)))
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


class SampleStage(Stage):
    """Sample ``sample.n`` solutions per D_syn question from a policy (pi_sft by default)."""

    name = "sample"
    sections = ("seed", "data", "model", "sample")

    def check(self, ctx):
        ctx.dsyn()
        ctx.template()
        ctx.policy_path(ctx.cfg.sample.policy, for_check=True)

    def inputs(self, ctx):
        return {"policy": ctx.model_fingerprint(ctx.policy_path(ctx.cfg.sample.policy)), "dsyn": ctx.dsyn_fingerprint()}

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
        sampler = ctx.make_sampler(path, tok_path, c.backend)
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
            )
        finally:
            sampler.close()
        seconds = time.time() - t0
        write_jsonl_atomic(sdir / "samples.jsonl", rows)
        tokens = sum(len(r["token_ids"]) for r in rows)
        return {
            "backend": sampler.backend,
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
        _require_file(ctx, self._samples(ctx), "sample")

    def inputs(self, ctx):
        return {"samples": ctx.run.fingerprint(self._samples(ctx)), "dsyn": ctx.dsyn_fingerprint()}

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
            f"pass@{n}": (sum(pass_at_k(len(v), sum(v), n) for v in per_q.values()) / len(per_q)) if n else 0.0,
        }
        atomic_write_json(sdir / "summary.json", summary)
        return summary


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
        _require_file(ctx, self._graded(ctx), "grade")
        _require_file(ctx, self._prompts(ctx), "sample")
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
            include_truncated=c.include_truncated,
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
            if r["finish_reason"] == "stop" and r["stop_reason"] is None and ids and ids[-1] in eos_ids:
                completion = list(ids)  # exactly what pi_sft generated, EOS included
            else:
                completion = encode_completion(tok, p["prompt"], p["prompt_ids"], r["text"])
            examples.append(make_example(p["prompt_ids"], completion))
            data_rows.append(
                {"problem_id": r["problem_id"], "sample_index": r["sample_index"], "text": r["text"], "completion_ids": completion}
            )
        if c.include_dsyn:
            for p, (_, text, ids) in zip(ctx.dsyn(), ctx.encode_prompts(tok, ctx.dsyn())):
                completion = encode_completion(tok, text, ids, p.solution)
                examples.append(make_example(ids, completion))
                data_rows.append({"problem_id": p.id, "sample_index": -1, "text": p.solution, "completion_ids": completion})
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


def _policy_tag(name: str) -> str:
    if name in ("sft", "rft", "base"):
        return name
    tail = "_".join(Path(name).parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail)[:48] + "-" + hash_json(name)[:8]


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
        out = {}
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
            tag = _policy_tag(pol)
            results[tag] = {}
            try:
                for bench in c.benchmarks:
                    probs = ctx.benchmark(bench)
                    prompts = ctx.encode_prompts(tok, probs)
                    sub_key = hash_json(
                        [inputs[f"policy:{pol}"], inputs[f"benchmark:{bench}"], tmpl.fingerprint, ctx.cfg.seed, FORMAT_VERSION]
                    )
                    summary = evaluate_benchmark(
                        sampler,
                        [(pid, ids) for pid, _, ids in prompts],
                        {p.id: p.answer for p in probs},
                        dataset=probs[0].dataset,
                        out_dir=sdir / tag / (bench if bench in ("gsm8k", "math", "math500", "tiny") else _policy_tag(bench)),
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


STAGES: dict[str, Stage] = {s.name: s for s in (SFTStage(), SampleStage(), GradeStage(), RFTStage(), EvalStage())}
"""Registered stages by name, in pipeline order."""
