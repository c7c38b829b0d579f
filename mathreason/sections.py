"""Config sections of part 1 (model, data, training, sampling, grading, RFT, evaluation).

Every field carries a docstring (the string right below it), which is its ``--help`` text. The sections
are assembled into :class:`mathreason.config.Config`; part 2's sections are in :mod:`mathreason.credit_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared import configlib

__all__ = [
    "ArithConfig",
    "BackendConfig",
    "DataConfig",
    "EvalConfig",
    "GradeConfig",
    "LoraConfig",
    "ModelConfig",
    "RFTConfig",
    "SampleConfig",
    "TINY_MODEL",
    "TinyModelConfig",
    "TrainConfig",
]

TINY_MODEL = "tiny-random-llama"
"""``model.name_or_path`` value that builds a random small Llama and an offline tokenizer in the run folder."""


# ``ConfigError`` (a ValueError naming the source, line and field) comes from shared.configlib. The
# sections' ``validate`` methods report a bad field with ``_require``; the builder adds its origin.
_FieldError = configlib.FieldError
_require = configlib.require


# ====================================================================== config sections


@dataclass
class TinyModelConfig:
    """Shape of the random Llama built when ``model.name_or_path`` is ``tiny-random-llama``."""

    hidden_size: int = 64
    """Width of the residual stream."""
    intermediate_size: int = 128
    """Width of the MLP."""
    num_hidden_layers: int = 2
    """Number of decoder layers."""
    num_attention_heads: int = 4
    """Attention heads."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention when smaller than num_attention_heads)."""
    max_position_embeddings: int = 512
    """Longest sequence (prompt + completion) the model accepts."""
    vocab_size: int = 320
    """Target vocabulary of the offline byte-level BPE tokenizer trained on the tiny problems (>= 259)."""

    def validate(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            _require(getattr(self, name) >= 1, name, "must be >= 1")
        _require(self.hidden_size % self.num_attention_heads == 0, "hidden_size", "must be divisible by num_attention_heads")
        _require(
            self.num_key_value_heads >= 1 and self.num_attention_heads % self.num_key_value_heads == 0,
            "num_key_value_heads",
            "must divide num_attention_heads",
        )
        _require(self.vocab_size >= 259, "vocab_size", "must be >= 259 (256 bytes + 3 special tokens)")


@dataclass
class ModelConfig:
    """The base model: a hub id, a local folder, or ``tiny-random-llama``."""

    name_or_path: str = TINY_MODEL
    """Hub id or local folder of the base model (e.g. deepseek-ai/deepseek-math-7b-base, meta-llama/Llama-2-7b-hf); `tiny-random-llama` builds a random small Llama and an offline tokenizer in <run_dir>/base."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the base model; part of its fingerprint."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder when it differs from the model's."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype when loading for sampling/evaluation; `auto` = bfloat16 on a GPU that supports it, else float32."""
    trust_remote_code: bool = False
    """Allow model code shipped with a hub checkpoint."""
    attn_implementation: str | None = None
    """transformers attention kernel (e.g. `sdpa`, `flash_attention_2`); None = the library's default."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny random model (used only with `tiny-random-llama`)."""

    def validate(self) -> None:
        _require(bool(self.name_or_path.strip()), "name_or_path", "must not be empty")

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == TINY_MODEL


@dataclass
class ArithConfig:
    """The generated multi-step arithmetic task (`data.dsyn: arith`, benchmark `arith`; mathreason.arith)."""

    train_size: int = 4000
    """Training problems generated (the D_syn pool; `data.subset_size` takes nested subsets of it)."""
    test_size: int = 500
    """Test problems generated (the `arith` benchmark), disjoint from the training problems."""
    seed: int = 0
    """Seed of the problems (independent of the run seed, so every seed of a study sees the same task and test set)."""
    min_steps: int = 2
    """Fewest equations per solution."""
    max_steps: int = 4
    """Most equations per solution (the number of steps sets the difficulty)."""
    max_operand: int = 9
    """New numbers are drawn from 2 .. max_operand."""
    max_start: int = 20
    """The starting count is drawn from 2 .. max_start."""
    max_value: int = 99
    """Every intermediate value stays in 0 .. max_value."""
    max_distractors: int = 1
    """Up to this many sentences about other people's items."""

    def validate(self) -> None:
        _require(self.train_size >= 1 and self.test_size >= 1, "train_size", "train_size and test_size must be >= 1")
        _require(1 <= self.min_steps <= self.max_steps, "min_steps", "need 1 <= min_steps <= max_steps")
        _require(self.max_operand >= 2 and self.max_start >= 2, "max_operand", "max_operand and max_start must be >= 2")
        _require(self.max_value >= max(self.max_start, 4), "max_value", "must be >= max(max_start, 4)")
        _require(self.max_distractors >= 0, "max_distractors", "must be >= 0")

    def spec(self):
        from mathreason.arith import ArithSpec

        return ArithSpec(self.min_steps, self.max_steps, self.max_operand, self.max_start, self.max_value, self.max_distractors)


@dataclass
class DataConfig:
    """D_syn (the synthetic training problems) and the prompt format."""

    dataset: Literal["gsm8k", "math"] = "gsm8k"
    """Answer format of the task: grading, prompt defaults and GSM8K equation dedup follow it."""
    dsyn: str = "gsm8k"
    """D_syn source: `gsm8k` or `math` (the training set's reference solutions under $STEPCREDIT_DATA), `tiny` (a handful of generated one-step problems written into the run folder), `arith` (the generated multi-step arithmetic task, `data.arith`), or a path to any jsonl of problems with solutions."""
    dsyn_split: str = "train"
    """Split read when `dsyn` names a dataset."""
    subset_size: int | None = None
    """Use only this many D_syn problems (None = all). Subsets are nested: with one `subset_seed`, the subset of size n is the first n problems of one seeded permutation, so 1x is inside 2x inside 4x."""
    subset_seed: int = 0
    """Seed of the permutation that defines the nested subsets."""
    prompt_template: str | None = None
    """Prompt template name (see mathreason.data.get_prompt_template); None = the dataset's current zero-shot template (`gsm8k-zeroshot-v2`, `math-zeroshot-v1`), which asks for the dataset's one answer format (`#### N`, `\\boxed{}`)."""
    skip_malformed: bool = False
    """Skip malformed D_syn rows (with a warning) instead of stopping with an error."""
    tiny_train_size: int = 16
    """Number of generated training problems when `dsyn` is `tiny`."""
    tiny_test_size: int = 8
    """Number of generated test problems when `dsyn` is `tiny` (the `tiny` evaluation benchmark)."""
    arith: ArithConfig = field(default_factory=ArithConfig)
    """The generated arithmetic task (used when `dsyn` is `arith` or a benchmark is `arith`)."""

    def __post_init__(self) -> None:
        if self.prompt_template is None:
            self.prompt_template = {"gsm8k": "gsm8k-zeroshot-v2", "math": "math-zeroshot-v1"}[self.dataset]

    def validate(self) -> None:
        _require(bool(self.dsyn.strip()), "dsyn", "must not be empty")
        _require(self.subset_size is None or self.subset_size >= 1, "subset_size", "must be >= 1 or null")
        _require(self.tiny_train_size >= 1, "tiny_train_size", "must be >= 1")
        _require(self.tiny_test_size >= 1, "tiny_test_size", "must be >= 1")
        self.arith.validate()


@dataclass
class LoraConfig:
    """Optional LoRA adapters (peft); merged into the weights when the stage saves its model."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters (Llama-style names by default)."""

    def validate(self) -> None:
        _require(self.r >= 1, "r", "must be >= 1")
        _require(0.0 <= self.dropout < 1.0, "dropout", "must lie in [0, 1)")
        _require(bool(self.target_modules), "target_modules", "must not be empty")


@configlib.renamed(warmup_ratio="warmup_steps")
@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters (TRL SFTTrainer, loss on the completion only)."""

    learning_rate: float = 1e-5
    """Peak learning rate of AdamW (1e-5 is the usual full fine-tune rate for a 7B model)."""
    epochs: float = 3.0
    """Passes over the training data."""
    max_steps: int = -1
    """Stop after this many optimiser steps (-1 = run `epochs`)."""
    batch_size: int = 64
    """Global batch size in sequences per optimiser step; gradient accumulation = batch_size / (per_device_batch_size x processes), which must be a whole number."""
    per_device_batch_size: int = 4
    """Sequences per forward pass on one device."""
    max_length: int = 1024
    """Longest training sequence (prompt + completion) in tokens; longer ones are cut."""
    lr_scheduler: str = "cosine"
    """transformers scheduler name (cosine, linear, constant, constant_with_warmup, ...)."""
    warmup_steps: float = 0.03
    """Linear warm-up of the learning rate (transformers' `warmup_steps`): < 1 = that fraction of the optimiser steps (rounded up), >= 1 = that many steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass; None = on when CUDA is available, unless the accelerate FSDP config checkpoints activations itself (then off: never twice)."""
    bf16: bool | None = None
    """bfloat16 mixed precision; None = on when the GPU supports it (never on CPU)."""
    save_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype of the saved final weights; `auto` = bfloat16 when training in bf16, else float32."""
    logging_steps: int = 10
    """Log loss and learning rate to metrics.jsonl every this many steps."""
    save_steps: int = 500
    """Write a resumable checkpoint every this many steps (the stage resumes from the newest one)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk."""
    keep_checkpoints: bool = True
    """Keep the last checkpoints after the final model is written (false: delete them, e.g. for small cached artefacts)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings."""
    deepspeed: str | None = None
    """Path of a DeepSpeed JSON config for the HF Trainer (alternative to an accelerate DeepSpeed config)."""

    def validate(self) -> None:
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(self.epochs > 0 or self.max_steps > 0, "epochs", "must be > 0 (or set max_steps)")
        _require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 or >= 1")
        _require(self.per_device_batch_size >= 1, "per_device_batch_size", "must be >= 1")
        _require(self.batch_size >= self.per_device_batch_size, "batch_size", "must be >= per_device_batch_size")
        _require(
            self.batch_size % self.per_device_batch_size == 0, "batch_size", "must be a multiple of per_device_batch_size"
        )
        _require(self.max_length >= 8, "max_length", "must be >= 8")
        _require(self.warmup_steps >= 0.0, "warmup_steps", "must be >= 0 (< 1: a fraction of the steps, >= 1: steps)")
        _require(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        _require(self.save_steps >= 1, "save_steps", "must be >= 1")
        _require(self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        self.lora.validate()


@dataclass
class BackendConfig:
    """Which sampler runs and how (shared by `sample` and `eval`)."""

    backend: Literal["auto", "vllm", "transformers"] = "auto"
    """`auto` = vLLM when CUDA is available and vLLM imports, else transformers; `vllm` fails when it cannot run."""
    batch_size: int = 64
    """transformers backend: sequences generated together (left padded, KV cache)."""
    tensor_parallel_size: int = 1
    """vLLM: GPUs a model is split over."""
    gpu_memory_utilization: float = 0.9
    """vLLM: fraction of GPU memory it may take."""
    max_model_len: int | None = None
    """vLLM: longest prompt + completion (None = the model's limit)."""
    enable_prefix_caching: bool = True
    """vLLM: reuse the KV cache of shared prompt prefixes (many samples per question, step-prefix rollouts)."""

    def validate(self) -> None:
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1")
        _require(0.0 < self.gpu_memory_utilization <= 1.0, "gpu_memory_utilization", "must lie in (0, 1]")


@dataclass
class SampleConfig:
    """Sampling M solutions per D_syn question from a policy (the `sample` stage)."""

    policy: str = "sft"
    """Model to sample from: `sft`, `rft` (this run's stage outputs), `base`, or a model path / hub id."""
    n: int = 8
    """Samples per question (M). 8 = the paper's negatives per question, so one pass serves RFT positives now and per-step negatives later."""
    temperature: float = 0.7
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 512
    """Most generated tokens per sample (always set: 512 for GSM8K, 1024 for MATH)."""
    stop: list[str] | None = None
    """Stop strings (cut from the text); None = the prompt template's own (e.g. `\nQuestion:`). EOS always stops."""
    chunk_size: int = 64
    """Questions per shard: the unit of incremental, atomic writes and of resume."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """Sampler backend settings."""

    def validate(self) -> None:
        _require(bool(self.policy.strip()), "policy", "must not be empty")
        _require(self.n >= 1, "n", "must be >= 1")
        _require(self.temperature >= 0.0, "temperature", "must be >= 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must lie in (0, 1]")
        _require(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        _require(self.chunk_size >= 1, "chunk_size", "must be >= 1")
        _require(all(s for s in self.stop or []), "stop", "stop strings must be non-empty")
        self.backend.validate()


@dataclass
class GradeConfig:
    """Grading sampled solutions against the D_syn answers (the `grade` stage)."""

    workers: int | None = None
    """Grader processes (None = the grader's default)."""
    timeout: float = 5.0
    """Seconds allowed per answer comparison."""
    chunk_size: int = 512
    """Rows per shard."""

    def validate(self) -> None:
        _require(self.timeout > 0, "timeout", "must be > 0")
        _require(self.chunk_size >= 1, "chunk_size", "must be >= 1")
        _require(self.workers is None or self.workers >= 1, "workers", "must be >= 1 or null")


@dataclass
class RFTConfig:
    """Rejection fine-tuning: keep pi_sft's correct samples, dedup, fine-tune the base model on them."""

    samples_per_question: int | None = None
    """Use the first M samples of each question (None = all `sample.n`)."""
    dedup: Literal["none", "text", "text+equations"] = "text+equations"
    """Drop duplicates by normalised text; `text+equations` also drops GSM8K samples with the same sequence of <<a=b>> equations (applied to gsm8k only)."""
    max_per_question: int | None = 4
    """Keep at most this many distinct positives per question (None = all), so easy questions do not dominate."""
    include_dsyn: bool = False
    """Also train on the D_syn reference solutions (Yuan et al.'s RFT does; Setlur et al. train on the positives)."""
    init: Literal["base", "sft"] = "base"
    """Model RFT starts from: the base model (the paper's recipe) or pi_sft."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Fine-tuning hyper-parameters."""

    def validate(self) -> None:
        _require(self.samples_per_question is None or self.samples_per_question >= 1, "samples_per_question", "must be >= 1 or null")
        _require(self.max_per_question is None or self.max_per_question >= 1, "max_per_question", "must be >= 1 or null")
        self.train.validate()


@dataclass
class EvalConfig:
    """Greedy pass@1 and sampled pass@k on test benchmarks (the `eval` stage)."""

    policies: list[str] = field(default_factory=lambda: ["sft", "rft"])
    """Models to evaluate: `sft`, `rft`, `base`, or model paths / hub ids."""
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"])
    """`gsm8k` (test), `math500`, `math` (test), `tiny` (the tiny preset's test problems), `arith` (the generated task's test problems) or a jsonl path."""
    limit: int | None = None
    """Evaluate only the first this many problems of each benchmark (None = all)."""
    greedy: bool = True
    """Greedy decoding, one sample per problem: pass@1."""
    num_samples: int = 0
    """Sampled solutions per problem for pass@k (0 = none)."""
    pass_k: list[int] = field(default_factory=lambda: [1])
    """k values of the unbiased pass@k estimator (each <= num_samples)."""
    temperature: float = 0.7
    """Temperature of the sampled solutions."""
    top_p: float = 1.0
    """Nucleus mass of the sampled solutions."""
    max_tokens: int = 512
    """Most generated tokens per solution."""
    stop: list[str] | None = None
    """Stop strings; None = the prompt template's own. EOS always stops."""
    chunk_size: int = 64
    """Problems per shard."""
    grade_timeout: float = 5.0
    """Seconds allowed per answer comparison."""
    grade_workers: int | None = None
    """Grader processes (None = the grader's default)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """Sampler backend settings."""

    def validate(self) -> None:
        _require(bool(self.policies), "policies", "must name at least one model")
        _require(bool(self.benchmarks), "benchmarks", "must name at least one benchmark")
        _require(len(set(self.policies)) == len(self.policies), "policies", "must not repeat")
        _require(len(set(self.benchmarks)) == len(self.benchmarks), "benchmarks", "must not repeat")
        _require(self.limit is None or self.limit >= 1, "limit", "must be >= 1 or null")
        _require(self.greedy or self.num_samples > 0, "greedy", "nothing to evaluate: greedy is false and num_samples is 0")
        _require(self.num_samples >= 0, "num_samples", "must be >= 0")
        _require(all(k >= 1 for k in self.pass_k), "pass_k", "every k must be >= 1")
        _require(
            self.num_samples == 0 or all(k <= self.num_samples for k in self.pass_k),
            "pass_k",
            f"every k must be <= num_samples ({self.num_samples})",
        )
        _require(self.temperature >= 0.0, "temperature", "must be >= 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must lie in (0, 1]")
        _require(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        _require(self.chunk_size >= 1, "chunk_size", "must be >= 1")
        _require(self.grade_timeout > 0, "grade_timeout", "must be > 0")
        self.backend.validate()
