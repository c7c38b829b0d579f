"""Preference and per-step training of an LLM: per-step DPO, DPO, IPO, DPO-Positive and advantage-weighted
regression, every loss computed by :mod:`shared.losses`.

Why not TRL's ``DPOTrainer``: it re-tokenises text, appends EOS to every rejected response (wrong for a
negative truncated at its pit) and sums log-probs over whole completions. Here a ``transformers.Trainer``
subclass (:class:`PreferenceTrainer`) trains on token ids as stored by the ``pairs`` stage:

* pairs become padded rows and per-token masks through :func:`shared.pairs.pair_token_rows` /
  :func:`shared.pairs.collate_pair_rows` (the one pair-batching path both front ends use); one forward
  pass scores chosen and rejected rows together; token log-probs come from
  :func:`shared.logprobs.token_logprobs`; the loss is :func:`shared.losses.per_step_dpo_loss` (masked
  sums, so the first-pit constructions, whole-response DPO, IPO and DPO-Positive are one call), plus an
  optional NLL term on the chosen tokens (:func:`shared.losses.sft_loss`);
* ``awr`` trains on the valued responses with :func:`shared.losses.advantage_weighted_loss`, token
  advantages from :func:`shared.advantages.steps_to_tokens`.

Each ``pref.objective`` is an entry of :data:`SPECS`, a registry of :class:`shared.objectives.ObjectiveSpec`
(the spec type stargraph's objectives use): its pool, whether it needs Q, its batch type and its loss.

Reference. The reference is the initial policy (pi_sft). Its token log-probs on the scored tokens are
computed once, before training, by one pass of that same model (under ``accelerate``, so FSDP/ZeRO-3
shard it too), stored in ``<run_dir>/ref_logps/<key>.pt`` keyed by the pair file's and the reference's
fingerprints, and reused by every method training on the same pairs. Only one model is ever in memory.

Everything else (batch size and accumulation, bf16, activation checkpointing, LoRA, checkpoints every
``save_steps`` and resume, the final save) is shared with SFT (:mod:`mathreason.training`). Logged each
logging step: loss, chosen/rejected implicit rewards, margin, reward accuracy, and the chosen and
rejected log-likelihoods of the scored tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mathreason.config import ModelConfig
from mathreason.credit_config import PrefConfig
from mathreason.runs import is_main_process
from shared.advantages import steps_to_tokens
from shared.logprobs import token_logprobs
from shared.objectives import (
    ObjectiveParams,
    ObjectiveSpec,
    PreferenceBatch,
    SequenceBatch,
    awr_objective,
    chosen_nll_objective,
    preference_objective,
    registry,
)
from shared.pairs import PairRows, collate_pair_rows, pair_token_rows

__all__ = [
    "SPECS",
    "LOSS_TYPE",
    "objective_spec",
    "pair_batch",
    "trainer_class",
    "awr_items",
    "collate_awr",
    "collate_pairs",
    "pair_items",
    "reference_logps",
    "train_preference",
]

logger = logging.getLogger(__name__)


def _preference(name: str, pool: str, loss_type: str) -> ObjectiveSpec:
    return ObjectiveSpec(name, pool, needs_q=pool == "first_pit_pairs", batch_type=PreferenceBatch, loss=preference_objective, loss_type=loss_type)


SPECS = registry(
    _preference("per_step_dpo", "first_pit_pairs", "sigmoid"),
    _preference("dpo", "pairs", "sigmoid"),
    _preference("ipo", "pairs", "ipo"),
    _preference("dpop", "pairs", "dpop"),
    ObjectiveSpec("awr", "samples", needs_q=True, batch_type=SequenceBatch, loss=awr_objective),
    ObjectiveSpec("sft", "pairs", needs_q=False, batch_type=PreferenceBatch, loss=chosen_nll_objective),
)
"""``pref.objective`` -> its :class:`shared.objectives.ObjectiveSpec` (the same spec type as stargraph's).
``pairs`` objectives train on a pair file of the ``pairs`` stage (``pref.pairs``), ``awr`` on the valued
responses; the ``sft`` control scores the chosen sides only and needs no reference pass."""

LOSS_TYPE = {name: spec.loss_type for name, spec in SPECS.items() if spec.loss_type is not None}
"""``pref.objective`` -> ``loss_type`` of :func:`shared.losses.per_step_dpo_loss` (a view of :data:`SPECS`)."""


def objective_spec(pref: PrefConfig) -> ObjectiveSpec:
    """The spec ``pref`` trains with: ``SPECS[pref.objective]``, plus the chosen side's NLL weighted by
    ``pref.sft_weight`` on a preference loss when that weight is positive."""
    spec = SPECS[pref.objective]
    return dataclasses.replace(spec, sft_term=True) if spec.needs_ref and pref.sft_weight > 0 else spec


# ====================================================================== items and batches


def pair_items(rows: Sequence[Mapping[str, Any]], max_length: int) -> tuple[list[dict], int]:
    """Token rows and masks of stored pairs; pairs with a side longer than ``max_length`` are dropped (counted)."""
    from mathreason.pairdata import pair_from_row

    items, dropped = [], 0
    for row in rows:
        pr = pair_token_rows(row["prompt_ids"], pair_from_row(row))
        if max(len(pr.chosen_ids), len(pr.rejected_ids)) > max_length:
            dropped += 1
            continue
        items.append({"rows": pr})
    return items, dropped


def awr_items(
    adv_rows: Sequence[Mapping[str, Any]],
    samples: Mapping[tuple[str, int], Mapping[str, Any]],
    prompts: Mapping[str, Sequence[int]],
    max_length: int,
) -> tuple[list[dict], int]:
    """Responses with per-step advantages for AWR (unknown advantages count as 0); too long ones dropped."""
    items, dropped = [], 0
    for a in adv_rows:
        s = samples[(a["problem_id"], int(a["sample_index"]))]
        prompt = list(prompts[a["problem_id"]])
        ids = list(s["token_ids"])
        ends = list(a["step_ends"])
        if not ends or len(prompt) + len(ids) > max_length:
            dropped += int(bool(ends))
            continue
        step_ids = [-1] * len(prompt)
        start = 0
        for k, e in enumerate(ends):
            step_ids += [k] * (e - start)
            start = e
        adv = [float(x) if x is not None else 0.0 for x in a["advantages"]]
        items.append({"input_ids": prompt + ids, "step_ids": step_ids, "advantages": adv})
    return items, dropped


def _scatter(values: Sequence[torch.Tensor], mask_BT: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` zeros with each row's values written, in order, at its masked positions."""
    out = torch.zeros(mask_BT.shape, dtype=torch.float32)
    flat = torch.cat([v.float().reshape(-1) for v in values]) if values else torch.zeros(0)
    if flat.numel() != int(mask_BT.sum()):
        raise ValueError(f"reference log-probs: {flat.numel()} values for {int(mask_BT.sum())} scored tokens")
    out[mask_BT] = flat
    return out


def collate_pairs(items: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded chosen/rejected rows of one width, attention masks, and label-aligned masks (``[:, 1:]``)
    with the reference log-probs (when present) scattered onto them."""
    rows: list[PairRows] = [it["rows"] for it in items]
    b = collate_pair_rows(rows, pad_id=pad_id, same_length=True)
    out = {
        "chosen_ids": b.chosen_BT,
        "rejected_ids": b.rejected_BT,
        "chosen_attention": b.chosen_attention_BT.long(),
        "rejected_attention": b.rejected_attention_BT.long(),
        "chosen_mask": b.chosen_mask_BT[:, 1:],
        "rejected_mask": b.rejected_mask_BT[:, 1:],
    }
    if "ref_chosen" in items[0]:
        out["ref_chosen"] = _scatter([it["ref_chosen"] for it in items], out["chosen_mask"])
        out["ref_rejected"] = _scatter([it["ref_rejected"] for it in items], out["rejected_mask"])
    return out


def collate_awr(items: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded responses, label-aligned step ids (-1 = prompt/padding) and per-step advantages."""
    T = max(len(it["input_ids"]) for it in items)
    S = max(max(1, len(it["advantages"])) for it in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), T), dtype=torch.long)
    step = torch.full((len(items), T), -1, dtype=torch.long)
    adv = torch.zeros((len(items), S), dtype=torch.float32)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        ids[i, :n] = torch.tensor(it["input_ids"])
        att[i, :n] = 1
        step[i, :n] = torch.tensor(it["step_ids"])
        adv[i, : len(it["advantages"])] = torch.tensor(it["advantages"])
    return {"input_ids": ids, "attention_mask": att, "step_ids": step[:, 1:], "step_advantages": adv}


