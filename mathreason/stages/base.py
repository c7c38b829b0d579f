"""The machinery that runs a pipeline stage over a run folder, and the context stages share.

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

A stage's folder is ``<run_dir>/<record name>``: the stage name, except for stages that can run several
times in one run folder under different names (``pref/<name>``). The stages themselves live in one
module per family (:mod:`.finetune`, :mod:`.sampling`, :mod:`.credit`, :mod:`.preference`,
:mod:`.evaluation`) and are registered in :data:`mathreason.stages.STAGES`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from mathreason.config import Config, ConfigError, dump_yaml, to_dict
from mathreason.runs import (
    RunFolder,
    StageRecord,
    atomic_write_text,
    hash_json,
    is_main_process,
    read_jsonl,
)

__all__ = ["RUN_POLICIES", "is_run_policy", "policy_tag", "FORMAT_VERSION", "Context", "Stage", "StageError", "check_stages", "require_file", "run_stage", "stage_key"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Bumped when a stage's outputs change format, so old outputs are not reused."""


RUN_POLICIES = ("sft", "rft", "rft_adv")
"""Policies trained by a stage of this run folder (plus ``pref/<name>``, one per preference method)."""


def is_run_policy(name: str) -> bool:
    """Whether ``name`` names a policy trained in the run folder (``sft``, ``rft``, ``rft_adv``, ``pref/<name>``)."""
    return name in RUN_POLICIES or (name.startswith("pref/") and len(name) > 5 and "/" not in name[5:])


