"""Sampling: one interface, two backends (vLLM on a GPU, transformers everywhere).

Callers build :class:`Request` objects (a prompt as **token ids**, so a step prefix of an earlier
sample is continued exactly as it was tokenised, plus one seed per wanted sample) and call
:meth:`Sampler.generate` with :class:`SamplingParams`. Both backends return, per request, one
:class:`Completion` per seed with the same schema:

``text``
    the decoded completion (special tokens skipped), cut before the first stop string;
``token_ids``
    the generated ids: up to and including EOS, or up to the token that completed a stop string;
``finish_reason``
    ``"stop"`` (EOS or a stop string) or ``"length"`` (``max_tokens`` reached);
``stop_reason``
    the stop string that matched, else ``None`` (as vLLM reports it);
``seed``
    the sample's seed.

Identical ``(prompt, seed)`` rows are generated once and shared (with temperature 0, identical prompts
are generated once whatever their seeds), which is what step-prefix rollouts need.

Backends
--------
``vllm`` -- ``LLM.generate`` on ``{"prompt_token_ids": ...}`` prompts with one
``SamplingParams(n=1, temperature, top_p, max_tokens, stop, seed=<row seed>)`` per row, prefix caching
on, tensor parallel size from the config. vLLM is imported only in this module, only when CUDA is
available, and any exception at import means "not available".

``transformers`` -- ``model.generate`` on left-padded batches with the KV cache. The random choice is
made by a logits processor that adds Gumbel noise drawn from a ``torch.Generator`` per row (seeded by
the row's seed) to the temperature-scaled, nucleus-filtered logits, and generation then takes the
argmax, which is an exact sample from the same distribution. A row's random stream therefore depends
only on its seed, never on the global RNG or on its batch neighbours.

Reproducibility guarantees
--------------------------
* transformers: for a fixed list of requests (same batch composition), the output is bit-identical
  from run to run on one machine and thread count. The pipeline always samples the same fixed shards
  of work, so a resumed run reproduces an uninterrupted one exactly. Across different batch
  compositions the per-row seeds still fix every random draw; only floating-point differences of the
  padded forward pass can flip a near-tie.
* vLLM: every row has its own seed, so rows are reproducible given identical logits; GPU kernels and
  vLLM's continuous batching do not promise batch-invariant logits, so a regenerated row may differ in
  rare near-ties. Resumes never lose or duplicate rows in either case.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Completion",
    "Request",
    "Sampler",
    "SamplingParams",
    "TransformersSampler",
    "VLLMSampler",
    "backend_available",
    "make_sampler",
    "prompt_id",
    "row_seed",
    "sample_to_store",
    "vllm_available",
]

logger = logging.getLogger(__name__)


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
    """A prompt as token ids and one seed per wanted sample."""

    prompt_ids: tuple[int, ...]
    seeds: tuple[int, ...]

    def __init__(self, prompt_ids: Sequence[int], seeds: Sequence[int]):
        object.__setattr__(self, "prompt_ids", tuple(int(t) for t in prompt_ids))
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        if not self.prompt_ids:
            raise ValueError("a request needs at least one prompt token")
        if not self.seeds:
            raise ValueError("a request needs at least one seed (one per sample)")


@dataclass
class Completion:
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


class Sampler(ABC):
    """Common interface of the sampling backends."""

    backend: str = "?"

    @abstractmethod
    def _generate_rows(
        self, rows: list[tuple[tuple[int, ...], int]], params: SamplingParams, progress: bool
    ) -> list[Completion]:
        """One completion per unique ``(prompt_ids, seed)`` row, in order."""

    def generate(self, requests: Sequence[Request], params: SamplingParams, *, progress: bool = False) -> list[list[Completion]]:
        """One list of completions per request, one completion per seed, in order."""
        keys: list[list[tuple[tuple[int, ...], int]]] = []
        unique: dict[tuple[tuple[int, ...], int], int] = {}
        for req in requests:
            row_keys = []
            for s in req.seeds:
                key = (req.prompt_ids, 0 if params.greedy else s)
                unique.setdefault(key, len(unique))
                row_keys.append(key)
            keys.append(row_keys)
        outs = self._generate_rows(list(unique), params, progress) if unique else []
        result = []
        for req, row_keys in zip(requests, keys):
            comps = []
            for key, s in zip(row_keys, req.seeds):
                c = outs[unique[key]]
                comps.append(Completion(c.text, list(c.token_ids), c.finish_reason, c.stop_reason, s))
            result.append(comps)
        return result

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (GPU memory)."""


