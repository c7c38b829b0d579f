"""Writes docs/results/arith_study.json (or, with --study credit, arith_credit.json): an arith study's numbers.

The teaching notebooks (00, 05) read this file instead of parsing docs/arith_study.md. It holds the
per-seed greedy test accuracies of every method at every size (what the report is computed from), the
report's fit, factors and regimes, and the overall first-pit hit rate, copied from a finished study:

    mathreason scaling-report --preset arith          # writes runs/arith/report/report.json
    mathreason diagnostics --preset arith ...         # writes runs/arith/report/diagnostics.json
    python docs/results/export_arith.py runs/arith/report

Every number here also appears (rounded) in docs/arith_study.md, section 2 and section 4 (the credit
study, `--study credit` after scripts/arith_credit_study.sh: section 7; it also keeps each point's pit
counts, sample mix and spurious steps from diagnostics.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POINT_KEYS = ("method", "size", "seeds", "error_mean", "error_sd", "accuracy_mean", "d_eq", "factor", "regime")
ROW_KEYS = ("method", "seed", "size", "accuracy", "error", "problems")


STUDIES = {
    "study": {
        "what": "arith study (docs/arith_study.md): greedy test accuracy on 500 arith test problems, "
        "3 seeds x D_syn 500/1000/2000; error = 1 - accuracy",
        "made_by": "python docs/results/export_arith.py runs/arith/report (after scripts/arith_study.sh)",
        "out": "arith_study.json",
    },
    "credit": {
        "what": "arith credit study (docs/arith_study.md, section 7; preset arith_credit): greedy test accuracy on 500 "
        "arith test problems, 3 seeds; SFT (1200 steps) at D_syn 1000/2000/4000, the credit arms at 2000 on M = 8 samples "
        "at T = 1.0; error = 1 - accuracy",
        "made_by": "python docs/results/export_arith.py runs/arith-credit/report --study credit (after scripts/arith_credit_study.sh)",
        "out": "arith_credit.json",
    },
}


def export(report_dir: Path, study: str = "study") -> dict:
    report = json.loads((report_dir / "report.json").read_text())
    diag_path = report_dir / "diagnostics.json"
    diag = json.loads(diag_path.read_text()) if diag_path.exists() else {}
    fit = report["fit"]
    extra = {k: diag.get(k) for k in ("pit_truth", "sample_mix", "spurious_steps", "qcurves")} if study == "credit" else {}
    return {
        "what": STUDIES[study]["what"],
        "made_by": STUDIES[study]["made_by"],
        "benchmark": report["benchmark"],
        "metric": report["metric"],
        "policies": report["policies"],
        "fit": {k: fit[k] for k in ("method", "form", "a", "alpha", "r2", "min_size", "max_size", "sizes", "errors")},
        "rows": [{k: r[k] for k in ROW_KEYS} for r in report["rows"]],
        "points": [{k: p[k] for k in POINT_KEYS} for p in report["points"]],
        "summary": {m: {"mean_factor_interpolated": s["mean_factor_interpolated"], "interpolated_sizes": s["interpolated_sizes"]}
                    for m, s in report["summary"].items()},
        "pit_truth_overall": diag.get("pit_truth_overall"),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir", type=Path, help="the study's report folder (runs/arith/report)")
    ap.add_argument("--study", choices=sorted(STUDIES), default="study", help="which study: the arith preset's or arith_credit's")
    ap.add_argument("--out", type=Path, default=None, help="default: docs/results/arith_study.json or arith_credit.json")
    args = ap.parse_args()
    out = args.out or Path(__file__).with_name(STUDIES[args.study]["out"])
    out.write_text(json.dumps(export(args.report_dir, args.study), indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
