"""Diagnostics of a study on the generated arithmetic task: first pits against the ground truth, and the
paper's Fig. 7 (the mean Q per step position of responses from each trained policy).

* :func:`pit_truth` checks credit assignment against truth: for every negative the ``advantages`` stage
  valued, the first pit (from rollouts of the learned policy) is compared with the first wrong equation
  of the response (:func:`mathreason.arith.first_wrong_line`, which the task can compute because it knows
  every intermediate value). A step is a line of the response (newline splitter), so both are line
  indices; a response whose steps are not its lines (a token spanning a line break merged two steps) is
  counted apart and left out.
* :func:`q_curve_steps` plans the Fig. 7 measurement with the normal stages, no special code path: for
  each trained policy, a run folder under ``<point>/qcurves/<tag>/`` whose D_syn is the task's test
  problems (a subset), where ``sample`` draws the policy's responses, ``grade`` grades them and
  ``advantages`` (``select: all``, ``schedule: all``, ``mc_mean``) estimates the Q of every step prefix with
  rollouts of the point's pi_sft. :func:`q_curve` averages those Q's per step position.
* :func:`write_diagnostics` does both over a scaling study and writes ``diagnostics.json`` and
  ``qcurves.png`` next to the scaling report.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mathreason.runs import atomic_write_json, read_jsonl

__all__ = ["pit_truth", "pit_truth_vs_k", "q_curve", "q_curve_steps", "sample_mix", "spurious_steps", "write_diagnostics", "fig7_size", "error_kinds"]

logger = logging.getLogger(__name__)


def _truth_line(row: Mapping[str, Any], sample: Mapping[str, Any], reference: str) -> tuple[int | None, str | None]:
    """``(truth, None)``: the first wrong line of a valued negative (capped at its last step), or
    ``(None, reason)`` with reason ``unaligned`` (its steps are not its lines) or ``no_wrong_line``."""
    from mathreason.arith import first_wrong_line

    if row["num_steps"] != len([ln for ln in sample["text"].split("\n") if ln.strip()]):
        return None, "unaligned"
    truth = first_wrong_line(sample["text"], reference)
    if truth is None:
        return None, "no_wrong_line"
    return min(truth, row["num_steps"] - 1), None  # a missing line: the last step is where it went wrong


def pit_truth(run_dir: str | Path) -> dict[str, Any]:
    """First pits of ``<run_dir>/advantages`` against the first wrong equation of each negative."""

    run = Path(run_dir)
    refs = {r["id"]: r["solution"] for r in read_jsonl(run / "data" / "dsyn.jsonl")}
    graded = {(r["problem_id"], int(r["sample_index"])): r for r in read_jsonl(run / "grade" / "graded.jsonl")}
    c: Counter = Counter()
    offsets: Counter = Counter()
    by_truth: dict[int, list[int]] = defaultdict(list)
    for a in read_jsonl(run / "advantages" / "advantages.jsonl"):
        if a["reward"] > 0:
            continue
        c["negatives"] += 1
        truth, why = _truth_line(a, graded[(a["problem_id"], int(a["sample_index"]))], refs[a["problem_id"]])
        if truth is None:
            c[why] += 1
            continue
        if a["pit"] < 0:
            c["no_pit"] += 1
            continue
        c["compared"] += 1
        hit = a["pit"] == truth
        c["hit"] += hit
        c["early"] += a["pit"] < truth
        c["late"] += a["pit"] > truth
        offsets[a["pit"] - truth] += 1
        by_truth[truth].append(int(hit))
    out: dict[str, Any] = dict(c)
    for k in ("negatives", "compared", "hit", "early", "late", "no_pit", "no_wrong_line", "unaligned"):
        out.setdefault(k, 0)
    out["hit_rate"] = out["hit"] / out["compared"] if out["compared"] else None
    out["hit_rate_of_negatives"] = out["hit"] / out["negatives"] if out["negatives"] else None
    out["pit_minus_truth"] = {str(k): v for k, v in sorted(offsets.items())}
    out["hit_rate_by_truth_line"] = {str(k): {"n": len(v), "hit_rate": sum(v) / len(v)} for k, v in sorted(by_truth.items())}
    return out


def spurious_steps(run_dir: str | Path) -> dict[str, Any]:
    """How often a correct final answer comes with a wrong equation (the paper's *spurious steps*).

    For pi_sft's samples of the training problems (``grade/graded.jsonl``, the positives RFT clones) and for
    every evaluated policy's greedy answers to the test problems (``eval/<tag>/arith/greedy.jsonl``): the
    number of correct responses and the fraction of them with a wrong line
    (:func:`mathreason.arith.first_wrong_line` is not None: a wrong or out-of-order intermediate value, or
    a wrong calculator result, followed by the right answer, often through a second, compensating wrong
    calculation: :func:`mathreason.arith.wrong_calculation_lines`).
    """
    from mathreason.arith import first_wrong_line

    run = Path(run_dir)

    def rate(rows, refs):
        ok = [r for r in rows if r.get("correct")]
        bad = sum(first_wrong_line(r["text"], refs[r["problem_id"]]) is not None for r in ok)
        return {"responses": len(rows), "correct": len(ok), "spurious": bad, "spurious_rate": bad / len(ok) if ok else None}

    out: dict[str, Any] = {}
    if (run / "grade" / "graded.jsonl").exists():
        refs = {r["id"]: r["solution"] for r in read_jsonl(run / "data" / "dsyn.jsonl")}
        out["samples"] = rate(read_jsonl(run / "grade" / "graded.jsonl"), refs)
    test = run / "data" / "arith_test.jsonl"
    if test.exists() and (run / "eval").is_dir():
        refs = {r["id"]: r["solution"] for r in read_jsonl(test)}
        for f in sorted((run / "eval").glob("*/arith/greedy.jsonl")):
            out[f"test:{f.parent.parent.name}"] = rate(read_jsonl(f), refs)
    return out


def sample_mix(run_dir: str | Path) -> dict[str, Any]:
    """What pi_sft's samples of the training problems offer the methods (``grade/graded.jsonl``).

    The sampled accuracy, and the fractions of questions whose samples are all correct, all incorrect or
    both (only those give per-step and DPO pairs), among all M samples and among the first
    ``k`` = 2 (the ones the arith preset values with rollouts).
    """
    by: dict[str, list[bool]] = defaultdict(list)
    for r in read_jsonl(Path(run_dir) / "grade" / "graded.jsonl"):
        by[r["problem_id"]].append((int(r["sample_index"]), bool(r["correct"])))
    n = len(by)
    if not n:
        return {"questions": 0}
    cs = {q: [c for _, c in sorted(v)] for q, v in by.items()}
    both = sum(any(v) and not all(v) for v in cs.values())
    return {
        "questions": n,
        "samples_per_question": max(len(v) for v in cs.values()),
        "sampled_accuracy": sum(map(sum, cs.values())) / sum(map(len, cs.values())),
        "both": both / n,
        "all_correct": sum(all(v) for v in cs.values()) / n,
        "none_correct": sum(not any(v) for v in cs.values()) / n,
        "both_in_first_2": sum(any(v[:2]) and not all(v[:2]) for v in cs.values()) / n,
    }


def error_kinds(run_dir: str | Path) -> dict[str, Any]:
    """Where each evaluated policy's wrong greedy answers to the test problems first go wrong
    (``eval/<tag>/arith/greedy.jsonl`` against ``data/arith_test.jsonl``): counts of
    :data:`mathreason.arith.WRONG_KINDS` at the first wrong line, and that line's mean index. Tells a policy
    that miscalculates from one that plans the wrong steps or breaks the format."""
    from mathreason.arith import WRONG_KINDS, first_wrong

    run = Path(run_dir)
    test = run / "data" / "arith_test.jsonl"
    out: dict[str, Any] = {}
    if not (test.exists() and (run / "eval").is_dir()):
        return out
    refs = {r["id"]: r["solution"] for r in read_jsonl(test)}
    for f in sorted((run / "eval").glob("*/arith/greedy.jsonl")):
        rows = read_jsonl(f)
        hits = [first_wrong(r["text"], refs[r["problem_id"]]) for r in rows if not r.get("correct")]
        hits = [h for h in hits if h is not None]  # wrong answer with every line right: cannot happen for ended responses
        kinds = Counter(k for _, k in hits)
        out[f.parent.parent.name] = {
            "responses": len(rows),
            "wrong": sum(not r.get("correct") for r in rows),
            "kinds": {k: kinds.get(k, 0) for k in WRONG_KINDS},
            "mean_index": sum(i for i, _ in hits) / len(hits) if hits else None,
        }
    return out


def _truth_counts(pairs: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Hit/early/late counts of ``(pit, truth)`` pairs (pit -1 = none)."""
    with_pit = [(p, t) for p, t in pairs if p >= 0]
    hit = sum(p == t for p, t in with_pit)
    return {
        "negatives": len(pairs),
        "compared": len(with_pit),
        "hit": hit,
        "early": sum(p < t for p, t in with_pit),
        "late": sum(p > t for p, t in with_pit),
        "no_pit": len(pairs) - len(with_pit),
        "hit_rate": hit / len(with_pit) if with_pit else None,
    }


def pit_truth_vs_k(cfg, ks: Sequence[int] = (5, 16), *, limit: int = 300, progress: bool = False) -> dict[str, Any]:
    """First pits of the same negatives of a point re-estimated with K rollouts for every K in ``ks``.

    The negatives are the first ``limit`` valued negatives of ``<run_dir>/advantages`` (aligned steps,
    with a first wrong line); for each K the credit engine (:func:`mathreason.credit.estimate_credit`,
    best-of-K, ``linear``) rolls out pi_sft from their prefixes with the same seeds the stage uses, so the
    K that the stage used reproduces its pits exactly. Separates the two ways a pit misses the truth: a
    sound prefix whose K rollouts all fail (an *early* pit, rarer as K grows) and a policy that recovers
    after a wrong line (a *late* pit, as frequent at any K).
    """
    from mathreason.credit import CreditSettings, estimate_credit
    from mathreason.models import load_tokenizer
    from mathreason.sampling import SamplingParams
    from mathreason.stages import Context
    from mathreason.stages.credit import build_responses, completion_decoder, make_rollout_fn

    ctx = Context(cfg, progress=False)
    run = ctx.run.root
    a = cfg.advantages
    refs = {r["id"]: r["solution"] for r in read_jsonl(run / "data" / "dsyn.jsonl")}
    graded = {(r["problem_id"], int(r["sample_index"])): r for r in read_jsonl(run / "grade" / "graded.jsonl")}
    prompts = {r["problem_id"]: r for r in read_jsonl(run / "sample" / "prompts.jsonl")}
    chosen, truths = [], []
    for row in read_jsonl(run / "advantages" / "advantages.jsonl"):
        if row["reward"] > 0:
            continue
        s = graded[(row["problem_id"], int(row["sample_index"]))]
        t, _ = _truth_line(row, s, refs[row["problem_id"]])
        if t is None:
            continue
        chosen.append(s)
        truths.append(t)
        if len(chosen) >= limit:
            break
    path = ctx.policy_path(a.policy)
    tok_path = ctx.policy_tokenizer(a.policy, path)
    decode = completion_decoder(load_tokenizer(tok_path))
    responses = build_responses(chosen, prompts, decode, splitter=a.splitter, dataset=cfg.data.dataset, max_steps=a.max_steps, min_chars=a.min_chars)
    gold = {p.id: p.answer for p in ctx.dsyn()}
    budget = a.max_tokens or cfg.sample.max_tokens
    params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_tokens=budget, stop=ctx.stop(a.stop))
    out: dict[str, Any] = {"negatives": len(responses)}
    # Each K's counts are kept in <run_dir>/diagnostics/ keyed by the advantages stage's key, the limit and
    # K, so a k-sweep that was killed (or run earlier for another seed) resumes instead of re-rolling out.
    stage_key = json.loads((run / "advantages" / "stage.json").read_text()).get("key", "") if (run / "advantages" / "stage.json").exists() else ""
    cache_dir = run / "diagnostics"
    cached: dict[int, dict] = {}
    for k in ks:
        f = cache_dir / f"pit_truth_vs_k-K{k}-limit{limit}.json"
        if f.exists():
            c = json.loads(f.read_text())
            if c.get("advantages_key") == stage_key and c.get("negatives") == len(responses):
                cached[k] = c["counts"]
    todo = [k for k in ks if k not in cached]
    sampler = ctx.make_sampler(path, tok_path, a.backend) if todo else None
    try:
        for k in ks:
            if k in cached:
                out[f"K={k}"] = cached[k]
                continue
            settings = CreditSettings(rollouts=k, estimator="best_of_k", schedule="linear", seed=cfg.seed, budget=budget, chunk_size=a.chunk_size)
            fn = make_rollout_fn(sampler, decode, gold_by_id=gold, dataset=cfg.data.dataset, params=params, settings=settings,
                                 keep_continuations=0, grade_workers=cfg.grade.workers, grade_timeout=cfg.grade.timeout)
            rows, summary = estimate_credit(responses, fn, settings, progress=progress)
            out[f"K={k}"] = {**_truth_counts([(r["pit"], t) for r, t in zip(rows, truths)]), "rollouts": summary["rollouts_generated"]}
            cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache_dir / f"pit_truth_vs_k-K{k}-limit{limit}.json",
                              {"advantages_key": stage_key, "negatives": len(responses), "k": k, "limit": limit, "counts": out[f"K={k}"]})
    finally:
        if sampler is not None:
            sampler.close()
    return out


