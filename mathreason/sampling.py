"""Sampling: one interface, two backends (vLLM on a GPU, transformers everywhere).

Callers build :class:`Request` objects (a prompt as **token ids**, so a step prefix of an earlier
sample is continued exactly as it was tokenised, one seed per wanted sample, and optionally the
request's own token budget) and call :meth:`Sampler.generate` with :class:`SamplingParams`. Both
backends return, per request, one :class:`Completion` per seed with the same schema:

``text``
    always exactly ``tokenizer.decode(token_ids, skip_special_tokens=True)``;
``token_ids``
    the generated ids: up to and including EOS when the sample ended with it (decode drops it); after
    a stop string, the longest prefix of the generated ids whose decoded text is a prefix of the text
    before the stop string (the tokens lying wholly before its first character: a token that straddles
    the stop string's start is dropped, so ``text`` can be a few characters shorter than the text
    before the stop string). Step prefixes and rejected responses built from ids therefore read
    exactly like ``text``. See :func:`align_to_stop`;
``finish_reason``
    ``"stop"`` (EOS or a stop string) or ``"length"`` (the row's token cap reached);
``stop_reason``
    the stop string that matched, else ``None`` (as vLLM reports it);
``seed``
    the sample's seed.

A row's token cap is ``min(params.max_tokens, request.max_tokens)`` (step-prefix rollouts give each
prefix the sample budget minus its length). Identical ``(prompt, seed, cap)`` rows are generated once
and shared (with temperature 0, identical prompts with one cap are generated once whatever their
seeds), which is what step-prefix rollouts need.

Backends
--------
``vllm`` -- ``LLM.generate`` on ``{"prompt_token_ids": ...}`` prompts with one
``SamplingParams(n=1, temperature, top_p, max_tokens=<row cap>, stop, seed=<row seed>)`` per row, prefix
caching on, tensor parallel size from the config. vLLM is imported only in this module, only when
CUDA is available, and any exception at import means "not available". vLLM does not reliably free
GPU memory when its engine is deleted, so :func:`make_sampler` hosts every vLLM sampler in its own
``spawn``-ed process (:class:`SubprocessSampler`); closing it ends that process, which frees the memory.

``transformers`` -- ``model.generate`` on left-padded batches with the KV cache. The random choice is
made by a logits processor that adds Gumbel noise drawn from a ``torch.Generator`` per row (seeded by
the row's seed) to the temperature-scaled, nucleus-filtered logits, and generation then takes the
argmax, which is an exact sample from the same distribution. A row's random stream therefore depends
only on its seed, never on the global RNG or on its batch neighbours. A batch may mix token caps: it
runs to its largest cap (rows stop early at their own caps) and every row is cut at its own cap, which
for these per-row draws is exactly what generating the row alone with its cap would give. Stop strings
are matched like vLLM does, in the decoded generated text only (not across the prompt's end, not in
special tokens' text), by a stopping criterion that applies the same rule as the final cut.

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
import traceback
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "Completion",
    "Request",
    "Sampler",
    "SamplingParams",
    "SubprocessSampler",
    "TransformersSampler",
    "VLLMSampler",
    "align_to_stop",
    "backend_available",
    "expected_tokens",
    "make_sampler",
    "prompt_id",
    "row_seed",
    "sample_to_store",
    "vllm_available",
]

logger = logging.getLogger(__name__)

# The request/completion types and the stop rules live in mathreason.completions (re-exported here).
from mathreason.completions import (  # noqa: E402
    Completion,
    Request,
    Row,
    SamplingParams,
    _finish,
    _RowStops,
    align_to_stop,
    expected_tokens,
    row_seed,
)


class Sampler(ABC):
    """Common interface of the sampling backends."""

    backend: str = "?"

    @abstractmethod
    def _generate_rows(self, rows: list[Row], params: SamplingParams, progress: bool) -> list[Completion]:
        """One completion per unique ``(prompt_ids, seed, cap)`` row, in order; a row's cap replaces
        ``params.max_tokens``."""

    def generate(self, requests: Sequence[Request], params: SamplingParams, *, progress: bool = False) -> list[list[Completion]]:
        """One list of completions per request, one completion per seed, in order.

        Rows are deduplicated on ``(prompt_ids, seed, cap)`` (the seed is ignored when greedy), where
        ``cap = request.cap(params)``.
        """
        keys: list[list[Row]] = []
        unique: dict[Row, int] = {}
        for req in requests:
            cap = req.cap(params)
            row_keys = []
            for s in req.seeds:
                key = (req.prompt_ids, 0 if params.greedy else s, cap)
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
        """Release the model (GPU memory). Idempotent."""


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

    def _generate_rows(self, rows: list[Row], params: SamplingParams, progress: bool) -> list[Completion]:
        from tqdm.auto import tqdm
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        # Longest prompts first (less padding); a stable order, so batches are a function of the rows.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[Completion | None] = [None] * len(rows)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(rows), desc="generate", unit="seq", disable=not progress, leave=False)
        for batch in batches:
            prompts = [rows[i][0] for i in batch]
            caps = [rows[i][2] for i in batch]
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
            # The batch runs to its largest cap; a row that reaches its own cap or a stop string is finished
            # (padded from then on, like a row that hit EOS) and cut by _finish. Its draws depend only on its seed
            # and step, so finishing neighbours early changes nothing for it.
            gen_cfg = GenerationConfig(
                max_new_tokens=max(caps),
                do_sample=False,
                num_beams=1,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                use_cache=True,
            )
            stopping = None
            if params.stop or min(caps) < max(caps):
                stopping = StoppingCriteriaList([_RowStops(L, caps, params.stop, self.tokenizer, self.eos_ids)])
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
                        stopping_criteria=stopping,
                    )
            finally:
                self.model.generation_config = saved
            gen_BT = seqs[:, L:].tolist()
            for b, i in enumerate(batch):
                out[i] = _finish(gen_BT[b], self.eos_ids, caps[b], params.stop, self.tokenizer, rows[i][1])
            bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]


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
        self.tokenizer = self.llm.get_tokenizer()

    def _generate_rows(self, rows: list[Row], params: SamplingParams, progress: bool) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams

        prompts = [{"prompt_token_ids": list(p)} for p, _, _ in rows]
        sps = [
            VSamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=cap,
                stop=list(params.stop) or None,
                seed=None if params.greedy else s,
                skip_special_tokens=True,
            )
            for _, s, cap in rows
        ]
        outputs = self.llm.generate(prompts, sps, use_tqdm=progress)
        return [_from_vllm(o.outputs[0], self.tokenizer, s) for (_, s, _), o in zip(rows, outputs)]

    def close(self) -> None:
        if not hasattr(self, "llm"):
            return
        try:
            del self.llm
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _from_vllm(c: Any, tokenizer, seed: int) -> Completion:
    """Our :class:`Completion` from a vLLM ``CompletionOutput`` (``text`` without the stop string,
    ``token_ids`` with the tokens that completed it, EOS included when it ended the sample)."""
    ids = [int(t) for t in c.token_ids]
    if isinstance(c.stop_reason, str):
        kept, text = align_to_stop(ids, c.text, tokenizer)
        return Completion(text, kept, "stop", c.stop_reason, seed)
    finish = "length" if c.finish_reason == "length" else "stop"
    return Completion(tokenizer.decode(ids, skip_special_tokens=True), ids, finish, None, seed)


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
    isolate: bool | None = None,
) -> Sampler:
    """The sampler for ``model_path`` on the chosen backend (``auto`` picks vLLM when it can run).

    ``isolate``: host the sampler in its own process (:class:`SubprocessSampler`), whose exit frees all
    its memory. ``None`` (default) isolates exactly when the resolved backend is vLLM, which does not
    reliably free GPU memory in-process; ``True`` isolates any backend; ``False`` never does.
    """
    name = resolve_backend(backend)
    if isolate is None:
        isolate = name == "vllm"
    if isolate:
        return SubprocessSampler(
            model_path,
            backend=name,
            tokenizer_path=tokenizer_path,
            dtype=dtype,
            batch_size=batch_size,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            trust_remote_code=trust_remote_code,
            revision=revision,
            attn_implementation=attn_implementation,
        )
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


# ---------------------------------------------------------------- a sampler in its own process


class SubprocessSampler(Sampler):
    """A backend sampler hosted in a child process started with the ``spawn`` method.

    The child builds the sampler once (``make_sampler(model_path, isolate=False, **options)``) and then
    serves :meth:`generate` calls over a pipe (requests, params and completions are pickled). Ending the
    child is the only reliable way to give vLLM's GPU memory back, so :meth:`close` asks it to exit,
    waits ``shutdown_timeout`` seconds, then terminates and finally kills it. ``close`` is idempotent and
    also runs, best effort, when the object is garbage-collected and at interpreter exit (before
    ``multiprocessing`` joins its children).

    An exception in the child, while building the sampler or in ``generate``, is raised here as a
    :class:`RuntimeError` carrying the child's traceback (after a failed ``generate`` the child keeps
    serving). A child that dies (killed for memory, a crash in native code) raises a
    :class:`RuntimeError` instead of hanging: the pipe is polled every ``poll_interval`` seconds while
    the process is checked for life. After either a death or an interruption while waiting for a reply
    (e.g. KeyboardInterrupt) the sampler is closed.
    """

    poll_interval: float = 0.5
    """Seconds between checks that the child is still alive while waiting for its reply."""
    shutdown_timeout: float = 60.0
    """Seconds :meth:`close` waits for the child to exit by itself before terminating it."""

    def __init__(
        self,
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
    ):
        import multiprocessing
        from multiprocessing import util as mp_util

        self.model_path = str(model_path)
        self.backend = backend
        self._closed = True
        options: dict[str, Any] = dict(
            backend=backend,
            tokenizer_path=tokenizer_path,
            dtype=dtype,
            batch_size=batch_size,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            trust_remote_code=trust_remote_code,
            revision=revision,
            attn_implementation=attn_implementation,
        )
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        # Not a daemon: vLLM starts processes of its own, which daemonic processes may not.
        self.process = ctx.Process(
            target=_serve_sampler, args=(child_conn, self.model_path, options), name=f"sampler-{backend}", daemon=False
        )
        self.process.start()
        child_conn.close()  # the child holds the only other end: its exit shows here as EOF
        self._conn = parent_conn
        self._closed = False
        # exitpriority >= 0: runs at interpreter exit before multiprocessing joins (non-daemonic) children.
        self._finalizer = mp_util.Finalize(
            self, _stop_child, args=(self.process, parent_conn, self.shutdown_timeout), exitpriority=10
        )
        kind, payload = self._receive(f"starting the {backend} sampler for {self.model_path!r}")
        if kind == "error":
            self.close()
            raise RuntimeError(
                f"could not start the {backend} sampler for {self.model_path!r} in a subprocess; "
                f"the child's traceback:\n{payload}"
            )
        self.backend = str(payload)

    def _receive(self, doing: str) -> tuple[str, Any]:
        """The child's next reply; RuntimeError (and the sampler closed) if the child dies first."""
        try:
            while not self._conn.poll(self.poll_interval):
                if not self.process.is_alive() and not self._conn.poll(0):  # a reply may race the exit
                    raise EOFError
            return self._conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            self.close()
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            raise RuntimeError(
                f"the sampler subprocess (pid {self.process.pid}) {how} while {doing}; see its output above "
                "(a process killed for lack of memory dies with signal 9)"
            ) from None
        except BaseException:
            # Interrupted while the child works: it is not listening, and its reply would answer the wrong call
            # later, so end it now.
            if self.process.is_alive():
                self.process.terminate()
            self.close()
            raise

    def generate(self, requests: Sequence[Request], params: SamplingParams, *, progress: bool = False) -> list[list[Completion]]:
        """One list of completions per request, one completion per seed, in order (computed in the child)."""
        if self._closed:
            raise RuntimeError(f"this {self.backend} SubprocessSampler for {self.model_path!r} is closed")
        try:
            self._conn.send(("generate", list(requests), params, bool(progress)))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the child is gone; _receive says how
        kind, payload = self._receive("generating")
        if kind == "error":
            raise RuntimeError(f"the {self.backend} sampler in the subprocess (pid {self.process.pid}) failed:\n{payload}")
        return payload

    def _generate_rows(self, rows: list[Row], params: SamplingParams, progress: bool) -> list[Completion]:
        reqs = [Request(prompt, [seed], max_tokens=cap) for prompt, seed, cap in rows]
        return [cs[0] for cs in self.generate(reqs, params, progress=progress)]

    def close(self) -> None:
        """Ask the child to exit (it closes its sampler), wait, then terminate / kill it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()


def _stop_child(process: Any, conn: Any, timeout: float) -> None:
    """End a :class:`SubprocessSampler`'s child: ask, wait ``timeout`` s, terminate, kill."""
    try:
        if process.is_alive():
            conn.send(("close",))
    except (OSError, ValueError):
        pass
    process.join(timeout)
    if process.is_alive():
        logger.warning("sampler subprocess %s did not exit within %.0f s; terminating it", process.pid, timeout)
        process.terminate()
        process.join(10)
    if process.is_alive():
        process.kill()
        process.join(10)
    conn.close()


