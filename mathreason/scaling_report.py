"""Scaling-study report: SFT's power law in D_syn and every method's data-efficiency factor (Figs. 2 and 5).

A scaling study is a tree of run folders ``<root>/seed-<s>/size-<n>/`` (``n`` synthetic training
problems, seed ``s``), each with the ``eval`` stage's ``eval/summary.json``
(``{policy_tag: {benchmark: {"greedy": {...}, "sampled": {...}}}}``, see :mod:`mathreason.evaluate`).

- :func:`collect` reads one row per (method, seed, size): accuracy, error ``1 - accuracy``, benchmark
  stderr, number of problems; what it could not find becomes a human-readable "missing" note.
- :func:`build_report` averages each (method, size) over seeds, fits the reference method's (SFT's) law
  ``err(D) = a * D^-alpha`` on the per-size mean errors (:func:`shared.efficiency.fit_power_law`) and maps
  every method's error at every size to the SFT size that would reach it,
  ``D_eq = (a / err)^(1 / alpha)``; the factor is ``D_eq / size``
  (:func:`shared.efficiency.data_efficiency`). The paper reports about 2x for RFT and 8x for per-step DPO.
  ``D_eq`` outside the fitted range of sizes is an extrapolation of the law and flagged as such; the
  per-method mean factor is taken over interpolated sizes only. Factors are also computed from each
  seed's error separately, so their spread is visible.
- :func:`write_report` writes ``report.json``, ``report.csv``, ``scaling.png`` (log-log test error vs
  D_syn with the fitted law) and ``efficiency.png`` (factor vs D_syn, guides at 1x, 2x, 8x) atomically.
- :func:`format_table` renders a report as a markdown table.

A perfect score (error 0) has no equivalent size under a power law: its factor and ``D_eq`` are ``null``
with a note. The JSON never holds NaN or infinity (they become ``null``). Output is deterministic.

``python -m mathreason.scaling_report ROOT --benchmark gsm8k --method sft=sft --method rft=rft ...``
writes the report and prints the table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.efficiency import PowerLawFit, data_efficiency, fit_power_law, predict_error
from shared.runio import atomic_write_bytes, atomic_write_text, dumps

__all__ = [
    "METRICS",
    "CSV_COLUMNS",
    "collect",
    "build_report",
    "write_report",
    "format_table",
    "plot_scaling",
    "plot_efficiency",
]

METRICS = ("greedy", "sampled")
"""``greedy``: greedy accuracy; ``sampled``: mean per-problem accuracy of the samples (pass@1)."""

CSV_COLUMNS = ("method", "size", "seeds", "error_mean", "error_sd", "accuracy_mean", "d_eq", "factor", "regime")

GUIDES = (1.0, 2.0, 8.0)
"""Horizontal guides on the efficiency plot: parity, the paper's RFT (2x) and per-step DPO (8x)."""

_SEED_RE = re.compile(r"^seed-(\d+)$")
_SIZE_RE = re.compile(r"^size-(\d+)$")


# ====================================================================== helpers


def _finite(x: Any) -> float | None:
    """``float(x)`` when it is a finite number, else ``None``."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    """A copy of ``obj`` for strict JSON: non-finite floats -> ``None``, tuples -> lists, numpy -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(obj)
    return obj


def _numbered_dirs(parent: Path, pattern: re.Pattern) -> dict[int, Path]:
    """``{n: path}`` of the sub-folders of ``parent`` whose names match ``pattern`` (one integer group)."""
    out: dict[int, Path] = {}
    if not parent.is_dir():
        return out
    for p in sorted(parent.iterdir()):
        m = pattern.match(p.name)
        if m and p.is_dir():
            n = int(m.group(1))
            if n in out:  # e.g. size-08 and size-8
                raise ValueError(f"{parent}: two folders for {pattern.pattern} = {n}: {out[n].name}, {p.name}")
            out[n] = p
    return out


# ====================================================================== collect


