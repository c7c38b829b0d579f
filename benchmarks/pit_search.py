"""First-pit search: rollouts, rounds and wall time of the ``linear``, ``bisect`` and ``all`` schedules of
:mod:`mathreason.credit` on the same negatives, and how often their pits agree.

Usage::

    python benchmarks/pit_search.py                                   # scripted + tiny, about a minute on a CPU
    python benchmarks/pit_search.py --sources scripted --per-length 200 --recovery 0,0.05,0.1,0.2
    python benchmarks/pit_search.py --sources tiny --tiny-run runs/tiny   # reuse (or build) a tiny run folder
    python benchmarks/pit_search.py --out docs/benchmarks/pit_search.json

Every schedule values the same negatives with best-of-K Q estimates (K = 5 by default, the paper's
BoK(pi_sft)); identical prefixes get identical rollouts (seeds derive from the prefix), so ``linear`` and
``all`` must find the same pits, and ``bisect`` finds them too as long as no prefix recovers after its
first zero (the assumption it is built on). Two sources of negatives:

* ``scripted``: negatives of a chosen number of steps (``--lengths``, ``--per-length`` each) with one
  planted wrong step at a seeded random position (the last position = only the final answer is wrong).
  A rollout from a clean prefix succeeds with probability ``--p``, from a prefix containing the wrong step
  with probability ``q`` (``--recovery``, one run per value: 0 is the monotone case bisect assumes).
  Rollouts go through :func:`mathreason.stages.credit.make_rollout_fn`: the real ``Sampler.generate``
  (dedup, per-row caps) and the real grader; only the policy is scripted. The planted step is the truth.
* ``tiny``: the tiny preset's real model: sft -> sample -> grade in a run folder (temporary unless
  ``--tiny-run``), its negatives selected and split as the ``advantages`` stage does, rolled out by the
  SFT model's own sampler. These responses are short (1-3 steps): the bisect-vs-linear saving cannot show.

Reported per schedule and per response-length bucket (number of steps): rollouts generated (unique
prefixes x K), rollouts per response, rounds, wall time, pits found, and (scripted) the fraction of
pits on the planted step; pit agreement of ``bisect`` vs ``linear`` and ``linear`` vs ``all``; and the
headline ``bisect rollouts / linear rollouts`` on negatives of 8+ steps against the target (<= 0.5).
The JSON report goes to stdout and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mathreason.credit import CreditSettings, Response, estimate_credit, prefix_key, step_token_ends  # noqa: E402
from mathreason.sampling import Completion, Sampler, SamplingParams  # noqa: E402
from mathreason.stages.credit import build_responses, completion_decoder, make_rollout_fn, select_rows  # noqa: E402
from mathreason.steps import split_steps  # noqa: E402

SCHEDULES = ("linear", "bisect", "all")
PAIRS = (("bisect", "linear"), ("linear", "all"))
TARGET_RATIO = 0.5
LONG_STEPS = 8


# ====================================================================== buckets


def parse_buckets(spec: str) -> list[tuple[str, int, int | None]]:
    """``"1-3,4-7,8-11,12+"`` -> ``[(label, lo, hi or None)]`` (inclusive bounds)."""
    out = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part.endswith("+"):
            out.append((part, int(part[:-1]), None))
        else:
            lo, hi = part.split("-")
            out.append((part, int(lo), int(hi)))
    return out


def bucket_of(steps: int, buckets) -> str:
    for label, lo, hi in buckets:
        if steps >= lo and (hi is None or steps <= hi):
            return label
    return f"{steps}"  # outside every bucket (e.g. 0 steps): its own label


# ====================================================================== the scripted source

EOS = 0


def _enc(s: str) -> list[int]:
    return [ord(c) for c in s]


def _dec(ids) -> str:
    return "".join(chr(i) for i in ids if i != EOS)


class ScriptedSampler(Sampler):
    """Completes ``question + prefix`` with "#### 42" (correct) with probability ``p_clean``, or
    ``p_wrong`` when the prefix contains the planted wrong step; "#### 7" otherwise. Characters are tokens."""

    backend = "scripted"

    def __init__(self, p_clean: float, p_wrong: float):
        self.p_clean, self.p_wrong = p_clean, p_wrong

    def _generate_rows(self, rows, params, progress):
        out = []
        for prompt, seed, cap in rows:
            prefix = _dec(prompt).split("\n", 1)[1]
            p = self.p_wrong if "WRONG" in prefix else self.p_clean
            ok = random.Random(seed).random() < p
            ids = _enc("so\n#### " + ("42" if ok else "7")) + [EOS]
            finish = "stop"
            if len(ids) > cap:
                ids, finish = ids[:cap], "length"
            out.append(Completion(_dec(ids), ids, finish, None, seed))
        return out


def scripted_negatives(lengths: list[int], per_length: int, seed: int, position: str = "uniform") -> tuple[list[Response], list[int]]:
    """``per_length`` negatives of each number of steps (the last step is the answer line "#### 7") with a
    wrong step at a seeded random position (``uniform`` over the steps, ``early``: the lower of two uniform
    draws, ``late``: the higher); returns the responses and the planted step of each."""
    rng = random.Random(seed)
    responses, planted = [], []
    n = 0
    for steps in lengths:
        for _ in range(per_length):
            at = rng.randrange(steps)  # steps - 1: only the final answer is wrong
            if position != "uniform":
                other = rng.randrange(steps)
                at = min(at, other) if position == "early" else max(at, other)
            lines = [("WRONG" if j == at else "ok") + f" {n} {j}" for j in range(steps - 1)]
            text = "".join(f"{ln}\n" for ln in lines) + "#### 7"
            ids = _enc(text) + [EOS]
            ends = step_token_ends(ids, split_steps(_dec(ids), "newline"), _dec)
            assert len(ends) == steps, (steps, ends)
            responses.append(Response(f"q{n}", 0, _enc(f"Q q{n}:\n"), ids, ends, 0.0))
            planted.append(at)
            n += 1
    return responses, planted


# ====================================================================== measuring one schedule


class _TimedRollout:
    """Wraps a rollout function: wall time of each call, apportioned to the length buckets of the
    responses whose prefixes it rolled out (equal share per prefix)."""

    def __init__(self, fn, bucket_by_response: dict[int, str]):
        self.fn = fn
        self.bucket_by_response = bucket_by_response
        self.seconds: dict[str, float] = {}
        self.calls = 0

    def __call__(self, prefixes):
        t0 = time.perf_counter()
        out = self.fn(prefixes)
        dt = time.perf_counter() - t0
        self.calls += 1
        for r, _ in prefixes:
            b = self.bucket_by_response[id(r)]
            self.seconds[b] = self.seconds.get(b, 0.0) + dt / len(prefixes)
        return out


def _evaluated(row: dict) -> list[int]:
    """Step indices (-1 = V) a row's schedule rolled out (its own or shared)."""
    ev = [-1] if row["v_successes"] is not None else []
    return ev + [i for i, s in enumerate(row["successes"]) if s is not None]


