"""Scaling report: collecting eval summaries, the SFT power law, data-efficiency factors, files written."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from mathreason.scaling_report import CSV_COLUMNS, build_report, collect, format_table, write_report

A, ALPHA = 0.6, 0.2
SIZES = (100, 300, 1000, 3000)  # no method's D_eq lands on a fitted endpoint, so regimes are unambiguous
SEEDS = (0, 1)
MULT = {"sft": 1, "rft": 2, "per_step_dpo": 8}  # each method reaches SFT's error at MULT x its size
METHODS = {"sft": "sft", "rft": "rft", "per_step_dpo": "pref-per_step_dpo"}
BENCH = "gsm8k"


def _true_error(d: float) -> float:
    return A * d ** (-ALPHA)


def _bench_entry(acc: float, problems: int = 1000, sampled_acc: float | None = None) -> dict:
    se = math.sqrt(acc * (1 - acc) / (problems - 1))
    out = {"greedy": {"accuracy": acc, "stderr": se, "problems": problems, "truncated": 0}}
    if sampled_acc is not None:
        out["sampled"] = {
            "accuracy": sampled_acc, "stderr": se, "problems": problems, "samples_per_problem": 4,
            "pass@k": {"1": {"value": sampled_acc, "stderr": se}},
        }
    return out


def _write_summary(root, seed, size, summary) -> None:
    d = root / f"seed-{seed}" / f"size-{size}" / "eval"
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary))


def make_study(root, *, noise: float = 0.003, seed: int = 1234) -> dict:
    """2 seeds x 4 sizes; returns {(method, seed, size): error}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for s in SEEDS:
        for n in SIZES:
            summary = {}
            for m, tag in METHODS.items():
                err = _true_error(MULT[m] * n) * math.exp(noise * rng.standard_normal())
                truth[(m, s, n)] = err
                # sampled accuracy a little lower, to tell the metrics apart
                summary[tag] = {BENCH: _bench_entry(1 - err, sampled_acc=1 - err - 0.05), "other": _bench_entry(0.5)}
            _write_summary(root, s, n, summary)
    return truth


def _points(report):
    return {(p["method"], p["size"]): p for p in report["points"]}


def _strict_loads(text: str):
    def reject(c):
        raise ValueError(f"non-finite constant {c} in JSON")

    return json.loads(text, parse_constant=reject)


# ---------------------------------------------------------------- collect


def test_collect_rows_and_metrics(tmp_path):
    truth = make_study(tmp_path)
    rows, missing = collect(tmp_path, METHODS, BENCH)
    assert missing == []
    assert len(rows) == len(METHODS) * len(SEEDS) * len(SIZES)
    assert [r["method"] for r in rows[:8]] == ["sft"] * 8  # sorted by method order, then size, then seed
    assert [(r["size"], r["seed"]) for r in rows[:3]] == [(100, 0), (100, 1), (300, 0)]
    r = next(r for r in rows if r["method"] == "per_step_dpo" and r["seed"] == 1 and r["size"] == 300)
    assert r["policy"] == "pref-per_step_dpo"
    assert r["error"] == pytest.approx(truth[("per_step_dpo", 1, 300)], abs=1e-12)
    assert r["accuracy"] == pytest.approx(1 - r["error"])
    assert r["problems"] == 1000 and r["stderr"] > 0
    assert set(r) == {"method", "policy", "seed", "size", "accuracy", "error", "stderr", "problems"}

    srows, _ = collect(tmp_path, METHODS, BENCH, metric="sampled")
    assert [s["error"] - g["error"] for s, g in zip(srows, rows)] == pytest.approx([0.05] * len(rows))

    with pytest.raises(ValueError, match="unknown metric"):
        collect(tmp_path, METHODS, BENCH, metric="pass@8")