# ---------------------------------------------------------------- transformers backend


class _SeededSampling:
    """Logits processor: temperature, nucleus filter, then Gumbel noise from one generator per row.

    ``argmax(logits / T + g)`` with ``g`` i.i.d. Gumbel(0, 1) is a sample from ``softmax(logits / T)``;
    the nucleus filter sets the logits outside the top-p mass to -inf first. Every call draws exactly
    ``V`` uniforms per row, so a row's draws depend only on its seed and its step.
    """

    def __init__(self, temperature: float, top_p: float, generators: list[torch.Generator]):
        self.temperature = temperature
        self.top_p = top_p
        self.generators = generators

    def __call__(self, input_ids: torch.Tensor, scores_BV: torch.Tensor) -> torch.Tensor:
        scores_BV = scores_BV.float() / self.temperature
        if self.top_p < 1.0:
            sorted_BV, order_BV = torch.sort(scores_BV, descending=True, dim=-1)
            probs_BV = sorted_BV.softmax(-1)
            # Drop a token when the mass strictly before it already reaches top_p (keeps at least one).
            before_BV = probs_BV.cumsum(-1) - probs_BV
            drop_sorted_BV = before_BV >= self.top_p
            drop_BV = drop_sorted_BV.scatter(-1, order_BV, drop_sorted_BV)
            scores_BV = scores_BV.masked_fill(drop_BV, float("-inf"))
        V = scores_BV.shape[1]
        u_BV = torch.stack(
            [torch.rand(V, generator=g, device=scores_BV.device, dtype=torch.float32) for g in self.generators]
        )
        return scores_BV - torch.log(-torch.log(u_BV.clamp(min=1e-20, max=1.0 - 1e-7)))


class TransformersSampler(Sampler):
    """Batched ``model.generate`` with left padding and the KV cache (CPU or GPU)."""

    backend = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(int(e) for e in eos_ids if e is not None)

    def _generate_rows(self, rows, params, progress):
        from transformers import GenerationConfig, LogitsProcessorList
        from tqdm.auto import tqdm

        # Longest prompts first (less padding); a stable order, so batches are a function of the rows.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[Completion | None] = [None] * len(rows)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
            stop_strings=list(params.stop) or None,
        )
        bar = tqdm(total=len(rows), desc="generate", unit="seq", disable=not progress, leave=False)
        for batch in batches:
            prompts = [rows[i][0] for i in batch]
            L = max(len(p) for p in prompts)
            ids_BL = torch.full((len(batch), L), self.pad_id, dtype=torch.long)
            mask_BL = torch.zeros((len(batch), L), dtype=torch.long)
            for b, p in enumerate(prompts):
                ids_BL[b, L - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask_BL[b, L - len(p) :] = 1
            processors = LogitsProcessorList()
            if not params.greedy:
                gens = []
                for i in batch:
                    g = torch.Generator(device=self.device)
                    g.manual_seed(rows[i][1])
                    gens.append(g)
                processors.append(_SeededSampling(params.temperature, params.top_p, gens))
            # generate() fills every unset field of gen_cfg from model.generation_config (a checkpoint may ship
            # do_sample, temperature, top_p, repetition_penalty, ...); a neutral one keeps decoding exactly ours.
            saved = self.model.generation_config
            self.model.generation_config = GenerationConfig(
                bos_token_id=saved.bos_token_id, eos_token_id=self.eos_ids, pad_token_id=self.pad_id
            )
            try:
                with torch.inference_mode():
                    seqs = self.model.generate(
                        input_ids=ids_BL.to(self.device),
                        attention_mask=mask_BL.to(self.device),
                        generation_config=gen_cfg,
                        logits_processor=processors,
                        tokenizer=self.tokenizer if params.stop else None,
                    )
            finally:
                self.model.generation_config = saved
            gen_BT = seqs[:, L:].tolist()
            for b, i in enumerate(batch):
                out[i] = _finish(gen_BT[b], self.eos_ids, params, self.tokenizer, rows[i][1])
            bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]