def _rounds_of(row: dict, schedule: str) -> int:
    """Rounds in which this response asked for prefixes (its own search depth)."""
    ev = _evaluated(row)
    if not ev:
        return 0
    if schedule == "all":
        return 1
    if schedule == "linear":  # round 0: V and step 0; round r: step r
        return max(0, max(ev)) + 1
    return len(ev)  # bisect: one probe per round


def run_schedule(responses, make_fn, settings: CreditSettings, buckets, planted=None) -> tuple[list[dict], dict]:
    bucket_by_response = {id(r): bucket_of(r.num_steps, buckets) for r in responses}
    timed = _TimedRollout(make_fn(settings), bucket_by_response)
    t0 = time.perf_counter()
    rows, summary = estimate_credit(responses, timed, settings)
    wall = time.perf_counter() - t0
    K = settings.rollouts

    def stats(idx: list[int]) -> dict[str, Any]:
        keys = {prefix_key(responses[j].prompt_ids, responses[j].prefix_ids(i)) for j in idx for i in _evaluated(rows[j])}
        rounds = [_rounds_of(rows[j], settings.schedule) for j in idx]
        pits = [rows[j]["pit"] for j in idx]
        d: dict[str, Any] = {
            "responses": len(idx),
            "unique_prefixes": len(keys),
            "rollouts": len(keys) * K,
            "rollouts_per_response": round(len(keys) * K / len(idx), 3) if idx else None,
            "rounds_max": max(rounds) if rounds else 0,
            "rounds_mean": round(sum(rounds) / len(rounds), 3) if rounds else None,
            "pits_found": sum(p >= 0 for p in pits),
        }
        if planted is not None:
            hit = sum(rows[j]["pit"] == planted[j] for j in idx)
            d["pit_is_planted_step"] = round(hit / len(idx), 4) if idx else None
        return d

    by_bucket = {}
    for label in _bucket_labels(responses, buckets):
        idx = [j for j, r in enumerate(responses) if bucket_by_response[id(r)] == label]
        by_bucket[label] = {**stats(idx), "rollout_seconds_attributed": round(timed.seconds.get(label, 0.0), 4)}
    overall = stats(list(range(len(responses))))
    assert overall["rollouts"] == summary["rollouts_generated"], (overall["rollouts"], summary["rollouts_generated"])
    no_pit = dict(summary["no_pit_reasons"])
    result = {
        "rollouts_generated": summary["rollouts_generated"],
        "unique_prefixes": summary["unique_prefixes"],
        "rollouts_per_response": round(summary["rollouts_generated"] / len(responses), 3) if responses else None,
        "rollout_tokens": summary["rollout_tokens"],
        "rounds": summary["rounds"],
        "rollout_calls": timed.calls,
        "wall_seconds": round(wall, 4),
        "pits_found": overall["pits_found"],
        "no_pit_reasons": no_pit,
        **({"pit_is_planted_step": overall["pit_is_planted_step"]} if planted is not None else {}),
        "by_bucket": by_bucket,
    }
    return rows, result


