"""Writes docs/results/arith_pit_pilot.json: the first-pit pilot of the arith task (issue 11).

The hypothesis it tests: the study's first pits miss the first wrong equation (59% hits, target 80%)
because pi_sft memorises a small D_syn (600 SFT steps of 32 on 500-2000 problems: many epochs), so it
recovers after a wrong line by writing a memorised answer (late pits). Each pilot trains pi_sft on a much
larger D_syn with the same 600 steps (each problem seen about once) and measures pits against the
generator's ground truth on a random subset of its training problems (``scripts/arith_pit_pilot.sh``):

    bash scripts/arith_pit_pilot.sh 20000          # and 10000: runs/arith-pits/{seed-0/size-N, probe-N}
    python docs/results/export_arith_pits.py runs/arith-pits --reference-run runs/arith/seed-0/size-2000
    # a later pilot (another ROOT) added to the committed JSON, whose earlier pilots' run folders are gone:
    POOL=2000 ROOT=runs/arith-pits-s1200 bash scripts/arith_pit_pilot.sh 2000 --set sft.max_steps=1200
    python docs/results/export_arith_pits.py runs/arith-pits-s1200 --merge --notes notes.json

For every ``probe-<N>`` folder found, the JSON holds pi_sft's greedy test accuracy (reported only), the
fraction of probed questions with both a positive and a negative among the first 2, 4 (the preset's M)
and all sampled responses (and among 16, from an ``n16-<N>`` folder of 16 samples per question, when
there is one), the valued negatives, the pit-vs-truth counts (hit / early / late / no pit), three
breakdowns of the pits (by the problem's number of equations, by how often pi_sft solves the question in
the samples the advantages stage did not value, and what the successful rollouts behind late pits do), the
test problems that have a training twin (the same solution text), and the stages' wall times. The study's
D_syn = 2000 seed-0 point is the reference: its published numbers, and the same breakdowns when
``--reference-run`` names its run folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from shared.runio import read_jsonl

# The study's D_syn = 2000, seed 0 point (docs/arith_study.md sections 1 and 4; runs/arith/report/diagnostics.json
# and runs/arith/seed-0/size-2000/{eval/summary.json, */stage.json} of the study run).
REFERENCE = {
    "what": "arith study, D_syn = 2000 (a 2000-problem pool, every problem seen about 9.6 times in 600 steps), seed 0",
    "greedy_test_accuracy": 0.45,
    "test_set": "arith test problems 2000..2499 of the generator's stream (pool of 2000)",
    "probed_questions": 2000,
    "samples_per_question": 4,
    "sample_mix": {"sampled_accuracy": 0.445125, "both_in_first_2": 0.2795, "both_in_first_4": 0.5065,
                   "all_correct": 0.201, "none_correct": 0.2925},
    "advantages": {"schedule": "all", "select": "all", "k": 5, "negatives": 2243, "negatives_with_pit": 1526,
                   "rollouts_generated": 68430, "seconds": 1210.356},
    "pit_truth": {"negatives": 2243, "compared": 1526, "hit": 884, "early": 433, "late": 209, "no_pit": 717,
                  "hit_rate": 0.5792922673656619},
    "spurious_rate_of_correct_samples": 0.102,
    "seconds": {"sft": 376.328, "sample": 121.341, "grade": 0.921, "advantages": 1210.356, "rft": 559.292,
                "pref_per_step_dpo": 48.105, "eval": 26.184,
                "note": "threads 1, two or three study points side by side on the 2 cores"},
}


def _by_question(graded: list[dict]) -> dict[str, list[bool]]:
    by: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in graded:
        by[r["problem_id"]].append((int(r["sample_index"]), bool(r["correct"])))
    return {q: [c for _, c in sorted(v)] for q, v in by.items()}


def both_at(graded: list[dict], ks: tuple[int, ...]) -> dict:
    """Fraction of questions with a positive and a negative among their first k samples, for each k."""
    cs = list(_by_question(graded).values())
    out = {}
    for k in ks:
        sub = [v[:k] for v in cs if len(v) >= k]
        if sub:
            out[f"both_in_first_{k}"] = sum(any(v) and not all(v) for v in sub) / len(sub)
            out[f"all_correct_in_first_{k}"] = sum(all(v) for v in sub) / len(sub)
            out[f"none_correct_in_first_{k}"] = sum(not any(v) for v in sub) / len(sub)
    return out


def _counts(rows: list[tuple[int, int]]) -> dict:
    """hit / early / late counts of ``(pit, truth)`` (pit -1: none)."""
    w = [(p, t) for p, t in rows if p >= 0]
    c = len(w)
    return {"compared": c, "hit": sum(p == t for p, t in w), "early": sum(p < t for p, t in w), "late": sum(p > t for p, t in w),
            "no_pit": len(rows) - c, "hit_rate": sum(p == t for p, t in w) / c if c else None}


def breakdowns(run: Path, tokenizer: str | None = None) -> dict:
    """Pits vs truth split by the problem's equations and by pi_sft's competence on the question, and what
    the successful rollouts behind the late pits do (one kept continuation each, decoded with ``tokenizer``)."""
    from mathreason.arith import first_wrong_line, wrong_calculation_lines

    refs = {r["id"]: r for r in read_jsonl(run / "data" / "dsyn.jsonl")}
    graded_rows = read_jsonl(run / "grade" / "graded.jsonl")
    graded = {(r["problem_id"], int(r["sample_index"])): r for r in graded_rows}
    k_valued = yaml.safe_load((run / "advantages" / "config.yaml").read_text())["advantages"]["samples_per_question"] or 0
    unvalued = {q: v[k_valued:] for q, v in _by_question(graded_rows).items()}
    tok = None
    if tokenizer is not None:
        from mathreason.models import load_tokenizer

        tok = load_tokenizer(tokenizer)
    by_steps: dict[int, list] = defaultdict(list)
    by_comp: dict[str, list] = defaultdict(list)
    late = Counter()
    for a in read_jsonl(run / "advantages" / "advantages.jsonl"):
        if a["reward"] > 0:
            continue
        s = graded[(a["problem_id"], int(a["sample_index"]))]
        ref = refs[a["problem_id"]]
        lines = [ln for ln in s["text"].split("\n") if ln.strip()]
        t = first_wrong_line(s["text"], ref["solution"])
        if a["num_steps"] != len(lines) or t is None:
            continue
        t = min(t, a["num_steps"] - 1)
        by_steps[ref["meta"]["steps"]].append((a["pit"], t))
        u = unvalued.get(a["problem_id"]) or []
        if u:
            f = sum(u) / len(u)
            by_comp["0" if f == 0 else "(0, 1/3]" if f <= 1 / 3 else "(1/3, 2/3]" if f <= 2 / 3 else "(2/3, 1]"].append((a["pit"], t))
        if a["pit"] > t and tok is not None:
            conts = a.get("pit_continuations")
            conts = json.loads(conts) if isinstance(conts, str) else conts
            if not conts:
                late["no_kept_continuation"] += 1
                continue
            bad = bool(wrong_calculation_lines(tok.decode(conts[0], skip_special_tokens=True)))
            late["compensating_wrong_calculation" if bad else "arithmetic_right_throughout"] += 1
    out = {
        "by_problem_equations": {str(n): _counts(v) for n, v in sorted(by_steps.items())},
        "by_question_competence": {
            "what": f"pi_sft's accuracy on the question in the samples the advantages stage did not value (indices >= {k_valued})",
            **{k: _counts(by_comp[k]) for k in ("0", "(0, 1/3]", "(1/3, 2/3]", "(2/3, 1]") if k in by_comp},
        },
    }
    if tok is not None:
        out["late_pit_rollouts"] = {
            "what": "for each late pit, the first kept successful rollout from the prefix before the pit (which holds the "
                    "first wrong line): does it contain another wrong calculation that lands on the right answer?",
            **dict(late),
        }
    return out


def test_twins(point: Path) -> dict | None:
    """Test problems whose solution text equals a training problem's (the same computation under other names),
    and pi_sft's greedy accuracy on them and on the rest."""
    greedy = point / "eval" / "sft" / "arith" / "greedy.jsonl"
    if not greedy.exists():
        return None
    train = {r["solution"] for r in read_jsonl(point / "data" / "dsyn.jsonl")}
    test = {r["id"]: r["solution"] for r in read_jsonl(point / "data" / "arith_test.jsonl")}
    g = read_jsonl(greedy)
    tw = [bool(r["correct"]) for r in g if test[r["problem_id"]] in train]
    rest = [bool(r["correct"]) for r in g if test[r["problem_id"]] not in train]
    return {"test_problems": len(g), "with_a_training_twin": len(tw),
            "greedy_accuracy_twins": sum(tw) / len(tw) if tw else None,
            "greedy_accuracy_rest": sum(rest) / len(rest) if rest else None}


