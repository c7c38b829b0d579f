"""Problem loaders (local files written here, the real copies when present, the hub path through a
test double for the network), malformed-input errors, and the prompt templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathreason import data as D
from mathreason.data import (
    DataError,
    Problem,
    get_prompt_template,
    load_gsm8k,
    load_jsonl_problems,
    load_math,
    load_math500,
    load_problems,
    save_problems_jsonl,
)


def _write(path: Path, rows: list) -> Path:
    lines = []
    for r in rows:
        lines.append(r if isinstance(r, str) else json.dumps(r))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GSM_ROWS = [
    {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
    {"question": "Tom earns $1,200 a week. How much in 2 weeks?", "answer": "2 * 1200 = 2400\n#### 2,400"},
]
MATH_ROWS = [
    {"problem": "Compute $1+1$.", "solution": "$1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra", "unique_id": "test/algebra/0.json"},
    {"problem": "Halve 1.", "solution": "It is $\\boxed{\\frac12}$.", "level": 3, "subject": "Prealgebra"},
]


# --------------------------------------------------------------------------------------------------
# data dir
# --------------------------------------------------------------------------------------------------


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.default_data_dir() == tmp_path
    monkeypatch.delenv(D.DATA_ENV)
    assert D.default_data_dir() == Path(D.__file__).resolve().parent.parent.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------------
# local files
# --------------------------------------------------------------------------------------------------


def test_load_gsm8k_local(tmp_path):
    probs = load_gsm8k("test", _write(tmp_path / "g.jsonl", GSM_ROWS))
    assert [p.answer for p in probs] == ["5", "2,400"]
    assert [p.id for p in probs] == ["gsm8k/test/0", "gsm8k/test/1"]
    assert probs[0].dataset == "gsm8k" and probs[0].source == "gsm8k"
    assert probs[0].solution == GSM_ROWS[0]["answer"]
    assert D.strip_calculator_annotations(probs[0].solution) == "2 + 3 = 5\n#### 5"


def test_load_math_local(tmp_path):
    probs = load_math("test", _write(tmp_path / "m.jsonl", MATH_ROWS))
    assert [p.answer for p in probs] == ["2", "\\frac12"]
    assert [p.level for p in probs] == ["1", "3"]
    assert [p.subject for p in probs] == ["Algebra", "Prealgebra"]
    assert probs[0].id == "test/algebra/0.json" and probs[1].id == "math/test/1"
    rows = [dict(MATH_ROWS[0], answer="2", solution="$\\boxed{3}$")]
    p = load_math("test", _write(tmp_path / "a.jsonl", rows))[0]
    assert p.answer == "2" and p.meta["boxed_answer"] == "3"  # an explicit answer field wins


@pytest.mark.parametrize(
    "bad_line, line, field, words",
    [
        ("{not json", 2, None, "invalid JSON"),
        ('["a list"]', 2, None, "JSON object"),
        ('{"answer": "#### 3"}', 2, "question", "missing"),
        ('{"question": 7, "answer": "#### 3"}', 2, "question", "expected a string"),
        ('{"question": "  ", "answer": "#### 3"}', 2, "question", "empty"),
        ('{"question": "q", "answer": "no final line"}', 2, "answer", "####"),
        ('{"question": "q", "answer": "x\\n#### "}', 2, "answer", "empty final answer"),
    ],
)
def test_gsm8k_malformed_rows_name_file_line_field(tmp_path, bad_line, line, field, words):
    path = _write(tmp_path / "g.jsonl", [GSM_ROWS[0], bad_line, GSM_ROWS[1]])
    with pytest.raises(DataError) as ei:
        load_gsm8k("test", path)
    e = ei.value
    assert e.path == str(path) and e.line == line and e.field == field
    assert str(path) in str(e) and f":{line}:" in str(e) and words in str(e)
    if field:
        assert repr(field) in str(e)
    probs = load_gsm8k("test", path, skip_malformed=True)
    assert [p.answer for p in probs] == ["5", "2,400"]
    assert len(probs.skipped) == 1 and f":{line}:" in probs.skipped[0]


def test_math_malformed_rows(tmp_path):
    rows = [
        MATH_ROWS[0],
        {"problem": "p", "solution": "no box here"},
        {"problem": "p", "solution": "empty \\boxed{} box"},
        {"problem": "p", "solution": "\\boxed{1}", "level": "hard"},
        {"solution": "\\boxed{1}"},
        MATH_ROWS[1],
    ]
    path = _write(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=r"m\.jsonl:2: field 'solution': no \\boxed"):
        load_math("test", path)
    probs = load_math("test", path, skip_malformed=True)
    assert len(probs) == 2
    assert [s.split(": field ")[1].split(":")[0] for s in probs.skipped] == ["'solution'", "'solution'", "'level'", "'problem'"]
    assert ":3:" in probs.skipped[1] and "empty" in probs.skipped[1]


def test_blank_lines_are_not_records_and_missing_file(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text("\n" + json.dumps(GSM_ROWS[0]) + "\n\n   \n" + json.dumps(GSM_ROWS[1]) + "\n")
    probs = load_gsm8k("test", path)
    assert len(probs) == 2 and not probs.skipped
    with pytest.raises(DataError, match="file not found"):
        load_gsm8k("test", tmp_path / "nope.jsonl")


def test_synthetic_jsonl(tmp_path):
    rows = [
        {"question": "Q1", "solution": "Step.\nThe answer is 12.", "id": "a"},
        {"question": "Q2", "solution": "Work.\n#### 7"},
        {"question": "Q3", "solution": "No number at all", "answer": "4"},
        {"problem": "Q4", "solution": "so $\\boxed{9}$", "dataset": "math"},
    ]
    path = _write(tmp_path / "dsyn.jsonl", rows)
    probs = load_jsonl_problems(path, dataset="gsm8k")
    assert [p.answer for p in probs] == ["12", "7", "4", "9"]
    assert [p.id for p in probs] == ["a", "synthetic/dsyn/1", "synthetic/dsyn/2", "synthetic/dsyn/3"]
    assert all(p.source == "synthetic" for p in probs)
    assert probs[3].question == "Q4"
    # without a dataset argument the rows must say
    with pytest.raises(DataError, match=r"dsyn\.jsonl:1: field 'dataset'"):
        load_jsonl_problems(path, dataset=None)
    # no answer and none extractable
    bad = _write(tmp_path / "bad.jsonl", [{"question": "Q", "solution": "I give up"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'answer': missing, and no final answer"):
        load_jsonl_problems(bad, dataset="math")
    dup = _write(tmp_path / "dup.jsonl", [rows[0], rows[0]])
    with pytest.raises(DataError, match=r"dup\.jsonl:2: field 'id': duplicate id 'a' \(first on line 1\)"):
        load_jsonl_problems(dup, dataset="gsm8k")
    assert len(load_jsonl_problems(dup, dataset="gsm8k", skip_malformed=True)) == 1


def test_save_and_load_round_trip(tmp_path):
    probs = [
        Problem("x1", "Q {with} $\\frac12$", "S\n\\boxed{1}", "1", "synthetic", "math", "5", "Algebra", {"k": [1, 2]}),
        Problem("x2", "Q2 ünïcode", "S2\n#### 3", "3", "gsm8k", "gsm8k"),
    ]
    out = tmp_path / "sub" / "p.jsonl"
    save_problems_jsonl(probs, out)
    assert list(load_jsonl_problems(out, dataset=None)) == probs
    assert list(load_problems(str(out))) == probs
    assert not list(out.parent.glob(".*tmp"))  # atomic write leaves no temp file
    assert Problem.from_dict(probs[0].to_dict()) == probs[0]


def test_load_problems_dispatch(tmp_path, monkeypatch):
    gdir = tmp_path / "gsm8k"
    mdir = tmp_path / "math"
    gdir.mkdir()
    mdir.mkdir()
    _write(gdir / "test.jsonl", GSM_ROWS)
    _write(gdir / "train.jsonl", GSM_ROWS[:1])
    _write(mdir / "hendrycks_MATH_test.jsonl", MATH_ROWS)
    _write(mdir / "prm800k_math_splits_test.jsonl", [dict(MATH_ROWS[0], answer="2")])
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert len(load_problems("gsm8k")) == 2
    assert len(load_problems("gsm8k", "train")) == 1
    assert len(load_problems("gsm8k:train")) == 1
    assert [p.answer for p in load_problems("math")] == ["2", "\\frac12"]
    m5 = load_problems("math500")
    assert m5[0].source == "math500" and m5[0].answer == "2"
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_problems("math500", "train")
    # a gsm8k-format file given by path is recognised
    assert [p.answer for p in load_problems(str(gdir / "test.jsonl"))] == ["5", "2,400"]
    with pytest.raises(ValueError, match="unknown problem set"):
        load_problems("mathematics")
    with pytest.raises(DataError, match="file not found"):
        load_problems(str(tmp_path / "missing.jsonl"))


def test_hub_rows_go_through_the_same_checks(tmp_path, monkeypatch):
    """Without a local copy the loaders call datasets.load_dataset; the network is replaced here."""
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "empty"))
    calls = []

    def fake_hub(hub_id, config, split):
        calls.append((hub_id, config, split))
        if hub_id == "openai/gsm8k":
            return GSM_ROWS + [{"question": "q", "answer": "no hashes"}]
        if hub_id == "EleutherAI/hendrycks_math":
            return [dict(MATH_ROWS[0], unique_id=None)]
        if hub_id == "HuggingFaceH4/MATH-500":
            return [dict(MATH_ROWS[0], answer="2")]
        raise AssertionError(hub_id)

    monkeypatch.setattr(D, "_hub_load", fake_hub)
    with pytest.raises(DataError, match=r"hf://openai/gsm8k/main/test:3: field 'answer'"):
        load_gsm8k("test")
    probs = load_gsm8k("test", skip_malformed=True)
    assert len(probs) == 2 and len(probs.skipped) == 1
    math = load_math("test")
    assert len(math) == 7 and len(calls) == 2 + 7  # one row per subject config
    assert load_math500()[0].source == "math500"
    assert ("openai/gsm8k", "main", "test") in calls


# --------------------------------------------------------------------------------------------------
# real copies
# --------------------------------------------------------------------------------------------------


def test_real_copies(data_dir):
    gtest = load_gsm8k("test", data_dir / "gsm8k" / "test.jsonl")
    assert len(gtest) == 1319 and gtest[0].answer == "18"
    assert sum("," in p.answer for p in gtest) == 14  # SOURCES.md: 14 answers with thousands commas
    assert len(load_gsm8k("train", data_dir / "gsm8k" / "train.jsonl")) == 7473
    mtest = load_math("test", data_dir / "math" / "hendrycks_MATH_test.jsonl")
    assert len(mtest) == 5000 and len({p.id for p in mtest}) == 5000
    assert {p.level for p in mtest} == {"1", "2", "3", "4", "5"}
    assert len({p.subject for p in mtest}) == 7
    m500 = load_math500(data_dir / "math" / "prm800k_math_splits_test.jsonl")
    assert len(m500) == 500
    by_id = {p.id: p for p in mtest}
    assert all(by_id[p.id].question == p.question and by_id[p.id].answer == p.answer for p in m500)
    assert all(p.level == by_id[p.id].level for p in m500)


def test_real_math_train_has_two_rows_with_empty_boxes(data_dir):
    path = data_dir / "math" / "hendrycks_MATH_train.jsonl"
    with pytest.raises(DataError, match=r":5530: field 'solution': the last \\boxed\{\} is empty"):
        load_math("train", path)
    probs = load_math("train", path, skip_malformed=True)
    assert len(probs) == 7498 and len(probs.skipped) == 2
    assert ":5532:" in probs.skipped[1]


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------


def test_prompt_templates():
    names = {"gsm8k-zeroshot-v1", "gsm8k-fewshot-v1", "math-zeroshot-v1", "math-fewshot-v1", "plain-v1"}
    assert names <= set(D.PROMPT_TEMPLATES)
    q = "What is $\\frac{1}{2} + {x}$ when {question} is literal?"
    assert get_prompt_template("plain-v1").render(q) == q + "\n"
    for name in names - {"plain-v1"}:
        t = get_prompt_template(name)
        out = t.render(q)
        assert q in out and out.count(q) == 1
        assert t.version == 1 and name.endswith(f"-v{t.version}")
        if t.dataset == "math":
            assert "\\boxed{}" in out
        else:
            assert "The answer is" in out
        if "fewshot" in name:
            assert len(t.fewshot) >= 4 and all(s in out for _, s in t.fewshot)
    zs = get_prompt_template("math-zeroshot-v1")
    assert zs.render("Q").rstrip().endswith("\\boxed{}.")
    fps = {get_prompt_template(n).fingerprint for n in names}
    assert len(fps) == len(names)
    assert get_prompt_template("math-fewshot-v1").fingerprint == get_prompt_template("math-fewshot-v1").fingerprint
    assert json.loads(json.dumps(zs.to_dict()))["fingerprint"] == zs.fingerprint
    with pytest.raises(KeyError, match="known: "):
        get_prompt_template("math-zeroshot-v9")
    with pytest.raises(ValueError, match="already exists"):
        D.register_prompt_template(D.PromptTemplate(name="plain-v1", version=1, template="x {question}"))
    with pytest.raises(ValueError, match="question"):
        D.PromptTemplate(name="bad-v1", version=1, template="no placeholder")