def _bucket_labels(responses, buckets) -> list[str]:
    present = {bucket_of(r.num_steps, buckets) for r in responses}
    ordered = [b for b, _, _ in buckets if b in present]
    return ordered + sorted(present - set(ordered))


def agreement(rows_a: list[dict], rows_b: list[dict], idx: list[int]) -> dict[str, Any]:
    """Pit agreement of two schedules on the negatives ``idx``."""
    same = only_a = only_b = differ = a_later = 0
    for j in idx:
        pa, pb = rows_a[j]["pit"], rows_b[j]["pit"]
        if pa == pb:
            same += 1
        elif pa >= 0 and pb < 0:
            only_a += 1
        elif pb >= 0 and pa < 0:
            only_b += 1
        else:
            differ += 1
            a_later += pa > pb
    n = len(idx)
    return {
        "negatives": n,
        "same_pit": same,
        "agreement_rate": round(same / n, 4) if n else None,
        "pit_only_first": only_a,
        "pit_only_second": only_b,
        "both_pit_different_step": differ,
        "first_later_when_different": a_later,
    }


def compare(responses, rows: dict[str, list[dict]], results: dict[str, dict], buckets, K: int) -> dict[str, Any]:
    """Agreement of the schedule pairs (overall and per bucket) and the bisect/linear rollout ratios."""
    labels = _bucket_labels(responses, buckets)
    idx_of = {b: [j for j, r in enumerate(responses) if bucket_of(r.num_steps, buckets) == b] for b in labels}
    out: dict[str, Any] = {
        "legend": (
            "A_vs_B: same_pit counts equal pits (both -1 included); pit_only_first: a pit under A, none under B; "
            "pit_only_second: the reverse; both_pit_different_step: both found one, at different steps "
            "(first_later_when_different: A's is later)"
        )
    }
    for a, b in PAIRS:
        if a in rows and b in rows:
            name = f"{a}_vs_{b}"
            out[name] = {
                "overall": agreement(rows[a], rows[b], list(range(len(responses)))),
                "by_bucket": {lb: agreement(rows[a], rows[b], idx_of[lb]) for lb in labels},
            }
    if "bisect" in rows and "linear" in rows:
        long_idx = [j for j, r in enumerate(responses) if r.num_steps >= LONG_STEPS]

        def rollouts(sched: str, idx: list[int]) -> int:
            keys = {prefix_key(responses[j].prompt_ids, responses[j].prefix_ids(i)) for j in idx for i in _evaluated(rows[sched][j])}
            return len(keys) * K

        def ratio(idx):
            lin = rollouts("linear", idx)
            return round(rollouts("bisect", idx) / lin, 4) if lin else None

        lin_long, bis_long = rollouts("linear", long_idx), rollouts("bisect", long_idx)
        r_long = round(bis_long / lin_long, 4) if lin_long else None
        out["bisect_over_linear_rollouts"] = {
            "overall": ratio(list(range(len(responses)))),
            "by_bucket": {lb: ratio(idx_of[lb]) for lb in labels},
            f"steps_{LONG_STEPS}_plus": {
                "negatives": len(long_idx),
                "bisect_rollouts": bis_long,
                "linear_rollouts": lin_long,
                "ratio": r_long,
                "target": f"<= {TARGET_RATIO}",
                "met": (r_long <= TARGET_RATIO) if r_long is not None else None,
            },
        }
        lin_rounds = results["linear"]["rounds"]
        out["bisect_over_linear_rounds"] = round(results["bisect"]["rounds"] / lin_rounds, 4) if lin_rounds else None
    return out


