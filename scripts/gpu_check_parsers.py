"""Output parsers of ``scripts/gpu_check.py``, one per part kind: pytest's JUnit XML and log, the sampling
benchmark's JSON, the tiny pipeline's run folder, the star-graph throughput JSON and the cut reproduce run.

Standard library only; ``scripts/gpu_check.py`` imports it (its tests reach the parsers through it).
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

TAIL_LINES = 60
PART2_STAGES = ("sft", "sample", "grade", "advantages", "pairs")
"""Stages of the tiny pipeline that part 2 needs besides its ``pref/<name>`` runs."""


def tail(path: str | Path | None, n: int = TAIL_LINES) -> list[str]:
    if not path:
        return []
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln[-400:] for ln in lines[-n:]]


def _read_json(path: str | Path | None):
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)  # json accepts the NaN the runs write
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(obj, dict):
            rows.append(obj)
    return rows



# ---------------------------------------------------------------- parsers (one per part kind)


def parse_pytest(log: str | None, junit: str | None) -> dict:
    """Counts of ``pytest -m "gpu or vllm" -v``: from the JUnit XML when the run finished, else from the
    ``-v`` lines of the log (so a killed run still shows what had passed)."""
    out: dict = {"source": None, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    tests: dict[str, str] = {}
    skipped_reasons: dict[str, int] = {}
    failures: list[dict] = []
    collection_errors: list[str] = []
    root = None
    if junit and Path(junit).exists():
        try:
            root = ET.parse(junit).getroot()
        except ET.ParseError:
            root = None
    if root is not None:
        out["source"] = "junit"
        for case in root.iter("testcase"):
            cls, name = case.get("classname", ""), case.get("name", "")
            nodeid = f"{cls.replace('.', '/')}.py::{name}" if cls else name
            if case.find("skipped") is not None:
                outcome = "skipped"
                msg = (case.find("skipped").get("message") or "").strip()
                skipped_reasons[msg[:200]] = skipped_reasons.get(msg[:200], 0) + 1
            elif case.find("failure") is not None:
                outcome = "failed"
                failures.append({"test": nodeid, "message": (case.find("failure").get("message") or "")[:500]})
            elif case.find("error") is not None:
                outcome = "errors"
                msg = case.find("error").get("message") or ""
                if "collection failure" in msg or not cls:
                    collection_errors.append(name or cls)
                else:
                    failures.append({"test": nodeid, "message": msg[:500]})
            else:
                outcome = "passed"
            tests[nodeid] = outcome
            out[outcome] += 1
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        out["time_s"] = _float(suite.get("time")) if suite is not None else None
    else:
        pat = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b(?:\s*\([^)]*\))?")
        text = "\n".join(tail(log, 100000))
        if text:
            out["source"] = "log"
        for line in text.splitlines():
            m = pat.match(line.strip())
            if m:
                outcome = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors"}.get(m.group(2), "skipped")
                tests[m.group(1)] = outcome
        for line in text.splitlines():
            m = re.match(r"^ERROR collecting (\S+)", line.strip()) or re.match(r"^ERROR (\S+\.py)\b", line.strip())
            if m and m.group(1) not in collection_errors and "::" not in m.group(1):
                collection_errors.append(m.group(1))
        for outcome in tests.values():
            out[outcome] += 1
    m = None
    for line in tail(log, 400):
        m = re.search(r"(\d+) deselected", line) or m
    out["deselected"] = int(m.group(1)) if m else None
    out["tests"] = tests
    if skipped_reasons:
        out["skipped_reasons"] = skipped_reasons
    if failures:
        out["failures"] = failures
    if collection_errors:
        out["collection_errors"] = collection_errors
    return out


def pytest_status(counts: dict, rc: int) -> tuple[str, str | None]:
    if counts["failed"] or (counts["errors"] - len(counts.get("collection_errors", []))) > 0:
        return "failed", None
    if counts.get("collection_errors"):
        return "partial", "some test modules could not be collected (see collection_errors): their marked tests did not run"
    if counts["passed"] == 0 and counts["skipped"] > 0:
        return "skipped", "every marked test was skipped: " + "; ".join(sorted(counts.get("skipped_reasons", {}))[:3])
    if counts["passed"] == 0:
        return "failed", f"no marked test ran (pytest exit {rc})"
    return "ok", None


def parse_sampling(report_path: str | None) -> dict | None:
    """Tokens/s per backend from ``benchmarks/sampling_throughput.py``'s JSON, or from a folder of such
    reports (one per backend, ``transformers.json`` then ``vllm.json``), whose results are merged."""
    if report_path and Path(report_path).is_dir():
        order = {"transformers.json": 0, "vllm.json": 1}
        reps = [r for r in (_read_json(p) for p in sorted(Path(report_path).glob("*.json"), key=lambda p: (order.get(p.name, 2), p.name)))
                if isinstance(r, dict)]
        if not reps:
            return None
        rep = {**reps[0], "results": [x for r in reps for x in r.get("results", [])]}
    else:
        rep = _read_json(report_path)
    if not isinstance(rep, dict):
        return None
    keep = ("model", "prompts", "prompts_from", "mean_prompt_tokens", "samples_per_prompt", "max_tokens", "temperature",
            "top_p", "device", "torch", "gpu_memory_utilization")
    out: dict = {k: rep[k] for k in keep if k in rep}
    backends: dict = {}
    for r in rep.get("results", []):
        name = r.get("backend", "?")
        if "skipped" in r:
            backends[name] = {"skipped": r["skipped"]}
        else:
            backends[name] = {k: r.get(k) for k in ("tokens_per_s", "sequences_per_s", "generated_tokens", "sequences",
                                                     "seconds", "warmup_seconds", "finished_by_length", "batch_size") if k in r}
    out["backends"] = backends
    tps = {k: v.get("tokens_per_s") for k, v in backends.items() if v.get("tokens_per_s")}
    out["tokens_per_s"] = tps
    if tps.get("vllm") and tps.get("transformers"):
        out["vllm_over_transformers"] = round(tps["vllm"] / tps["transformers"], 2)
    return out


def parse_pipeline(run_dir: str | None, log: str | None) -> dict:
    """Per-stage status, seconds and sampling backend of a ``mathreason pipeline`` run folder.

    The stage records (``<stage>/stage.json``, ``pref/<name>/stage.json``) are read rather than only the
    JSON lines the CLI prints at its end, so a run killed by the time box still shows the stages it
    finished and the one it was in (``interrupted``, with the seconds it had run)."""
    stages: dict[str, dict] = {}
    now = time.time()
    root = Path(run_dir) if run_dir else None
    recs = []
    if root and root.is_dir():
        for p in sorted(list(root.glob("*/stage.json")) + list(root.glob("pref/*/stage.json"))):
            rec = _read_json(p)
            if isinstance(rec, dict) and "stage" in rec:
                recs.append(rec)
    recs.sort(key=lambda r: r.get("started") or 0)
    for rec in recs:
        summ = rec.get("summary") or {}
        inputs = rec.get("inputs") or {}
        started, finished = rec.get("started"), rec.get("finished")
        if rec.get("status") == "done":
            secs = summ.get("seconds", (finished - started) if started and finished else None)
            status = "done"
        else:
            secs = round(now - started, 3) if started else None
            status = "interrupted" if rec.get("status") == "running" else str(rec.get("status"))
        entry = {"status": status, "seconds": secs}
        backend = summ.get("backend") or inputs.get("backend")
        if backend:
            entry["backend"] = backend
        for k in ("rows", "responses", "selected", "pairs", "accuracy", "n", "correct", "policies"):
            if k in summ and isinstance(summ[k], (int, float, str)):
                entry[k] = summ[k]
        stages[rec["stage"]] = entry
    # the CLI's own result lines (printed when it finishes): skipped-as-up-to-date stages show only there
    printed = []
    for line in tail(log, 100000):
        if line.startswith('{"stage"'):
            try:
                printed.append(json.loads(line))
            except ValueError:
                pass
    for r in printed:
        st = stages.setdefault(r["stage"], {})
        if r.get("status") == "skipped":
            st["status"] = "up_to_date"
    evals = []
    if root and (root / "metrics.jsonl").exists():
        for m in _read_jsonl(root / "metrics.jsonl"):
            if m.get("stage") == "eval" and m.get("event") == "benchmark":
                evals.append({k: m[k] for k in ("policy", "benchmark", "greedy_accuracy", "pass@1", "pass@4") if k in m})
    prefs = [s for s in stages if s.startswith("pref/")]
    done = {s for s, v in stages.items() if v.get("status") in ("done", "up_to_date")}
    out = {
        "stages": stages,
        "part2_stages_done": sorted(done & (set(PART2_STAGES) | set(prefs))),
        "part2_complete": bool(prefs) and set(PART2_STAGES) <= done and set(prefs) <= done,
        "backends_recorded": {s: v["backend"] for s, v in stages.items() if "backend" in v},
        "stage_seconds_total": round(sum(v.get("seconds") or 0 for v in stages.values()), 2),
    }
    if evals:
        out["eval_benchmarks"] = evals
    return out


def parse_sg_throughput(path: str | None) -> dict | None:
    rep = _read_json(path)
    if not isinstance(rep, dict):
        return None
    keep = ("device", "device_name", "torch", "graph", "model", "batch_size", "amp", "compile", "timed_steps",
            "train_step_s", "train_samples_per_s", "train_tokens_per_s", "eval_prompts", "greedy_eval_prompts_per_s",
            "greedy_generate_prompts_per_s", "warmup_s", "preset")
    return {k: rep[k] for k in keep if k in rep}


def _float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _task_timing(d: Path, full_steps: int | None) -> dict:
    """Steps done, seconds, seconds per step and the extrapolated seconds at ``full_steps`` of one
    stargraph task folder (SFT or arm), from its metrics rows (``step``, ``time_s``) and DONE marker."""
    rows = [r for r in _read_jsonl(d / "metrics.jsonl") if isinstance(r.get("step"), (int, float))]
    timed = [(r["step"], r["time_s"]) for r in rows if isinstance(r.get("time_s"), (int, float))]
    done = _read_json(d / "DONE") if (d / "DONE").exists() else None
    out: dict = {"done": done is not None, "steps": rows[-1]["step"] if rows else 0}
    secs = _float(done.get("time_s")) if isinstance(done, dict) else (timed[-1][1] if timed else None)
    out["seconds"] = secs
    if len(timed) >= 2 and timed[-1][0] > timed[0][0]:
        (s0, t0), (s1, t1) = timed[0], timed[-1]
        rate = (t1 - t0) / (s1 - s0)
        out["s_per_step"] = rate
        out["startup_s"] = max(0.0, t0 - rate * s0)
        if full_steps:
            out["est_full_s"] = out["startup_s"] + rate * full_steps + max(0.0, (secs or t1) - t1)
    elif secs and out["steps"]:
        out["s_per_step"] = secs / out["steps"]
        if full_steps:
            out["est_full_s"] = out["s_per_step"] * full_steps
    return out


def parse_sg_cut(run_dir: str | None, plan_path: str | None, wall_s: float | None) -> dict | None:
    """Timing of the cut ``stargraph reproduce`` run and its extrapolation to the full preset.

    Estimate = the measured wall time of the cut run + every task's extra steps at its own measured
    seconds per step (the seeds' SFT runs overlap, so the SFT phase adds the slowest seed's extra; the
    arms' extra is summed and divided by the workers). Per-step rates include each task's periodic
    evaluation and (for arms) pool resampling, measured under the preset's own parallelism."""
    plan = _read_json(plan_path)
    if not run_dir or not isinstance(plan, dict):
        return None
    root = Path(run_dir)
    full_sft, full_post = plan.get("full_sft_steps"), plan.get("full_post_steps")
    workers = max(1, int(plan.get("workers") or 1))
    sft, arms = {}, {}
    for s in plan.get("seeds", []):
        d = root / f"seed_{s}" / "sft"
        if d.exists():
            sft[str(s)] = _task_timing(d, full_sft)
        for a in plan.get("arms", []):
            ad = root / f"seed_{s}" / "arms" / a
            if ad.exists():
                arms[f"seed{s}/{a}"] = _task_timing(ad, full_post)
    summary = _read_json(root / "summary.json")
    out: dict = {
        "what_was_timed": plan.get("description"),
        "overrides": plan.get("sets"),
        "measured_wall_s": wall_s,
        "reproduce_total_time_s": summary.get("total_time_s") if isinstance(summary, dict) else None,
        "completed": isinstance(summary, dict),
        "sft_tasks_done": sum(v["done"] for v in sft.values()),
        "sft_tasks": len(plan.get("seeds", [])),
        "arm_tasks_done": sum(v["done"] for v in arms.values()),
        "arm_tasks": len(plan.get("seeds", [])) * len(plan.get("arms", [])),
    }
    sft_rates = [v["s_per_step"] for v in sft.values() if v.get("s_per_step")]
    arm_rates = [v["s_per_step"] for v in arms.values() if v.get("s_per_step")]
    out["sft_s_per_step_mean"] = sum(sft_rates) / len(sft_rates) if sft_rates else None
    out["arm_s_per_step_mean"] = sum(arm_rates) / len(arm_rates) if arm_rates else None
    cut_sft, cut_post = plan.get("cut_sft_steps"), plan.get("cut_post_steps")
    est = None
    if isinstance(summary, dict) and sft_rates and arm_rates and full_sft and full_post:
        sft_extra = max(v["s_per_step"] * (full_sft - cut_sft) for v in sft.values() if v.get("s_per_step"))
        arm_extra = sum(v["s_per_step"] * (full_post - cut_post) for v in arms.values() if v.get("s_per_step"))
        base = wall_s if wall_s else out["reproduce_total_time_s"]
        est = base + sft_extra + arm_extra / workers
        out["estimate_method"] = "measured wall + slowest seed's extra SFT steps + sum of arms' extra steps / workers, at measured s/step"
    elif sft_rates and full_sft and full_post:
        # cut short: SFT phase from its rate; arms from their rate if any ran, else unknown
        sft_full = max(v.get("est_full_s", 0) for v in sft.values())
        arm_full = None
        if arm_rates:
            arm_startup = [v.get("startup_s", 0.0) for v in arms.values() if v.get("s_per_step")]
            per_arm = sum(arm_startup) / len(arm_startup) + (sum(arm_rates) / len(arm_rates)) * full_post
            arm_full = per_arm * out["arm_tasks"] / workers
        est = sft_full + arm_full if arm_full is not None else None
        out["estimate_sft_phase_s"] = sft_full
        out["estimate_method"] = "run cut by the time box: SFT phase = slowest seed at its measured rate; arm phase = mean arm (startup + rate x full steps) x tasks / workers" + ("" if arm_full is not None else " (no arm ran: total unknown)")
    out["estimated_full_preset_s"] = est
    if est is not None and plan.get("target_s"):
        out["target_s"] = plan["target_s"]
        out["estimated_within_target"] = est <= plan["target_s"]
    out["sft"] = sft
    out["arms"] = {k: {kk: vv for kk, vv in v.items() if kk in ("done", "steps", "seconds", "s_per_step")} for k, v in arms.items()}
    return out
