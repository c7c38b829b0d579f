"""Writes docs/results/stargraph_study2.json: round 2 of the star-graph study (issue 12) in machine-readable form.

Regenerate (from the repository root, after or while the round-2 sweeps run):

    python docs/results/export_stargraph.py runs/study2        # the default folder; --out to write elsewhere

Sweeps of the existing output file whose run folders are not under the study folder are kept as they were
(``--replace`` drops them), so a machine that holds only some sweeps' run folders updates those.

It reads every sweep folder of the study (``runs/study2/<sweep>/``, made by ``stargraph sweep runs/study2/<sweep>
--preset study2_<sweep>``) that holds a ``points/`` folder, whichever sweeps exist today, and can be re-run as
more finish. Lesson 7 of the course (``notebooks/07_stargraph_credit.ipynb``) and lesson 8 read the file.

For each sweep:

* ``status``: the committed preset it was run from (``study2_<sweep>``), how many points its grid plans
  (``stargraph sweep --preset study2_<sweep> --dry-run``), how many have finished, and ``complete``.

* ``groups``: one entry per grid group (a point's folder name without its ``_s<seed>`` suffix) with its settings
  (objective, variant, init step, lr, beta, pool, goals, steps; from the points' ``config.yaml``), the seeds of its
  **finished** points (a ``DONE`` marker), and under ``last`` the **last** evaluation of every finished point
  (never the best one): for each metric of ``EVAL_KEYS`` / ``TRAIN_KEYS`` the mean and sd over seeds (sample sd;
  null with one seed), and for the headline metrics (``VALUE_KEYS``) also the per-seed values, in seed order.
  Also ``max_test_acc`` (each point's highest test accuracy at any evaluation: a transient transition would show;
  ``max_test_forced_token_acc`` likewise for Next-Token-Failures' teacher-forced token accuracy) and ``first_pool`` (the first pool's statistics: where the first pits fall before any update). Points still
  running are listed under ``running`` (seed -> last evaluated step) and are left out of the statistics.
* ``sft``: the sweep's SFT runs (``sft/<name>_s<seed>/metrics.jsonl``, finished or not) at the steps the arms start
  from (``init_steps``) and at their last evaluation, mean / sd over seeds.

Numbers are rounded (means and values to 4 significant digits, sds to 2) and keys sorted, so the output depends only on the run folders.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

import yaml

from shared import runio
from stargraph.runio import is_done

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STUDY = Path("runs/study2")
OUT = Path(__file__).with_name("stargraph_study2.json")

# The last evaluation's metrics exported for every finished point (absent ones are skipped per group).
EVAL_KEYS = (
    "train/acc", "test/acc", "test/acc_given_source", "test/acc_pos0", "train/crit_acc", "test/crit_acc", "test/lookup_acc",
    "test/crit_prob", "test/crit_p_other_child", "test/crit_p_non_child",
    "test/forced_token_acc", "test/path_logp", "test/path_logp_given_source",
)
"""(``test/acc_pos0`` is the source copy: per-step DPO never trains it, the source is in the prompt of every pair.)"""
# Post-training diagnostics: means over the last block of steps (train_loss only where there is no preference loss).
TRAIN_KEYS = ("train_pref_loss", "train_chosen_reward", "train_rejected_reward", "train_loss")
FIRST_POOL_KEYS = ("pool/sample_acc", "pool/pit_at_critical", "pool/crit_pit_other_child")
VALUE_KEYS = {"test/acc", "test/crit_acc", "max_test_acc"}  # per-seed values kept (the file stays small)
FAMILY = re.compile(r"^test_l\d+/(acc|crit_acc|forced_token_acc)$")  # mixed shorter families (hypothesis 3)
SEED = re.compile(r"^(?P<group>.+)_s(?P<seed>\d+)$")


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def stats(values: list[float], with_values: bool = True) -> dict:
    """Mean, sample sd (None for one value) and, with ``with_values``, the values; rounded to 4 significant digits
    (the sd to 2)."""
    vals = [float(v) for v in values]
    out = {"mean": _round(statistics.fmean(vals)), "sd": _round(statistics.stdev(vals), 2) if len(vals) > 1 else None}
    if with_values:
        out["values"] = [_round(v) for v in vals]
    return out


def _stats_of(rows: list[dict], keys) -> dict:
    return {k: stats([r[k] for r in rows], k in VALUE_KEYS or bool(FAMILY.match(k))) for k in keys}


def _evals(path: Path) -> list[dict]:
    """The evaluation records of a metrics.jsonl (a running point's torn tail is skipped)."""
    return [r for r in runio.read_jsonl(path, missing_ok=True) if "test/acc" in r]


def _config(point: Path) -> dict:
    cfg = yaml.safe_load((point / "config.yaml").read_text()) if (point / "config.yaml").exists() else {}
    return cfg or {}


def _settings(group: str, cfg: dict, first: dict) -> dict:
    """What a group is, from a point's config.yaml (old and renamed field names alike) and its first record."""
    pool, data = cfg.get("pool") or {}, cfg.get("data") or {}
    objective = cfg.get("objective", first.get("objective"))
    init = Path(str(cfg.get("init", "")))
    init_step = first.get("init_step")
    sft = SEED.match(init.parent.name)
    m = re.match(r"^g\d+-\d+-\d+_n\d+_", group)
    tail = f"_{objective}_{pool.get('policy')}_init{init_step}"
    variant = group[m.end() : -len(tail)] if m and group.endswith(tail) else None
    return {
        "objective": objective,
        "variant": variant,
        "init_step": init_step,
        "sft_group": sft.group("group") if sft else None,
        "lr": cfg.get("learning_rate", cfg.get("lr")),
        "beta": cfg.get("beta"),
        "steps": cfg.get("max_steps", cfg.get("steps")),
        "batch_size": cfg.get("batch_size"),
        "construction": cfg.get("construction"),
        "pool": pool.get("policy"),
        "pool_graphs": pool.get("graphs"),
        "arm_negatives": pool.get("arm_negatives"),
        "goals": data.get("goals"),
    }


def export_points(sweep: Path) -> dict:
    by: dict[str, list[tuple[int, Path, list[dict], bool]]] = {}
    for point in sorted((sweep / "points").iterdir()):
        m = SEED.match(point.name)
        if not m or not point.is_dir():
            continue
        recs = _evals(point / "metrics.jsonl")
        by.setdefault(m.group("group"), []).append((int(m.group("seed")), point, recs, is_done(point)))
    groups = {}
    for g, pts in sorted(by.items()):
        pts.sort(key=lambda p: p[0])
        done = [p for p in pts if p[3] and p[2]]
        entry: dict = {"seeds": [p[0] for p in done], "running": {str(p[0]): (p[2][-1]["step"] if p[2] else None) for p in pts if not (p[3] and p[2])}}
        ref = done[0] if done else (pts[0] if pts[0][2] else None)
        if ref is not None:
            entry["settings"] = _settings(g, _config(ref[1]), ref[2][0])
        if done:
            last = [p[2][-1] for p in done]
            keys = [k for k in (*EVAL_KEYS, *TRAIN_KEYS) if all(r.get(k) is not None for r in last)]
            if "train_pref_loss" in keys:
                keys.remove("train_loss")  # the same number for preference objectives without an SFT term
            keys += sorted({k for r in last for k in r if FAMILY.match(k) and all(x.get(k) is not None for x in last)} - set(keys))
            entry["steps_done"] = sorted({int(r["step"]) for r in last})
            entry["last"] = _stats_of(last, keys)
            entry["max_test_acc"] = stats([max(r["test/acc"] for r in p[2]) for p in done])
            if all("test/forced_token_acc" in r for p in done for r in p[2]):
                entry["max_test_forced_token_acc"] = stats([max(r["test/forced_token_acc"] for r in p[2]) for p in done], False)
            pools = [next((r for r in p[2] if "pool/samples" in r), None) for p in done]
            if all(pools):
                entry["first_pool"] = _stats_of(pools, [k for k in FIRST_POOL_KEYS if all(k in r for r in pools)])
        groups[g] = entry
    return groups


def export_sft(sweep: Path, init_steps: set[int]) -> dict:
    by: dict[str, list[tuple[int, list[dict], bool]]] = {}
    root = sweep / "sft"
    for run in sorted(root.iterdir()) if root.is_dir() else []:
        m = SEED.match(run.name)
        if m and run.is_dir():
            by.setdefault(m.group("group"), []).append((int(m.group("seed")), _evals(run / "metrics.jsonl"), is_done(run)))
    out = {}
    for g, runs in sorted(by.items()):
        runs.sort(key=lambda r: r[0])
        evaluated = {int(r["step"]) for _, recs, _ in runs for r in recs}
        steps = sorted(evaluated & (init_steps | {max(evaluated, default=0)}))  # the arms' starts and the end
        at = {}
        for s in steps:
            rows = [(seed, next(r for r in recs if int(r["step"]) == s)) for seed, recs, _ in runs if any(int(r["step"]) == s for r in recs)]
            keys = [k for k in EVAL_KEYS if all(r.get(k) is not None for _, r in rows)]
            keys += sorted({k for _, r in rows for k in r if FAMILY.match(k) and all(x.get(k) is not None for _, x in rows)})
            at[str(s)] = {"seeds": [seed for seed, _ in rows], **_stats_of([r for _, r in rows], keys)}
        out[g] = {"seeds": [seed for seed, _, _ in runs], "done_seeds": [seed for seed, _, d in runs if d],
                  "init_steps": sorted(s for s in init_steps if str(s) in at), "at_step": at}
    return out


def planned(sweep_name: str) -> dict:
    """The grid of the sweep's committed preset ``study2_<name>`` (``stargraph sweep --dry-run``), if there is one."""
    from stargraph.config import PRESET_DIR, SweepConfig, resolve
    from stargraph.sweep import plan

    preset = f"study2_{sweep_name}"
    if not (PRESET_DIR / f"{preset}.yaml").is_file():
        return {"preset": None}
    _, points = plan(resolve(SweepConfig, preset=preset, config_file=None, overrides={}), Path("sweep"))
    return {"preset": preset, "planned_points": len(points), "planned_groups": len({info["group"] for _, info in points})}


def export(study: Path) -> dict:
    sweeps = {}
    for sweep in sorted(p for p in study.iterdir() if (p / "points").is_dir()):
        groups = export_points(sweep)
        inits = {e["settings"]["init_step"] for e in groups.values() if e.get("settings")}
        status = planned(sweep.name)
        status["finished_points"] = sum(len(e["seeds"]) for e in groups.values())
        status["complete"] = status["finished_points"] == status.get("planned_points") and all(not e["running"] for e in groups.values())
        sweeps[sweep.name] = {"status": status, "groups": groups, "sft": export_sft(sweep, inits)}
    return {
        "what": "Round 2 of the star-graph study (docs/stargraph_study.md, issue 12): per sweep and grid group, the last "
        "evaluation of every finished point (2000 held-out test graphs; train metrics on 2000 training graphs), "
        "mean / sd over seeds (and per-seed values of the headline metrics); the SFT runs the arms start from. "
        "See the docstring of docs/results/export_stargraph.py.",
        "made_by": "python docs/results/export_stargraph.py runs/study2",
        "eval_keys": list(EVAL_KEYS),
        "train_keys": list(TRAIN_KEYS),
        "sweeps": sweeps,
    }


def dumps(obj, depth: int = 0) -> str:
    """Sorted JSON, one line per innermost value: an object holding objects is indented, anything else (a
    ``{mean, sd, values}`` object, a list, the settings) is written compactly on one line. Small and diffable."""
    if isinstance(obj, dict) and any(isinstance(v, dict) for v in obj.values()):
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k)}: {dumps(obj[k], depth + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}" + ("\n" if depth == 0 else "")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, nargs="?", default=DEFAULT_STUDY,
                    help="the round-2 study folder holding one folder per sweep (default: runs/study2 of this repository)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--replace", action="store_true",
                    help="drop the sweeps of an existing --out file that the study folder lacks (default: keep them, so a "
                    "machine that holds only some sweeps' run folders updates those and leaves the others as exported)")
    a = ap.parse_args(argv)
    study = a.study if a.study.is_absolute() or a.study.exists() else REPO / a.study
    if not study.is_dir():
        raise SystemExit(f"export_stargraph: {study} is not a folder (run the round-2 sweeps first, see docs/stargraph_study.md)")
    out = export(study)
    if not out["sweeps"]:
        raise SystemExit(f"export_stargraph: no sweep folder with points/ under {study}")
    kept = []
    if a.out.exists() and not a.replace:
        old = json.loads(a.out.read_text()).get("sweeps", {})
        kept = sorted(set(old) - set(out["sweeps"]))
        out["sweeps"].update({n: old[n] for n in kept})
    a.out.write_text(dumps(out))
    print(f"wrote {a.out}: " + ", ".join(f"{n} ({len(s['groups'])} groups)" for n, s in out["sweeps"].items() if n not in kept)
          + (f"; kept from the existing file (no run folder here): {', '.join(kept)}" if kept else ""))


if __name__ == "__main__":
    main()