def policy_tag(name: str) -> str:
    """A policy name as a folder/key name: ``pref/x`` -> ``pref-x``; paths and hub ids -> a safe tag + hash."""
    if name in RUN_POLICIES or name == "base":
        return name
    if is_run_policy(name):
        return "pref-" + name[5:]
    tail = "_".join(Path(name).parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail)[:48] + "-" + hash_json(name)[:8]


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
        self._arith_paths: tuple[Path, Path] | None = None
        self._base: str | None = None
        self._benchmarks: dict[str, list] = {}
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        apply_device(cfg.device)

    # ---------------------------------------------------------------- prompts

    def template(self):
        from mathreason.data import get_prompt_template

        try:
            tmpl = get_prompt_template(self.cfg.data.prompt_template)
        except KeyError as e:
            raise ConfigError(f"field data.prompt_template: {e.args[0]}") from None
        from mathreason.prompts import answer_format

        fmt = answer_format(self.cfg.data.dataset)
        if tmpl.answer_format not in ("", fmt.name):
            raise ConfigError(
                f"field data.prompt_template: {tmpl.name!r} asks for the {tmpl.answer_format!r} answer format, but "
                f"{self.cfg.data.dataset} SFT targets and grading use {fmt.name!r} (the prompt, the SFT targets and "
                f"the grader must agree; e.g. use {self.cfg.data.dataset}-zeroshot-v{2 if fmt.dataset == 'gsm8k' else 1})"
            )
        return tmpl

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

    def arith_paths(self) -> tuple[Path, Path]:
        """``data/arith_train.jsonl`` and ``data/arith_test.jsonl`` of the generated arithmetic task."""
        from mathreason.arith import write_arith_problems

        if self._arith_paths is None:
            a = self.cfg.data.arith
            self._arith_paths = write_arith_problems(self.run.root / "data", a.train_size, a.test_size, a.spec(), seed=a.seed)
        return self._arith_paths

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
        elif d.dsyn == "arith":
            if d.dataset != "gsm8k":
                raise ConfigError("field data.dataset: the arith problems are GSM8K-style; set data.dataset: gsm8k")
            problems = load_jsonl_problems(self.arith_paths()[0], dataset="gsm8k", source="arith", skip_malformed=d.skip_malformed)
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
            elif name == "arith":
                probs = load_jsonl_problems(self.arith_paths()[1], dataset="gsm8k", source="arith")
            elif name in ("gsm8k", "math"):
                probs = load_problems(name, split="test")
            elif name in ("math500", "math-500"):
                probs = load_problems("math500")
            else:
                path = Path(name).expanduser()
                if not path.is_file():
                    raise ConfigError(f"field eval.benchmarks: {name!r} is not gsm8k, math, math500, tiny, arith or an existing jsonl file")
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
                # The offline tokenizer is trained on the generated task's text: the arith training pool
                # (never its test problems), or the tiny problems.
                paths = [self.arith_paths()[0]] if self.cfg.data.dsyn == "arith" else list(self.tiny_paths())
                corpus = []
                for path in paths:
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
        """A policy's model folder or hub id.

        ``sft``, ``rft``, ``rft_adv`` and ``pref/<name>`` are this run folder's stage outputs
        (``<run_dir>/<stage>/model``); ``base`` is the base model; anything else is a path or hub id.
        With ``for_check``, a stage output that does not exist yet is accepted when its stage is scheduled
        earlier in the same command.
        """
        if is_run_policy(name):
            path = self.run.stage_dir(name) / "model"
            if (path / "config.json").exists():
                return str(path)
            producer = name.split("/")[0]
            if for_check and (name in self.scheduled or (producer != "pref" and producer in self.scheduled)):
                return str(path)
            how = f"mathreason pref ... --set pref.name={name[5:]}" if producer == "pref" else f"mathreason {name}"
            raise StageError(f"policy {name!r}: {path} does not exist yet; run `{how}` first")
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

    def backend_name(self, backend_cfg) -> str:
        """The sampling backend a ``BackendConfig`` resolves to here (``auto`` -> ``vllm`` or ``transformers``)."""
        from mathreason.sampling import resolve_backend

        try:
            return resolve_backend(backend_cfg.backend)
        except RuntimeError as e:
            raise ConfigError(f"field backend.backend: {e}") from None

    def sampler_factory(self, path: str, tokenizer_path: str, backend_cfg):
        """A picklable ``() -> Sampler`` (``functools.partial`` of :func:`mathreason.sampling.make_sampler`), for Ray actors."""
        import functools

        from mathreason.sampling import make_sampler

        m = self.cfg.model
        return functools.partial(
            make_sampler,
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

    def make_sampler(self, path: str, tokenizer_path: str, backend_cfg):
        return self.sampler_factory(path, tokenizer_path, backend_cfg)()

    def shard_runner(self, worker_factory, backend_cfg):
        """Ray actors for a stage's shards when ``actors.count > 0`` (each builds ``worker_factory()``), else None."""
        a = self.cfg.actors
        if a.count <= 0:
            return None
        from mathreason.executors import ActorShards

        gpus = a.gpus
        if gpus is None:
            gpus = float(backend_cfg.tensor_parallel_size) if self.backend_name(backend_cfg) == "vllm" else 0.0
        return ActorShards(worker_factory, a, self.cfg.ray, gpus=gpus)

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

    def record_name(self, ctx: Context) -> str:
        """Name of the stage's folder and record in the run folder (the stage name by default)."""
        return self.name

    def dir(self, ctx: Context) -> Path:
        return ctx.run.stage_dir(self.record_name(ctx))


def apply_device(device: str) -> None:
    """Make a config's ``device`` this process's (and its children's, e.g. the training launcher's): ``cpu``
    hides the GPUs through ``CUDA_VISIBLE_DEVICES`` (read when CUDA starts, so before any CUDA work),
    ``cuda`` requires a GPU, ``auto`` changes nothing."""
    if device == "auto":
        return
    import torch

    if device == "cpu":
        if os.environ.get("CUDA_VISIBLE_DEVICES") != "" and torch.cuda.is_initialized():
            raise ConfigError("field device: cpu: CUDA is already in use in this process; set device before any CUDA work")
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        raise ConfigError(f"field device: {device}: no CUDA device is available")


def stage_key(stage: Stage, ctx: Context, inputs: dict[str, str]) -> str:
    # Renamed fields hash under their old names (e.g. sft.warmup_ratio, now sft.warmup_steps), so a rename
    # leaves the keys, and the outputs recorded under them, of existing run folders valid.
    full = to_dict(ctx.cfg, old_names=True)
    return hash_json(
        {
            "stage": stage.record_name(ctx),
            "format": FORMAT_VERSION,
            "config": {s: full[s] for s in stage.sections},
            "inputs": inputs,
        }
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
    name = stage.record_name(ctx)
    rec = ctx.run.record(name)
    if not force and rec is not None and rec.status == "done" and rec.key == key and _outputs_match(stage, ctx, rec):
        logger.info("%s: up to date (key %s), skipped", name, key[:12])
        ctx.run.log_metrics(name, event="skipped", key=key)
        return {"stage": name, "status": "skipped", "summary": rec.summary}
    if force and sdir.exists() and is_main_process():
        shutil.rmtree(sdir)
    started = time.time()
    if is_main_process():
        sdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sdir / "config.yaml", dump_yaml(ctx.cfg))
    ctx.run.write_record(StageRecord(name, "running", key, inputs=inputs, started=started))
    ctx.run.log_metrics(name, event="start", key=key)
    if stage.training:
        from mathreason.tracking import training_env

        with training_env(ctx.cfg.tracking, ctx.run.root, name):
            summary = stage.execute(ctx, key)
    else:
        summary = stage.execute(ctx, key)
    outputs = {rel: ctx.run.fingerprint(sdir / rel) for rel in stage.outputs(ctx)}
    finished = time.time()
    summary = {**summary, "seconds": round(finished - started, 3)}
    ctx.run.write_record(
        StageRecord(name, "done", key, inputs=inputs, outputs=outputs, summary=summary, started=started, finished=finished)
    )
    ctx.run.log_metrics(name, event="done", key=key, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    return {"stage": name, "status": "done", "summary": summary}


def check_stages(names: Sequence[str], ctx: Context) -> None:
    """Check every stage of a chain before any of them runs (later stages may use earlier outputs)."""
    from mathreason.stages import STAGES

    for name in names:
        STAGES[name].check(ctx)
        ctx.scheduled.add(name)
        ctx.scheduled.add(STAGES[name].record_name(ctx))


def require_file(ctx: Context, path: Path, producer: str) -> None:
    if not path.exists() and producer not in ctx.scheduled:
        raise StageError(f"{path} does not exist; run `mathreason {producer}` first")