def _serve_sampler(conn: Any, model_path: str, options: dict[str, Any]) -> None:
    """The child's main loop: build the sampler, then answer ``generate`` requests until ``close`` or EOF."""
    try:
        sampler = make_sampler(model_path, isolate=False, **options)
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            conn.close()
        return
    try:
        conn.send(("ready", sampler.backend))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the parent has gone
            if msg[0] == "close":
                break
            if msg[0] == "generate":
                _, requests, params, progress = msg
                try:
                    reply: tuple[str, Any] = ("ok", sampler.generate(requests, params, progress=progress))
                except Exception:
                    reply = ("error", traceback.format_exc())
            else:
                reply = ("error", f"unknown request {msg[0]!r}")
            conn.send(reply)
    finally:
        try:
            sampler.close()
        finally:
            conn.close()


# ---------------------------------------------------------------- incremental sampling into a run folder


def prompt_id(prompt_ids: Sequence[int]) -> str:
    """Short content id of a tokenised prompt (first 16 hex digits of a sha256)."""
    return hashlib.sha256(",".join(map(str, prompt_ids)).encode()).hexdigest()[:16]


def sample_to_store(
    sampler: Sampler | None,
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
    shards=None,
) -> list[dict]:
    """Sample ``n`` completions for every ``(problem_id, prompt_ids)`` item, one atomic shard per chunk.

    The items are cut into fixed chunks of ``chunk_size`` before any work; finished chunks found in
    ``store`` (a :class:`mathreason.runs.ShardedRows` opened with the same ``key``) are skipped, so a
    killed run resumes where it stopped and reproduces the rows of an uninterrupted one. Sample ``j`` of
    problem ``p`` has seed ``row_seed(seed, tag, p, j)``. ``transform(rows) -> rows`` (e.g. grading)
    runs on each chunk before it is written. Returns all rows, in item then sample order:
    ``problem_id, sample_index, prompt_id, text, token_ids, finish_reason, stop_reason, seed`` (+ what
    ``transform`` adds). ``shards`` (a :class:`mathreason.executors.ShardRunner` of
    :class:`mathreason.executors.SampleWorker` s, e.g. Ray actors) computes the chunks instead of
    ``sampler``; this process still writes every shard, once.
    """
    from tqdm.auto import tqdm

    from mathreason.executors import LocalShards, SampleWorker
    from mathreason.runs import hash_json

    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    # The plan itself (which items, in which chunks) is part of the key, so shards are only ever reused
    # with the boundaries they were written with.
    plan_key = hash_json([key, tag, seed, n, chunk_size, [(pid, prompt_id(ids)) for pid, ids in items]])
    done = store.open(plan_key, len(chunks), meta={"items": len(items), "n": n, "chunk_size": chunk_size, "tag": tag})
    todo = [i for i in range(len(chunks)) if i not in done]
    bar = tqdm(total=len(items), initial=len(items) - sum(len(chunks[i]) for i in todo), desc=desc, unit="q", disable=not progress)
    runner = shards if shards is not None else LocalShards(lambda: SampleWorker(sampler, params, n=n, seed=seed, tag=tag))
    for ci, rows in runner.map([(ci, chunks[ci]) for ci in todo], str(store.folder)):
        if transform is not None:
            rows = transform(rows)
        store.write(ci, rows)
        bar.update(len(chunks[ci]))
    bar.close()
    return store.read()