def q_curve_steps(point_cfg, policies: Mapping[str, str], *, questions: int, samples: int, rollouts: int):
    """``[(tag, config)]`` of the Fig. 7 runs of one study point: one run folder per trained policy.

    ``policies`` maps a tag to a policy name of the point (``sft``, ``rft``, ``pref/per_step_dpo``...).
    """
    from mathreason.config import build_config, to_dict
    from mathreason.stages import Context

    base_ctx = Context(point_cfg, progress=False)
    test_path = base_ctx.arith_paths()[1]
    sft = base_ctx.policy_path("sft")
    out = []
    for tag, pol in policies.items():
        tree = to_dict(point_cfg)
        tree["run_dir"] = str(Path(point_cfg.run_dir) / "qcurves" / tag)
        tree["data"].update({"dsyn": str(test_path), "subset_size": questions, "subset_seed": 0})
        tree["sample"].update({"policy": str(Path(base_ctx.policy_path(pol)).resolve()), "n": samples})
        tree["advantages"].update(
            {"policy": str(Path(sft).resolve()), "select": "all", "schedule": "all", "estimator": "mc_mean", "rollouts": rollouts,
             "samples_per_question": None, "include_truncated": True}
        )
        out.append((tag, build_config(tree)))
    return out


def q_curve(run_dir: str | Path, *, max_steps: int = 8) -> dict[str, Any]:
    """Mean Q (under pi_sft's rollouts) per step position of the responses valued in ``run_dir``."""
    rows = read_jsonl(Path(run_dir) / "advantages" / "advantages.jsonl")
    per: dict[int, list[float]] = defaultdict(list)
    v = [r["v"] for r in rows if r["v"] is not None]
    for r in rows:
        for i, q in enumerate(r["q"][:max_steps]):
            if q is not None:
                per[i].append(q)
    return {
        "responses": len(rows),
        "accuracy": (sum(r["reward"] for r in rows) / len(rows)) if rows else None,
        "v": (sum(v) / len(v)) if v else None,
        "mean_q": [sum(per[i]) / len(per[i]) for i in sorted(per)],
        "n": [len(per[i]) for i in sorted(per)],
    }


