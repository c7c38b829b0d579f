#!/usr/bin/env python3
"""Helper of ``scripts/gpu_check.sh``: machine facts, output parsers and the one JSON report.

Subcommands (the shell script calls them; each rewrites the report atomically, so a killed check still
leaves valid JSON with every part's status):

    init      --json F --parts a,b,... [--meta KEY=VALUE ...]   a report with every part "pending"
    facts     --json F [--py PYTHON]          nvidia-smi, CPU/memory, git, and ``probe`` under PYTHON
    record    --json F --part NAME ...        one part's status, exit code, wall time, log tail, numbers
    get       --json F DOTTED.KEY             print a value ("1"/"0" for booleans, "" when absent)
    finish    --json F                        total wall time, the summary block, a readable digest
    probe                                     (under the project's python) versions, CUDA, vLLM, as JSON
    sg-sets   --preset P --sft-factor N ...   (under the project's python) ``--set`` arguments that cut a
                                              stargraph reproduce preset's steps, and a plan JSON

Only the standard library is used, except by ``probe`` and ``sg-sets``, which import the project's own
packages and therefore run under the project's python.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

SCHEMA = "stepcredit-gpu-check/1"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_parsers import (  # noqa: E402  (the parsers live in their own module)
    TAIL_LINES,
    parse_pipeline,
    parse_pytest,
    parse_sampling,
    parse_sg_cut,
    parse_sg_throughput,
    pytest_status,
    tail,
)


# ---------------------------------------------------------------- the report file


def _now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"schema": SCHEMA, "parts": {}, "load_error": f"could not read {path}; started afresh"}


def save(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _clean(obj):
    """Strict JSON: NaN and infinities become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj



def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout or "") + (p.stderr or "")
    except FileNotFoundError as e:
        return 127, str(e)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout}s"


# ---------------------------------------------------------------- subcommands


def _json_or_str(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def cmd_init(a) -> int:
    meta = dict(kv.split("=", 1) for kv in a.meta)
    parts = [p for p in a.parts.split(",") if p]
    data = {
        "schema": SCHEMA,
        "started_utc": _now_utc(),
        "started_epoch": time.time(),
        "finished_utc": None,
        **{k: _json_or_str(v) for k, v in meta.items()},
        "parts_order": parts,
        "parts": {p: {"status": "pending"} for p in parts},
    }
    save(a.json, data)
    return 0


def cmd_facts(a) -> int:
    data = load(a.json)
    facts: dict = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        facts["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        facts["mem_total"] = " ".join(mem.split()[1:])
    except OSError:
        pass
    rc, txt = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,compute_cap",
                    "--format=csv,noheader"], 20)
    if rc != 0 and "compute_cap" in txt:
        rc, txt = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu",
                        "--format=csv,noheader"], 20)
    facts["nvidia_smi"] = [ln.strip() for ln in txt.strip().splitlines()][:8] if rc == 0 else f"unavailable (exit {rc}): {txt.strip()[-300:]}"
    rc, txt = _run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"], 20)
    if rc == 0:
        facts["gpu_processes_at_start"] = [ln.strip() for ln in txt.strip().splitlines() if ln.strip()]
    if (REPO / ".git").exists():
        rc, txt = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"], 10)
        if rc == 0:
            facts["git_commit"] = txt.strip()
        rc, txt = _run(["git", "-C", str(REPO), "status", "--porcelain"], 20)
        if rc == 0:
            facts["git_changed_files"] = len([ln for ln in txt.splitlines() if ln.strip()])
    if a.py:
        rc, txt = _run([a.py, str(Path(__file__).resolve()), "probe"], a.probe_timeout)
        probe = None
        for line in reversed(txt.strip().splitlines()):
            if line.startswith("{"):
                try:
                    probe = json.loads(line)
                    break
                except ValueError:
                    pass
        facts["python"] = probe if probe is not None else {"error": f"probe failed (exit {rc})", "tail": txt.strip().splitlines()[-15:]}
    else:
        facts["python"] = {"error": "no python with torch was found"}
    data["facts"] = facts
    save(a.json, data)
    py = facts["python"] if isinstance(facts["python"], dict) else {}
    print(f"facts: gpu={facts['nvidia_smi']!r} python={py.get('executable')} torch={py.get('torch')} "
          f"cuda={py.get('cuda_available')} vllm={py.get('vllm')}")
    return 0