def pair_batch(batch: Mapping[str, torch.Tensor]) -> PreferenceBatch:
    """The :class:`shared.objectives.PreferenceBatch` of a :func:`collate_pairs` batch (label positions 1..T-1)."""
    return PreferenceBatch(
        chosen_BT=batch["chosen_ids"],
        rejected_BT=batch["rejected_ids"],
        chosen_mask_BL=batch["chosen_mask"],
        rejected_mask_BL=batch["rejected_mask"],
        ref_chosen_BL=batch.get("ref_chosen"),
        ref_rejected_BL=batch.get("ref_rejected"),
        chosen_attention_BT=batch["chosen_attention"],
        rejected_attention_BT=batch["rejected_attention"],
    )


def sequence_token_logps(model, ids_BT: torch.Tensor, attention_BT: torch.Tensor) -> torch.Tensor:
    """``(B, T - 1)`` log-prob of each next token (label positions 1..T-1) under ``model``."""
    logits_BTV = model(input_ids=ids_BT, attention_mask=attention_BT, use_cache=False).logits
    return token_logprobs(logits_BTV[:, :-1], ids_BT[:, 1:])


def pair_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token log-probs of the chosen and rejected rows, in one forward pass over both."""
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    att = torch.cat([batch["chosen_attention"], batch["rejected_attention"]])
    logps = sequence_token_logps(model, ids, att)
    B = batch["chosen_ids"].shape[0]
    return logps[:B], logps[B:]


# ====================================================================== the reference pass


def reference_logps(
    model_path: str,
    items: Sequence[Mapping[str, Any]],
    *,
    model_cfg: ModelConfig,
    pad_id: int,
    batch_size: int,
    bf16: bool,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference model's log-probs of every pair's scored tokens, ``[(chosen, rejected)]`` in item order.

    One pass of ``model_path`` in eval mode under ``accelerate`` (an FSDP/ZeRO-3 launch shards it; every
    process gets all results); the model is freed before returning.
    """
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from mathreason.training import model_init_kwargs

    acc = Accelerator()
    kw = model_init_kwargs(model_cfg, model_path)
    kw["dtype"] = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_path), **kw)
    model.eval()
    index = list(range(len(items)))
    loader = torch.utils.data.DataLoader(
        index, batch_size=batch_size, shuffle=False, collate_fn=lambda idx: {"index": torch.tensor(idx), **collate_pairs([items[i] for i in idx], pad_id)}
    )
    model, loader = acc.prepare(model, loader)
    out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for batch in loader:
            pi_c, pi_r = pair_logps(model, batch)
            pi_c = torch.where(batch["chosen_mask"], pi_c.float(), torch.full_like(pi_c.float(), float("nan")))
            pi_r = torch.where(batch["rejected_mask"], pi_r.float(), torch.full_like(pi_r.float(), float("nan")))
            idx = batch["index"]
            pi_c = acc.pad_across_processes(pi_c, dim=1, pad_index=float("nan"))
            pi_r = acc.pad_across_processes(pi_r, dim=1, pad_index=float("nan"))
            idx, pi_c, pi_r = acc.gather_for_metrics((idx, pi_c, pi_r))
            for i, c, r in zip(idx.tolist(), pi_c.cpu(), pi_r.cpu()):
                out[int(i)] = (c[~torch.isnan(c)].clone(), r[~torch.isnan(r)].clone())
    del model
    acc.free_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    missing = [i for i in index if i not in out]
    if missing:
        raise RuntimeError(f"reference pass lost {len(missing)} pairs (e.g. {missing[0]})")
    return [out[i] for i in index]