def test_collect_missing_notes_do_not_crash(tmp_path):
    make_study(tmp_path)
    shutil.rmtree(tmp_path / "seed-1" / "size-3000")  # one seed lacks a size
    (tmp_path / "seed-0" / "size-300" / "eval" / "summary.json").unlink()  # a run never evaluated
    p = tmp_path / "seed-1" / "size-100" / "eval" / "summary.json"
    s = json.loads(p.read_text())
    del s["rft"]  # one method absent from one summary
    p.write_text(json.dumps(s))
    (tmp_path / "seed-0" / "size-1000" / "eval" / "summary.json").write_text("{not json")
    (tmp_path / "seed-1" / "notes").mkdir()  # unrelated folders are ignored

    rows, missing = collect(tmp_path, METHODS, BENCH)
    text = "\n".join(missing)
    assert len(missing) == 4, text
    assert any("seed-1/size-3000" in m and "no run folder" in m for m in missing)
    assert any("seed-0/size-300" in m and "no eval/summary.json" in m for m in missing)
    assert any("seed-1/size-100" in m and "'rft'" in m and "not in the summary" in m for m in missing)
    assert any("seed-0/size-1000" in m and "unreadable" in m for m in missing)
    assert len(rows) == 3 * 8 - 3 * 3 - 1

    _, missing_b = collect(tmp_path, METHODS, "math500")
    assert any("no benchmark 'math500'" in m for m in missing_b)

    # the report still builds and writes; the notes travel into report.json
    rep = write_report(tmp_path, METHODS, BENCH)
    on_disk = _strict_loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk["missing"] == missing == rep["missing"]
    pts = _points(rep)
    assert pts[("rft", 100)]["seeds"] == 1 and pts[("rft", 100)]["error_sd"] is None
    assert pts[("sft", 300)]["seed_ids"] == [1]


def test_methods_limited_to_some_sizes_are_expected_only_there(tmp_path):
    """scaling.method_sizes: a method run only at some sizes leaves no 'missing' note elsewhere, its rows are
    read where it ran, and its absence where it should have run is still noted."""
    make_study(tmp_path)
    for s in SEEDS:
        for n in SIZES:
            p = tmp_path / f"seed-{s}" / f"size-{n}" / "eval" / "summary.json"
            summ = json.loads(p.read_text())
            if n != 300:
                del summ["pref-per_step_dpo"]
            if (s, n) == (1, 300):
                del summ["rft"]  # rft runs at every size: this absence is noted
            p.write_text(json.dumps(summ))
    rows, missing = collect(tmp_path, METHODS, BENCH, sizes_of={"per_step_dpo": [300]})
    assert missing == ["seed-1/size-300: method 'rft' (policy 'rft') not in the summary (policies: pref-per_step_dpo, sft)"]
    assert {(r["size"], r["seed"]) for r in rows if r["method"] == "per_step_dpo"} == {(300, 0), (300, 1)}
    _, noted = collect(tmp_path, METHODS, BENCH)  # without the limits every absence is noted
    assert sum("'per_step_dpo'" in m for m in noted) == len(SEEDS) * (len(SIZES) - 1)
    _, wrong = collect(tmp_path, METHODS, BENCH, sizes_of={"per_step_dpo": [100]})  # expected where it did not run
    assert sum("'per_step_dpo'" in m for m in wrong) == len(SEEDS)
    rep = write_report(tmp_path, METHODS, BENCH, sizes_of={"per_step_dpo": [300]})
    pts = _points(rep)
    assert pts[("per_step_dpo", 300)]["seeds"] == 2 and ("per_step_dpo", 100) not in pts
    assert pts[("per_step_dpo", 300)]["factor"] == pytest.approx(8, rel=0.05)


def test_collect_rejects_missing_root_and_reports_empty(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "nope", METHODS, BENCH)
    rows, missing = collect(tmp_path, METHODS, BENCH)
    assert rows == [] and "no seed-<s> folders" in missing[0]


# ---------------------------------------------------------------- build_report