def _recovers(seq: list[float | None]) -> bool:
    """A zero followed by a positive value in ``V, Q_0 .. Q_{S-1}``."""
    seen_zero = False
    for q in seq:
        if q is None:
            continue
        if q <= 0.0:
            seen_zero = True
        elif seen_zero:
            return True
    return False


def measure(responses, make_fn, base: CreditSettings, schedules, buckets, planted=None) -> dict[str, Any]:
    from dataclasses import replace

    rows, results = {}, {}
    if responses:  # untimed warm-up (grader workers, model kernels), so the first schedule pays no start-up cost
        make_fn(base)([(responses[0], -1)])
    for s in schedules:
        rows[s], results[s] = run_schedule(responses, make_fn, replace(base, schedule=s), buckets, planted)
    steps = [r.num_steps for r in responses]
    hist: dict[str, int] = {}
    for n in steps:
        hist[str(n)] = hist.get(str(n), 0) + 1
    diag: dict[str, Any] = {}
    if "all" in rows:  # every prefix valued: where the bisect assumption (no recovery after a zero) fails
        seqs = [[r["v"], *r["q"]] for r in rows["all"]]
        diag["negatives_with_recovery_after_a_zero"] = sum(_recovers(s) for s in seqs)
        if planted is not None:  # a clean prefix whose K rollouts all failed (BoK estimate 0, truth 1 - (1 - p)^K)
            diag["negatives_with_a_false_zero_before_the_planted_step"] = sum(
                any(q == 0.0 for q in s[: at + 1]) for s, at in zip(seqs, planted)
            )
    return {
        "negatives": len(responses),
        "steps_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "negatives_by_bucket": {lb: sum(bucket_of(n, buckets) == lb for n in steps) for lb in _bucket_labels(responses, buckets)},
        "schedules": results,
        "comparison": compare(responses, rows, results, buckets, base.rollouts),
        "q_diagnostics_from_all": diag,
        "linear_pits_equal_all_pits": ([r["pit"] for r in rows["linear"]] == [r["pit"] for r in rows["all"]])
        if "linear" in rows and "all" in rows
        else None,
    }