def stage_seconds(run: Path, stage: str) -> float | None:
    f = run / stage / "stage.json"
    return json.loads(f.read_text()).get("summary", {}).get("seconds") if f.exists() else None


def pilot(root: Path, probe: Path) -> dict:
    """One pilot: the probe run ``probe`` (ROOT/probe-N/seed-S/size-P) of the point ROOT/seed-S/size-N."""
    probe_root = probe.parent.parent
    size = int(probe_root.name.split("-", 1)[1])
    point = root / probe.parent.name / f"size-{size}"
    diag = json.loads((probe_root / "report" / "diagnostics.json").read_text())
    key = f"{probe.parent.name}/{probe.name}"
    if key not in diag["pit_truth"]:
        raise KeyError(f"{probe_root / 'report' / 'diagnostics.json'}: no entry {key!r} (field pit_truth); run the "
                       f"diagnostics command of scripts/arith_pit_pilot.sh with every seed of the pilot")
    sft = json.loads((point / "sft" / "stage.json").read_text())["summary"]
    pcfg = yaml.safe_load((point / "config.yaml").read_text())
    qcfg = yaml.safe_load((probe / "config.yaml").read_text())
    ev = json.loads((point / "eval" / "summary.json").read_text())["sft"]["arith"]["greedy"]
    adv = json.loads((probe / "advantages" / "stage.json").read_text())["summary"]
    n = qcfg["sample"]["n"]
    graded = read_jsonl(probe / "grade" / "graded.jsonl")
    mix = {**diag["sample_mix"][key], **both_at(graded, tuple(k for k in (2, 4, 8, 16) if k <= n))}
    more = {}
    for extra in sorted(p for p in root.glob(f"n*-{size}") if p.is_dir()):
        run = next(extra.glob("seed-*/size-*"), None)
        if run is not None and (run / "grade" / "graded.jsonl").exists():
            m = yaml.safe_load((run / "config.yaml").read_text())["sample"]["n"]
            rows = read_jsonl(run / "grade" / "graded.jsonl")
            more[extra.name] = {"questions": len(_by_question(rows)), "samples_per_question": m,
                                "subset": "the first questions of the probe's subset (same data.subset_seed)",
                                **both_at(rows, tuple(k for k in (2, 4, 8, 16, 32) if k <= m)),
                                "seconds": {"sample": stage_seconds(run, "sample"), "grade": stage_seconds(run, "grade")}}
    return {
        "what": f"D_syn {size} of a {pcfg['data']['arith']['train_size']}-problem pool, {sft['optimizer_steps']} SFT steps of "
                f"{pcfg['sft']['batch_size']}, probe of {diag['sample_mix'][key]['questions']} training questions x {n} samples",
        "dsyn_size": size,
        "pool": pcfg["data"]["arith"]["train_size"],
        "seed": pcfg["seed"],
        "sft": {"optimizer_steps": sft["optimizer_steps"], "epochs": sft["epoch"], "train_loss": sft["train_loss"]},
        "greedy_test_accuracy": ev["accuracy"],
        "greedy_test_problems": ev["problems"],
        "test_twins": test_twins(point),
        "probe": {"questions": diag["sample_mix"][key]["questions"], "samples_per_question": n,
                  "sample_temperature": qcfg["sample"]["temperature"],
                  "valued_samples_per_question": qcfg["advantages"]["samples_per_question"],
                  "subset_seed": qcfg["data"]["subset_seed"]},
        "sample_mix": mix,
        "sample_mix_more_samples": more,
        "advantages": {k: adv.get(k) for k in ("schedule", "estimator", "k", "selected", "negatives", "negatives_with_pit",
                                               "negatives_without_pit", "rollouts_generated")},
        "pit_truth": {k: diag["pit_truth"][key][k] for k in ("negatives", "compared", "hit", "early", "late", "no_pit",
                                                            "no_wrong_line", "unaligned", "hit_rate", "hit_rate_of_negatives",
                                                            "pit_minus_truth", "hit_rate_by_truth_line")},
        "pit_breakdowns": breakdowns(probe, str(point / "sft" / "model")),
        "spurious_steps": diag["spurious_steps"][key].get("samples"),
        "seconds": {"sft": sft["seconds"], "eval": stage_seconds(point, "eval"), "sample": stage_seconds(probe, "sample"),
                    "grade": stage_seconds(probe, "grade"), "advantages": stage_seconds(probe, "advantages")},
    }