# ====================================================================== the trainer


@functools.cache
def trainer_class():
    """The :class:`PreferenceTrainer` class (built on first use, so importing this module does not import transformers)."""
    from transformers import Trainer

    class PreferenceTrainer(Trainer):
        """``transformers.Trainer`` whose loss is a :mod:`shared.losses` objective on stored pairs or responses."""

        def __init__(self, *args, pref: PrefConfig, **kwargs):
            super().__init__(*args, **kwargs)
            self.pref = pref
            self.objective = objective_spec(pref)
            self.params = ObjectiveParams.of(pref)
            self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by accumulation
            self.model_accepts_loss_kwargs = False
            self._stored: dict[str, list[float]] = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ARG002
            spec = self.objective
            if spec.batch_type is SequenceBatch:  # awr: responses with per-step advantages
                logps = sequence_token_logps(model, inputs["input_ids"], inputs["attention_mask"])
                step_ids = inputs["step_ids"]
                adv_BT = steps_to_tokens(inputs["step_advantages"].to(logps.dtype), step_ids)
                batch = SequenceBatch(inputs["input_ids"], step_ids >= 0, adv_BL=adv_BT, attention_BT=inputs["attention_mask"])
                out = spec(batch, logps, self.params)
                self._store(loss=out.loss, awr_clipped_fraction=out.out.clipped_fraction_B.mean(),
                            awr_mean_weight=(out.out.weights_BT.sum() / (step_ids >= 0).sum().clamp(min=1)))
                return (out.loss, {}) if return_outputs else out.loss
            batch = pair_batch(inputs)
            pi_c, pi_r = pair_logps(model, inputs)
            out = spec(batch, (pi_c, pi_r), self.params)
            mc, mr = batch.chosen_mask_BL, batch.rejected_mask_BL
            chosen_ll = torch.where(mc, pi_c, torch.zeros_like(pi_c)).sum(-1).detach()
            if not spec.needs_ref:  # the sft control: the chosen sides' NLL, the negatives unused
                self._store(loss=out.loss, **{"logps/chosen": chosen_ll.mean()})
                return (out.loss, {}) if return_outputs else out.loss
            rejected_ll = torch.where(mr, pi_r, torch.zeros_like(pi_r)).sum(-1).detach()
            o = out.out
            self._store(
                loss=out.loss,
                pref_loss=out.term,
                **{
                    "rewards/chosen": o.chosen_rewards_B.mean(),
                    "rewards/rejected": o.rejected_rewards_B.mean(),
                    "rewards/margins": o.margins_B.mean(),
                    "rewards/accuracies": o.accuracies_B.mean(),
                    "logps/chosen": chosen_ll.mean(),
                    "logps/rejected": rejected_ll.mean(),
                },
                **({} if out.sft_term is None else {"sft_term": out.sft_term}),
            )
            return (out.loss, {}) if return_outputs else out.loss

        def _store(self, **values: torch.Tensor) -> None:
            for k, v in values.items():
                self._stored[k].append(float(v.detach().float()))

        def log(self, logs, start_time=None):
            if self._stored and "loss" in logs:
                for k, v in self._stored.items():
                    if k != "loss":
                        logs[k] = sum(v) / len(v)
                self._stored.clear()
            return super().log(logs, start_time)

    return PreferenceTrainer