def _finish(gen: list[int], eos_ids: Sequence[int], params: SamplingParams, tokenizer, seed: int) -> Completion:
    """Cut a raw generated row at EOS / the first stop string; decide the finish reason (vLLM's rules)."""
    eos_at = next((t for t, tok in enumerate(gen) if tok in eos_ids), None)
    body = gen if eos_at is None else gen[:eos_at]
    text = tokenizer.decode(body, skip_special_tokens=True)
    if params.stop:
        hits = [(text.find(s), s) for s in params.stop if s in text]
        if hits:
            pos, s = min(hits)
            # Shortest prefix of the ids whose text contains the stop string (containment is monotone).
            lo, hi = 1, len(body)
            while lo < hi:
                mid = (lo + hi) // 2
                if s in tokenizer.decode(body[:mid], skip_special_tokens=True):
                    hi = mid
                else:
                    lo = mid + 1
            return Completion(text[:pos], body[:lo], "stop", s, seed)
    if eos_at is not None:
        return Completion(text, gen[: eos_at + 1], "stop", None, seed)
    return Completion(text, body, "length" if len(gen) >= params.max_tokens else "stop", None, seed)


# ---------------------------------------------------------------- vLLM backend


def vllm_available() -> bool:
    """True when CUDA is available and ``import vllm`` succeeds (any exception counts as unavailable)."""
    if not torch.cuda.is_available():
        return False
    try:
        import vllm  # noqa: F401
    except Exception:  # vLLM fails at import in many ways besides ImportError
        return False
    return True


class VLLMSampler(Sampler):
    """vLLM offline engine: token-id prompts, per-row seeds, prefix caching, tensor parallelism."""

    backend = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        tokenizer: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enable_prefix_caching: bool = True,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ):
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            tokenizer=str(tokenizer or model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
        )
        if revision:
            kwargs["revision"] = revision
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)

    def _generate_rows(self, rows, params, progress):
        from vllm import SamplingParams as VSamplingParams

        prompts = [{"prompt_token_ids": list(p)} for p, _ in rows]
        sps = [
            VSamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                seed=None if params.greedy else s,
                skip_special_tokens=True,
            )
            for _, s in rows
        ]
        outputs = self.llm.generate(prompts, sps, use_tqdm=progress)
        result = []
        for (_, s), o in zip(rows, outputs):
            c = o.outputs[0]
            stop_reason = c.stop_reason if isinstance(c.stop_reason, str) else None
            finish = "length" if c.finish_reason == "length" else "stop"
            result.append(Completion(c.text, list(c.token_ids), finish, stop_reason, s))
        return result

    def close(self) -> None:
        try:
            del self.llm
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# ---------------------------------------------------------------- factory


def backend_available(name: str) -> bool:
    if name == "transformers":
        return True
    if name == "vllm":
        return vllm_available()
    raise ValueError(f"unknown sampling backend {name!r}; known: auto, vllm, transformers")


def resolve_backend(name: str) -> str:
    """``auto`` -> ``vllm`` when it can run, else ``transformers``; an explicit unavailable choice raises."""
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if not backend_available(name):
        raise RuntimeError(f"sampling backend {name!r} is not available here (vLLM needs CUDA and `pip install '.[vllm]'`)")
    return name