def test_fit_and_factors_recover_the_synthetic_law(tmp_path):
    make_study(tmp_path)
    rows, _ = collect(tmp_path, METHODS, BENCH)
    rep = build_report(rows)
    fit = rep["fit"]
    assert fit["alpha"] == pytest.approx(ALPHA, abs=0.01)
    assert fit["a"] == pytest.approx(A, rel=0.05)
    assert 0.99 < fit["r2"] <= 1.0
    assert (fit["min_size"], fit["max_size"], fit["n_points"]) == (100, 3000, 4)
    assert fit["sizes"] == list(SIZES)

    pts = _points(rep)
    for n in SIZES:
        p = pts[("sft", n)]
        assert p["factor"] == pytest.approx(1.0, rel=0.1)
        assert p["seeds"] == 2 and p["error_sd"] is not None and p["error_sd"] >= 0
        assert p["d_eq"] == pytest.approx(p["factor"] * n)
        assert len(p["factor_per_seed"]) == 2 and all(f == pytest.approx(1.0, rel=0.15) for f in p["factor_per_seed"])
        for m in ("rft", "per_step_dpo"):
            q = pts[(m, n)]
            assert q["factor"] == pytest.approx(MULT[m], rel=0.15), (m, n)
            assert [f == pytest.approx(MULT[m], rel=0.2) for f in q["factor_per_seed"]] == [True, True]
            assert q["factor_seed_min"] <= q["factor_seed_max"]

    # D_eq inside [100, 3000] is interpolation; beyond 3000 extrapolation-above
    expected = {
        "rft": ["interpolation", "interpolation", "interpolation", "extrapolation-above"],
        "per_step_dpo": ["interpolation", "interpolation", "extrapolation-above", "extrapolation-above"],
    }
    for m, regimes in expected.items():
        assert [pts[(m, n)]["regime"] for n in SIZES] == regimes
        assert [pts[(m, n)]["extrapolated"] for n in SIZES] == [r != "interpolation" for r in regimes]

    s = rep["summary"]
    assert s["rft"]["interpolated_sizes"] == [100, 300, 1000]
    assert s["per_step_dpo"]["interpolated_sizes"] == [100, 300]
    assert s["rft"]["mean_factor_interpolated"] == pytest.approx(2, rel=0.1)
    assert s["per_step_dpo"]["mean_factor_interpolated"] == pytest.approx(8, rel=0.1)
    assert s["sft"]["mean_factor_interpolated"] == pytest.approx(1, rel=0.05)
    assert rep["methods"] == ["sft", "rft", "per_step_dpo"]

    # pure and deterministic
    assert build_report(rows) == rep
    table = format_table(rep)
    assert "| per_step_dpo | 3000 | 2 |" in table and "extrapolation-above" in table
    assert table.count("\n| sft |") == len(SIZES) + 1


def test_reference_order_and_no_interpolated_size_note():
    rows = [{"method": "sft", "seed": 0, "size": n, "error": _true_error(n)} for n in (10, 20, 40)]
    rows = [{"method": "dpo", "seed": 0, "size": n, "error": _true_error(1000 * n)} for n in (10, 20)] + rows
    rep = build_report(rows)
    assert rep["methods"] == ["sft", "dpo"]
    assert rep["fit"]["r2"] == pytest.approx(1.0)
    assert rep["fit"]["alpha"] == pytest.approx(ALPHA) and rep["fit"]["a"] == pytest.approx(A)
    dpo = rep["summary"]["dpo"]
    assert dpo["mean_factor_interpolated"] is None and "extrapolation" in dpo["note"]
    assert dpo["mean_factor_all"] == pytest.approx(1000)
    assert _points(rep)[("sft", 20)]["error_sd"] is None  # one seed: no sd


def test_rising_reference_error_gives_no_factors(tmp_path):
    rows = [{"method": "sft", "seed": 0, "size": n, "error": e} for n, e in ((10, 0.1), (20, 0.2), (40, 0.3))]
    rep = build_report(rows + [{"method": "x", "seed": 0, "size": 10, "error": 0.05}])
    assert rep["fit"]["alpha"] < 0 and "does not fall" in rep["fit"]["notes"][0]
    assert all(p["factor"] is None and "alpha" in p["note"] for p in rep["points"])
    assert "D^+0.79" in format_table(rep)


