"""Writes docs/results/arith_study.json: the arith study's numbers in machine-readable form.

The teaching notebooks (00, 05) read this file instead of parsing docs/arith_study.md. It holds the
per-seed greedy test accuracies of every method at every size (what the report is computed from), the
report's fit, factors and regimes, and the overall first-pit hit rate, copied from a finished study:

    mathreason scaling-report --preset arith          # writes runs/arith/report/report.json
    mathreason diagnostics --preset arith ...         # writes runs/arith/report/diagnostics.json
    python docs/results/export_arith.py runs/arith/report

Every number here also appears (rounded) in docs/arith_study.md, section 2 and section 4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POINT_KEYS = ("method", "size", "seeds", "error_mean", "error_sd", "accuracy_mean", "d_eq", "factor", "regime")
ROW_KEYS = ("method", "seed", "size", "accuracy", "error", "problems")


def export(report_dir: Path) -> dict:
    report = json.loads((report_dir / "report.json").read_text())
    diag_path = report_dir / "diagnostics.json"
    diag = json.loads(diag_path.read_text()) if diag_path.exists() else {}
    fit = report["fit"]
    return {
        "what": "arith study (docs/arith_study.md): greedy test accuracy on 500 arith test problems, "
        "3 seeds x D_syn 500/1000/2000; error = 1 - accuracy",
        "made_by": "python docs/results/export_arith.py runs/arith/report (after scripts/arith_study.sh)",
        "benchmark": report["benchmark"],
        "metric": report["metric"],
        "policies": report["policies"],
        "fit": {k: fit[k] for k in ("method", "form", "a", "alpha", "r2", "min_size", "max_size", "sizes", "errors")},
        "rows": [{k: r[k] for k in ROW_KEYS} for r in report["rows"]],
        "points": [{k: p[k] for k in POINT_KEYS} for p in report["points"]],
        "summary": {m: {"mean_factor_interpolated": s["mean_factor_interpolated"], "interpolated_sizes": s["interpolated_sizes"]}
                    for m, s in report["summary"].items()},
        "pit_truth_overall": diag.get("pit_truth_overall"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir", type=Path, help="the study's report folder (runs/arith/report)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("arith_study.json"))
    args = ap.parse_args()
    args.out.write_text(json.dumps(export(args.report_dir), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
