"""The methods a study compares, and the plan of stages that trains and evaluates a set of them.

A method is a way to turn D_syn (and the SFT policy's own samples) into a policy: SFT itself, RFT, the
paper's per-step DPO, and the baselines. Each names the stages it needs and the policy it produces;
preference methods are one ``pref`` run each, under their own name (``pref/<name>``), with the config
overrides listed here. :func:`plan` turns a list of methods into the ordered stages of one run folder
(shared stages once, then one ``pref`` run per preference method, then ``eval`` of every policy), and
:func:`run_plan` checks every step before the first one runs, then runs them. ``mathreason pipeline``
(with ``pipeline.methods``) and ``mathreason scaling`` (at every D_syn size) both use it.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "Method", "Step", "plan", "resolve_method", "run_plan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    name: str
    policy: str
    """Policy the method trains (`sft`, `rft`, `rft_adv` or `pref/<name>`)."""
    stages: tuple[str, ...]
    """Stages it needs before evaluation (in pipeline order)."""
    description: str
    pref: dict[str, Any] | None = None
    """Overrides of the `pref` section for its `pref` run (None: not a preference method)."""
    needs_all_values: bool = False
    """It needs the advantages of every step of every response (advantages.schedule: all, select: all)."""
    overrides: tuple[str, ...] = ()
    """Extra ``pref.field=value`` overrides of a variant (``base:variant``, see :func:`resolve_method`)."""


_PREF = ("sft", "sample", "grade", "advantages", "pairs", "pref")
_PREF_NO_CREDIT = ("sft", "sample", "grade", "pairs", "pref")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sft", "sft", ("sft",), "SFT on D_syn (pi_sft); the reference of the data-efficiency factors"),
        Method("rft", "rft", ("sft", "sample", "grade", "rft"), "rejection fine-tuning on pi_sft's own positives (from the base model)"),
        Method(
            "rft_adv",
            "rft_adv",
            ("sft", "sample", "grade", "advantages", "rft_adv"),
            "advantage-filtered RFT (Fig. 11): clone responses whose minimum step advantage is in the top half",
            needs_all_values=True,
        ),
        Method(
            "per_step_dpo",
            "pref/per_step_dpo",
            _PREF,
            "per-step DPO (the paper): x, a positive, the negative through its first pit (Algorithm 1)",
            pref={"objective": "per_step_dpo", "pairs": "first_pit_full", "name": "per_step_dpo"},
        ),
        Method(
            "per_step_dpo_shared_prefix",
            "pref/per_step_dpo_shared_prefix",
            _PREF,
            "per-step DPO on shared-prefix pairs (Self-Explore; the theorem's setting): a correct continuation vs the pit step",
            pref={"objective": "per_step_dpo", "pairs": "first_pit_shared_prefix", "name": "per_step_dpo_shared_prefix"},
        ),
        Method(
            "dpo",
            "pref/dpo",
            _PREF_NO_CREDIT,
            "standard DPO on random (positive, negative) pairs of whole responses",
            pref={"objective": "dpo", "pairs": "random", "name": "dpo"},
        ),
        Method(
            "dpo_max_edit",
            "pref/dpo_max_edit",
            _PREF_NO_CREDIT,
            "DPO on max-edit-distance pairs (Pal et al. 2024)",
            pref={"objective": "dpo", "pairs": "max_edit_distance", "name": "dpo_max_edit"},
        ),
        Method(
            "per_step_ipo",
            "pref/per_step_ipo",
            _PREF,
            "IPO on first-pit pairs",
            pref={"objective": "ipo", "pairs": "first_pit_full", "name": "per_step_ipo"},
        ),
        Method(
            "per_step_dpop",
            "pref/per_step_dpop",
            _PREF,
            "DPO-Positive (Pal et al. 2024) on first-pit pairs",
            pref={"objective": "dpop", "pairs": "first_pit_full", "name": "per_step_dpop"},
        ),
        Method(
            "sft_pairs",
            "pref/sft_pairs",
            _PREF,
            "control of per-step DPO: SFT on the chosen sides of its first-pit pairs (same data, steps and lr; no negatives)",
            pref={"objective": "sft", "pairs": "first_pit_full", "name": "sft_pairs"},
        ),
        Method(
            "awr",
            "pref/awr",
            ("sft", "sample", "grade", "advantages", "pref"),
            "advantage-weighted regression with the per-step advantages (the RL the paper shows per-step DPO equals)",
            pref={"objective": "awr", "name": "awr"},
            needs_all_values=True,
        ),
    )
}
"""Every method by name."""


def resolve_method(name: str, variants: dict[str, list[str]] | None = None) -> Method:
    """A registered method, or a variant ``base:variant`` of a preference method.

    A variant is a named list of ``pref.field=value`` overrides in ``pipeline.variants`` (e.g.
    ``{"lr1e-3": ["pref.train.learning_rate=1e-3"]}``); ``per_step_dpo:lr1e-3`` is then per-step DPO with
    those overrides, trained as its own ``pref`` run (``pref/per_step_dpo-lr1e-3``) beside the others, so a
    study can compare hyper-parameters of one method at every size.
    """
    from mathreason.config import ConfigError

    if ":" not in name:
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; known: {list(METHODS)} (or base:variant with pipeline.variants)")
        return METHODS[name]
    base_name, var = name.split(":", 1)
    base = METHODS.get(base_name)
    if base is None or base.pref is None:
        raise ConfigError(f"method {name!r}: variants exist only of preference methods ({[m for m, x in METHODS.items() if x.pref]})")
    if not variants or var not in variants:
        raise ConfigError(f"method {name!r}: no variant {var!r} in pipeline.variants ({sorted(variants or {})})")
    bad = [o for o in variants[var] if not o.startswith("pref.") or "=" not in o]
    if bad:
        raise ConfigError(f"field pipeline.variants.{var}: overrides must be pref.field=value (shared stages are shared), got {bad}")
    run = f"{base_name}-{var}"
    return Method(
        name, f"pref/{run}", base.stages, f"{base.description}; variant {var}: {', '.join(variants[var])}",
        pref={**base.pref, "name": run}, needs_all_values=base.needs_all_values, overrides=tuple(variants[var]),
    )


@dataclass
class Step:
    """One stage run of a plan, with the config it runs under."""

    stage: str
    cfg: Any
    label: str = ""
    """``stage`` or ``pref/<name>`` (the record name)."""
    methods: list[str] = field(default_factory=list)


def _rebuild(cfg, overrides: list[str]):
    from mathreason.config import build_config, to_dict

    return build_config(to_dict(cfg), overrides)


def plan(cfg, methods: list[str]) -> list[Step]:
    """The stages that train and evaluate ``methods`` in ``cfg.run_dir``, each with its config.

    Shared stages run once; when any method needs every step's value (``awr``, ``rft_adv``) the
    ``advantages`` stage runs with ``schedule: all`` and ``select: all`` (which gives the same first pits as
    ``linear`` under best-of-K, so per-step DPO is unaffected). Each preference method is one ``pref`` run
    with its overrides (its own folder ``pref/<name>``). ``eval`` evaluates every method's policy.
    """
    chosen = [resolve_method(m, cfg.pipeline.variants) for m in methods]
    base_over: list[str] = []
    if any(m.needs_all_values for m in chosen):
        base_over += ["advantages.schedule=all", "advantages.select=all"]
        if cfg.advantages.schedule != "all" or cfg.advantages.select != "all":
            logger.info("methods %s need every step's value: advantages.schedule=all, advantages.select=all",
                        [m.name for m in chosen if m.needs_all_values])
    pols = [m.policy for m in chosen]
    base_over.append("eval.policies=[" + ",".join(pols) + "]")
    base = _rebuild(cfg, base_over)
    from mathreason.config import STAGES as ORDER

    steps: list[Step] = []
    for stage in ORDER:
        if stage == "eval":
            continue
        users = [m for m in chosen if stage in m.stages]
        if not users:
            continue
        if stage == "pref":
            for m in users:
                over = [f"pref.{k}={v}" for k, v in m.pref.items()]
                if m.pref.get("objective") == "awr":
                    over.append("pref.pairs=null")
                over += list(m.overrides)
                steps.append(Step("pref", _rebuild(base, over), f"pref/{m.pref['name']}", [m.name]))
        else:
            steps.append(Step(stage, base, stage, [m.name for m in users]))
    steps.append(Step("eval", base, "eval", [m.name for m in chosen]))
    return steps


def run_plan(steps: list[Step], *, force: bool = False, progress: bool = True, launcher: str = "") -> list[dict[str, Any]]:
    """Check every step (with earlier steps' outputs counted as available), then run them in order.

    With ``launcher`` (e.g. ``accelerate launch --config_file fsdp.yaml``) the training stages run in a
    child command on that step's config (written to ``<run_dir>/configs/<label>.yaml``).
    """
    from mathreason.config import dump_yaml
    from mathreason.runs import atomic_write_text, is_main_process
    from mathreason.stages import STAGES, Context, StageError, run_stage

    scheduled: set[str] = set()
    for st in steps:
        ctx = Context(st.cfg, progress=progress)
        ctx.scheduled = scheduled
        STAGES[st.stage].check(ctx)
        scheduled.update({st.stage, st.label})
    results = []
    for st in steps:
        stage = STAGES[st.stage]
        if stage.training and launcher:
            path = Path(st.cfg.run_dir) / "configs" / (st.label.replace("/", "-") + ".yaml")
            if is_main_process():
                atomic_write_text(path, dump_yaml(st.cfg))
            cmd = shlex.split(launcher) + ["-m", "mathreason.cli", st.stage, "--config", str(path)] + (["--force"] if force else [])
            logger.info("launching: %s", shlex.join(cmd))
            proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr)
            if proc.returncode != 0:
                raise StageError(f"stage {st.label} failed under the launcher (exit status {proc.returncode}): {shlex.join(cmd)}")
            ctx = Context(st.cfg)
            rec = ctx.run.record(st.label)
            results.append({"stage": st.label, "status": rec.status if rec else "unknown", "summary": rec.summary if rec else {}})
        else:
            results.append(run_stage(stage, Context(st.cfg, progress=progress), force=force))
        logger.info("stage %s: %s", st.label, results[-1]["status"])
    return results
