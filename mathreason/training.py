"""Supervised fine-tuning (SFT and RFT) through TRL's ``SFTTrainer``, loss on the completion only.

Examples are tokenised here, not by TRL, so that a training prompt is token for token the prompt the
sampler sees: ``prompt_ids = tokenizer(prompt).input_ids`` (with the tokenizer's special tokens, e.g.
BOS), and the completion is what follows it in ``tokenizer(prompt + completion)`` (falling back to the
completion tokenised alone when the joint tokenisation merges across the boundary), then EOS. RFT can
instead pass the exact token ids a sample was generated with. TRL gets ``input_ids`` and
``completion_mask`` columns and builds labels that are -100 on the prompt.

Distribution: run the stage under ``accelerate launch`` (FSDP or DeepSpeed ZeRO-3 configs ship in
``mathreason/configs``); the Trainer picks the setup up from the environment. The global batch size is
fixed by the config and gradient accumulation is derived from the number of processes. Activations are
checkpointed once: by FSDP when its config says so (the shipped ``fsdp.yaml``), else by the Trainer
(:func:`resolve_precision`). Checkpoints are written every ``save_steps`` into ``<stage>/checkpoints``
(sharded under FSDP) and a re-run resumes from the newest complete one (same config and data, checked
through a key file). The final model is gathered into a full state dict, written to a temporary folder
and renamed, so ``<stage>/model`` is either absent or complete; LoRA adapters are merged into the base
weights and the weights are cast to ``save_dtype`` (bfloat16 for a bf16 run) before that, so every later
stage (and vLLM) loads a plain checkpoint of half the size of the float32 master weights.

The pieces (:func:`training_arguments`, :func:`prepare_output`, :func:`finish_training`, ...) are shared
with the preference trainer of :mod:`mathreason.preference`.
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

__all__ = [
    "cast_checkpoint",
    "encode_completion",
    "encode_prompt",
    "finish_training",
    "fsdp_checkpoints_activations",
    "gradient_accumulation",
    "make_example",
    "metrics_callback",
    "model_init_kwargs",
    "peft_config",
    "prepare_output",
    "resolve_precision",
    "train_causal_lm",
    "training_arguments",
    "world_size",
]

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


def fsdp_checkpoints_activations() -> bool:
    """Whether ``accelerate launch`` runs FSDP with its own activation checkpointing (``fsdp_activation_checkpointing``)."""
    env = os.environ
    return env.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true") and env.get(
        "FSDP_ACTIVATION_CHECKPOINTING", "false"
    ).lower() in ("1", "true")


def resolve_precision(cfg: TrainConfig) -> tuple[bool, bool, str]:
    """``(bf16, activation checkpointing by the Trainer, dtype of the saved weights)`` for this machine and launch.

    Activation checkpointing is done once: when the accelerate FSDP config checkpoints activations itself
    (the shipped ``fsdp.yaml`` does), the Trainer's is off (asking for both is an error); otherwise it
    follows ``gradient_checkpointing`` (None = on when CUDA is available). Final weights are written in
    ``save_dtype`` (``auto`` = bfloat16 when training in bf16, else float32).
    """
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        raise ValueError("train: bf16 needs a GPU (set bf16: false on CPU)")
    if fsdp_checkpoints_activations():
        if cfg.gradient_checkpointing:
            raise ValueError(
                "train: gradient_checkpointing is true but the accelerate FSDP config already checkpoints activations "
                "(fsdp_activation_checkpointing: true); set gradient_checkpointing: null or false so it is done once"
            )
        grad_ckpt = False
    else:
        grad_ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    save_dtype = cfg.save_dtype if cfg.save_dtype != "auto" else ("bfloat16" if bf16 else "float32")
    return bf16, grad_ckpt, save_dtype


def gradient_accumulation(cfg: TrainConfig) -> int:
    procs = world_size()
    per_step = cfg.per_device_batch_size * procs
    if cfg.batch_size % per_step:
        raise ValueError(
            f"train: batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
            f"= {cfg.per_device_batch_size} x {procs}"
        )
    return cfg.batch_size // per_step


def prepare_output(out_dir: str | Path, key: str) -> tuple[Path, Path, Path]:
    """``(checkpoints/, model/, model.tmp/)`` of a training stage; checkpoints of another key are discarded."""
    out_dir = Path(out_dir)
    ckpt_dir, final_dir, tmp_dir = out_dir / "checkpoints", out_dir / "model", out_dir / "model.tmp"
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
    return ckpt_dir, final_dir, tmp_dir


def training_arguments(
    cfg: TrainConfig, model_cfg: ModelConfig, *, ckpt_dir: Path, seed: int, init_model: str, args_cls=None, **extra: Any
):
    """The ``TrainingArguments`` (or ``args_cls``, e.g. TRL's ``SFTConfig``) of a stage: batch, schedule,
    precision, checkpoints every ``save_steps``, CPU or GPU, DeepSpeed JSON; ``extra`` adds fields."""
    from transformers import TrainingArguments

    from mathreason.tracking import report_to

    bf16, grad_ckpt, _ = resolve_precision(cfg)
    kwargs: dict[str, Any] = dict(
        output_dir=str(ckpt_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(cfg),
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,  # < 1: a ratio of the total steps, >= 1: steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        activation_checkpointing=grad_ckpt,  # the new name of gradient_checkpointing
        gradient_checkpointing=None,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to=report_to(),  # tracking.backend, set by mathreason.tracking.training_env for the stage
        deepspeed=cfg.deepspeed,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    kwargs.update(extra)
    return (args_cls or TrainingArguments)(**kwargs)


def model_init_kwargs(model_cfg: ModelConfig, init_model: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments of the starting weights (float32 master weights)."""
    kw: dict[str, Any] = {"dtype": "float32", "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kw["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.revision and init_model == model_cfg.name_or_path:
        kw["revision"] = model_cfg.revision
    return kw


def peft_config(cfg: TrainConfig):
    """A peft ``LoraConfig`` when ``cfg.lora.enabled``, else None."""
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def metrics_callback(log: Callable[..., None] | None):
    """A ``TrainerCallback`` that forwards the Trainer's numeric logs to ``log(step=..., **metrics)``."""
    from transformers import TrainerCallback

    class _MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if log is not None and state.is_world_process_zero and logs:
                log(step=state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    return _MetricsCallback()


def finish_training(
    trainer, *, init_model: str, tokenizer, model_cfg: ModelConfig, cfg: TrainConfig, final_dir: Path, tmp_dir: Path
) -> None:
    """Write the final model to ``final_dir`` atomically (``tmp_dir``, then a rename): a plain checkpoint.

    Under FSDP the full state dict is gathered for this save (intermediate checkpoints stay sharded);
    LoRA adapters are merged into the base weights; floating-point weights are written in the resolved
    ``save_dtype`` (bfloat16 for a bf16 run) with ``config.json`` saying so.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(tmp_dir))
    _wait_for_everyone()
    if is_main_process():
        if cfg.lora.enabled:
            _merge_lora(init_model, tmp_dir, model_cfg)
        _, _, save_dtype = resolve_precision(cfg)
        cast_checkpoint(tmp_dir, save_dtype)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(tmp_dir))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
        if not cfg.keep_checkpoints:
            for p in final_dir.parent.joinpath("checkpoints").glob("checkpoint-*"):
                shutil.rmtree(p, ignore_errors=True)
    _wait_for_everyone()


def cast_checkpoint(folder: str | Path, dtype: str) -> None:
    """Cast the floating-point tensors of a safetensors checkpoint in ``folder`` to ``dtype``, shard by shard."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no safetensors weights to cast")
    total = 0
    for f in files:
        tensors = load_file(str(f))
        changed = False
        for k, t in tensors.items():
            if t.is_floating_point() and t.dtype != target:
                tensors[k] = t.to(target)
                changed = True
            total += tensors[k].numel() * tensors[k].element_size()
        if changed:
            tmp = f.with_name(f.name + ".tmp")
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, f)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        atomic_write_json(index, data)
    config = folder / "config.json"
    if config.exists():
        data = json.loads(config.read_text())
        for name in ("dtype", "torch_dtype"):
            if name in data or name == "dtype":
                data[name] = dtype
        atomic_write_json(config, data)


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
    from trl import SFTConfig, SFTTrainer

    from mathreason.models import load_tokenizer

    if not examples:
        raise ValueError("train_causal_lm: no training examples")
    accum = gradient_accumulation(cfg)
    ckpt_dir, final_dir, tmp_dir = prepare_output(out_dir, key)
    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code=model_cfg.trust_remote_code)
    tokenizer.padding_side = "right"  # training pads on the right; the sampler uses left padding
    args = training_arguments(
        cfg,
        model_cfg,
        ckpt_dir=ckpt_dir,
        seed=seed,
        init_model=init_model,
        args_cls=SFTConfig,
        max_length=cfg.max_length,
        completion_only_loss=True,
        model_init_kwargs=model_init_kwargs(model_cfg, init_model),
    )
    trainer = SFTTrainer(
        model=str(init_model),
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
        callbacks=[metrics_callback(log), *callbacks],
    )
    resume = _last_complete_checkpoint(ckpt_dir)
    if resume:
        logger.info("resuming training from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    finish_training(trainer, init_model=init_model, tokenizer=tokenizer, model_cfg=model_cfg, cfg=cfg, final_dir=final_dir, tmp_dir=tmp_dir)
    metrics = dict(result.metrics)
    metrics.update(
        {
            "examples": len(examples),
            "completion_tokens": int(sum(sum(e["completion_mask"]) for e in examples)),
            "optimizer_steps": int(trainer.state.global_step),
            "gradient_accumulation_steps": accum,
            "processes": world_size(),
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