def __getattr__(name: str):
    if name == "PreferenceTrainer":  # mathreason.preference.PreferenceTrainer works too
        return trainer_class()
    raise AttributeError(f"module 'mathreason.preference' has no attribute {name!r}")


# ====================================================================== the whole run


def train_preference(
    items: list[dict],
    *,
    pref: PrefConfig,
    init_model: str,
    tokenizer_path: str,
    model_cfg: ModelConfig,
    out_dir: str | Path,
    ref_cache: str | Path | None,
    key: str,
    seed: int,
    log: Callable[..., None] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``init_model`` with ``pref.objective`` on ``items`` (:func:`pair_items` or :func:`awr_items`).

    For pair objectives the reference log-probs are loaded from ``ref_cache`` (a ``.pt`` path) when it
    exists, else computed once with ``init_model`` and saved there. Writes ``<out_dir>/model``.
    """
    from transformers import AutoModelForCausalLM

    from mathreason.models import load_tokenizer
    from shared.runio import atomic_torch_save
    from mathreason.training import (
        _last_complete_checkpoint,
        _wait_for_everyone,
        finish_training,
        gradient_accumulation,
        metrics_callback,
        model_init_kwargs,
        peft_config,
        prepare_output,
        resolve_precision,
        training_arguments,
        world_size,
    )

    if not items:
        raise ValueError("train_preference: nothing to train on")
    cfg = pref.train
    accum = gradient_accumulation(cfg)
    bf16, _, _ = resolve_precision(cfg)
    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code=model_cfg.trust_remote_code)
    pad_id = int(tokenizer.pad_token_id)
    # The reference log-probs serve the DPO-family losses only: awr trains on responses, and the sft control
    # on the chosen sides alone.
    spec = SPECS[pref.objective]
    pairs, needs_ref = spec.pairs, spec.needs_ref
    ref_source = "none"
    if needs_ref:
        ref = None
        if ref_cache is not None and Path(ref_cache).exists():
            saved = torch.load(str(ref_cache), weights_only=True)
            if saved.get("key") == key_of_ref(ref_cache) and len(saved["chosen"]) == len(items):
                ref = list(zip(saved["chosen"], saved["rejected"]))
                ref_source = "cache"
        if ref is None:
            ref = reference_logps(init_model, items, model_cfg=model_cfg, pad_id=pad_id, batch_size=pref.ref_batch_size, bf16=bf16)
            ref_source = "computed"
            if ref_cache is not None and is_main_process():
                atomic_torch_save(
                    {"key": key_of_ref(ref_cache), "chosen": [c for c, _ in ref], "rejected": [r for _, r in ref]}, ref_cache
                )
            _wait_for_everyone()
        items = [{**it, "ref_chosen": c, "ref_rejected": r} for it, (c, r) in zip(items, ref)]
    ckpt_dir, final_dir, tmp_dir = prepare_output(out_dir, key)
    args = training_arguments(cfg, model_cfg, ckpt_dir=ckpt_dir, seed=seed, init_model=init_model, remove_unused_columns=False)
    model = AutoModelForCausalLM.from_pretrained(str(init_model), **model_init_kwargs(model_cfg, init_model))
    lora = peft_config(cfg)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    collate = (lambda b: collate_pairs(b, pad_id)) if pairs else (lambda b: collate_awr(b, pad_id))
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=items,
        data_collator=collate,
        processing_class=tokenizer,
        callbacks=[metrics_callback(log), *callbacks],
        pref=pref,
    )
    resume = _last_complete_checkpoint(ckpt_dir)
    if resume:
        logger.info("resuming preference training from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    finish_training(trainer, init_model=init_model, tokenizer=tokenizer, model_cfg=model_cfg, cfg=cfg, final_dir=final_dir, tmp_dir=tmp_dir)
    metrics = dict(result.metrics)
    metrics.update(
        {
            "items": len(items),
            "objective": pref.objective,
            "optimizer_steps": int(trainer.state.global_step),
            "gradient_accumulation_steps": accum,
            "processes": world_size(),
            "resumed_from": resume,
            "reference": ref_source,
        }
    )
    del trainer
    return metrics


def key_of_ref(path: str | Path) -> str:
    """The key a reference cache file is stored under: its own name (a hash of pairs and reference)."""
    return Path(path).stem