def collect(
    root: str | Path,
    methods: Mapping[str, str],
    benchmark: str,
    metric: str = "greedy",
    *,
    sizes_of: Mapping[str, Sequence[int]] | None = None,
) -> tuple[list[dict], list[str]]:
    """Rows ``{method, policy, seed, size, accuracy, error, stderr, problems}`` of a scaling study.

    Args:
        root: folder holding ``seed-<s>/size-<n>/eval/summary.json``.
        methods: method name -> policy tag in the summaries, e.g. ``{"sft": "sft", "rft": "rft",
            "per_step_dpo": "pref-per_step_dpo"}``.
        benchmark: benchmark key in the summaries (``gsm8k``, ``math``, ...).
        metric: ``"greedy"`` (greedy accuracy) or ``"sampled"`` (sampled accuracy, the pass@1 mean).
        sizes_of: method name -> the only sizes it runs at (``scaling.method_sizes``); elsewhere its
            absence is expected and not noted (a row found there is still read). Unlisted methods: every size.

    Returns:
        ``(rows, missing)``: rows sorted by method (in ``methods`` order), size, seed; ``stderr`` is
        ``None`` where the summary has none (a single problem); ``missing`` lists, in reading order, every
        size folder without a readable summary, every size folder that one seed has and another lacks,
        and every method, benchmark or metric absent from a summary.
    """
    if metric not in METRICS:
        raise ValueError(f"collect: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not methods:
        raise ValueError("collect: no methods given")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"collect: {root} is not a folder")
    seeds = _numbered_dirs(root, _SEED_RE)
    missing: list[str] = []
    if not seeds:
        missing.append(f"{root}: no seed-<s> folders")
        return [], missing
    size_dirs = {s: _numbered_dirs(p, _SIZE_RE) for s, p in seeds.items()}
    all_sizes = sorted(set().union(*(d.keys() for d in size_dirs.values())))
    order = {m: i for i, m in enumerate(methods)}
    rows: list[dict] = []
    for seed in sorted(seeds):
        if not size_dirs[seed]:
            missing.append(f"seed-{seed}: no size-<n> folders")
            continue
        for size in all_sizes:
            where = f"seed-{seed}/size-{size}"
            run = size_dirs[seed].get(size)
            if run is None:
                missing.append(f"{where}: no run folder (other seeds have size {size})")
                continue
            path = run / "eval" / "summary.json"
            if not path.is_file():
                missing.append(f"{where}: no eval/summary.json")
                continue
            try:
                summary = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as e:
                missing.append(f"{where}: unreadable eval/summary.json ({type(e).__name__}: {e})")
                continue
            if not isinstance(summary, dict):
                missing.append(f"{where}: eval/summary.json is not a JSON object")
                continue
            for method, policy in methods.items():
                pol = summary.get(policy)
                if pol is None and sizes_of and method in sizes_of and size not in sizes_of[method]:
                    continue
                if not isinstance(pol, dict):
                    have = ", ".join(sorted(map(str, summary))) or "none"
                    missing.append(
                        f"{where}: method {method!r} (policy {policy!r}) not in the summary (policies: {have})"
                    )
                    continue
                bench = pol.get(benchmark)
                if not isinstance(bench, dict):
                    have = ", ".join(sorted(k for k, v in pol.items() if isinstance(v, dict))) or "none"
                    missing.append(f"{where}: method {method!r} has no benchmark {benchmark!r} (benchmarks: {have})")
                    continue
                part = bench.get(metric)
                acc = _finite(part.get("accuracy")) if isinstance(part, dict) else None
                if acc is None:
                    missing.append(f"{where}: method {method!r} on {benchmark!r} has no {metric} accuracy")
                    continue
                if not 0.0 <= acc <= 1.0:
                    missing.append(
                        f"{where}: method {method!r} on {benchmark!r}: {metric} accuracy {acc} outside [0, 1]"
                    )
                    continue
                problems = part.get("problems")
                problems = _finite(problems) if not isinstance(problems, bool) else None
                rows.append(
                    {
                        "method": method,
                        "policy": policy,
                        "seed": seed,
                        "size": size,
                        "accuracy": acc,
                        "error": 1.0 - acc,
                        "stderr": _finite(part.get("stderr")),
                        "problems": int(problems) if problems is not None else None,
                    }
                )
    rows.sort(key=lambda r: (order[r["method"]], r["size"], r["seed"]))
    return rows, missing


# ====================================================================== build_report


