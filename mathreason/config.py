"""Typed configs of the mathreason pipeline, YAML presets, command-line overrides.

Every field carries a docstring (the string right below it); :func:`field_docs` reads them, and the CLI
turns every leaf field into a ``--section.field`` flag whose ``--help`` text is that docstring.

A config is built in layers, later ones winning: the dataclass defaults, a preset (``gsm8k``, ``math``,
``tiny``, ``arith``: ``--preset NAME``; a config file may name one with a top-level ``preset:`` key), the
config file (``--config FILE``), then the ``--section.field V`` flags and ``--set section.field=value``
overrides (values parsed as YAML; the grammar of :data:`shared.configlib.GRAMMAR`, as stargraph's). Every value is checked against its annotation
and every cross-field rule is checked before any work starts; a :class:`ConfigError` names the file and
line (or the override) and the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mathreason.executors import ActorsConfig
from mathreason.credit_config import AdvantagesConfig, PairsConfig, PrefConfig, RFTAdvConfig, ScalingConfig
from mathreason.sections import (
    TINY_MODEL,
    BackendConfig,
    DataConfig,
    EvalConfig,
    GradeConfig,
    LoraConfig,
    ModelConfig,
    RFTConfig,
    SampleConfig,
    TinyModelConfig,
    TrainConfig,
)
from shared import configlib
from shared.executors import RayConfig
from shared.tracking import TrackingConfig
from shared.configlib import ConfigError, field_docs, to_dict

_require = configlib.require

__all__ = [
    "AdvantagesConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "GradeConfig",
    "LoraConfig",
    "ModelConfig",
    "PairsConfig",
    "PipelineConfig",
    "PrefConfig",
    "RFTAdvConfig",
    "RFTConfig",
    "ScalingConfig",
    "SampleConfig",
    "TinyModelConfig",
    "TrainConfig",
    "STAGES",
    "TINY_MODEL",
    "available_presets",
    "build_config",
    "dump_yaml",
    "field_docs",
    "leaf_fields",
    "load_config",
    "to_dict",
]

STAGES = ("sft", "sample", "grade", "advantages", "pairs", "pref", "rft", "rft_adv", "eval")
"""Every stage, in pipeline order."""

PART1_STAGES = ("sft", "sample", "grade", "rft", "eval")
"""The default chain of `mathreason pipeline`."""


@dataclass
class PipelineConfig:
    """What `mathreason pipeline` runs."""

    stages: list[str] = field(default_factory=lambda: list(PART1_STAGES))
    """Stages to run, in this order (ignored when `methods` is set)."""
    methods: list[str] = field(default_factory=list)
    """Methods to train and evaluate (e.g. [sft, rft, per_step_dpo, dpo]; see `mathreason methods`; `base:variant` = a variant from `variants`): runs every stage they need, one `pref` run per preference method, and `eval` of their policies. Empty = run `stages`."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Named override lists for method variants, e.g. {lr1e-3: [pref.train.learning_rate=1e-3]}: method `per_step_dpo:lr1e-3` is per-step DPO with them, trained as `pref/per_step_dpo-lr1e-3`."""
    launcher: str = ""
    """Command prefix for the training stages (sft, rft), e.g. `accelerate launch --config_file fsdp.yaml --num_processes 8`; empty = run them in this process."""

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        _require(not bad, "stages", f"unknown stage(s) {bad}; known: {list(STAGES)}")
        _require(len(set(self.methods)) == len(self.methods), "methods", "must not repeat")