# ====================================================================== sources


def run_scripted(args, buckets) -> dict[str, Any]:
    lengths = [int(x) for x in args.lengths.split(",")]
    responses, planted = scripted_negatives(lengths, args.per_length, args.seed, args.position)
    gold = {r.problem_id: "42" for r in responses}
    budget = max(len(r.token_ids) for r in responses) + 64  # every rollout (13 tokens) fits after every prefix
    base = CreditSettings(rollouts=args.k, schedule="linear", seed=args.seed, budget=budget, chunk_size=args.chunk_size)
    runs = []
    for q in [float(x) for x in args.recovery.split(",")]:

        def make_fn(settings, q=q):
            return make_rollout_fn(
                ScriptedSampler(args.p, q), _dec, gold_by_id=gold, dataset="gsm8k",
                params=SamplingParams(temperature=1.0, max_tokens=budget), settings=settings, grade_workers=args.grade_workers,
            )

        res = measure(responses, make_fn, base, args.schedules, buckets, planted)
        runs.append({
            "recovery": q,
            "p_clean": args.p,
            "bok_q_clean": round(1 - (1 - args.p) ** args.k, 6),
            "bok_q_after_wrong": round(1 - (1 - q) ** args.k, 6),
            **res,
        })
    return {
        "description": (
            f"{len(responses)} scripted negatives ({args.per_length} each of {lengths} steps), one planted wrong step at a "
            f"seeded random position ({args.position}); rollouts via make_rollout_fn (real Sampler.generate and grader), "
            "success probability "
            f"p={args.p} from a clean prefix and q=recovery after the wrong step; one run per recovery value"
        ),
        "budget": budget,
        "runs": runs,
    }


def run_tiny(args, buckets) -> dict[str, Any]:
    from mathreason.config import load_config
    from mathreason.models import load_tokenizer
    from mathreason.pipeline import run_pipeline
    from mathreason.runs import read_jsonl
    from mathreason.stages import Context

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.tiny_run) if args.tiny_run else Path(tmp) / "run"
        cfg = load_config("tiny", [f"run_dir={run_dir}", *args.tiny_override])
        t0 = time.perf_counter()
        stages = run_pipeline(cfg, ["sft", "sample", "grade"], progress=False)
        setup = time.perf_counter() - t0
        ctx = Context(cfg, progress=False)
        a = cfg.advantages
        graded = read_jsonl(ctx.run.stage_dir("grade") / "graded.jsonl")
        prompts = {r["problem_id"]: r for r in read_jsonl(ctx.run.stage_dir("sample") / "prompts.jsonl")}
        rows = select_rows(graded, select="negatives", samples_per_question=a.samples_per_question, include_truncated=a.include_truncated)
        path = ctx.policy_path(a.policy)
        tok_path = ctx.policy_tokenizer(a.policy, path)
        decode = completion_decoder(load_tokenizer(tok_path, trust_remote_code=cfg.model.trust_remote_code))
        responses = build_responses(
            rows, prompts, decode, splitter=a.splitter, dataset=cfg.data.dataset, max_steps=a.max_steps, min_chars=a.min_chars
        )
        budget = a.max_tokens or cfg.sample.max_tokens
        base = CreditSettings(rollouts=args.k, schedule="linear", seed=cfg.seed, budget=budget, chunk_size=args.chunk_size)
        params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_tokens=budget, stop=ctx.stop(a.stop))
        gold = {p.id: p.answer for p in ctx.dsyn()}
        sampler = ctx.make_sampler(path, tok_path, a.backend)
        try:

            def make_fn(settings):
                return make_rollout_fn(sampler, decode, gold_by_id=gold, dataset=cfg.data.dataset, params=params, settings=settings,
                                       grade_workers=args.grade_workers, grade_timeout=cfg.grade.timeout)

            res = measure(responses, make_fn, base, args.schedules, buckets)
            backend = sampler.backend
        finally:
            sampler.close()
        return {
            "description": (
                "the tiny preset's real SFT model (random 2-layer Llama memorising 16 one-step problems): sft/sample/grade, "
                "its negatives that ended (select_rows + build_responses as the advantages stage), rolled out by its own "
                f"sampler ({backend}). These responses are short (1-3 steps), so bisect cannot save rollouts here; the "
                "numbers check the schedules on a real policy (non-monotone Q happens), not the long-response saving"
            ),
            "run_dir": str(run_dir) if args.tiny_run else "(temporary)",
            "setup_seconds": round(setup, 3),
            "setup_stages": [{"stage": s["stage"], "status": s["status"]} for s in stages],
            "graded_samples": len(graded),
            "budget": budget,
            "temperature": a.temperature,
            "runs": [res],
        }


