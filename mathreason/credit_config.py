"""Config sections of part 2: per-step credit, pairs, preference training, advantage-filtered RFT, scaling.

Each field's docstring (the string below it) is its ``--help`` text, as in :mod:`mathreason.config`, which
assembles these sections into :class:`mathreason.config.Config`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mathreason.sections import BackendConfig, TrainConfig
from shared import configlib

__all__ = [
    "AdvantagesConfig",
    "PAIR_KINDS",
    "PairsConfig",
    "PrefConfig",
    "RFTAdvConfig",
    "ScalingConfig",
    "default_pairs",
]

_require = configlib.require


PAIR_KINDS = ("first_pit_full", "first_pit_shared_prefix", "random", "max_edit_distance")
"""Pair files the ``pairs`` stage can build (``pairs/<kind>.jsonl``)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class AdvantagesConfig:
    """Per-step credit (the `advantages` stage): Q of each step prefix from K rollouts, advantages (Eq. 3), first pits."""

    policy: str = "sft"
    """Rollout policy mu (`sft` = pi_sft, as in the paper; `rft`, `base` or a model path)."""
    select: Literal["negatives", "all"] = "negatives"
    """Responses whose prefixes are valued: the negatives (per-step DPO) or every response (advantage-weighted RL and advantage-filtered RFT need positives too)."""
    samples_per_question: int | None = None
    """Use the first M samples of each question (None = all `sample.n`; the paper: 8 negatives per question)."""
    include_truncated: bool = False
    """Also value responses cut by max_tokens (finish_reason `length`); by default only responses that ended (`stop`) are used."""
    rollouts: int = 5
    """K rollouts per step prefix (the paper: BoK(pi_sft) with K = 5)."""
    estimator: Literal["best_of_k", "mc_mean"] = "best_of_k"
    """`best_of_k`: Q = 1 if any of the K rollouts succeeds (the paper's BoK(mu)); `mc_mean`: the fraction that succeed (needs schedule `all`)."""
    schedule: Literal["linear", "all", "bisect"] = "linear"
    """Which prefixes are rolled out: `linear` (step by step until the first pit; exact for binary best-of-K), `all` (every prefix), `bisect` (binary search for the first zero, assuming no recovery after a zero; cheapest, its agreement with `linear` is measured by benchmarks/pit_search.py)."""
    temperature: float = 0.7
    """Rollout temperature."""
    top_p: float = 1.0
    """Rollout nucleus mass."""
    max_tokens: int | None = None
    """Token budget of a whole response (prefix + rollout); each rollout gets what its prefix leaves. None = `sample.max_tokens`."""
    stop: list[str] | None = None
    """Stop strings of the rollouts; None = the prompt template's own."""
    splitter: str = "auto"
    """Step splitter (mathreason.steps: `newline`, `latex`, `auto` = newline for GSM8K, latex for MATH)."""
    max_steps: int | None = 20
    """Cap on steps per response: longer responses are grouped into this many steps (bounds rollouts per response)."""
    min_chars: int | None = None
    """Pieces with fewer non-space characters merge into a neighbour (None = the splitter's default)."""
    chunk_size: int = 256
    """Rollout prefixes per shard (the unit of atomic writes and of resume within a round)."""
    keep_continuations: int = 1
    """Successful rollouts kept per prefix (token ids), used as chosen continuations of shared-prefix pairs."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """Sampler backend of the rollouts."""

    def validate(self) -> None:
        _require(bool(self.policy.strip()), "policy", "must not be empty")
        _require(self.samples_per_question is None or self.samples_per_question >= 1, "samples_per_question", "must be >= 1 or null")
        _require(self.rollouts >= 1, "rollouts", "must be >= 1")
        _require(
            self.estimator != "mc_mean" or self.schedule == "all",
            "estimator",
            "mc_mean needs schedule: all (the first pit of a non-binary Q needs every prefix's value)",
        )
        _require(self.temperature >= 0.0, "temperature", "must be >= 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must lie in (0, 1]")
        _require(self.max_tokens is None or self.max_tokens >= 2, "max_tokens", "must be >= 2 or null")
        _require(all(s for s in self.stop or []), "stop", "stop strings must be non-empty")
        _require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1 or null")
        _require(self.chunk_size >= 1, "chunk_size", "must be >= 1")
        _require(self.keep_continuations >= 0, "keep_continuations", "must be >= 0")
        self.backend.validate()


@dataclass
class PairsConfig:
    """Preference pairs (the `pairs` stage), token ids throughout, from shared.pairs."""

    kinds: list[str] = field(default_factory=lambda: list(PAIR_KINDS))
    """Pair files to build: `first_pit_full` (x, a positive, the negative through its first pit: the paper's Algorithm 1), `first_pit_shared_prefix` (x + steps before the pit, a correct continuation, the pit step), `random` (standard DPO), `max_edit_distance` (Pal et al.)."""
    positives: Literal["samples", "samples+dsyn", "dsyn"] = "samples"
    """Chosen responses: pi_sft's own correct samples (D+, the paper), plus the D_syn solution, or only the D_syn solution."""
    random_pairs_per_question: int | None = None
    """Random pairs per question (None = one per negative)."""

    def validate(self) -> None:
        bad = [k for k in self.kinds if k not in PAIR_KINDS]
        _require(not bad, "kinds", f"unknown pair kind(s) {bad}; known: {list(PAIR_KINDS)}")
        _require(bool(self.kinds), "kinds", "must name at least one kind")
        _require(len(set(self.kinds)) == len(self.kinds), "kinds", "must not repeat")
        _require(self.random_pairs_per_question is None or self.random_pairs_per_question >= 1, "random_pairs_per_question", "must be >= 1 or null")


def default_pairs(objective: str) -> str | None:
    """The pair kind an objective trains on when `pref.pairs` is null (None for `awr`, which uses responses)."""
    return {"per_step_dpo": "first_pit_full", "dpo": "random", "ipo": "first_pit_full", "dpop": "first_pit_full", "sft": "first_pit_full"}.get(objective)


@dataclass
class PrefConfig:
    """Preference / per-step training from pi_sft (the `pref` stage), every loss from shared.losses."""

    objective: Literal["per_step_dpo", "dpo", "ipo", "dpop", "awr", "sft"] = "per_step_dpo"
    """`per_step_dpo` (DPO on first-pit pairs), `dpo` (DPO on whole-response pairs: random or max-edit-distance), `ipo`, `dpop` (DPO-Positive) on any pairs, `awr` (advantage-weighted regression on the valued responses), `sft` (NLL of the chosen sides only: a pair objective's control with the same data, steps and lr but no negatives)."""
    pairs: Literal["first_pit_full", "first_pit_shared_prefix", "random", "max_edit_distance"] | None = None
    """Pair file to train on; None = the objective's default (first_pit_full for per_step_dpo/ipo/dpop, random for dpo)."""
    name: str | None = None
    """Folder name under <run_dir>/pref/ and policy name `pref/<name>`; None = the objective, suffixed with the pair kind when it is not the default."""
    init: str = "sft"
    """Policy training starts from; it is also the frozen reference (pi_sft in the paper)."""
    beta: float = 0.1
    """KL coefficient of the DPO-family losses; temperature of the AWR weights exp(A / beta)."""
    label_smoothing: float = 0.0
    """cDPO label smoothing (sigmoid losses only)."""
    dpop_lambda: float = 50.0
    """DPO-Positive penalty weight (Pal et al.: 50 for MetaMath)."""
    sft_weight: float = 0.0
    """Weight of an extra NLL term on the chosen side's scored tokens (0 = none)."""
    awr_max_weight: float = 20.0
    """Clip of the AWR weights."""
    ref_batch_size: int = 8
    """Pairs per device in the one-off pass that computes the reference log-probs."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-6, epochs=3.0))
    """Optimisation (lr 1e-6 and 3 epochs as in Self-Explore's per-step DPO of a 7B model); batch sizes count pairs (or responses for awr)."""

    def __post_init__(self) -> None:
        if self.pairs is None and self.objective != "awr":
            self.pairs = default_pairs(self.objective)
        if self.name is None:
            dflt = default_pairs(self.objective)
            self.name = self.objective if self.objective == "awr" or self.pairs == dflt else f"{self.objective}-{self.pairs}"

    def validate(self) -> None:
        first_pit = self.pairs in ("first_pit_full", "first_pit_shared_prefix")
        _require(
            self.objective != "per_step_dpo" or first_pit,
            "pairs",
            "per_step_dpo trains on first-pit pairs (first_pit_full or first_pit_shared_prefix); DPO on random or "
            "max-edit-distance pairs is objective: dpo",
        )
        _require(
            self.objective != "dpo" or not first_pit,
            "pairs",
            "DPO on first-pit pairs is objective: per_step_dpo; dpo takes random or max_edit_distance pairs",
        )
        _require(self.name is not None and _NAME_RE.match(self.name) is not None, "name", "must be a plain folder name ([A-Za-z0-9._-])")
        _require(bool(self.init.strip()), "init", "must not be empty")
        _require(self.beta > 0, "beta", "must be > 0")
        _require(0.0 <= self.label_smoothing < 0.5, "label_smoothing", "must lie in [0, 0.5)")
        _require(self.dpop_lambda >= 0, "dpop_lambda", "must be >= 0")
        _require(self.sft_weight >= 0, "sft_weight", "must be >= 0")
        _require(self.awr_max_weight > 0, "awr_max_weight", "must be > 0")
        _require(self.ref_batch_size >= 1, "ref_batch_size", "must be >= 1")
        self.train.validate()


@dataclass
class RFTAdvConfig:
    """Advantage-filtered RFT (the paper's Fig. 11; the `rft_adv` stage): clone responses whose steps all have high advantage."""

    responses: Literal["all", "positives", "negatives"] = "all"
    """Responses considered (from the `advantages` stage, which must value them: advantages.select: all)."""
    drop_quantile: float = 0.5
    """Drop every response whose minimum step advantage is in this bottom fraction of all considered responses."""
    max_per_question: int | None = None
    """Keep at most this many responses per question (None = all that pass)."""
    init: Literal["base", "sft"] = "base"
    """Model it starts from (base, like RFT)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Fine-tuning hyper-parameters."""

    def validate(self) -> None:
        _require(0.0 <= self.drop_quantile < 1.0, "drop_quantile", "must lie in [0, 1)")
        _require(self.max_per_question is None or self.max_per_question >= 1, "max_per_question", "must be >= 1 or null")
        self.train.validate()


@dataclass
class ScalingConfig:
    """Scaling runs (`mathreason scaling`) and their report (`mathreason scaling-report`)."""

    sizes: list[int] = field(default_factory=list)
    """D_syn sizes (nested seeded subsets, data.subset_seed); at least 3 for the SFT power-law fit."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds; each (seed, size) is one run folder <root>/seed-<s>/size-<n> with `seed: s`."""
    methods: list[str] = field(default_factory=lambda: ["sft", "rft", "per_step_dpo"])
    """Methods to train and evaluate at every size (see `mathreason methods`; `base:variant` with pipeline.variants); `sft` is the reference of the efficiency factors."""
    method_sizes: dict[str, list[int]] = field(default_factory=dict)
    """Sizes at which a method runs, e.g. {per_step_dpo: [2000]} (a method not listed runs at every size); the report and diagnostics expect it only there. Entries for methods or sizes the study does not have are ignored, so scaling.methods and scaling.sizes can be narrowed on the command line."""
    root: str | None = None
    """Folder of the study (None = run_dir)."""
    benchmark: str | None = None
    """Benchmark whose test error is fitted (None = the first of eval.benchmarks)."""
    metric: Literal["greedy", "sampled"] = "greedy"
    """Test error = 1 - greedy accuracy, or 1 - mean sampled accuracy (pass@1 of eval.num_samples samples)."""
    min_sizes: int = 3
    """Fewest sizes the SFT power-law fit accepts."""
    executor: Literal["local", "ray"] = "local"
    """local = the points one after another in this process; ray = every point a Ray task (resources: ray.cpus_per_task, ray.gpus_per_task) on the cluster of the `ray` section."""
    retries: int = 1
    """Extra attempts of a point that fails; after them it is listed in <root>/failed.json and the command fails (the other points still run)."""

    def validate(self) -> None:
        _require(all(n >= 1 for n in self.sizes), "sizes", "every size must be >= 1")
        _require(len(set(self.sizes)) == len(self.sizes), "sizes", "must not repeat")
        _require(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "seeds", "must be non-empty and not repeat")
        _require(bool(self.methods) and len(set(self.methods)) == len(self.methods), "methods", "must be non-empty and not repeat")
        from mathreason.methods import METHODS

        bad = [m for m in self.methods if m.split(":", 1)[0] not in METHODS]
        _require(not bad, "methods", f"unknown method(s) {bad}; known: {list(METHODS)} (a variant is base:name, see pipeline.variants)")
        unknown = sorted(m for m in self.method_sizes if m.split(":", 1)[0] not in METHODS)
        _require(not unknown, "method_sizes", f"unknown method(s) {unknown}; known: {list(METHODS)}")
        for m, ns in self.method_sizes.items():
            _require(bool(ns) and len(set(ns)) == len(ns) and all(n >= 1 for n in ns), "method_sizes",
                     f"{m}: must be a non-empty list of sizes >= 1 without repeats")
        _require(self.min_sizes >= 2, "min_sizes", "must be >= 2")
        _require(self.retries >= 0, "retries", "must be >= 0")