def _plot(curves: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.runio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4))
    for tag, c in curves.items():
        ys = [c["v"]] + list(c["mean_q"])
        ax.plot(range(len(ys)), ys, marker="o", label=f"{tag} (acc {c['accuracy']:.2f})")
    ax.set_xlabel("step position (0 = the question, V)")
    ax.set_ylabel("mean Q of the step prefix under pi_sft")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def fig7_size(cfg) -> int:
    """The D_syn size of Fig. 7 and of the K sweep: the largest at which every method of the study runs
    (``scaling.method_sizes``), else the largest size."""
    from mathreason.scaling import methods_at

    sizes = cfg.scaling.sizes
    every = [n for n in sizes if len(methods_at(cfg, n)) == len(cfg.scaling.methods)]
    return max(every or sizes)


def write_diagnostics(
    cfg,
    *,
    qcurves: bool = True,
    questions: int = 100,
    samples: int = 2,
    rollouts: int = 4,
    seeds: Sequence[int] | None = None,
    k_sweep: Sequence[int] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Pit truth at every finished point of ``cfg``'s scaling study, and Fig. 7 at its largest size (the
    largest at which every method runs, when ``scaling.method_sizes`` limits some).

    Writes ``<root>/report/diagnostics.json`` (and ``qcurves.png``); the Fig. 7 runs are ordinary run
    folders under each point (``qcurves/<tag>``), so they resume and skip like any stage. With ``k_sweep``
    the largest size's negatives are also re-valued with each K (:func:`pit_truth_vs_k`).
    """
    from mathreason.methods import Step, resolve_method, run_plan
    from mathreason.scaling import method_tags, methods_at, points, study_root

    root = study_root(cfg)
    out: dict[str, Any] = {"pit_truth": {}, "qcurves": {}}
    for p in points(cfg):
        if not (p.run_dir / "advantages" / "advantages.jsonl").exists():
            continue
        out["pit_truth"][f"seed-{p.seed}/size-{p.size}"] = pit_truth(p.run_dir)
        out.setdefault("spurious_steps", {})[f"seed-{p.seed}/size-{p.size}"] = spurious_steps(p.run_dir)
        out.setdefault("sample_mix", {})[f"seed-{p.seed}/size-{p.size}"] = sample_mix(p.run_dir)
        out.setdefault("error_kinds", {})[f"seed-{p.seed}/size-{p.size}"] = error_kinds(p.run_dir)
    rates = [v["hit_rate"] for v in out["pit_truth"].values() if v["hit_rate"] is not None]
    comp = sum(v["compared"] for v in out["pit_truth"].values())
    hits = sum(v["hit"] for v in out["pit_truth"].values())
    out["pit_truth_overall"] = {"compared": comp, "hit": hits, "hit_rate": hits / comp if comp else None, "points": len(rates)}
    largest = fig7_size(cfg)
    if qcurves:
        tags = method_tags(list(cfg.scaling.methods), cfg.pipeline.variants)
        for p in points(cfg):
            if p.size != largest or (seeds is not None and p.seed not in seeds) or not (p.run_dir / "point.json").exists():
                continue
            pols = {tags[m]: resolve_method(m, cfg.pipeline.variants).policy for m in methods_at(cfg, p.size)}
            curves = {}
            for tag, qcfg in q_curve_steps(p.cfg, pols, questions=questions, samples=samples, rollouts=rollouts):
                run_plan([Step(s, qcfg, s) for s in ("sample", "grade", "advantages")], progress=progress)
                curves[tag] = q_curve(qcfg.run_dir)
            out["qcurves"][f"seed-{p.seed}/size-{p.size}"] = curves
            if curves:
                _plot(curves, root / "report" / f"qcurves-seed{p.seed}.png", f"Fig. 7: mean Q per step (seed {p.seed}, D_syn = {p.size})")
    if k_sweep:
        for p in points(cfg):
            if p.size == largest and (seeds is None or p.seed in seeds) and (p.run_dir / "advantages" / "advantages.jsonl").exists():
                out.setdefault("pit_truth_vs_k", {})[f"seed-{p.seed}/size-{p.size}"] = pit_truth_vs_k(p.cfg, k_sweep, progress=progress)
    atomic_write_json(root / "report" / "diagnostics.json", out)
    return out
