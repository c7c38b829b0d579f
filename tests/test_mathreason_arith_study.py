"""The arith study reduced to one seed and two sizes (the README's study command with overrides), end to end
through the normal stages: scaling (every method of the preset), scaling-report and diagnostics (first
pits against the task's ground truth, Fig. 7 Q curves). The model is shrunk and trained for a few dozen
steps, so the numbers mean nothing; the test checks that every output of the study is produced."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mathreason.cli import main
from mathreason.config import load_config
from mathreason.diagnostics import pit_truth_vs_k
from mathreason.methods import METHODS
from mathreason.runs import read_jsonl
from mathreason.scaling import points


def _sets(items: list[str]) -> list[str]:
    """``a.b=v`` overrides as command-line options: ``--set a.b=v`` each."""
    return [x for item in items for x in ("--set", item)]


@pytest.mark.slow
def test_reduced_arith_study_one_seed_two_sizes(tmp_path, capsys):
    torch.set_num_threads(1)
    root = tmp_path / "study"
    over = [
        f"run_dir={root}", "threads=1", "data.arith.train_size=120", "data.arith.test_size=40",
        "data.arith.min_steps=1", "data.arith.max_steps=2", "data.arith.max_distractors=0", "data.arith.max_value=60",
        "scaling.sizes=[60,120]", "scaling.seeds=[0]", "scaling.min_sizes=2",
        "model.tiny.hidden_size=64", "model.tiny.intermediate_size=256", "model.tiny.num_hidden_layers=2", "model.tiny.vocab_size=400",
        "sft.max_steps=150", "sft.learning_rate=3e-3", "rft.train.max_steps=20", "rft_adv.train.max_steps=20", "pref.train.epochs=1",
        "sample.n=2", "sample.max_tokens=64", "advantages.rollouts=2", "eval.max_tokens=64",
    ]
    methods = load_config("arith").scaling.methods
    t0 = time.time()
    assert main(["scaling", "--preset", "arith", *_sets(over), "--quiet"]) == 0
    assert main(["scaling-report", "--preset", "arith", *_sets(over)]) == 0
    assert main(["diagnostics", "--preset", "arith", *_sets(over), "--questions", "8", "--samples", "1", "--rollouts", "2", "--k-sweep", "2,4", "--quiet"]) == 0
    print(f"reduced arith study: {time.time() - t0:.0f} s")
    capsys.readouterr()
    rep = json.loads((root / "report" / "report.json").read_text())
    assert {(r["method"], r["size"]) for r in rep["rows"]} == {(m, n) for m in methods for n in (60, 120)}
    for f in ("report.csv", "scaling.png", "efficiency.png", "diagnostics.json", "qcurves-seed0.png"):
        assert (root / "report" / f).stat().st_size > 0
    diag = json.loads((root / "report" / "diagnostics.json").read_text())
    assert set(diag["pit_truth"]) == {"seed-0/size-60", "seed-0/size-120"}
    kinds = diag["error_kinds"]["seed-0/size-120"]  # every evaluated policy's wrong test answers, by first wrong line
    assert set(kinds) == {METHODS[m].policy.replace("/", "-") for m in methods}
    assert all(sum(v["kinds"].values()) <= v["wrong"] <= v["responses"] == 40 for v in kinds.values())
    for v in diag["pit_truth"].values():
        assert v["negatives"] == v["compared"] + v["no_pit"] + v["no_wrong_line"] + v["unaligned"]
        assert v["hit"] + v["early"] + v["late"] == v["compared"]
    # Re-valuing the largest size's negatives with the stage's own K reproduces its pits exactly.
    vs_k = diag["pit_truth_vs_k"]["seed-0/size-120"]
    stage = diag["pit_truth"]["seed-0/size-120"]
    if vs_k["negatives"] == stage["compared"] + stage["no_pit"]:
        assert vs_k["K=2"]["hit"] == stage["hit"] and vs_k["K=2"]["no_pit"] == stage["no_pit"]
    assert vs_k["K=4"]["rollouts"] >= vs_k["K=2"]["rollouts"]
    # Each K's counts are kept beside the point, so a k-sweep asked again (or after a kill) re-rolls nothing.
    point = next(p for p in points(load_config("arith", over)) if p.size == 120)
    assert sorted(f.name for f in (point.run_dir / "diagnostics").iterdir()) == [
        "pit_truth_vs_k-K2-limit300.json", "pit_truth_vs_k-K4-limit300.json"]
    assert pit_truth_vs_k(point.cfg, (2, 4)) == vs_k
    curves = diag["qcurves"]["seed-0/size-120"]
    assert set(curves) == {METHODS[m].policy.replace("/", "-") for m in methods}
    assert all(c["responses"] == 8 and 0.0 <= c["v"] <= 1.0 for c in curves.values())
    # The Fig. 7 runs are ordinary run folders: the policy's responses valued by pi_sft's rollouts.
    adv = read_jsonl(root / "seed-0" / "size-120" / "qcurves" / "pref-per_step_dpo" / "advantages" / "advantages.jsonl")
    assert adv and all(r["schedule"] == "all" and r["estimator"] == "mc_mean" for r in adv)
    # The teaching copy of a finished point: a slice of its questions, the same pits, a loadable bf16 pi_sft.
    from safetensors.torch import load_file

    from mathreason.artefact import pack_teaching_run
    from mathreason.diagnostics import pit_truth

    src = point.run_dir
    man = pack_teaching_run(src, tmp_path / "teach", questions=10, test_questions=5)
    teach = tmp_path / "teach"
    kept = {r["problem_id"] for r in read_jsonl(teach / "grade" / "graded.jsonl")}
    order = list(dict.fromkeys(r["problem_id"] for r in read_jsonl(src / "grade" / "graded.jsonl")))
    assert man["questions"] == len(kept) == 10 and kept == set(order[:10])
    full_adv = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(src / "advantages" / "advantages.jsonl")}
    for r in read_jsonl(teach / "advantages" / "advantages.jsonl"):
        assert r["problem_id"] in kept and r == full_adv[(r["problem_id"], r["sample_index"])]
    assert {k: v for k, v in pit_truth(teach).items()}["negatives"] == sum(1 for k, r in full_adv.items() if k[0] in kept and r["reward"] <= 0)
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(teach / "sft" / "model" / "model.safetensors")).values() if v.is_floating_point())
    assert set(man["files"]) == {str(p.relative_to(teach)) for p in teach.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    with pytest.raises(FileExistsError):
        pack_teaching_run(src, teach)
    # sharded storage (huggingface_hub's layout) loads to the same float32 weights; the manifest check bites
    from mathreason.artefact import verify_teaching_dir
    from mathreason.models import load_model

    sharded = tmp_path / "teach-sharded"
    man2 = pack_teaching_run(src, sharded, questions=10, test_questions=5, max_shard_mb=0.05)
    shards = sorted((sharded / "sft" / "model").glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "sft" / "model" / "model.safetensors.index.json").is_file()
    a = load_model(teach / "sft" / "model", dtype=torch.float32, device="cpu").state_dict()
    b = load_model(sharded / "sft" / "model", dtype=torch.float32, device="cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert verify_teaching_dir(sharded) == man2
    (sharded / "grade" / "graded.jsonl").write_text((sharded / "grade" / "graded.jsonl").read_text() + "\n")
    with pytest.raises(ValueError, match="graded.jsonl.*sha256"):
        verify_teaching_dir(sharded)

