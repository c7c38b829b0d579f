"""Wall time of ``stargraph reproduce --preset <preset>`` (default: quick, 3 seeds), written as JSON.

Runs the CLI in a subprocess on a fresh run folder (an existing complete folder would be skipped
stage by stage, so the folder must not exist; ``--force`` deletes it first), measures its wall
time and the CPU time of the process tree, and records the machine (CPU count, load average at the
start), the preset, seeds, workers, the target (15 minutes for quick on a 2-core CPU) and each
arm's final train/test full-path accuracy (mean and sd over seeds) from the run's ``summary.json``.
Run it on an otherwise idle machine: other processes sharing the cores inflate the wall time (the
load average is recorded so a contended measurement can be recognised).

Example::

    python benchmarks/stargraph_reproduce_time.py --run-dir runs/study/quick3 \\
        --out docs/stargraph_study/reproduce_quick_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _arm_table(summary: dict) -> dict:
    out = {}
    for arm, by_seed in summary.get("arms", {}).items():
        tr = [v["train_acc"] for v in by_seed.values() if v.get("train_acc") is not None]
        te = [v["test_acc"] for v in by_seed.values() if v.get("test_acc") is not None]
        out[arm] = {
            "seeds": len(by_seed),
            "train_acc_mean": statistics.fmean(tr) if tr else None,
            "train_acc_sd": statistics.stdev(tr) if len(tr) > 1 else 0.0,
            "test_acc_mean": statistics.fmean(te) if te else None,
            "test_acc_sd": statistics.stdev(te) if len(te) > 1 else 0.0,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--run-dir", required=True, help="fresh run folder for the reproduce run")
    ap.add_argument("--set", action="append", default=[], help="extra --set key=value for the CLI (repeatable)")
    ap.add_argument("--target-s", type=float, default=900.0, help="wall-time target in seconds (quick: 15 min)")
    ap.add_argument("--force", action="store_true", help="delete --run-dir first if it exists")
    ap.add_argument("--out", default=None, help="JSON output path (also printed)")
    args = ap.parse_args(argv)

    run_dir = Path(args.run_dir)
    if run_dir.exists():
        if not args.force:
            sys.exit(f"{run_dir} exists: a resumed reproduce would skip finished stages; use --force or a new folder")
        shutil.rmtree(run_dir)
    # this interpreter and whatever stargraph it imports (PYTHONPATH included), not the first console script on PATH
    cmd = [sys.executable, "-m", "stargraph.cli", "reproduce", str(run_dir), "--preset", args.preset]
    for s in args.set:
        cmd += ["--set", s]
    load0 = os.getloadavg()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(f"reproduce failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg_text = (run_dir / "config.yaml").read_text()
    workers = next((ln.split(":", 1)[1].strip() for ln in cfg_text.splitlines() if ln.startswith("workers:")), None)
    result = {
        "benchmark": "stargraph_reproduce_time",
        "command": " ".join(cmd),
        "preset": args.preset,
        "overrides": args.set,
        "seeds": summary.get("seeds"),
        "workers": workers,
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        "target_s": args.target_s,
        "within_target": wall <= args.target_s,
        "cpu_count": _cpu_count(),
        "load_avg_at_start": load0,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "arms": _arm_table(summary),
        "run_dir": str(run_dir),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
