"""``stargraph figures RUN_DIR``: Fig. 8 panels (a, b, c) from a reproduce folder, offline.

- (a) SFT loss and the critical token's value vs iteration, for SFT and for the per-step DPO arm
  started at an early iteration (``panel_a``).  The critical-token value is
  ``v_crit = pi(a*|s) * Q(s, a*)``, the exact success probability from the critical decision;
  ``q_crit = Q(s, a*)`` is in the CSVs too.
- (b) test error (1 - greedy full-path accuracy) of per-step DPO from several under-trained
  checkpoints, against iterations (SFT's own curve for reference).
- (c) the same from the over-trained checkpoint.

Every test-error panel shows both metrics side by side: greedy full-path error and Next-Token-Failures'
teacher-forced per-token error (:data:`ERROR_METRICS`).  Curves are means over seeds with a min-max
band.  For a sweep folder: a bar chart of final test accuracy per grid point, the learning curves of
every group, and Fig. 8 (b, c) in both metrics against the SFT iteration (``sweep_fig8.png``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from . import runio
from .config import ReproduceConfig, load_run_config


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(recs_by_seed: dict[int, list[dict]], key: str, offset: int = 0, transform=lambda v: v):
    """(x, mean, lo, hi) over seeds, on the steps all seeds share."""
    series = []
    for recs in recs_by_seed.values():
        pts = {r["step"] + offset: transform(r[key]) for r in recs if key in r and r[key] is not None}
        series.append(pts)
    if not series:
        return None
    common = sorted(set.intersection(*(set(s) for s in series)))
    if not common:
        return None
    arr = np.array([[s[x] for x in common] for s in series], dtype=float)
    return np.array(common), arr.mean(0), arr.min(0), arr.max(0)


def _plot(ax, c, label, **kw):
    if c is None:
        return
    x, m, lo, hi = c
    (line,) = ax.plot(x, m, label=label, **kw)
    if len(c[0]) and (hi - lo).max() > 0:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)


def load_reproduce(run_dir: Path) -> tuple[ReproduceConfig, dict[int, list[dict]], dict[str, dict[int, list[dict]]]]:
    from .reproduce import arm_dir, sft_dir

    cfg = load_run_config(ReproduceConfig, run_dir / "config.yaml")  # also a record with the old field names
    sft = {s: runio.read_jsonl(sft_dir(run_dir, s) / "metrics.jsonl") for s in cfg.seeds}
    arms = {a.name: {s: runio.read_jsonl(arm_dir(run_dir, s, a.name) / "metrics.jsonl") for s in cfg.seeds} for a in cfg.arms}
    return cfg, sft, arms


def make_figures(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if (run_dir / "points").is_dir():
        out = [sweep_figure(run_dir)]
        if (run_dir / "curves.csv").exists():
            out.append(sweep_curves_figure(run_dir))
            fig8 = sweep_fig8_figure(run_dir)
            if fig8 is not None:
                out.append(fig8)
        return out
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} has no config.yaml: not a reproduce or sweep folder")
    plt = _plt()
    cfg, sft, arms = load_reproduce(run_dir)
    init = {a.name: a.init_step for a in cfg.arms}
    err = lambda v: 1.0 - v  # noqa: E731
    out = []

    # (a)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    _plot(ax1, _curve(sft, "train_loss"), "SFT (train loss)", color="C0")
    _plot(ax2, _curve(sft, "train/v_crit"), "SFT, train graphs", color="C0")
    _plot(ax2, _curve(sft, "test/v_crit"), "SFT, test graphs", color="C0", linestyle="--")
    if cfg.panel_a:
        a = cfg.panel_a
        off = init[a]
        key = "train_pref_loss" if any("train_pref_loss" in r for rs in arms[a].values() for r in rs) else "train_loss"
        _plot(ax1, _curve(arms[a], key, off), f"{a} from iter {off} (train loss)", color="C3")
        _plot(ax2, _curve(arms[a], "train/v_crit", off), f"{a}, train graphs", color="C3")
        _plot(ax2, _curve(arms[a], "test/v_crit", off), f"{a}, test graphs", color="C3", linestyle="--")
        for ax in (ax1, ax2):
            ax.axvline(off, color="grey", linewidth=0.8, linestyle=":")
    ax1.set(xlabel="iteration", ylabel="training loss", title="(a) loss")
    ax1.set_yscale("log")
    ax2.set(xlabel="iteration", ylabel="critical-token value  pi(a*)·Q(s, a*)", title="(a) critical-token Q", ylim=(-0.02, 1.02))
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.append(_save(fig, run_dir / "fig8a.png"))

    # (b), (c)
    for name, arm_names, title in (
        ("fig8b.png", cfg.panel_b, "(b) per-step DPO from under-trained SFT checkpoints"),
        ("fig8c.png", cfg.panel_c, "(c) from an over-trained SFT checkpoint"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for ax, (key, ylabel) in zip(axes, ERROR_METRICS):
            _plot(ax, _curve(sft, key, transform=err), "SFT", color="black", linestyle="--")
            for i, a in enumerate(arm_names):
                _plot(ax, _curve(arms[a], key, init[a], transform=err), f"{a} (from iter {init[a]})", color=f"C{i + 1}")
                ax.axvline(init[a], color=f"C{i + 1}", linewidth=0.6, linestyle=":")
            ax.set(xlabel="iteration", ylabel=ylabel, title=title, ylim=(-0.02, 1.02))
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(_save(fig, run_dir / name))
    return out


ERROR_METRICS = (
    ("test/acc", "test error (1 - greedy full-path accuracy)"),
    ("test/forced_token_acc", "test teacher-forced per-token error"),
)
"""The two test-error metrics of every Fig. 8 panel: greedy full-path error (the study's headline) and
Next-Token-Failures' teacher-forced per-token error (``1 - forced_token_acc``, round 2's hypothesis 1)."""


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    _plt().close(fig)
    tmp.replace(path)
    return path


def sweep_figure(run_dir: Path) -> Path:
    """Final test accuracy per grid point (mean over seeds), grouped by everything but the seed."""
    plt = _plt()
    rows = runio.read_jsonl(run_dir / "points.jsonl")
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r.get("test_acc") is not None:
            groups[r["group"]].append(float(r["test_acc"]))
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4.5))
    means = [np.mean(groups[n]) for n in names]
    ax.bar(range(len(names)), means, color="C0")
    for i, n in enumerate(names):
        ax.scatter([i] * len(groups[n]), groups[n], color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=75, ha="right", fontsize=6)
    ax.set(ylabel="final test accuracy", ylim=(0, 1.02), title="sweep: final test accuracy per grid point")
    fig.tight_layout()
    return _save(fig, run_dir / "sweep_test_acc.png")


CURVE_PANELS = (
    ("test/acc", "test full-path accuracy"),
    ("train/acc", "train full-path accuracy"),
    ("test/crit_prob", "test p(correct critical token)"),
    ("test/crit_min_child", "test: critical argmax = smaller-id child"),
    ("test/lookup_acc", "test lookup-token accuracy"),
    ("train_chosen_logp", "chosen log-prob (pairs; post-training batches)"),
    ("test/forced_token_acc", "test teacher-forced per-token accuracy"),
    ("test/crit_p_non_child", "test: critical mass on non-child tokens"),
)


def read_curves(path: Path) -> dict[str, dict[int, list[tuple[int, dict]]]]:
    """``curves.csv`` of a sweep as {group: {seed: [(step, row), ...]}} (floats; empty cells dropped)."""
    import csv

    out: dict[str, dict[int, list[tuple[int, dict]]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            vals = {k: float(v) for k, v in row.items() if k not in ("group", "seed", "step") and v not in ("", None)}
            out[row["group"]][int(row["seed"])].append((int(row["step"]), vals))
    return out


def sweep_curves_figure(run_dir: Path, groups: list[str] | None = None, out_name: str = "sweep_curves.png") -> Path:
    """Learning curves of every group (mean over seeds, min-max band) for the metrics of
    :data:`CURVE_PANELS`, against post-training steps; from ``curves.csv`` alone."""
    plt = _plt()
    run_dir = Path(run_dir)
    curves = read_curves(run_dir / "curves.csv")
    names = sorted(groups or curves)
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    for (key, title), ax in zip(CURVE_PANELS, axes.flat):
        for i, g in enumerate(names):
            by_seed = curves.get(g, {})
            steps = sorted({s for recs in by_seed.values() for s, v in recs if key in v})
            if not steps:
                continue
            mat = np.full((len(by_seed), len(steps)), np.nan)
            for j, recs in enumerate(by_seed.values()):
                for s, v in recs:
                    if key in v and s in steps:
                        mat[j, steps.index(s)] = v[key]
            m = np.nanmean(mat, 0)
            ax.plot(steps, m, color=f"C{i % 10}", linestyle="-" if i < 10 else "--", label=g, lw=1.2)
            if mat.shape[0] > 1:
                ax.fill_between(steps, np.nanmin(mat, 0), np.nanmax(mat, 0), color=f"C{i % 10}", alpha=0.12)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("post-training step", fontsize=8)
        if not key.endswith("logp"):
            ax.set_ylim(-0.02, 1.02)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=6)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * ((len(names) + 3) // 4), 1, 1))
    return _save(fig, run_dir / out_name)


def _sft_curves(run_dir: Path) -> dict[str, dict[int, list[dict]]]:
    """SFT runs of a sweep as {family: {seed: records}}; a family is the folder name without ``_s<seed>``.
    Records are the run's evaluations merged with ``stargraph rescore``'s (``rescore.jsonl``), by step."""
    import re

    out: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for d in sorted((run_dir / "sft").glob("*_s*")):
        m = re.fullmatch(r"(.+)_s(\d+)", d.name)
        if not m or not (d / "metrics.jsonl").exists():
            continue
        by_step = {r["step"]: dict(r) for r in runio.read_jsonl(d / "metrics.jsonl")}
        for r in runio.read_jsonl(d / "rescore.jsonl"):
            by_step.setdefault(r["step"], {}).update({k: v for k, v in r.items() if "/" in k or k == "step"})
        out[m.group(1)][int(m.group(2))] = [by_step[s] for s in sorted(by_step)]
    return out


def sweep_fig8_figure(run_dir: Path, out_name: str = "sweep_fig8.png") -> Path | None:
    """Fig. 8 (b, c) of a sweep in both test metrics: one column per objective, rows = greedy full-path
    error and teacher-forced per-token error (:data:`ERROR_METRICS`), against the *SFT iteration*
    (post-training curves start at their init step); the SFT runs' own curves (evaluations plus any
    ``rescore.jsonl``) in black.  Means over seeds with a min-max band.  ``None`` when the sweep has
    no post-training points or no SFT folders."""
    run_dir = Path(run_dir)
    rows = runio.read_jsonl(run_dir / "points.jsonl")
    sft = _sft_curves(run_dir)
    if not rows or not sft or not (run_dir / "curves.csv").exists():
        return None
    plt = _plt()
    curves = read_curves(run_dir / "curves.csv")
    info = {r["group"]: r for r in rows}
    objectives = sorted({r["objective"] for r in rows})
    inits = sorted({int(r["init_step"]) for r in rows})
    err = lambda v: 1.0 - v  # noqa: E731
    fig, axes = plt.subplots(len(ERROR_METRICS), len(objectives), figsize=(5.2 * len(objectives), 4.2 * len(ERROR_METRICS)), squeeze=False)
    for row, (key, ylabel) in enumerate(ERROR_METRICS):
        for col, obj in enumerate(objectives):
            ax = axes[row][col]
            for j, (fam, recs) in enumerate(sorted(sft.items())):
                _plot(ax, _curve(recs, key, transform=err), f"SFT {fam}", color="black", linestyle=("--", ":", "-.")[j % 3])
            for g in sorted(g for g, r in info.items() if r["objective"] == obj):
                init = int(info[g]["init_step"])
                by_seed = {s: [{"step": st, **v} for st, v in recs] for s, recs in curves.get(g, {}).items()}
                i = inits.index(init)
                label = f"{info[g].get('variant', '')} from iter {init}".strip()
                _plot(ax, _curve(by_seed, key, init, transform=err), label, color=f"C{i % 10}")
                ax.axvline(init, color=f"C{i % 10}", linewidth=0.6, linestyle=":")
            ax.set(xlabel="iteration (SFT step; post-training from its init step)", ylabel=ylabel, ylim=(-0.02, 1.02), title=f"{obj}: {ylabel.split(' (')[0]}")
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, run_dir / out_name)
