"""SFT/RFT training through TRL: tokenisation that matches the sampler, completion-only labels,
checkpoint resume after a crash (same final weights as an uninterrupted run), stale checkpoints, LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from mathreason.config import ModelConfig, TrainConfig, load_config
from mathreason.models import load_tokenizer
from mathreason.stages import Context
from mathreason.training import encode_completion, encode_prompt, make_example, train_causal_lm


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("tiny_training")
    ctx = Context(load_config("tiny", [f"run_dir={run}"]))
    path = ctx.base_model()
    tok = load_tokenizer(path)
    examples = []
    for p in ctx.dsyn()[:8]:
        text = ctx.template().render(p.question)
        ids = encode_prompt(tok, text)
        examples.append(make_example(ids, encode_completion(tok, text, ids, p.solution)))
    return path, tok, examples


def test_prompt_ids_match_the_sampler_and_completion_ends_with_eos(base):
    path, tok, _ = base
    prompt = "Question: Tom has 3 apples.\n"
    ids = encode_prompt(tok, prompt)
    assert ids[0] == tok.bos_token_id and ids == tok(prompt).input_ids
    comp = encode_completion(tok, prompt, ids, "Tom has 3 apples.\n#### 3")
    assert comp[-1] == tok.eos_token_id
    assert tok.decode(comp[:-1]) == "Tom has 3 apples.\n#### 3"
    ex = make_example(ids, comp)
    assert ex["input_ids"] == ids + comp
    assert ex["completion_mask"] == [0] * len(ids) + [1] * len(comp)
    with pytest.raises(ValueError):
        make_example(ids, [])


class _Crash(TrainerCallback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated crash")


def _cfg(**kw) -> TrainConfig:
    base = dict(
        learning_rate=3e-3, epochs=1, max_steps=6, batch_size=2, per_device_batch_size=2, max_length=256,
        lr_scheduler="linear", warmup_steps=0.0, logging_steps=1, save_steps=2, save_total_limit=3,
        bf16=False, gradient_checkpointing=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_crash_gives_the_uninterrupted_weights(base, tmp_path):
    path, _, examples = base
    kw = dict(init_model=path, tokenizer_path=path, model_cfg=ModelConfig(), cfg=_cfg(), key="k", seed=0)
    full = train_causal_lm(examples, out_dir=tmp_path / "full", **kw)
    assert full["optimizer_steps"] == 6 and full["resumed_from"] is None

    with pytest.raises(KeyboardInterrupt):
        train_causal_lm(examples, out_dir=tmp_path / "crash", callbacks=[_Crash(3)], **kw)
    assert (tmp_path / "crash" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "crash" / "model").exists()
    logged = []
    resumed = train_causal_lm(examples, out_dir=tmp_path / "crash", log=lambda **m: logged.append(m), **kw)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert min(m["step"] for m in logged if "loss" in m) == 3  # steps 1-2 were not redone
    a, b = _weights(tmp_path / "full" / "model"), _weights(tmp_path / "crash" / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    init = _weights(Path(path))
    assert any(not torch.equal(init[k], a[k]) for k in a)

    # Checkpoints written under another key (config or data changed) are discarded, not resumed.
    other = train_causal_lm(examples, out_dir=tmp_path / "crash", **{**kw, "key": "other"})
    assert other["resumed_from"] is None


@pytest.mark.slow
def test_lora_adapters_are_merged_into_a_plain_checkpoint(base, tmp_path):
    path, _, examples = base
    cfg = load_config("tiny", ["sft.lora.enabled=true", "sft.lora.r=4", "sft.lora.target_modules=[q_proj, v_proj]"]).sft
    cfg.max_steps = 3
    train_causal_lm(examples, init_model=path, tokenizer_path=path, model_cfg=ModelConfig(), cfg=cfg, out_dir=tmp_path, key="k", seed=0)
    out = tmp_path / "model"
    assert not any(p.name.startswith("adapter_") for p in out.iterdir())
    trained, init = _weights(out), _weights(Path(path))
    assert trained.keys() == init.keys()  # a plain Llama checkpoint, no lora_A/lora_B
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


def test_batch_size_must_split_over_processes(base, tmp_path, monkeypatch):
    path, _, examples = base
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="not a multiple of per_device_batch_size x processes"):
        train_causal_lm(
            examples, init_model=path, tokenizer_path=path, model_cfg=ModelConfig(), cfg=_cfg(batch_size=4),
            out_dir=tmp_path, key="k", seed=0,
        )


@pytest.mark.slow
def test_checkpoints_can_be_dropped_once_the_model_is_written(base, tmp_path):
    path, _, examples = base
    kw = dict(init_model=path, tokenizer_path=path, model_cfg=ModelConfig(), key="k", seed=0)
    train_causal_lm(examples, out_dir=tmp_path / "keep", cfg=_cfg(max_steps=4), **kw)
    assert list((tmp_path / "keep" / "checkpoints").glob("checkpoint-*"))
    train_causal_lm(examples, out_dir=tmp_path / "drop", cfg=_cfg(max_steps=4, keep_checkpoints=False), **kw)
    assert not list((tmp_path / "drop" / "checkpoints").glob("checkpoint-*"))
    assert (tmp_path / "drop" / "model" / "model.safetensors").exists()
