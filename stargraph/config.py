"""The star-graph testbed's typed configs (field docstrings become ``--help``) and their presets.

Resolution order: preset YAML (``stargraph/presets/<name>.yaml``) < ``--config FILE`` < flags and
``--set key=value``.  The resolved config is written to every run folder as ``config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.configlib import FieldError, inherit, renamed, renamed_path, upgrade_names
from shared.executors import RayConfig
from shared.tracking import TrackingConfig

from . import configlib
from .configlib import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"

Objective = Literal[
    "sft",
    "sft_critical",
    "rft",
    "dpo",
    "per_step_dpo",
    "per_step_dpo_sft",
    "per_step_dpop",
    "per_step_ipo",
    "awr",
    "sft_pairs",
    "sft_critical_pairs",
]
OBJECTIVES: tuple[str, ...] = Objective.__args__  # type: ignore[attr-defined]
Goals = Literal["leaf", "all_leaves", "all_nodes", "random_node"]


@dataclass
class DataConfig:
    degree: int = 2
    "Out-degree of the source: the number of arms (Next-Token-Failures' --deg)."
    path_len: int = 4
    "Nodes on the source-to-goal path, source and goal included (Next-Token-Failures' --path_len)."
    num_nodes: int = 20
    "Number of node labels 0..num_nodes-1 (Next-Token-Failures' --num_nodes)."
    n_train: int = 5000
    "Distinct training graphs (disjoint from the test graphs)."
    n_test: int = 2000
    "Distinct test graphs."
    n_eval_train: int = 2000
    "Training graphs scored for the train metrics (the first ones of the training set)."
    seed: int | None = None
    "Seed of the graphs; null means the run seed."
    goals: Goals = "leaf"
    "Queries per training graph: leaf (round 1: the graph's own goal); all_leaves (Frydenlund's structured samples: the graph once per arm, goal = that arm's leaf, degree queries with the same edge list and source); all_nodes (every non-source node as the goal, degree*(path_len-1) queries; the path is the arm up to it); random_node (one query per graph, goal a seeded uniform non-source node). Train and test metrics always use the main family's own goals."
    mix_path_lens: list[int] = field(default_factory=list)
    "Shorter path lengths mixed into the training data (decomposition), e.g. [2, 3]: mix_n_train graphs of G(degree, l, num_nodes) each, left-padded to this family's row length; each family gets test metrics test_l<l>/."
    mix_n_train: int = 1000
    "Training graphs per mixed path length."
    mix_n_test: int = 500
    "Test graphs per mixed path length (metrics only)."
    online: bool = False
    "Online SFT data: every step trains on batch_size queries of newly drawn graphs (never a test graph) instead of epochs over the n_train graphs; train metrics still use the first n_eval_train fixed training graphs."

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "n_eval_train", "mix_n_train", "mix_n_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1")
        self.n_eval_train = min(self.n_eval_train, self.n_train)
        from .graphs import GraphSpec

        GraphSpec(self.degree, self.path_len, self.num_nodes)  # raises on an impossible family
        check_mix(self.mix_path_lens, self.path_len, "data.mix_path_lens")

    def query_options(self):
        from .queries import QueryOptions

        return QueryOptions(self.goals, tuple(self.mix_path_lens), self.mix_n_train, self.mix_n_test)


def check_mix(lens: list[int] | None, path_len: int, name: str) -> None:
    bad = [l for l in (lens or []) if not 2 <= l < path_len]
    if bad or len(set(lens or [])) != len(lens or []):
        raise ValueError(f"{name} must hold distinct path lengths in [2, path_len={path_len}), got {lens}")


@dataclass
class ModelConfig:
    n_layer: int = 4
    "Transformer blocks."
    n_head: int = 4
    "Attention heads per block."
    n_embd: int = 128
    "Residual stream width."
    bias: bool = True
    "Biases in linear layers and LayerNorms (as in Next-Token-Failures' GPT)."
    dropout: float = 0.0
    "Dropout probability (0 in Next-Token-Failures)."


_RENAMED_OPTIM = {"lr": "learning_rate", "steps": "max_steps", "grad_clip": "max_grad_norm"}
"""Optimisation fields renamed to the transformers/TRL names that mathreason uses (issue 13 item 4)."""


@renamed(**_RENAMED_OPTIM)
@dataclass
class SFTConfig:
    max_steps: int = 2000
    "Optimizer steps of next-token-prediction training."
    batch_size: int = 128
    "Graphs per step (drawn without replacement within an epoch)."
    learning_rate: float = 1e-3
    "Peak AdamW learning rate."
    warmup_steps: float = 100
    "Linear warm-up: >= 1 = that many steps, < 1 = that fraction of max_steps (rounded up), as transformers' warmup_steps (Next-Token-Failures: 100)."
    schedule: Literal["constant", "cosine"] = "constant"
    "After warm-up: constant, or cosine decay to min_lr at the last step."
    min_lr: float = 1e-5
    "Final learning rate of the cosine schedule."
    weight_decay: float = 0.0
    "AdamW weight decay on matrices (Next-Token-Failures effectively uses 0)."
    beta1: float = 0.9
    "AdamW beta1."
    beta2: float = 0.999
    "AdamW beta2."
    max_grad_norm: float = 0.0
    "Gradient-norm clip (0 = off)."
    eval_every: int = 100
    "Steps between evaluations (also at step 0 and at the end)."
    checkpoint_at: list[int] = field(default_factory=list)
    "Steps at which to save a checkpoint ckpt_<step>.pt (the final step is always saved)."
    checkpoint_every_epochs: int = 0
    "Also save ckpt_<step>.pt every this many epochs (Next-Token-Failures' --save_every; an epoch = len(training queries) // batch_size steps); 0 = off."
    resume_every: int = 500
    "Steps between resumable snapshots (model, optimizer, RNG); 0 = never. A killed run resumes from the last one."

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1 or self.eval_every < 1 or self.checkpoint_every_epochs < 0 or self.warmup_steps < 0:
            raise ValueError("sft.max_steps, sft.warmup_steps, sft.checkpoint_every_epochs must be >= 0, sft.batch_size and sft.eval_every >= 1")
        bad = [s for s in self.checkpoint_at if not 0 <= s <= self.max_steps]
        if bad:
            raise ValueError(f"sft.checkpoint_at has steps outside [0, sft.max_steps={self.max_steps}]: {bad}")


@dataclass
class RuntimeConfig:
    device: str = "auto"
    "cpu, cuda, cuda:N, or auto (CUDA when available)."
    threads: int = 0
    "torch.set_num_threads for this process (0 = leave torch's default)."
    compile: bool = False
    "Wrap the training forward in torch.compile."
    amp: Literal["auto", "bf16", "off"] = "auto"
    "bf16 autocast: auto = on CUDA only; bf16 = on CUDA and CPU (fast on CPUs with AVX512-BF16/AMX); off = float32."
    eval_batch_size: int = 4096
    "Graphs per teacher-forced evaluation / sampling batch."
    bok_k: int = 5
    "K of the best-of-K metrics (the paper's BoK rollout policy uses K = 5)."


@dataclass
class TrainConfig:
    """``stargraph train``: SFT on star graphs."""

    seed: int = 0
    "Seed of the run (model init, batch order; graphs too unless data.seed is set)."
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.data.online and self.sft.checkpoint_every_epochs:
            raise ValueError("sft.checkpoint_every_epochs needs epochs: not with data.online")

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed


@dataclass
class PoolConfig:
    policy: Literal["fixed", "resampled", "balanced", "fresh"] = "resampled"
    "fixed: sampled once from the starting policy; resampled: every resample_every steps from the sampler policy on training graphs; balanced: like resampled, but every graph with a negative contributes exactly samples_per_graph negatives; fresh: like resampled, on newly generated graphs never seen in SFT (the sft / sft_critical controls then train on the true paths of the same fresh graphs, rebuilt at the same steps)."
    resample_every: int = 200
    "Steps between pool rebuilds (0 = build once)."
    graphs: int = 1024
    "Graphs per pool."
    samples_per_graph: int = 4
    "Responses sampled per graph (negatives kept per graph with policy=balanced)."
    max_tries: int = 32
    "balanced: responses sampled per graph to find its negatives."
    sampler: Literal["current", "start"] = "current"
    "Policy that samples the pool: the current one or the starting checkpoint."
    temperature: float = 1.0
    "Sampling temperature of the pool's responses."
    arm_negatives: bool = False
    "Add to every query of the pool one constructed negative per other arm (the path along that arm, as deep as the goal): its first pit is the critical token, so every goal gets a per-step pair, also the goals the policy already answers (AWR: a sample with advantage -V)."

    def __post_init__(self) -> None:
        if self.graphs < 1 or self.samples_per_graph < 1 or self.max_tries < 1 or self.resample_every < 0:
            raise ValueError("pool.graphs, pool.samples_per_graph, pool.max_tries must be >= 1 and resample_every >= 0")
        if not self.temperature > 0:
            raise ValueError("pool.temperature must be > 0")


@dataclass
class PostDataConfig:
    goals: Literal["checkpoint", "leaf", "all_leaves", "all_nodes", "random_node"] = "checkpoint"
    "Queries of the pools and of the sft / sft_critical controls (the same data): checkpoint = as the SFT run's data.goals; else leaf, all_leaves (every graph once per arm: structured pools), all_nodes or random_node (see stargraph train --data.goals). pool.graphs counts graphs: a pool has graphs x queries-per-graph queries."
    mix_path_lens: list[int] | None = None
    "Shorter path lengths mixed into pools and sft controls; null = as the SFT run's data.mix_path_lens."
    mix_n_train: int | None = None
    "Training graphs per mixed path length; null = as the SFT run's data.mix_n_train."
    mix_n_test: int | None = None
    "Test graphs per mixed path length (metrics test_l<l>/ only); null = as the SFT run's data.mix_n_test."


@renamed(**_RENAMED_OPTIM)
@dataclass
class PostTrainConfig:
    """``stargraph posttrain``: continue from an SFT checkpoint with one objective."""

    init: str = ""
    "SFT checkpoint (.pt) to start from; it is also the frozen reference of the preference losses."
    objective: Objective = "per_step_dpo"
    "sft (continued SFT, control), sft_critical (SFT on the critical token only), rft, dpo (whole paths), per_step_dpo, per_step_dpo_sft (plus sft_weight * SFT on positives), per_step_dpop (DPO-Positive), per_step_ipo, awr (advantage-weighted regression), sft_pairs / sft_critical_pairs (per-step DPO's control without negatives: SFT on the true paths of its pairs, all target tokens / the critical token only, once per pair: the graphs where the policy erred)."
    max_steps: int = 500
    "Optimizer steps."
    batch_size: int = 64
    "Pairs per step (sequences for sft, sft_critical, rft, awr; the pairs' true paths for sft_pairs, sft_critical_pairs)."
    learning_rate: float = 3e-4
    "AdamW learning rate."
    warmup_steps: float = 0
    "Linear warm-up: >= 1 = that many steps, < 1 = that fraction of max_steps (rounded up), as transformers' warmup_steps."
    weight_decay: float = 0.0
    "AdamW weight decay on matrices."
    max_grad_norm: float = 0.0
    "Gradient-norm clip (0 = off)."
    beta: float = 0.1
    "KL coefficient of the preference losses; temperature of AWR's exp(A / beta)."
    label_smoothing: float = 0.0
    "Conservative-DPO label smoothing of the sigmoid losses."
    dpop_lambda: float = 5.0
    "lambda of DPO-Positive."
    sft_weight: float = 1.0
    "Weight of the SFT term on positives in per_step_dpo_sft."
    awr_max_weight: float = 20.0
    "Clip of AWR's exp(A / beta) weights."
    pairing: Literal["random", "max_edit_distance"] = "random"
    "How standard DPO pairs the positive with negatives."
    construction: Literal["full", "shared_prefix"] = "full"
    "Per-step pairs: full (positive vs negative truncated at its first pit) or shared_prefix (prefix before the pit, correct continuation vs the pit step)."
    q_estimator: Literal["exact", "mc"] = "exact"
    "Q of step prefixes for first pits and advantages: exact (one teacher-forced pass) or Monte-Carlo rollouts."
    mc_rollouts: int = 8
    "Rollouts per step prefix for q_estimator=mc."
    bok_k: int = 0
    "Use the best-of-K rollout policy for Q (0 = the policy itself): exact Q becomes 1-(1-Q)^K; MC uses K rollouts and 'any succeeded'."
    pit_threshold: float | None = None
    "First pit = first step with Q <= threshold; null = first step with the lowest Q."
    pool: PoolConfig = field(default_factory=PoolConfig)
    data: PostDataConfig = field(default_factory=PostDataConfig)
    eval_every: int = 50
    "Steps between evaluations (also at step 0 and at the end)."
    seed: int = 0
    "Seed of sampling, pairing and batch order."
    save_final: bool = True
    "Save the final model as final.pt in the run folder."
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.warmup_steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("max_steps, warmup_steps must be >= 0; batch_size, eval_every >= 1")
        if not self.beta > 0:
            raise ValueError("beta must be > 0")
        if self.mc_rollouts < 1 or self.bok_k < 0:
            raise ValueError("mc_rollouts must be >= 1 and bok_k >= 0")


@dataclass
class ArmConfig:
    """One post-training arm of ``reproduce``: an objective started from an SFT checkpoint."""

    name: str = ""
    "Arm name (folder name)."
    init_step: int = 0
    "SFT step whose checkpoint the arm starts from (must be in train.sft.checkpoint_at or the last step)."
    set: dict[str, object] = field(default_factory=dict)
    "Overrides of the posttrain config for this arm, e.g. {objective: dpo, beta: 0.5}."


@dataclass
class ReproduceConfig:
    """``stargraph reproduce``: SFT per seed, then the Fig. 8 arms and the comparison arms."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    "Seeds; every arm runs once per seed."
    train: TrainConfig = field(default_factory=TrainConfig)
    posttrain: PostTrainConfig = field(default_factory=PostTrainConfig)
    panel_a: str = ""
    "Arm plotted with SFT in panel (a) (per-step DPO started at an early iteration)."
    panel_b: list[str] = field(default_factory=list)
    "Arms of panel (b): per-step DPO from under-trained checkpoints."
    panel_c: list[str] = field(default_factory=list)
    "Arms of panel (c): per-step DPO (and controls) from an over-trained checkpoint."
    arms: list[ArmConfig] = field(default_factory=list)
    "Every post-training arm (panels and comparisons)."
    workers: int = 1
    "Parallel worker processes (each gets cores / workers torch threads)."
    executor: Literal["local", "ray"] = "local"
    "local = this machine (workers processes); ray = one Ray task per run folder on the cluster of the ray section."
    ray: RayConfig = field(default_factory=RayConfig)
    "Ray cluster and per-task resources (with executor: ray)."
    retries: int = 1
    "Extra attempts of a run that fails before it is reported as failed."
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    "Experiment tracking of every run folder (the scalars of its metrics.jsonl)."
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    "Runtime settings of every stage (replace train.runtime and posttrain.runtime)."

    def __post_init__(self) -> None:
        self.train.runtime = self.runtime
        self.posttrain.runtime = self.runtime
        for a in self.arms:
            check_renamed_keys(PostTrainConfig, a.set, "arms", f"arm {a.name!r}: set")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names) or any(not n for n in names):
            raise ValueError(f"arm names must be unique and non-empty: {names}")
        for ref in [self.panel_a, *self.panel_b, *self.panel_c]:
            if ref and ref not in names:
                raise ValueError(f"panel arm {ref!r} is not among arms {names}")
        ckpts = set(self.train.sft.checkpoint_at) | {self.train.sft.max_steps}
        for a in self.arms:
            if a.init_step not in ckpts:
                raise ValueError(
                    f"arm {a.name!r} starts at SFT step {a.init_step}, which is not checkpointed "
                    f"(train.sft.checkpoint_at={sorted(ckpts)})"
                )
        if not self.seeds:
            raise ValueError("seeds must not be empty")


