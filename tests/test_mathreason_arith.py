"""The generated arithmetic task (mathreason.arith): seeded, disjoint splits, correct-by-construction
solutions graded by the project's grader, the step count as difficulty, and the ground truth of the first
wrong equation that credit assignment is checked against."""

from __future__ import annotations

import pytest

from mathreason.arith import WRONG_KINDS, ArithSpec, arith_rows, first_wrong, first_wrong_line, reference_values, write_arith_problems
from mathreason.config import load_config
from mathreason.grading import grade_many
from mathreason.stages import Context


def test_rows_are_seeded_disjoint_and_correct_by_construction():
    spec = ArithSpec(min_steps=2, max_steps=5, max_distractors=2)
    train, test = arith_rows(300, 100, spec, seed=3)
    assert (train, test) == arith_rows(300, 100, spec, seed=3)
    assert train != arith_rows(300, 100, spec, seed=4)[0]
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert len({r["id"] for r in train + test}) == 400
    verdicts = grade_many([r["solution"] for r in train + test], [r["answer"] for r in train + test], "gsm8k", workers=1)
    assert all(v.correct for v in verdicts)
    steps = [r["meta"]["steps"] for r in train]
    assert min(steps) == 2 and max(steps) == 5
    for r in train + test:
        lines = r["solution"].split("\n")
        assert len(lines) == r["meta"]["steps"] + 1 and lines[-1] == f"#### {r['answer']}"
        assert reference_values(r["solution"]) == r["meta"]["values"]
        assert all(0 <= v <= spec.max_value for v in r["meta"]["values"])
        assert first_wrong_line(r["solution"], r["solution"]) is None
    assert any(" has " in r["question"].split(".")[1] for r in train)  # distractor sentences occur


def test_first_wrong_line_finds_the_first_equation_that_goes_wrong():
    ref = "Buys 5: 7+5=<<7+5=12>>12\nBags: 2*3=<<2*3=6>>6\nAdds 6: 12+6=<<12+6=18>>18\n#### 18"
    lines = ref.split("\n")

    def with_line(i, text):
        return "\n".join(lines[:i] + [text] + lines[i + 1 :])

    assert first_wrong_line(ref, ref) is None
    assert first_wrong_line(ref + "\n", ref) is None
    assert first_wrong_line(with_line(0, "Buys 5: 7+5=<<7+5=13>>13"), ref) == 0  # wrong arithmetic
    assert first_wrong_line(with_line(1, "Bags: 2*4=<<2*4=8>>8"), ref) == 1  # right arithmetic, wrong value
    assert first_wrong_line(with_line(2, "Adds 6: 12+6=<<12+6=18>>19"), ref) == 2  # shown result differs
    assert first_wrong_line(with_line(2, "Adds 6: 12+6 is 18"), ref) == 2  # no equation
    assert first_wrong_line(with_line(3, "#### 17"), ref) == 3
    assert first_wrong_line("\n".join(lines[:2]) + "\n#### 6", ref) == 2  # ended early
    assert first_wrong_line("\n".join(lines[:3]), ref) == 3  # no answer line
    # The first wrong line counts, whatever comes after it.
    bad = with_line(1, "Bags: 2*3=<<2*3=7>>7").replace("12+6=<<12+6=18>>18", "12+7=<<12+7=19>>19")
    assert first_wrong_line(bad, ref) == 1
    # ... and what went wrong there (first_wrong: the line and its kind)
    assert first_wrong(ref, ref) is None
    assert first_wrong(bad, ref) == (1, "calculation")
    assert first_wrong(with_line(1, "Bags: 2*4=<<2*4=8>>8"), ref) == (1, "plan")
    assert first_wrong(with_line(2, "Adds 6: 12+6=<<12+6=18>>19"), ref) == (2, "copy")
    assert first_wrong(with_line(2, "Adds 6: 12+6 is 18"), ref) == (2, "format")
    assert first_wrong(with_line(1, "#### 12"), ref) == (1, "answer")  # answered too early
    assert first_wrong(with_line(3, "#### 17"), ref) == (3, "answer")
    assert first_wrong(with_line(3, "#### x"), ref) == (3, "answer")
    assert first_wrong("\n".join(lines[:2]), ref) == (2, "ended")
    assert first_wrong("\n".join(lines[:3]), ref) == (3, "ended")
    assert first_wrong("\n".join(lines[:3] + ["More: 18+1=<<18+1=19>>19", "#### 19"]), ref) == (3, "extra")
    assert set(WRONG_KINDS) == {"calculation", "plan", "copy", "format", "ended", "answer", "extra"}