def cmd_probe(a) -> int:
    """Runs under the project's python: versions, CUDA, and whether vLLM imports (in a child, time-boxed)."""
    import importlib

    out: dict = {"executable": sys.executable, "python": platform.python_version()}
    for mod in ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "math_verify", "pytest",
                "hypothesis", "yaml", "numpy", "networkx", "matplotlib", "sympy"):
        try:
            m = importlib.import_module(mod)
            out[mod] = str(getattr(m, "__version__", "present"))
        except Exception as e:  # any import failure counts as missing
            out[mod] = f"missing ({type(e).__name__}: {str(e)[:120]})"
    try:
        import torch

        out["cuda_available"] = bool(torch.cuda.is_available())
        out["torch_cuda"] = torch.version.cuda
        if out["cuda_available"]:
            out["device_count"] = torch.cuda.device_count()
            out["device_name"] = torch.cuda.get_device_name(0)
            out["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            free, total = torch.cuda.mem_get_info(0)
            out["gpu_free_gib"], out["gpu_total_gib"] = round(free / 2**30, 1), round(total / 2**30, 1)
            out["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    except Exception as e:
        out["cuda_available"] = False
        out["torch_error"] = f"{type(e).__name__}: {e}"[:300]
    try:
        p = subprocess.run([sys.executable, "-c", "import vllm; print('VLLM', vllm.__version__)"], capture_output=True,
                           text=True, timeout=a.vllm_timeout)
        m = re.search(r"^VLLM (\S+)", p.stdout, re.M)
        out["vllm"] = m.group(1) if m else f"missing ({(p.stderr.strip().splitlines() or ['?'])[-1][:200]})"
    except subprocess.TimeoutExpired:
        out["vllm"] = f"missing (import took more than {a.vllm_timeout}s)"
    out["vllm_importable"] = not str(out["vllm"]).startswith("missing")
    out["vllm_usable"] = out["vllm_importable"] and out.get("cuda_available", False)
    print(json.dumps(out))
    return 0


def _status_from_rc(rc: int, wall: float | None, timeout: float | None) -> str:
    if rc == 0:
        return "ok"
    if rc in (124, 137) and (rc == 124 or (timeout and wall and wall >= timeout - 1)):
        return "timeout"
    return "failed"


def cmd_record(a) -> int:
    data = load(a.json)
    part: dict = {}
    if a.status == "skipped":
        part = {"status": "skipped", "reason": a.reason or "skipped"}
    else:
        part = {
            "status": a.status or _status_from_rc(a.rc, a.wall, a.timeout),
            "rc": a.rc,
            "wall_s": round(a.wall, 2) if a.wall is not None else None,
            "timeout_s": a.timeout,
        }
        if a.cmd:
            part["command"] = a.cmd
        if a.reason:
            part["reason"] = a.reason
    for kv in a.extra:
        k, v = kv.split("=", 1)
        try:
            part[k] = json.loads(v)
        except ValueError:
            part[k] = v
    numbers = None
    notes: list[str] = []
    if a.status != "skipped" and a.parse:
        try:
            if a.parse == "pytest":
                numbers = parse_pytest(a.log, a.artifact)
                st, why = pytest_status(numbers, a.rc)
                if part["status"] in ("ok", "failed"):
                    part["status"] = st
                if why:
                    notes.append(why)
            elif a.parse == "sampling":
                numbers = parse_sampling(a.artifact)
                if numbers and part["status"] == "ok":
                    skipped = {k: v["skipped"] for k, v in numbers["backends"].items() if "skipped" in v}
                    if skipped:
                        part["status"] = "partial"
                        notes.append("backend(s) not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
            elif a.parse == "pipeline":
                numbers = parse_pipeline(a.artifact, a.log)
                if part["status"] == "ok" and part.get("backend_used") != part.get("backend_requested"):
                    part["status"] = "partial"
                if part["status"] == "timeout" and numbers["part2_complete"]:
                    notes.append("part 2 completed; the time box ended a later stage (rft or eval)")
            elif a.parse == "sg_throughput":
                numbers = parse_sg_throughput(a.artifact)
            elif a.parse == "sg_cut":
                numbers = parse_sg_cut(a.artifact, a.plan, a.wall)
        except Exception as e:  # a parser bug must not lose the part's record
            notes.append(f"parsing failed: {type(e).__name__}: {e}")
    if numbers is not None:
        part["numbers"] = numbers
    if notes:
        part["notes"] = notes
    if part["status"] not in ("ok", "skipped") and a.log:
        part["tail"] = tail(a.log, a.tail_lines)
    data.setdefault("parts", {})[a.part] = part
    data["updated_utc"] = _now_utc()
    save(a.json, data)
    extra = f" ({part.get('reason')})" if part.get("reason") else ""
    print(f"[gpu_check] {a.part}: {part['status']}" + (f" in {part['wall_s']}s" if part.get("wall_s") is not None else "") + extra, flush=True)
    return 0


def cmd_get(a) -> int:
    cur = load(a.json)
    for k in a.key.split("."):
        cur = cur.get(k) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        print("1" if cur else "0")
    elif cur is None:
        print("")
    elif isinstance(cur, (dict, list)):
        print(json.dumps(cur))
    else:
        print(cur)
    return 0


def _summary(data: dict) -> dict:
    parts = data.get("parts", {})
    s: dict = {"status": {k: v.get("status") for k, v in parts.items()}}
    n = parts.get("pytest_gpu", {}).get("numbers")
    if n:
        s["pytest"] = {k: n.get(k) for k in ("passed", "failed", "errors", "skipped", "deselected")}
    n = parts.get("sampling_throughput", {}).get("numbers")
    if n:
        s["sampling_tokens_per_s"] = n.get("tokens_per_s")
        if "vllm_over_transformers" in n:
            s["sampling_vllm_over_transformers"] = n["vllm_over_transformers"]
    p = parts.get("pipeline_tiny", {})
    if p.get("numbers"):
        s["pipeline"] = {
            "backend_used": p.get("backend_used"),
            "part2_complete": p["numbers"].get("part2_complete"),
            "stage_seconds": {k: v.get("seconds") for k, v in p["numbers"]["stages"].items()},
            "backends_recorded": p["numbers"].get("backends_recorded"),
        }
    n = parts.get("stargraph_throughput", {}).get("numbers")
    if n:
        s["stargraph_paper_train_step_s"] = n.get("train_step_s")
        s["stargraph_paper_train_samples_per_s"] = n.get("train_samples_per_s")
    n = parts.get("stargraph_paper_cut", {}).get("numbers")
    if n:
        s["stargraph_paper_cut_wall_s"] = n.get("measured_wall_s")
        s["stargraph_paper_estimated_full_s"] = n.get("estimated_full_preset_s")
    return s


def cmd_finish(a) -> int:
    data = load(a.json)
    data["finished_utc"] = _now_utc()
    if data.get("started_epoch"):
        data["total_wall_s"] = round(time.time() - float(data["started_epoch"]), 1)
    for name, part in data.get("parts", {}).items():
        if part.get("status") == "pending":
            part["status"] = "not_run"
            part["reason"] = "the check ended before this part"
    data["summary"] = _summary(data)
    save(a.json, data)
    print(f"[gpu_check] done in {data.get('total_wall_s')}s -> {a.json}")
    for name in data.get("parts_order", list(data.get("parts", {}))):
        part = data["parts"].get(name, {})
        line = f"  {name:22s} {part.get('status', '?'):9s}"
        if part.get("wall_s") is not None:
            line += f" {part['wall_s']:7.1f}s"
        if part.get("reason"):
            line += f"  {part['reason']}"
        print(line)
    print("[gpu_check] summary: " + json.dumps(_clean(data["summary"]), default=str))
    return 0


def cmd_sg_sets(a) -> int:
    """``--set`` arguments (one per line) that cut a reproduce preset's steps; writes the plan JSON."""
    import yaml

    sys.path.insert(0, str(REPO))
    from stargraph.config import ReproduceConfig, resolve

    cfg = resolve(ReproduceConfig, preset=a.preset, config_file=None, overrides={}, preset_section=None)
    sft_full, post_full = cfg.train.sft.max_steps, cfg.posttrain.max_steps
    sft_cut = max(1, math.ceil(sft_full / a.sft_factor))
    post_cut = max(1, math.ceil(post_full / a.post_factor))
    ckpts = sorted({c for c in cfg.train.sft.checkpoint_at if c < sft_cut} | {sft_cut})
    arms = [{"name": x.name, "init_step": x.init_step if x.init_step < sft_cut else sft_cut, "set": dict(x.set)} for x in cfg.arms]
    seeds = list(cfg.seeds) if a.seeds is None else [int(s) for s in a.seeds.split(",")]
    flow = lambda v: yaml.safe_dump(v, default_flow_style=True, width=1 << 20).strip()  # noqa: E731
    sets = [
        f"train.sft.max_steps={sft_cut}",
        f"train.sft.checkpoint_at={flow(ckpts)}",
        f"posttrain.max_steps={post_cut}",
        f"arms={flow(arms)}",
    ]
    if a.seeds is not None:
        sets.append(f"seeds={flow(seeds)}")
    moved = sorted({x.init_step for x in cfg.arms if x.init_step >= sft_cut})
    plan = {
        "preset": a.preset,
        "description": (
            f"`stargraph reproduce --preset {a.preset}` with every setting of the preset (seeds {seeds}, "
            f"{cfg.workers} workers, all {len(arms)} arms, graph/model/batch/eval/pool cadence) except: SFT "
            f"{sft_cut} steps instead of {sft_full} (checkpoints {ckpts}; arms starting at {moved} start at "
            f"{sft_cut}) and post-training {post_cut} steps instead of {post_full}"
        ),
        "sets": sets,
        "full_sft_steps": sft_full,
        "full_post_steps": post_full,
        "cut_sft_steps": sft_cut,
        "cut_post_steps": post_cut,
        "seeds": seeds,
        "arms": [x["name"] for x in arms],
        "workers": cfg.workers,
        "target_s": a.target_s,
    }
    Path(a.plan_out).write_text(json.dumps(plan, indent=1) + "\n")
    for s in sets:
        print("--set")
        print(s)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init")
    p.add_argument("--json", required=True)
    p.add_argument("--parts", required=True)
    p.add_argument("--meta", action="append", default=[])
    p.set_defaults(fn=cmd_init)
    p = sub.add_parser("facts")
    p.add_argument("--json", required=True)
    p.add_argument("--py", default=None)
    p.add_argument("--probe-timeout", type=float, default=100.0)
    p.set_defaults(fn=cmd_facts)
    p = sub.add_parser("probe")
    p.add_argument("--vllm-timeout", type=float, default=60.0)
    p.set_defaults(fn=cmd_probe)
    p = sub.add_parser("record")
    p.add_argument("--json", required=True)
    p.add_argument("--part", required=True)
    p.add_argument("--status", default=None, help="force a status (skipped needs --reason)")
    p.add_argument("--reason", default=None)
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--wall", type=float, default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--cmd", default=None)
    p.add_argument("--log", default=None)
    p.add_argument("--parse", default=None, choices=["pytest", "sampling", "pipeline", "sg_throughput", "sg_cut"])
    p.add_argument("--artifact", default=None, help="the file or folder the parser reads")
    p.add_argument("--plan", default=None, help="sg_cut: the plan JSON written by sg-sets")
    p.add_argument("--extra", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--tail-lines", type=int, default=TAIL_LINES)
    p.set_defaults(fn=cmd_record)
    p = sub.add_parser("get")
    p.add_argument("--json", required=True)
    p.add_argument("key")
    p.set_defaults(fn=cmd_get)
    p = sub.add_parser("finish")
    p.add_argument("--json", required=True)
    p.set_defaults(fn=cmd_finish)
    p = sub.add_parser("sg-sets")
    p.add_argument("--preset", default="paper")
    p.add_argument("--sft-factor", type=float, default=10.0)
    p.add_argument("--post-factor", type=float, default=6.0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--target-s", type=float, default=300.0)
    p.add_argument("--plan-out", required=True)
    p.set_defaults(fn=cmd_sg_sets)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