@dataclass
class AnalysisConfig:
    """``stargraph analysis``: gradient alignment of per-step DPO with SFT variants at SFT checkpoints."""

    checkpoints: list[str] = field(default_factory=list)
    "SFT checkpoints (.pt) to analyse, e.g. --set 'checkpoints=[runs/x/ckpt_100.pt,runs/x/ckpt_200.pt]'."
    graphs: int = 1024
    "Training graphs of the on-policy pool (as posttrain's pool.graphs)."
    samples_per_graph: int = 4
    "Samples per pool graph (as posttrain's pool.samples_per_graph)."
    uniform: int = 4096
    "Uniformly drawn training graphs for the sftc / sft / sft_lookup gradients."
    beta: float = 0.1
    "Per-step DPO beta."
    construction: Literal["full", "shared_prefix"] = "full"
    "Pair construction of the pool (as posttrain's pairs)."
    seed: int = 0
    "Seed of the pool and of the uniform graphs."
    threads: int = 1
    "torch threads."


@dataclass
class SweepConfig:
    """``stargraph sweep``: a grid of post-training runs, each grid point a run folder (resumable)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    "Seed axis."
    graphs: list[str] = field(default_factory=lambda: ["2,4,20"])
    "Graph-size axis, each 'degree,path_len,num_nodes'."
    n_train: list[int] = field(default_factory=lambda: [5000])
    "Training-set-size axis."
    init_steps: list[int] = field(default_factory=lambda: [100, 2000])
    "SFT-checkpoint axis (steps); SFT runs once per (seed, graph, n_train, model) and saves these."
    objectives: list[str] = field(default_factory=lambda: ["sft", "per_step_dpo"])
    "Objective axis."
    pools: list[str] = field(default_factory=lambda: ["resampled"])
    "Pool-policy axis."
    variants: dict[str, dict[str, object]] = field(default_factory=lambda: {"base": {}})
    "Named override sets (axis), e.g. {deep: {train.model.n_layer: 6}, beta05: {posttrain.beta: 0.5}}; keys are dotted paths under train. or posttrain."
    train: TrainConfig = field(default_factory=TrainConfig)
    posttrain: PostTrainConfig = field(default_factory=PostTrainConfig)
    only: list[dict[str, object]] = field(default_factory=list)
    "Keep only the grid points matching at least one of these partial points (empty = the whole grid), e.g. [{objective: awr, init_step: 1000}, {objective: sft, pool: resampled}]; keys: graph, n_train, variant, objective, pool, init_step."
    workers: int = 0
    "Worker processes with executor: local (0 = auto: one single-threaded worker per core on CPU, one worker on CUDA); each gets cores / workers torch threads."
    executor: Literal["local", "ray"] = "local"
    "local = this machine (workers processes); ray = every SFT run and grid point a Ray task on the cluster of the ray section (resources: ray.cpus_per_task, ray.gpus_per_task)."
    ray: RayConfig = field(default_factory=RayConfig)
    "Ray cluster and per-task resources (with executor: ray)."
    retries: int = 1
    "Extra attempts of a run (SFT or point) that fails; after them it is listed in failed.json and the sweep exits with an error."
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    "Experiment tracking of every run folder (the scalars of its metrics.jsonl)."
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    "Runtime settings of every stage (replace train.runtime and posttrain.runtime)."

    def __post_init__(self) -> None:
        self.train.runtime = self.runtime
        self.posttrain.runtime = self.runtime
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        allowed = {"graph", "n_train", "variant", "objective", "pool", "init_step"}
        for i, sel in enumerate(self.only):
            if not isinstance(sel, dict) or not sel or set(sel) - allowed:
                raise ValueError(f"only[{i}] = {sel!r}: must be a non-empty mapping with keys among {sorted(allowed)}")
        for g in self.graphs:
            parse_graph(g)
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ValueError(f"sweep objective {o!r} is not one of {OBJECTIVES}")
        for p in self.pools:
            if p not in ("fixed", "resampled", "balanced", "fresh"):
                raise ValueError(f"sweep pool {p!r} is not fixed, resampled, balanced or fresh")
        for name, over in self.variants.items():
            for k in over:
                if not (k.startswith("train.") or k.startswith("posttrain.")):
                    raise ValueError(f"variant {name!r}: key {k!r} must start with train. or posttrain.")
            check_renamed_keys(SweepConfig, over, "variants", f"variant {name!r}:")


def check_renamed_keys(cls: type, keys, field_name: str, what: str) -> None:
    """A dotted key (of a sweep variant, of an arm's ``set``) that uses a renamed field of ``cls`` is an
    error naming the new spelling, as the same name in a config file would be."""
    for k in keys:
        new = renamed_path(cls, str(k))
        if new is not None:
            raise FieldError(field_name, f"{what} key {k!r} was renamed to {new!r}")


def parse_graph(text: str) -> tuple[int, int, int]:
    try:
        d, l, n = (int(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"graph size {text!r} must be 'degree,path_len,num_nodes'") from None
    return d, l, n


# ---------------------------------------------------------------- presets and resolution


def preset_path(name: str) -> Path:
    p = PRESET_DIR / f"{name}.yaml"
    if not p.exists():
        known = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(known)}")
    return p


def load_raw(path: Path, seen: tuple[str, ...] = ()) -> dict:
    """A YAML config tree; an ``inherit: <preset>`` key merges that preset underneath."""
    return inherit(configlib.load_yaml(path), "inherit", lambda name, chain: load_raw(preset_path(name), chain), seen)


def section(tree: dict, key: str | None) -> dict:
    if key is None:
        return tree
    sub = tree.get(key, {})
    return sub if isinstance(sub, dict) else {}


def load_run_config(cls: type, path: str | Path):
    """The config a run folder recorded in its ``config.yaml``, built as ``cls``.

    A record written before the optimisation fields were renamed (``lr``, ``steps``, ``grad_clip``; also in
    an arm's ``set`` and a sweep variant's keys) reads as the new names: this is for a run folder's own
    record only; a config a person writes must use the new names."""
    tree = upgrade_names(cls, configlib.load_yaml(path))

    def keys(over, base: type, prefix: str = ""):
        if not isinstance(over, dict):
            return over
        return {(renamed_path(base, prefix + k) or prefix + k)[len(prefix):]: v for k, v in over.items()}

    arms = tree.get("arms")
    if isinstance(arms, configlib.Sourced) and isinstance(arms.value, list):
        tree["arms"] = configlib.Sourced(
            [{**a, "set": keys(a["set"], PostTrainConfig)} if isinstance(a, dict) and "set" in a else a for a in arms.value], arms.origin
        )
    variants = tree.get("variants")
    if isinstance(variants, dict):  # a mapping in the file: a tree of variant names
        tree["variants"] = {name: keys(over, SweepConfig) for name, over in variants.items()}
    return configlib.build(cls, tree)


def resolve(cls: type, *, preset: str | None, config_file: str | None, overrides: dict, preset_section: str | None = None):
    """Build ``cls`` from preset < config file < overrides.

    ``preset_section`` (e.g. ``train``) picks that section of a preset, and of a config file that
    has it, so ``stargraph train --preset quick`` uses the ``train:`` part of the quick preset.
    """
    tree: dict = {}
    if preset:
        tree = section(load_raw(preset_path(preset), (preset,)), preset_section)
    if config_file:
        file_tree = load_raw(Path(config_file))
        if preset_section and isinstance(file_tree.get(preset_section), dict):
            file_tree = file_tree[preset_section]
        tree = configlib.merge(tree, file_tree)
    tree = configlib.merge(tree, overrides)
    return configlib.build(cls, tree)