def test_the_arith_source_feeds_dsyn_subsets_and_the_benchmark(tmp_path):
    over = [f"run_dir={tmp_path}", "data.dsyn=arith", "data.arith.train_size=40", "data.arith.test_size=10", "data.subset_size=25"]
    ctx = Context(load_config("tiny", over), progress=False)
    dsyn = ctx.dsyn()
    assert len(dsyn) == 25 and all(p.id.startswith("arith/train/") for p in dsyn)
    assert [p.id for p in ctx.benchmark("arith")] == [f"arith/test/{i}" for i in range(10)]
    # The task does not depend on the run seed: every seed of a study sees the same problems and test set.
    assert [p.id for p in ctx.benchmark("arith")] == [p.id for p in Context(load_config("tiny", [f"run_dir={tmp_path}/o", *over[1:], "seed=7"])).benchmark("arith")]
    a, b = write_arith_problems(tmp_path / "x", 40, 10, load_config("tiny", over).data.arith.spec(), seed=0)
    assert a.read_text() == (tmp_path / "data" / "arith_train.jsonl").read_text()


def test_spec_is_checked():
    with pytest.raises(ValueError):
        ArithSpec(min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="distinct"):
        arith_rows(500, 0, ArithSpec(min_steps=1, max_steps=1, max_operand=2, max_start=2, max_distractors=0), seed=0)


def test_spurious_steps_counts_correct_answers_reached_through_a_wrong_equation(tmp_path):
    from mathreason.diagnostics import spurious_steps
    from mathreason.runs import write_jsonl_atomic

    sol = "Buys 5: 22+5=<<22+5=27>>27\nBags: 4*4=<<4*4=16>>16\nAdds 16: 27+16=<<27+16=43>>43\n#### 43"
    wrong_middle = "Buys 5: 22+5=<<22+5=23>>23\nBags: 4*4=<<4*4=16>>16\nAdds 16: 23+16=<<23+16=39>>39\n#### 43"
    wrong_answer = "Buys 5: 22+5=<<22+5=27>>27\nBags: 4*4=<<4*4=16>>16\nAdds 16: 27+16=<<27+16=43>>43\n#### 44"
    (tmp_path / "data").mkdir()
    write_jsonl_atomic(tmp_path / "data" / "dsyn.jsonl", [{"id": "q", "solution": sol}])
    write_jsonl_atomic(tmp_path / "data" / "arith_test.jsonl", [{"id": "t", "solution": sol}])
    (tmp_path / "grade").mkdir()
    write_jsonl_atomic(tmp_path / "grade" / "graded.jsonl", [
        {"problem_id": "q", "text": sol, "correct": True},
        {"problem_id": "q", "text": wrong_middle, "correct": True},
        {"problem_id": "q", "text": wrong_answer, "correct": False},
    ])
    (tmp_path / "eval" / "sft" / "arith").mkdir(parents=True)
    write_jsonl_atomic(tmp_path / "eval" / "sft" / "arith" / "greedy.jsonl", [{"problem_id": "t", "text": wrong_middle, "correct": True}])
    out = spurious_steps(tmp_path)
    assert out["samples"] == {"responses": 3, "correct": 2, "spurious": 1, "spurious_rate": 0.5}
    assert out["test:sft"] == {"responses": 1, "correct": 1, "spurious": 1, "spurious_rate": 1.0}


def test_sample_mix_counts_questions_with_both_positives_and_negatives(tmp_path):
    from mathreason.diagnostics import sample_mix
    from mathreason.runs import write_jsonl_atomic

    rows = [{"problem_id": q, "sample_index": i, "correct": c}
            for q, cs in {"a": [1, 1, 1, 1], "b": [0, 0, 0, 0], "c": [0, 0, 1, 0], "d": [1, 0, 0, 1]}.items()
            for i, c in enumerate(cs)]
    (tmp_path / "grade").mkdir()
    write_jsonl_atomic(tmp_path / "grade" / "graded.jsonl", rows[::-1])  # order must not matter
    m = sample_mix(tmp_path)
    assert m["questions"] == 4 and m["samples_per_question"] == 4
    assert m["sampled_accuracy"] == pytest.approx(7 / 16)
    assert (m["both"], m["all_correct"], m["none_correct"], m["both_in_first_2"]) == (0.5, 0.25, 0.25, 0.25)


def test_wrong_calculation_lines_finds_wrong_annotations_without_a_reference():
    from mathreason.arith import wrong_calculation_lines

    text = "Tom has 31-2=<<31-2=31>>31 apples.\n\nHe buys 62*2=<<62*2=124>>124.\nThen 124/4=<<124/4=30>>30.\n#### 30"
    assert wrong_calculation_lines(text) == [0, 2]  # blank lines are not lines; division checked exactly
    assert wrong_calculation_lines("5+3=<<5+3=8>>8\n#### 8") == [] and wrong_calculation_lines("no equations") == []