def test_too_few_sizes_raise_a_clear_error():
    rows = [{"method": "sft", "seed": s, "size": n, "error": _true_error(n)} for s in (0, 1) for n in (100, 300)]
    with pytest.raises(ValueError, match=r"needs >= 3 distinct sizes.*sizes present: \[100, 300\]"):
        build_report(rows)
    # a size at error 0 does not count toward the fit
    rows += [{"method": "sft", "seed": s, "size": 1000, "error": 0.0} for s in (0, 1)]
    with pytest.raises(ValueError, match=r"sizes present: \[100, 300, 1000\] \(error 0 at \[1000\]\)"):
        build_report(rows)
    with pytest.raises(ValueError, match="reference method 'sft' has no rows"):
        build_report([{**r, "method": "rft"} for r in rows])
    with pytest.raises(ValueError, match="two rows"):
        build_report(rows + rows[:1])
    assert build_report(rows, min_sizes=2)["fit"]["notes"]


def test_zero_error_gives_null_factor_with_note(tmp_path):
    make_study(tmp_path)
    for s in SEEDS:  # per-step DPO solves every problem at the largest size
        p = tmp_path / f"seed-{s}" / "size-3000" / "eval" / "summary.json"
        d = json.loads(p.read_text())
        d["pref-per_step_dpo"][BENCH] = _bench_entry(1.0)  # stderr 0
        d["pref-per_step_dpo"][BENCH]["greedy"]["stderr"] = float("nan")  # as summarise writes for odd cases
        p.write_text(json.dumps(d))  # NaN literal, as json.dumps writes it
    rep = write_report(tmp_path, METHODS, BENCH)
    p = _points(rep)[("per_step_dpo", 3000)]
    assert p["error_mean"] == 0.0
    assert p["factor"] is None and p["d_eq"] is None and p["regime"] is None
    assert "perfect accuracy" in p["note"]
    assert p["factor_per_seed"] == [None, None]
    text = (tmp_path / "report" / "report.json").read_text()
    assert _strict_loads(text)["points"] == rep["points"]
    assert all(r["stderr"] is None for r in rep["rows"] if r["error"] == 0.0)
    assert "–" in format_table(rep)
    # only the error-0 point lacks a factor
    assert sum(q["factor"] is None for q in rep["points"]) == 1


# ---------------------------------------------------------------- write_report


def test_write_report_files(tmp_path):
    make_study(tmp_path)
    out = tmp_path / "out"
    rep = write_report(tmp_path, METHODS, BENCH, metric="greedy", out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["efficiency.png", "report.csv", "report.json", "scaling.png"]
    for name in ("scaling.png", "efficiency.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    loaded = _strict_loads((out / "report.json").read_text())
    assert loaded == rep
    assert loaded["benchmark"] == BENCH and loaded["metric"] == "greedy"
    assert set(loaded["fit"]) >= {"a", "alpha", "r2", "min_size", "max_size"}
    assert len(loaded["rows"]) == 24 and loaded["missing"] == []
    assert loaded["policies"] == METHODS

    with open(out / "report.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert lines[0] == "method,size,seeds,error_mean,error_sd,accuracy_mean,d_eq,factor,regime".split(",")
    assert [(r[0], int(r[1])) for r in lines[1:]] == [(m, n) for m in METHODS for n in SIZES]
    row = dict(zip(lines[0], lines[-1]))
    assert row["regime"] == "extrapolation-above" and float(row["factor"]) == pytest.approx(8, rel=0.15)

    # deterministic: a second run writes the same bytes
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_report(tmp_path, METHODS, BENCH, out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # default out_dir and the sampled metric
    rep_s = write_report(tmp_path, METHODS, BENCH, metric="sampled")
    assert (tmp_path / "report" / "report.json").exists() and rep_s["metric"] == "sampled"
    assert rep_s["fit"]["a"] != rep["fit"]["a"]


def test_module_command_line(tmp_path):
    make_study(tmp_path)
    cmd = [sys.executable, "-m", "mathreason.scaling_report", str(tmp_path), "--benchmark", BENCH,
           "--method", "sft", "--method", "rft=rft", "--method", "per_step_dpo=pref-per_step_dpo"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    assert "sft fit on gsm8k / greedy" in out and "| per_step_dpo |" in out
    assert (tmp_path / "report" / "efficiency.png").exists()
