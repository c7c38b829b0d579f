"""Supervised fine-tuning (SFT and RFT) through TRL's ``SFTTrainer``, loss on the completion only.

Examples are tokenised here, not by TRL, so that a training prompt is token for token the prompt the
sampler sees: ``prompt_ids = tokenizer(prompt).input_ids`` (with the tokenizer's special tokens, e.g.
BOS), and the completion is what follows it in ``tokenizer(prompt + completion)`` (falling back to the
completion tokenised alone when the joint tokenisation merges across the boundary), then EOS. RFT can
instead pass the exact token ids a sample was generated with. TRL gets ``input_ids`` and
``completion_mask`` columns and builds labels that are -100 on the prompt.

Distribution: run the stage under ``accelerate launch`` (FSDP or DeepSpeed ZeRO-3 configs ship in
``mathreason/configs``); the Trainer picks the setup up from the environment. The global batch size is
fixed by the config and gradient accumulation is derived from the number of processes. Checkpoints are
written every ``save_steps`` into ``<stage>/checkpoints`` and a re-run resumes from the newest complete
one (same config and data, checked through a key file). The final model is written to a temporary
folder and renamed, so ``<stage>/model`` is either absent or complete; LoRA adapters are merged into
the base weights before that, so every later stage (and vLLM) loads a plain checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from mathreason.config import ModelConfig, TrainConfig
from mathreason.runs import atomic_write_json, is_main_process

__all__ = ["encode_completion", "encode_prompt", "make_example", "train_causal_lm", "world_size"]

logger = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt exactly as the sampler receives them (with the tokenizer's BOS etc.)."""
    return list(tokenizer(prompt).input_ids)


def encode_completion(tokenizer, prompt: str, prompt_ids: Sequence[int], completion: str) -> list[int]:
    """Ids of ``completion`` after ``prompt_ids``, ending with EOS.

    Uses the joint tokenisation of ``prompt + completion`` when it starts with ``prompt_ids`` (so the
    completion is tokenised in context), else the completion tokenised on its own.
    """
    full = list(tokenizer(prompt + completion).input_ids)
    n = len(prompt_ids)
    if full[:n] == list(prompt_ids):
        ids = full[n:]
    else:
        ids = list(tokenizer(completion, add_special_tokens=False).input_ids)
    eos = tokenizer.eos_token_id
    if ids and ids[-1] == eos:
        return ids
    return ids + [eos]


def make_example(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> dict[str, list[int]]:
    """A pre-tokenised SFTTrainer example: loss on the completion tokens only."""
    if not completion_ids:
        raise ValueError("make_example: empty completion")
    return {
        "input_ids": list(prompt_ids) + list(completion_ids),
        "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
    }


def _last_complete_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    ckpts = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name.split("-")[-1].isdigit():
            if (p / "trainer_state.json").exists():
                ckpts.append((int(p.name.split("-")[-1]), p))
    return str(max(ckpts)[1]) if ckpts else None


def _wait_for_everyone() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def train_causal_lm(
    examples: list[dict[str, list[int]]],
    *,
    init_model: str,
    tokenizer_path: str,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    out_dir: str | Path,
    key: str,
    seed: int,
    log: Callable[..., None] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``init_model`` on pre-tokenised ``examples``; writes ``<out_dir>/model`` and returns a summary.

    Args:
        examples: ``{"input_ids", "completion_mask"}`` dicts (see :func:`make_example`).
        init_model: folder or hub id of the starting weights.
        tokenizer_path: folder or hub id of the tokenizer (saved next to the final model).
        model_cfg: base-model settings (revision, remote code, attention kernel).
        cfg: hyper-parameters.
        out_dir: the stage folder; ``checkpoints/`` and ``model/`` go inside.
        key: identifies config + data; checkpoints written under another key are discarded.
        seed: data order and dropout seed.
        log: ``log(step=..., **metrics)`` called on the main process at every logging step.
        callbacks: extra ``transformers.TrainerCallback`` objects.
    """
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from mathreason.models import load_tokenizer

    if not examples:
        raise ValueError("train_causal_lm: no training examples")
    procs = world_size()
    per_step = cfg.per_device_batch_size * procs
    if cfg.batch_size % per_step:
        raise ValueError(
            f"train: batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
            f"= {cfg.per_device_batch_size} x {procs}"
        )
    accum = cfg.batch_size // per_step
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    final_dir = out_dir / "model"
    tmp_dir = out_dir / "model.tmp"

    # Checkpoints from another config or data set are useless: start over.
    key_file = ckpt_dir / "key.json"
    stale = ckpt_dir.exists() and (not key_file.exists() or json.loads(key_file.read_text()).get("key") != key)
    _wait_for_everyone()
    if is_main_process():
        if stale:
            shutil.rmtree(ckpt_dir)
        for p in (tmp_dir, final_dir):
            if p.exists():
                shutil.rmtree(p)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(key_file, {"key": key})
    _wait_for_everyone()

    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        raise ValueError("train: bf16 needs a GPU (set bf16: false on CPU)")
    grad_ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda

    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code=model_cfg.trust_remote_code)
    tokenizer.padding_side = "right"  # training pads on the right; the sampler uses left padding
    model_init_kwargs: dict[str, Any] = {"dtype": "float32", "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        model_init_kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.revision and init_model == model_cfg.name_or_path:
        model_init_kwargs["revision"] = model_cfg.revision

    args = SFTConfig(
        output_dir=str(ckpt_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accum,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_length,
        completion_only_loss=True,
        activation_checkpointing=grad_ckpt,  # the new name of gradient_checkpointing
        gradient_checkpointing=None,
        bf16=bf16,
        use_cpu=not cuda,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to="none",
        deepspeed=cfg.deepspeed,
        model_init_kwargs=model_init_kwargs,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )

    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig

        peft_config = PeftLoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )

    class _MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if log is not None and state.is_world_process_zero and logs:
                log(step=state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    trainer = SFTTrainer(
        model=str(init_model),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_MetricsCallback(), *callbacks],
    )
    resume = _last_complete_checkpoint(ckpt_dir)
    if resume:
        logger.info("resuming training from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)

    trainer.save_model(str(tmp_dir))
    _wait_for_everyone()
    if is_main_process():
        if cfg.lora.enabled:
            _merge_lora(init_model, tmp_dir, model_cfg)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(tmp_dir))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
    _wait_for_everyone()
    metrics = dict(result.metrics)
    metrics.update(
        {
            "examples": len(examples),
            "completion_tokens": int(sum(sum(e["completion_mask"]) for e in examples)),
            "optimizer_steps": int(trainer.state.global_step),
            "gradient_accumulation_steps": accum,
            "processes": procs,
            "resumed_from": resume,
        }
    )
    del trainer
    return metrics


def _merge_lora(init_model: str, adapter_dir: Path, model_cfg: ModelConfig) -> None:
    """Replace the adapter files in ``adapter_dir`` by the merged full model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(init_model), dtype="auto", trust_remote_code=model_cfg.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    for p in list(adapter_dir.iterdir()):
        if p.name.startswith("adapter_"):
            p.unlink()
    merged.save_pretrained(str(adapter_dir))