# ====================================================================== report


def machine() -> dict[str, Any]:
    try:
        def git(*a: str) -> str:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "mathreason", "shared"))
    except Exception:  # noqa: BLE001 - informational only
        commit, dirty = None, None
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "git_commit": commit,
        "mathreason_modified": dirty,
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _diag_text(run: dict[str, Any]) -> str:
    d = run.get("q_diagnostics_from_all") or {}
    out = ""
    if "negatives_with_recovery_after_a_zero" in d:
        out += f"; Q recovers after a zero (bisect's assumption broken) in {d['negatives_with_recovery_after_a_zero']} of {run['negatives']}"
    if "negatives_with_a_false_zero_before_the_planted_step" in d:
        out += f", a clean prefix estimated 0 (all K rollouts failed) in {d['negatives_with_a_false_zero_before_the_planted_step']}"
    return out


def conclusion(report: dict[str, Any]) -> str:
    parts = []
    sc = report["sources"].get("scripted")
    if sc:
        for run in sc["runs"]:
            cmp_ = run["comparison"]
            bl = cmp_.get("bisect_over_linear_rollouts")
            head = ""
            if bl:
                long = bl[f"steps_{LONG_STEPS}_plus"]
                per = ", ".join(f"{k}: {v}" for k, v in bl["by_bucket"].items() if v is not None)
                head = (
                    f"bisect/linear rollouts on {LONG_STEPS}+-step negatives = {long['ratio']} (target {long['target']}: "
                    f"{'met' if long['met'] else 'NOT met'}; by bucket {per})"
                )
            agr = cmp_.get("bisect_vs_linear", {}).get("overall")
            truth = {s: r.get("pit_is_planted_step") for s, r in run["schedules"].items()}
            parts.append(
                f"scripted, recovery q={run['recovery']} (p={run['p_clean']}, K={report['config']['k']}, "
                f"{run['negatives']} negatives): {head}; "
                f"bisect agrees with linear on {_pct(agr['agreement_rate']) if agr else 'n/a'} of pits"
                + (
                    f" ({agr['both_pit_different_step']} at another step, {agr['pit_only_first']} only bisect, "
                    f"{agr['pit_only_second']} only linear)"
                    if agr
                    else ""
                )
                + f"; linear pits == all pits: {run['linear_pits_equal_all_pits']}; pit on the planted step: "
                + ", ".join(f"{s} {_pct(v)}" for s, v in truth.items())
                + _diag_text(run)
            )
    ti = report["sources"].get("tiny")
    if ti:
        run = ti["runs"][0]
        cmp_ = run["comparison"]
        s = run["schedules"]
        agr = cmp_.get("bisect_vs_linear", {}).get("overall")
        roll = ", ".join(f"{k} {v['rollouts_generated']}" for k, v in s.items())
        parts.append(
            f"tiny model ({run['negatives']} negatives of {', '.join(run['steps_histogram'])} steps, short: no saving expected): "
            f"rollouts {roll}; bisect/linear = {cmp_.get('bisect_over_linear_rollouts', {}).get('overall')}; "
            f"bisect agrees with linear on {_pct(agr['agreement_rate']) if agr else 'n/a'}; "
            f"linear pits == all pits: {run['linear_pits_equal_all_pits']}"
            + _diag_text(run)
        )
    return ". ".join(parts) + "."


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", default="scripted,tiny", help="comma-separated: scripted, tiny")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated schedules (all three for every comparison)")
    ap.add_argument("--k", type=int, default=5, help="rollouts per prefix (best-of-K)")
    ap.add_argument("--buckets", default="1-3,4-7,8-11,12+", help="response-length buckets, in steps")
    ap.add_argument("--chunk-size", type=int, default=256, help="prefixes per rollout call (shard)")
    ap.add_argument("--grade-workers", type=int, default=1, help="grader worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lengths", default="4,8,12,16,20", help="scripted: steps per negative, one group each")
    ap.add_argument("--per-length", type=int, default=100, help="scripted: negatives per length")
    ap.add_argument("--position", choices=["uniform", "early", "late"], default="uniform", help="scripted: where the wrong step is planted")
    ap.add_argument("--p", type=float, default=0.7, help="scripted: rollout success probability from a clean prefix")
    ap.add_argument("--recovery", default="0.0,0.1",
                    help="scripted: success probabilities after the wrong step, one run each (0 = monotone)")
    ap.add_argument("--tiny-run", default=None, help="tiny: run folder to build or reuse (default: a temporary folder)")
    ap.add_argument("--tiny-override", action="append", default=[], help="tiny: extra config override (repeatable), e.g. sample.n=8")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)
    args.schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    bad = [s for s in args.schedules if s not in SCHEDULES]
    if bad:
        ap.error(f"unknown schedule(s) {bad}")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if any(s not in ("scripted", "tiny") for s in sources):
        ap.error(f"unknown source in {sources}")
    if args.threads:
        torch.set_num_threads(args.threads)
    buckets = parse_buckets(args.buckets)

    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "pit_search",
        "config": {
            "sources": sources,
            "schedules": args.schedules,
            "k": args.k,
            "estimator": "best_of_k",
            "buckets": [b for b, _, _ in buckets],
            "chunk_size": args.chunk_size,
            "grade_workers": args.grade_workers,
            "seed": args.seed,
            "scripted": {
                "lengths": [int(x) for x in args.lengths.split(",")],
                "per_length": args.per_length,
                "position": args.position,
                "p": args.p,
                "recovery": [float(x) for x in args.recovery.split(",")],
            },
            "tiny": {"run": args.tiny_run, "overrides": args.tiny_override},
            "target": f"bisect rollouts / linear rollouts <= {TARGET_RATIO} on negatives of {LONG_STEPS}+ steps",
            "argv": list(sys.argv[1:] if argv is None else argv),
        },
        "machine": machine(),
        "sources": {},
    }
    if "scripted" in sources:
        report["sources"]["scripted"] = run_scripted(args, buckets)
    if "tiny" in sources:
        with contextlib.redirect_stdout(sys.stderr):  # training logs print to stdout; the report owns it
            report["sources"]["tiny"] = run_tiny(args, buckets)
    head = None
    if "scripted" in report["sources"]:
        runs = report["sources"]["scripted"]["runs"]
        mono = next((r for r in runs if r["recovery"] == 0.0), runs[0])
        bl = mono["comparison"].get("bisect_over_linear_rollouts")
        if bl:
            head = {"source": "scripted", "recovery": mono["recovery"], **bl[f"steps_{LONG_STEPS}_plus"]}
    report["headline"] = head
    report["total_seconds"] = round(time.perf_counter() - t0, 3)
    report["conclusion"] = conclusion(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
