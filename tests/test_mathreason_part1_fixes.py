"""The five part-1 defects found before part 2: truncated samples are never correct; one answer format per
dataset (prompt, SFT targets, grader); stage keys include the grader's version and the sampling backend;
activation checkpointing is done once under FSDP and final weights are written in the training precision.
(Text/ids agreement under stop strings and subprocess vLLM samplers are tested in test_mathreason_sampling.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from mathreason.config import ConfigError, load_config
from mathreason.evaluate import grade_rows
from mathreason.grading import extract_answer
from mathreason.prompts import ANSWER_FORMATS, PROMPT_TEMPLATES, answer_format, get_prompt_template
from mathreason.stages import STAGES, Context


# ---------------------------------------------------------------- 1. a truncated response is never correct


def test_truncated_rows_are_never_graded_correct():
    rows = [
        {"problem_id": "a", "text": "3 + 4 = 7\n#### 7", "finish_reason": "stop"},
        {"problem_id": "a", "text": "3 + 4 = 7\n#### 7", "finish_reason": "length"},
        {"problem_id": "a", "text": "so far we have 7", "finish_reason": "length"},  # GSM8K's last-number fallback
    ]
    out = grade_rows(rows, {"a": "7"}, "gsm8k", workers=1)
    assert [r["correct"] for r in out] == [True, False, False]
    assert out[1]["reason"] == out[2]["reason"] == "truncated" and out[1]["extracted"] == "7"
    # A rollout is graded as the whole response: prefix text + rollout text.
    out = grade_rows([{"problem_id": "a", "text": "#### 7", "finish_reason": "stop"}], {"a": "7"}, "gsm8k", workers=1, prefix_by_row=["x\n"])
    assert out[0]["correct"]


# ---------------------------------------------------------------- 2. one answer format per dataset


def test_each_current_template_asks_for_its_datasets_answer_format():
    for name in ("gsm8k-zeroshot-v2", "gsm8k-fewshot-v2", "math-zeroshot-v1", "math-fewshot-v1"):
        t = get_prompt_template(name)
        fmt = answer_format(t.dataset)
        assert t.answer_format == fmt.name and fmt.instruction in t.render("Q?")
        for _, solution in t.fewshot:  # exemplars are written in the format they teach
            assert fmt.has_final_answer(solution)
    assert load_config("tiny").data.prompt_template == "gsm8k-zeroshot-v2"
    assert load_config("math").data.prompt_template == "math-zeroshot-v1"
    assert {t.answer_format for t in PROMPT_TEMPLATES.values()} >= {f.name for f in ANSWER_FORMATS.values()}


def test_a_template_asking_for_another_format_is_refused(tmp_path):
    cfg = load_config("tiny", [f"run_dir={tmp_path}", "data.prompt_template=gsm8k-zeroshot-v1"])
    with pytest.raises(ConfigError, match="gsm8k-hashes"):
        Context(cfg).template()


@pytest.mark.parametrize(
    "dataset,solution,answer",
    [
        ("gsm8k", "Tom has 3+4 = <<3+4=7>>7 apples.\n#### 7", "7"),
        ("gsm8k", "Tom has 3 + 4 = 7 apples.\nThe answer is 7.", "7"),  # a synthetic solution in another style
        ("gsm8k", "She pays 1,200 dollars", "1200"),
        ("math", "So $x = \\frac{1}{2}$, i.e. $\\boxed{\\frac12}$.", "\\frac12"),
        ("math", "Hence the area is $6$.", "6"),
    ],
)
def test_sft_targets_are_in_the_trained_format_and_extract_to_the_gold(dataset, solution, answer):
    fmt = answer_format(dataset)
    target = fmt.ensure(solution, answer)
    assert fmt.has_final_answer(target)
    assert target.startswith(solution.rstrip())
    # A completion exactly in the trained format is read back as the gold answer.
    assert extract_answer(target, dataset) in (answer, "\\frac{1}{2}", "1,200")
    from mathreason.grading import grade

    assert grade(target, answer, dataset).correct


@pytest.mark.slow
def test_the_tiny_sft_targets_end_in_the_gsm8k_format(tmp_path):
    from mathreason.models import load_tokenizer
    from mathreason.stages.finetune import dsyn_examples

    ctx = Context(load_config("tiny", [f"run_dir={tmp_path}"]), progress=False)
    tok = load_tokenizer(ctx.base_tokenizer())
    examples, rows = dsyn_examples(ctx, tok)
    for ex, row, p in zip(examples, rows, ctx.dsyn()):
        completion = [t for t, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
        text = tok.decode(completion, skip_special_tokens=True)
        assert completion[-1] == tok.eos_token_id and text.rstrip().splitlines()[-1].startswith("####")
        assert extract_answer(text, "gsm8k") == p.answer


def test_gsm8k_reference_solutions_are_already_in_the_format(data_dir):
    from mathreason.data import load_problems

    fmt = answer_format("gsm8k")
    for p in load_problems("gsm8k", split="test")[:200]:
        assert fmt.ensure(p.solution, p.answer) == p.solution


# ---------------------------------------------------------------- 4. stage keys


def test_grader_version_and_backend_are_part_of_the_stage_keys(tmp_path, monkeypatch):
    import mathreason.grading as grading
    import mathreason.sampling as sampling

    ctx = Context(load_config("tiny", [f"run_dir={tmp_path}"]), progress=False)
    ev = STAGES["eval"]
    monkeypatch.setattr(ctx, "policy_path", lambda name, for_check=False: ctx.base_model())
    a = ev.inputs(ctx)
    assert a["grader"] == grading.GRADER_VERSION and a["backend"] == "transformers"
    monkeypatch.setattr(grading, "GRADER_VERSION", "9999.0")
    b = ev.inputs(ctx)
    assert b["grader"] == "9999.0" and b != a
    monkeypatch.setattr(sampling, "vllm_available", lambda: True)
    c = ev.inputs(ctx)
    assert c["backend"] == "vllm" and c != b
    # The sample stage's key follows the resolved backend too (and grade's the grader: see the next test).
    ctx2 = Context(load_config("tiny", [f"run_dir={tmp_path}", "sample.policy=base"]), progress=False)
    assert STAGES["sample"].inputs(ctx2)["backend"] == "vllm"
    monkeypatch.setattr(sampling, "vllm_available", lambda: False)
    assert STAGES["sample"].inputs(ctx2)["backend"] == "transformers"


@pytest.mark.slow
def test_a_grader_change_regrades_instead_of_reusing_stale_rows(tmp_path, monkeypatch):
    import mathreason.grading as grading
    from mathreason.pipeline import run_pipeline

    cfg = load_config("tiny", [f"run_dir={tmp_path}", "sample.policy=base", "data.tiny_train_size=4", "sample.n=2"])
    assert [r["status"] for r in run_pipeline(cfg, ["sample", "grade"], progress=False)] == ["done", "done"]
    assert run_pipeline(cfg, ["grade"], progress=False)[0]["status"] == "skipped"
    monkeypatch.setattr(grading, "GRADER_VERSION", grading.GRADER_VERSION + "+fix")
    assert run_pipeline(cfg, ["sample", "grade"], progress=False)[1]["status"] == "done"
    assert run_pipeline(cfg, ["sample", "grade"], progress=False)[0]["status"] == "skipped"


# ---------------------------------------------------------------- 5. FSDP recipe: checkpoint activations once, bf16 weights


def test_activation_checkpointing_is_done_once_under_fsdp(monkeypatch):
    from mathreason.sections import TrainConfig
    from mathreason.training import fsdp_checkpoints_activations, resolve_precision

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("FSDP_ACTIVATION_CHECKPOINTING", raising=False)
    assert not fsdp_checkpoints_activations()
    assert resolve_precision(TrainConfig(gradient_checkpointing=True, bf16=False))[1] is True
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    assert fsdp_checkpoints_activations()
    assert resolve_precision(TrainConfig(gradient_checkpointing=None, bf16=False))[1] is False
    with pytest.raises(ValueError, match="once"):
        resolve_precision(TrainConfig(gradient_checkpointing=True, bf16=False))
    # The shipped FSDP config checkpoints activations itself and keeps intermediate checkpoints sharded.
    from importlib import resources

    import yaml

    fsdp = yaml.safe_load((resources.files("mathreason") / "configs" / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_activation_checkpointing"] is True and fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"


def test_final_weights_are_written_in_the_save_dtype(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from mathreason.sections import TrainConfig
    from mathreason.training import cast_checkpoint, resolve_precision

    assert resolve_precision(TrainConfig(bf16=False))[2] == "float32"  # CPU: float32 training, float32 weights
    assert resolve_precision(TrainConfig(bf16=False, save_dtype="bfloat16"))[2] == "bfloat16"
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=40))
    model.save_pretrained(tmp_path)
    size32 = sum(f.stat().st_size for f in tmp_path.glob("*.safetensors"))
    cast_checkpoint(tmp_path, "bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert sum(f.stat().st_size for f in tmp_path.glob("*.safetensors")) < 0.6 * size32
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    sd = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k].to(torch.bfloat16))
