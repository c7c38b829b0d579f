"""Wall time of one tiny star-graph sweep on 1, 2 and all local workers and through Ray; JSON out.

    python benchmarks/sweep_scaling.py --out sweep_scaling.json              # tiny_sweep, seeds 0 1
    python benchmarks/sweep_scaling.py --seeds 0,1,2,3 --workers 1,2,4,all
    python benchmarks/sweep_scaling.py --set posttrain.max_steps=60 --set train.sft.max_steps=100   # heavier points

Every configuration runs the same sweep (``--preset``, default ``tiny_sweep``) into a fresh folder and
is timed end to end (planning, SFT runs, grid points, aggregation, figures). Printed and written:

* ``local[w]``: wall seconds with ``w`` local worker processes; ``speedup`` = t(1) / t(w) and
  ``efficiency`` = speedup / w (1.0 = perfect scaling; the machine's other load and the SFT-then-points
  dependency keep it below);
* ``ray``: wall seconds through the Ray executor on a Ray instance started here with ``--ray-cpus``
  CPUs (``ray_start_s``, the instance's start, is timed separately and not included), and
  ``ray_overhead_per_point_s`` = (t(ray) - t(local with as many workers as Ray CPUs)) / runs;
* ``noop``: per-job cost of the executors themselves, from ``--noop-jobs`` jobs that do nothing
  (``process_pool_s_per_job``, ``ray_s_per_job``): Ray's scheduling and serialisation overhead per point.

Numbers depend on the machine and its load; compare configurations within one run of the script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def _quiet(log_path: Path):
    """Send this process's and its workers' stdout to ``log_path`` (the sweep logs every eval)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(log_path, "a") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


SETS: list[str] = []  # --set KEY=VALUE overrides of every configuration


def _sweep_cfg(preset: str, seeds: list[int], **over):
    import yaml

    from stargraph import configlib
    from stargraph.config import SweepConfig, resolve

    tree: dict = {"seeds": configlib.Sourced(seeds, "benchmark")}
    tree.update({k: configlib.Sourced(v, "benchmark") for k, v in over.items()})
    for item in SETS:
        key, _, value = item.partition("=")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = configlib.Sourced(yaml.safe_load(value), f"--set {key}")
    return resolve(SweepConfig, preset=preset, config_file=None, overrides=tree)


def _time_sweep(cfg, folder: Path, log_path: Path) -> float:
    from stargraph.sweep import sweep

    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    with _quiet(log_path):
        sweep(cfg, folder, log=lambda m: None)
    return time.perf_counter() - t0


def _noop_per_job(backend, n: int) -> float:
    from shared.executors import Job, run_jobs

    jobs = [Job(f"noop{i}", os.getpid, cpus=0.01) for i in range(n)]  # a job that does nothing (importable everywhere)
    run_jobs(jobs[: max(1, n // 10)], backend, log=lambda m: None)  # warm up the workers
    t0 = time.perf_counter()
    outs = run_jobs(jobs, backend, log=lambda m: None)
    assert all(o.ok for o in outs)
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny_sweep", help="stargraph sweep preset")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (more seeds = more points)")
    ap.add_argument("--workers", default="1,2,all", help="comma-separated local worker counts ('all' = every CPU)")
    ap.add_argument("--ray-cpus", type=int, default=0, help="CPUs of the Ray instance started here (0 = all)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    ap.add_argument("--noop-jobs", type=int, default=200, help="do-nothing jobs timed per executor")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field in every configuration (repeatable), e.g. posttrain.max_steps=60")
    ap.add_argument("--out", default="sweep_scaling.json", help="JSON output")
    ap.add_argument("--keep", default=None, help="keep the sweep folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    SETS[:] = args.set

    from shared.executors import ProcessBackend, cpu_count
    from stargraph.sweep import plan

    ncpu = cpu_count()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    counts = sorted({ncpu if w.strip() == "all" else int(w) for w in args.workers.split(",") if w.strip()})
    root = Path(args.keep or tempfile.mkdtemp(prefix="sweep_scaling_"))
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "sweep_logs.txt"
    base = _sweep_cfg(args.preset, seeds)
    sft, points = plan(base, root / "plan")
    runs = len(sft) + len(points)
    res: dict = {
        "preset": args.preset, "set": args.set, "seeds": seeds, "sft_runs": len(sft), "points": len(points), "cpus": ncpu,
        "python": platform.python_version(), "machine": platform.machine(), "local": {},
    }
    for w in counts:
        t = _time_sweep(_sweep_cfg(args.preset, seeds, workers=w), root / f"local_w{w}", log_path)
        res["local"][str(w)] = {"wall_s": round(t, 3)}
        print(f"local, {w} worker(s): {t:.1f} s", flush=True)
    t1 = res["local"][str(counts[0])]["wall_s"] * counts[0] if counts[0] == 1 else None
    for w, r in res["local"].items():
        if t1:
            r["speedup"] = round(t1 / r["wall_s"], 3)
            r["efficiency"] = round(t1 / r["wall_s"] / int(w), 3)
    pb = ProcessBackend(min(2, ncpu))
    try:
        res["noop"] = {"jobs": args.noop_jobs, "process_pool_s_per_job": round(_noop_per_job(pb, args.noop_jobs), 6)}
    finally:
        pb.close()
    if not args.no_ray:
        import ray

        from shared.executors import RayBackend, RayConfig

        ray_cpus = args.ray_cpus or ncpu
        t0 = time.perf_counter()
        ray.init(num_cpus=ray_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
        res["ray_start_s"] = round(time.perf_counter() - t0, 3)
        try:
            cfg = _sweep_cfg(args.preset, seeds, executor="ray", ray={"cpus_per_task": 1})
            t = _time_sweep(cfg, root / "ray", log_path)
            ref = res["local"].get(str(ray_cpus), {}).get("wall_s")
            res["ray"] = {"wall_s": round(t, 3), "cpus": ray_cpus, "cpus_per_task": 1}
            if ref:
                res["ray"]["vs_local_same_cpus"] = round(t / ref, 3)
                res["ray_overhead_per_point_s"] = round((t - ref) / runs, 3)
            if t1:
                res["ray"]["speedup"] = round(t1 / t, 3)
                res["ray"]["efficiency"] = round(t1 / t / ray_cpus, 3)
            print(f"ray ({ray_cpus} CPUs): {t:.1f} s (+ {res['ray_start_s']:.1f} s to start Ray)", flush=True)
            rb = RayBackend(RayConfig())
            res["noop"]["ray_s_per_job"] = round(_noop_per_job(rb, args.noop_jobs), 6)
        finally:
            ray.shutdown()
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    if "speedup" in next(iter(res["local"].values()), {}):
        eff = ", ".join(f"{w} workers {r['efficiency']:.2f}" for w, r in res["local"].items())
        print(f"scaling efficiency (speedup / workers): {eff}" + (f"; ray {res['ray']['efficiency']:.2f}" if "ray" in res and "efficiency" in res["ray"] else ""))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