def _efficiency(fit: PowerLawFit, size: float, error: float | None) -> dict[str, Any]:
    """``{d_eq, factor, regime, extrapolated, note}`` of one error at one size under ``fit``."""
    none = {"d_eq": None, "factor": None, "regime": None, "extrapolated": None}
    if error is None:
        return {**none, "note": "no error value"}
    if error <= 0:
        return {**none, "note": "error is 0 (perfect accuracy): no equivalent SFT size under a power law"}
    if fit.alpha <= 1e-9:
        return {**none, "note": f"fitted alpha = {fit.alpha:.3g} <= 0: reference error does not fall with data"}
    try:
        eff = data_efficiency(fit, size, error)
    except (ValueError, OverflowError) as e:
        return {**none, "note": str(e)}
    if not math.isfinite(eff.equivalent_size) or not math.isfinite(eff.ratio):
        return {**none, "note": "equivalent SFT size overflows (far beyond the fitted law)"}
    return {
        "d_eq": eff.equivalent_size,
        "factor": eff.ratio,
        "regime": eff.regime,
        "extrapolated": eff.extrapolated,
        "note": None,
    }


def build_report(rows: Sequence[Mapping[str, Any]], *, reference: str = "sft", min_sizes: int = 3) -> dict:
    """Per-(method, size) aggregates over seeds, the reference's power law and every data-efficiency factor.

    Args:
        rows: rows as returned by :func:`collect` (``method``, ``seed``, ``size``, ``error``; ``accuracy``,
            ``stderr``, ``problems`` optional).
        reference: the method whose per-size mean errors are fitted (SFT).
        min_sizes: the least number of distinct reference sizes with mean error > 0 to fit on (>= 2).

    Returns:
        ``{"reference", "fit", "methods", "sizes", "points", "summary"}``: ``fit`` holds ``a``, ``alpha``,
        ``r2``, the fitted range and the points fitted; ``points`` one entry per method and size (mean,
        sd over seeds, ``d_eq``, ``factor``, ``regime``, ``extrapolated``, ``note`` and per-seed factors);
        ``summary`` per method the mean factor over interpolated sizes (``None`` with a note when none was).

    Raises:
        ValueError: the reference method is absent, has fewer than ``min_sizes`` sizes with error > 0,
            or a (method, seed, size) appears twice.
    """
    if min_sizes < 2:
        raise ValueError(f"build_report: min_sizes must be >= 2 (a power law has two parameters), got {min_sizes}")
    methods: list[str] = []
    cells: dict[tuple[str, int], dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        m, seed, size = str(r["method"]), int(r["seed"]), int(r["size"])
        if _finite(r.get("error")) is None:
            raise ValueError(f"build_report: row {m} seed {seed} size {size} has no finite error: {r.get('error')!r}")
        if m not in methods:
            methods.append(m)
        cell = cells.setdefault((m, size), {})
        if seed in cell:
            raise ValueError(f"build_report: two rows for method {m!r}, seed {seed}, size {size}")
        cell[seed] = r
    if reference not in methods:
        have = ", ".join(methods) or "none"
        raise ValueError(f"build_report: reference method {reference!r} has no rows (methods: {have})")
    methods.remove(reference)
    methods.insert(0, reference)

    # -------------------------------------------------- aggregate over seeds
    agg: dict[tuple[str, int], dict[str, Any]] = {}
    for (m, size), by_seed in cells.items():
        seeds = sorted(by_seed)
        err = np.array([float(by_seed[s]["error"]) for s in seeds])
        accs = [_finite(by_seed[s].get("accuracy")) for s in seeds]
        accs = [1.0 - e for e in err.tolist()] if any(a is None for a in accs) else accs
        stderrs = [_finite(by_seed[s].get("stderr")) for s in seeds]
        stderrs = [v for v in stderrs if v is not None]
        agg[(m, size)] = {
            "method": m,
            "size": size,
            "seeds": len(seeds),
            "seed_ids": seeds,
            "error_mean": float(err.mean()),
            "error_sd": float(err.std(ddof=1)) if err.size >= 2 else None,
            "accuracy_mean": float(np.mean(accs)),
            "benchmark_stderr_mean": float(np.mean(stderrs)) if stderrs else None,
            "errors": err.tolist(),
        }

    # -------------------------------------------------- reference fit
    ref_sizes = sorted(s for (m, s) in agg if m == reference)
    usable = [s for s in ref_sizes if agg[(reference, s)]["error_mean"] > 0]
    if len(usable) < min_sizes:
        zero = [s for s in ref_sizes if s not in usable]
        raise ValueError(
            f"build_report: fitting {reference!r}'s power law needs >= {min_sizes} distinct sizes with mean error > 0; "
            f"sizes present: {ref_sizes}" + (f" (error 0 at {zero})" if zero else "")
        )
    fit_err = [agg[(reference, s)]["error_mean"] for s in usable]
    fit = fit_power_law(usable, fit_err)
    fit_notes = []
    if len(usable) < len(ref_sizes):
        fit_notes.append(f"sizes {[s for s in ref_sizes if s not in usable]} left out of the fit: mean error 0")
    if fit.alpha <= 1e-9:
        fit_notes.append(
            f"alpha = {fit.alpha:.3g} <= 0: {reference} error does not fall with data; no factors computed"
        )
    fit_d = {
        "method": reference,
        "form": "error = a * D^-alpha",
        "a": fit.a,
        "alpha": fit.alpha,
        "r2": fit.r2,
        "min_size": fit.min_size,
        "max_size": fit.max_size,
        "n_points": fit.n_points,
        "sizes": usable,
        "errors": fit_err,
        "predicted": [float(predict_error(fit, s)) for s in usable],
        "notes": fit_notes,
    }

    # -------------------------------------------------- factors
    points: list[dict] = []
    summary: dict[str, dict] = {}
    for m in methods:
        mine = []
        for size in sorted(s for (mm, s) in agg if mm == m):
            a = agg[(m, size)]
            eff = _efficiency(fit, size, a["error_mean"])
            per_seed = []
            for seed, e in zip(a["seed_ids"], a["errors"]):
                se = _efficiency(fit, size, e)
                per_seed.append(
                    {"seed": seed, "error": e, "d_eq": se["d_eq"], "factor": se["factor"], "regime": se["regime"]}
                )
            seed_f = [p["factor"] for p in per_seed if p["factor"] is not None]
            pt = {
                **{k: v for k, v in a.items() if k != "errors"},
                **eff,
                "predicted_reference_error": float(predict_error(fit, size)),
                "factor_per_seed": [p["factor"] for p in per_seed],
                "factor_seed_min": min(seed_f) if seed_f else None,
                "factor_seed_max": max(seed_f) if seed_f else None,
                "per_seed": per_seed,
            }
            points.append(pt)
            mine.append(pt)
        interp = [p for p in mine if p["regime"] == "interpolation" and p["factor"] is not None]
        s: dict[str, Any] = {
            "sizes": [p["size"] for p in mine],
            "interpolated_sizes": [p["size"] for p in interp],
            "mean_factor_interpolated": float(np.mean([p["factor"] for p in interp])) if interp else None,
            "mean_factor_all": None,
            "note": None,
        }
        allf = [p["factor"] for p in mine if p["factor"] is not None]
        s["mean_factor_all"] = float(np.mean(allf)) if allf else None
        if not interp:
            s["note"] = (
                "no size's D_eq falls inside the fitted range "
                f"[{fit.min_size:g}, {fit.max_size:g}]: every factor is an extrapolation (or undefined)"
            )
        summary[m] = s

    return _clean(
        {
            "reference": reference,
            "min_sizes": min_sizes,
            "fit": fit_d,
            "methods": methods,
            "sizes": sorted({s for (_, s) in agg}),
            "points": points,
            "summary": summary,
        }
    )


# ====================================================================== output


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return format(x, ".10g")
    return str(x)


def _csv_text(report: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in report["points"]:
        w.writerow([_fmt(p.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def _by_method(report: Mapping[str, Any]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {m: [] for m in report["methods"]}
    for p in report["points"]:
        out.setdefault(p["method"], []).append(p)
    return out


def _law(a: float | None, alpha: float | None, spec: str = ".3g") -> str:
    if a is None or alpha is None:
        return "no fit"
    return f"{a:{spec}} D^{'-' if alpha >= 0 else '+'}{abs(alpha):{spec}}"


def _title(report: Mapping[str, Any], what: str) -> str:
    f = report["fit"]
    head = " / ".join(str(x) for x in (report.get("benchmark"), report.get("metric")) if x)
    law = f"{f['method']}: err = {_law(f.get('a'), f.get('alpha'))}"
    r2 = f", R² = {f['r2']:.3f}" if f.get("r2") is not None else ""
    return f"{what}{' (' + head + ')' if head else ''}\n{law}{r2}"


def plot_scaling(report: Mapping[str, Any], path: str | Path) -> Path:
    """Log-log test error vs D_syn: per-method means with seed-sd bars, the reference's fitted law (solid over
    the fitted range, dashed beyond) and, for the other methods, a dotted arrow to their equivalent size."""
    plt = _plt()
    path = Path(path)
    fit = report["fit"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    try:
        xs_all: list[float] = []
        colors = {}
        for i, (m, pts) in enumerate(_by_method(report).items()):
            pts = [p for p in pts if p["error_mean"] is not None and p["error_mean"] > 0]
            color = f"C{i}"
            colors[m] = color
            if not pts:
                continue
            x = np.array([p["size"] for p in pts], dtype=float)
            y = np.array([p["error_mean"] for p in pts])
            sd = np.array([p["error_sd"] or 0.0 for p in pts])
            lo = np.minimum(sd, 0.9 * y)  # keep bars above 0 on a log axis
            ax.errorbar(x, y, yerr=[lo, sd], fmt="o", color=color, capsize=3, label=f"{m}", zorder=3)
            xs_all.extend(x.tolist())
            if m != report["reference"]:
                for p in pts:
                    if p.get("d_eq") is not None:
                        ax.annotate(
                            "", xy=(p["d_eq"], p["error_mean"]), xytext=(p["size"], p["error_mean"]),
                            arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.35, "linestyle": ":"},
                        )
                        xs_all.append(p["d_eq"])
        if fit.get("a") is not None and fit.get("alpha") is not None:
            lo_x, hi_x = float(fit["min_size"]), float(fit["max_size"])
            left = min([lo_x] + xs_all) / 1.5
            right = min(max([hi_x * 4] + xs_all) * 1.5, hi_x * 1e4)
            law = {"a": fit["a"], "alpha": fit["alpha"]}
            f = lambda d: law["a"] * np.asarray(d, dtype=float) ** (-law["alpha"])  # noqa: E731
            inside = np.geomspace(lo_x, hi_x, 100)
            c = colors.get(report["reference"], "k")
            ax.plot(inside, f(inside), "-", color=c, alpha=0.8, label=f"{report['reference']} fit")
            for a_, b_ in ((left, lo_x), (hi_x, right)):
                if b_ > a_:
                    seg = np.geomspace(a_, b_, 50)
                    ax.plot(seg, f(seg), "--", color=c, alpha=0.6)
            ax.plot([], [], "--", color=c, alpha=0.6, label="fit, extrapolated")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D_syn (synthetic training problems)")
        ax.set_ylabel("test error (1 - accuracy)")
        ax.set_title(_title(report, "Test error vs synthetic data"), fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_efficiency(report: Mapping[str, Any], path: str | Path) -> Path:
    """Data-efficiency factor vs D_syn (log-log): filled markers where D_eq was interpolated, hollow where it
    was extrapolated, small crosses for single seeds; guides at 1x, 2x, 8x."""
    plt = _plt()
    from matplotlib.lines import Line2D

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    try:
        ys: list[float] = []
        xs: list[float] = []
        for i, (m, pts) in enumerate(_by_method(report).items()):
            color = f"C{i}"
            pts = [p for p in pts if p.get("factor") is not None]
            if not pts:
                ax.plot([], [], "o-", color=color, label=f"{m} (no factor)")
                continue
            x = [p["size"] for p in pts]
            y = [p["factor"] for p in pts]
            ax.plot(x, y, "-", color=color, alpha=0.6, label=m)
            for p in pts:
                hollow = bool(p.get("extrapolated"))
                ax.plot(
                    [p["size"]], [p["factor"]], "o", color=color, markersize=7,
                    markerfacecolor="white" if hollow else color, markeredgewidth=1.5, zorder=3,
                )
                sf = [v for v in p.get("factor_per_seed") or [] if v is not None]
                if len(sf) > 1:
                    ax.plot([p["size"]] * len(sf), sf, "x", color=color, markersize=4, alpha=0.5, zorder=2)
                    ys.extend(sf)
            xs.extend(x)
            ys.extend(y)
        for g in GUIDES:
            ax.axhline(g, color="0.5", linestyle=":" if g != 1.0 else "-", linewidth=1, zorder=1)
            ax.annotate(f"{g:g}x", xy=(1.0, g), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=8, color="0.4")
        ax.set_yscale("log")
        ax.set_xscale("log")
        pos = [v for v in ys if v > 0]
        ax.set_ylim(min(pos + [0.8]) / 1.3, max(pos + [10.0]) * 1.3)
        if not xs:
            ax.set_xlim(1, 10)
        ax.set_xlabel("D_syn (synthetic training problems)")
        ax.set_ylabel(f"data-efficiency factor (D_eq / D_syn, vs {report['reference']})")
        ax.set_title(_title(report, "Data efficiency"), fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        handles += [
            Line2D([], [], marker="o", linestyle="", color="0.3", label="D_eq interpolated"),
            Line2D([], [], marker="o", linestyle="", color="0.3", markerfacecolor="white", label="D_eq extrapolated"),
            Line2D([], [], marker="x", linestyle="", color="0.3", label="single seeds"),
        ]
        ax.legend(handles=handles, fontsize=8)
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def write_report(
    root: str | Path,
    methods: Mapping[str, str],
    benchmark: str,
    *,
    metric: str = "greedy",
    out_dir: str | Path | None = None,
    reference: str = "sft",
    min_sizes: int = 3,
    sizes_of: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """:func:`collect` + :func:`build_report`, written atomically to ``out_dir`` (default ``<root>/report/``):
    ``report.json`` (everything, strict JSON), ``report.csv`` (one line per method and size, columns
    :data:`CSV_COLUMNS`), ``scaling.png`` and ``efficiency.png``. Returns the report dict."""
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / "report"
    rows, missing = collect(root, methods, benchmark, metric, sizes_of=sizes_of)
    report = build_report(rows, reference=reference, min_sizes=min_sizes)
    files = ["report.json", "report.csv", "scaling.png", "efficiency.png"]
    report = _clean(
        {
            "benchmark": benchmark,
            "metric": metric,
            "root": str(root),
            "policies": dict(methods),
            **report,
            "rows": rows,
            "missing": missing,
            "files": files,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    plot_scaling(report, out / "scaling.png")
    plot_efficiency(report, out / "efficiency.png")
    atomic_write_text(out / "report.csv", _csv_text(report))
    atomic_write_text(out / "report.json", dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _num(x: Any, spec: str = ".3g") -> str:
    return "–" if x is None else format(x, spec)


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown: the fit as a caption, a table with one line per method and size, and the per-method mean
    factor over interpolated sizes. Extrapolated factors are marked ``*``; undefined ones ``–``."""
    f = report["fit"]
    head = " / ".join(str(x) for x in (report.get("benchmark"), report.get("metric")) if x)
    lines = [
        f"{f['method']} fit{' on ' + head if head else ''}: error = {_law(f.get('a'), f.get('alpha'), '.4g')}"
        f" (R² = {_num(f['r2'], '.4f')}, sizes {_num(f['min_size'], 'g')}–{_num(f['max_size'], 'g')},"
        f" {f['n_points']} points)",
        "",
        "| method | D_syn | seeds | test error (mean ± sd) | D_eq | factor | regime |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in report["points"]:
        err = f"{p['error_mean']:.4f}" + (f" ± {p['error_sd']:.4f}" if p.get("error_sd") is not None else "")
        fac = "–" if p.get("factor") is None else f"{p['factor']:.2f}x" + ("*" if p.get("extrapolated") else "")
        regime = p.get("regime") or (p.get("note") or "–")
        d_eq = _num(p.get("d_eq"), ".4g")
        lines.append(f"| {p['method']} | {p['size']} | {p['seeds']} | {err} | {d_eq} | {fac} | {regime} |")
    lines += ["", "| method | mean factor (interpolated sizes) | sizes used |", "|---|---:|---|"]
    for m, s in report["summary"].items():
        mf = "–" if s["mean_factor_interpolated"] is None else f"{s['mean_factor_interpolated']:.2f}x"
        used = ", ".join(map(str, s["interpolated_sizes"])) or "none"
        lines.append(f"| {m} | {mf} | {used} |")
    lines += ["", "\\* D_eq outside the fitted range: an extrapolation of the law."]
    return "\n".join(lines) + "\n"


# ====================================================================== command line


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mathreason.scaling_report", description=__doc__.split("\n")[0])
    ap.add_argument("root", help="folder with seed-<s>/size-<n>/eval/summary.json")
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--method", action="append", required=True, metavar="NAME=POLICY_TAG",
                    help="a method and its policy tag in the summaries (repeat; NAME alone means NAME=NAME)")
    ap.add_argument("--metric", default="greedy", choices=METRICS)
    ap.add_argument("--reference", default="sft")
    ap.add_argument("--min-sizes", type=int, default=3)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    methods = {}
    for spec in args.method:
        name, _, tag = spec.partition("=")
        methods[name] = tag or name
    report = write_report(args.root, methods, args.benchmark, metric=args.metric, out_dir=args.out_dir,
                          reference=args.reference, min_sizes=args.min_sizes)
    print(format_table(report), end="")
    for note in report["missing"]:
        print(f"missing: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