@dataclass
class Config:
    """A whole pipeline run."""

    run_dir: str = "runs/tiny"
    """Run folder: every stage reads and writes here."""
    seed: int = 0
    """Seed of training order, model init (tiny) and every sample's random stream."""
    threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where every stage runs: `auto` = the GPUs this process is given (by accelerate, CUDA_VISIBLE_DEVICES), else the CPU; `cpu` hides the GPUs (CUDA_VISIBLE_DEVICES='', so a training launcher's processes inherit it); `cuda` fails when there is none. Not part of any stage key."""
    data: DataConfig = field(default_factory=DataConfig)
    """D_syn and prompts."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base model."""
    sft: TrainConfig = field(default_factory=TrainConfig)
    """SFT of the base model on D_syn (pi_sft)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Sampling from a policy on the D_syn questions."""
    grade: GradeConfig = field(default_factory=GradeConfig)
    """Grading the samples."""
    rft: RFTConfig = field(default_factory=RFTConfig)
    """Rejection fine-tuning."""
    advantages: AdvantagesConfig = field(default_factory=AdvantagesConfig)
    """Per-step credit: Q of step prefixes by rollouts, advantages, first pits."""
    pairs: PairsConfig = field(default_factory=PairsConfig)
    """Preference pairs."""
    pref: PrefConfig = field(default_factory=PrefConfig)
    """Per-step DPO and its baselines (one run per `pref.name`)."""
    rft_adv: RFTAdvConfig = field(default_factory=RFTAdvConfig)
    """Advantage-filtered RFT."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """`mathreason pipeline` settings."""
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    """Scaling runs over D_syn sizes and their report."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray cluster (scaling.executor: ray, and actors.count > 0) and the resources of each scaling point."""
    actors: ActorsConfig = field(default_factory=ActorsConfig)
    """Ray actors for the shards of `sample` and `advantages` (off by default)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking: the training stages' `report_to`, and the other stages' metrics.jsonl records."""

    def validate(self) -> None:
        _require(bool(str(self.run_dir).strip()), "run_dir", "must not be empty")
        _require(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        _require(
            self.rft.samples_per_question is None or self.rft.samples_per_question <= self.sample.n,
            "rft.samples_per_question",
            f"must be <= sample.n ({self.sample.n})",
        )
        _require(
            self.advantages.samples_per_question is None or self.advantages.samples_per_question <= self.sample.n,
            "advantages.samples_per_question",
            f"must be <= sample.n ({self.sample.n})",
        )
        for var, items in self.pipeline.variants.items():
            for item in items:
                key = str(item).partition("=")[0].strip()
                new = configlib.renamed_path(Config, key)
                _require(new is None, "pipeline.variants", f"variant {var!r}: field {key!r} was renamed to {new!r}")
        from mathreason.methods import resolve_method

        for where, names in (("pipeline.methods", self.pipeline.methods), ("scaling.methods", self.scaling.methods)):
            for m in names:
                try:
                    resolve_method(m, self.pipeline.variants)
                except ConfigError as e:
                    raise configlib.FieldError(where, str(e)) from None
        budget = self.advantages.max_tokens or self.sample.max_tokens
        _require(
            budget >= self.sample.max_tokens,
            "advantages.max_tokens",
            f"the response budget ({budget}) must be >= sample.max_tokens ({self.sample.max_tokens}), or rollouts from a late prefix get no tokens",
        )


# ====================================================================== loading (the machinery is shared.configlib)


def available_presets() -> list[str]:
    folder = resources.files("mathreason") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str:
    path = resources.files("mathreason") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(available_presets())}")
    return path.read_text()


def _preset_layer(name: str) -> dict:
    """Raw tree of a packaged preset (``--preset NAME``), with its ``preset:`` chain resolved underneath."""
    tree = configlib.parse_yaml_sourced(_preset_text(name), f"preset {name}", yaml)
    return configlib.inherit(tree, "preset", _layer_from_source, (name,))


def _layer_from_source(source: str, chain: tuple[str, ...] = ()) -> dict:
    """Raw tree of a preset name or config file, with its ``preset:`` chain resolved underneath."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        tree = configlib.load_yaml_file(path, yaml)
    else:
        tree = configlib.parse_yaml_sourced(_preset_text(source), f"preset {source}", yaml)
    return configlib.inherit(tree, "preset", _layer_from_source, chain or (source,))


def parse_override(item: str, origin: str | None = None) -> tuple[list[str], configlib.Sourced]:
    """``a.b=value`` -> (``["a", "b"]``, value parsed as YAML)."""
    return configlib.parse_override(item, yaml.safe_load, origin=origin)


def build_config(tree: dict | None = None, overrides: list[str] | None = None) -> Config:
    """A :class:`Config` from a raw tree (plain dict accepted) and ``a.b=value`` overrides, validated."""
    return configlib.build(Config, configlib.merge(configlib.wrap(tree or {}, "config"), _overrides(overrides)))


def _overrides(items: list[str] | None) -> dict:
    return configlib.overrides_tree(items or [], yaml.safe_load)


def load_config(
    source: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    flags: dict | None = None,
    preset: str | None = None,
    tree: dict | None = None,
) -> Config:
    """Build the config of a run.

    Args:
        source: a preset name (``tiny``, ``gsm8k``, ``math``, ``arith``) or a YAML file (which may name a
            preset with a top-level ``preset:`` key); None = the dataclass defaults. (The command line
            takes a file here, ``--config FILE``, and a preset as ``--preset NAME``.)
        overrides: ``section.field=value`` strings, applied in order after the file.
        flags: ``{"section.field": raw_string}`` from ``--section.field`` command-line flags (after ``overrides``).
        preset: a packaged preset under ``source`` (``--preset NAME``).
        tree: a raw tree applied last: the command line's flags and ``--set`` items
            (:func:`shared.configlib.command_line_tree`).
    """
    layers = [_preset_layer(preset)] if preset is not None else []
    if source is not None:
        layers.append(_layer_from_source(str(source)))
    layers += [_overrides(overrides), configlib.flags_tree(flags or {}, yaml.safe_load), tree or {}]
    return configlib.build(Config, configlib.merge(*layers))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, width=120)


def leaf_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field, str]]:
    """``(dotted name, annotation, field, docstring)`` of every leaf field, in declaration order."""
    return configlib.leaf_fields(cls, prefix.rstrip("."))


default_repr = configlib.default_repr
type_name = configlib.type_name