def make_sampler(
    model_path: str,
    *,
    backend: str = "auto",
    tokenizer_path: str | None = None,
    dtype: str = "auto",
    batch_size: int = 64,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    enable_prefix_caching: bool = True,
    seed: int = 0,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> Sampler:
    """The sampler for ``model_path`` on the chosen backend (``auto`` picks vLLM when it can run)."""
    name = resolve_backend(backend)
    if name == "vllm":
        return VLLMSampler(
            model_path,
            tokenizer=tokenizer_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
    from mathreason.models import load_model, load_tokenizer

    tok = load_tokenizer(tokenizer_path or model_path, revision=None if tokenizer_path else revision, trust_remote_code=trust_remote_code)
    model = load_model(
        model_path, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation
    )
    return TransformersSampler(model, tok, batch_size=batch_size)


def expected_tokens(completions: Sequence[Sequence[Completion]]) -> int:
    """Total generated tokens (for throughput)."""
    return sum(len(c.token_ids) for cs in completions for c in cs)



# ---------------------------------------------------------------- incremental sampling into a run folder


def prompt_id(prompt_ids: Sequence[int]) -> str:
    """Short content id of a tokenised prompt (first 16 hex digits of a sha256)."""
    return hashlib.sha256(",".join(map(str, prompt_ids)).encode()).hexdigest()[:16]


def sample_to_store(
    sampler: Sampler,
    items: Sequence[tuple[str, Sequence[int]]],
    *,
    n: int,
    params: SamplingParams,
    seed: int,
    tag: str,
    store,
    key: str,
    chunk_size: int,
    transform=None,
    progress: bool = True,
    desc: str = "sample",
) -> list[dict]:
    """Sample ``n`` completions for every ``(problem_id, prompt_ids)`` item, one atomic shard per chunk.

    The items are cut into fixed chunks of ``chunk_size`` before any work; finished chunks found in
    ``store`` (a :class:`mathreason.runs.ShardedRows` opened with the same ``key``) are skipped, so a
    killed run resumes where it stopped and reproduces the rows of an uninterrupted one. Sample ``j`` of
    problem ``p`` has seed ``row_seed(seed, tag, p, j)``. ``transform(rows) -> rows`` (e.g. grading)
    runs on each chunk before it is written. Returns all rows, in item then sample order:
    ``problem_id, sample_index, prompt_id, text, token_ids, finish_reason, stop_reason, seed`` (+ what
    ``transform`` adds).
    """
    from tqdm.auto import tqdm

    from mathreason.runs import hash_json

    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    # The plan itself (which items, in which chunks) is part of the key, so shards are only ever reused
    # with the boundaries they were written with.
    plan_key = hash_json([key, tag, seed, n, chunk_size, [(pid, prompt_id(ids)) for pid, ids in items]])
    done = store.open(plan_key, len(chunks), meta={"items": len(items), "n": n, "chunk_size": chunk_size, "tag": tag})
    todo = [i for i in range(len(chunks)) if i not in done]
    bar = tqdm(total=len(items), initial=len(items) - sum(len(chunks[i]) for i in todo), desc=desc, unit="q", disable=not progress)
    for ci in todo:
        chunk = chunks[ci]
        reqs = [Request(ids, [row_seed(seed, tag, pid, j) for j in range(n)]) for pid, ids in chunk]
        outs = sampler.generate(reqs, params)
        rows: list[dict] = []
        for (pid, ids), comps in zip(chunk, outs):
            pid_hash = prompt_id(ids)
            for j, c in enumerate(comps):
                rows.append({"problem_id": pid, "sample_index": j, "prompt_id": pid_hash, **c.to_dict()})
        if transform is not None:
            rows = transform(rows)
        store.write(ci, rows)
        bar.update(len(chunk))
    bar.close()
    return store.read()