def _pilot_key(p: dict) -> tuple:
    return (p["dsyn_size"], p["pool"], p["seed"], p["sft"]["optimizer_steps"], p["probe"]["questions"],
            p["probe"]["samples_per_question"], p["probe"].get("sample_temperature", 0.7))   # earlier pilots: the preset's 0.7


def _merge_values(old, new):
    """Dicts merge key by key, lists are extended (items already there are not repeated), anything else is replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for k, v in new.items():
            out[k] = _merge_values(old[k], v) if k in old else v
        return out
    if isinstance(old, list) and isinstance(new, list):
        return old + [v for v in new if v not in old]
    return new


def merge(old: dict, new: dict) -> dict:
    """``new`` (this run of the exporter, notes included) added to ``old`` (the JSON already written): pilots are
    matched by D_syn, pool, seed, SFT steps, probe size, samples and sampling temperature (a new one replaces its match, the others are kept in
    order, the new ones appended); the reference keeps its breakdowns unless ``new`` brings them; ``made_by``
    lists every invocation; the other keys merge as ``_merge_values`` says."""
    new_keys = {_pilot_key(p) for p in new["pilots"]}
    pilots = [p for p in old.get("pilots", []) if _pilot_key(p) not in new_keys] + new["pilots"]
    ref = new["reference_study_point"] if "pit_breakdowns" in new["reference_study_point"] else old.get(
        "reference_study_point", new["reference_study_point"])
    made = old.get("made_by", [])
    made = (made if isinstance(made, list) else [made]) + [new["made_by"]]
    rest = {k: v for k, v in new.items() if k not in ("pilots", "reference_study_point", "made_by")}
    out = _merge_values({k: v for k, v in old.items() if k not in ("pilots", "reference_study_point", "made_by")}, rest)
    return {"what": out.pop("what"), "date": out.pop("date"), "made_by": made, "reference_study_point": ref,
            "pilots": pilots, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the pilot's run folder (runs/arith-pits)")
    ap.add_argument("--reference-run", type=Path, default=None,
                    help="the study's D_syn = 2000 seed-0 point (runs/arith/seed-0/size-2000): adds its breakdowns")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("arith_pit_pilot.json"))
    ap.add_argument("--notes", type=Path, default=None, help="a JSON file whose keys are added as they are (commands, wall times, reading)")
    ap.add_argument("--merge", action="store_true",
                    help="add to the JSON already at --out instead of overwriting it: its pilots are kept unless this "
                         "run measures the same one again, and the notes' keys merge into its keys (dicts by key, lists extended)")
    args = ap.parse_args()
    probes = [p for p in args.root.glob("probe-*") if (p / "report" / "diagnostics.json").exists()]
    pilots = [pilot(args.root, run) for p in sorted(probes, key=lambda p: int(p.name.split("-", 1)[1]))
              for run in sorted(p.glob("seed-*/size-*"), key=lambda r: int(r.parent.name.split("-", 1)[1]))]
    ref = dict(REFERENCE)
    if args.reference_run is not None:
        ref["pit_breakdowns"] = breakdowns(args.reference_run, str(args.reference_run / "sft" / "model"))
        ref["test_twins"] = test_twins(args.reference_run)
    out = {
        "what": "first-pit pilots of the arith task (issue 11): pi_sft on a large D_syn with the preset's 600 SFT steps, "
                "or with more SFT steps at the study's D_syn; first pits (BoK-5, linear) vs the first wrong equation on a "
                "random subset of its training problems",
        "date": dt.date.today().isoformat(),
        "made_by": f"python docs/results/export_arith_pits.py {args.root}"
                   + (f" --reference-run {args.reference_run}" if args.reference_run else "")
                   + (f" --notes {args.notes}" if args.notes else "") + (" --merge" if args.merge else ""),
        "reference_study_point": ref,
        "pilots": pilots,
    }
    if args.notes is not None:
        out.update(json.loads(args.notes.read_text()))
    if args.merge and args.out.exists():
        out = merge(json.loads(args.out.read_text()), out)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
