"""Markdown tables of a `stargraph sweep` folder (finished or still running), for docs/stargraph_study.md.

For every grid point it reads ``points/<name>_s<seed>/metrics.jsonl`` and takes the **last**
evaluation (never the best one); it also reports the highest test accuracy seen at any evaluation, so a
transient transition would not go unnoticed.  Groups are averaged over seeds (mean ± sd).

    python docs/stargraph_study/tables.py runs/study/screen_quick [--csv out.csv]
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from pathlib import Path

from shared import runio

COLS = [
    ("train/acc", "train acc"),
    ("test/acc", "test acc"),
    ("test/acc_given_source", "test given source"),
    ("train/crit_acc", "train crit"),
    ("test/crit_acc", "test crit"),
    ("test/lookup_acc", "test lookup"),
]


def last_eval(path: Path) -> tuple[dict | None, float | None]:
    rows = [r for r in runio.read_jsonl(path) if "test/acc" in r]  # a running point's torn tail is skipped
    if not rows:
        return None, None
    return rows[-1], max(r["test/acc"] for r in rows)


def fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--csv", type=Path, default=None)
    a = ap.parse_args()
    groups: dict[str, list[tuple[dict, float, bool]]] = {}
    for d in sorted((a.sweep_dir / "points").iterdir()):
        m = d / "metrics.jsonl"
        if not m.exists():
            continue
        last, best = last_eval(m)
        if last is None:
            continue
        g = re.sub(r"_s\d+$", "", d.name)
        groups.setdefault(g, []).append((last, best, (d / "DONE").exists()))
    header = ["group", "seeds", "steps"] + [c[1] for c in COLS] + ["max test acc seen"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    out = []
    for g, rs in groups.items():
        steps = sorted({int(r[0]["step"]) for r in rs})
        done = all(r[2] for r in rs)
        row = [g, str(len(rs)), "/".join(map(str, steps)) + ("" if done else " (running)")]
        row += [fmt([r[0][k] for r in rs if r[0].get(k) is not None]) for k, _ in COLS]
        row += [fmt([r[1] for r in rs])]
        print("| " + " | ".join(row) + " |")
        out.append(dict(zip(header, row)))
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(out)


if __name__ == "__main__":
    main()
