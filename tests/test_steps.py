"""Step splitting (exact round trip, LaTeX-aware boundaries, merging, cap, registry) and the mapping of
steps onto tokens (offline byte-level BPE and a whitespace tokenizer, trained here on text written here)."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathreason.steps import (
    SPLITTERS,
    get_splitter,
    register_splitter,
    split_steps,
    step_char_spans,
    step_ids_for_text,
    token_step_ids,
)
from shared.logprobs import step_logprobs

# --------------------------------------------------------------------------------------------------
# splitting
# --------------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("ab .!?\n\n  $$\\[]{}()ABxyz012=+,;:-") + ["\\[", "\\]", "\\begin{align}", "\\end{align}", "[asy]", "[/asy]", "é", "🙂", "\r\n", "\t"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(_ALPHABET, max_size=200).map("".join),
    splitter=st.sampled_from(["newline", "latex", "auto"]),
    max_steps=st.one_of(st.none(), st.integers(1, 8)),
    min_chars=st.one_of(st.none(), st.integers(0, 30)),
)
def test_round_trip_and_cap_property(text, splitter, max_steps, min_chars):
    steps = split_steps(text, splitter, max_steps=max_steps, min_chars=min_chars)
    assert "".join(steps) == text
    assert all(steps)  # no empty steps
    if max_steps is not None:
        assert len(steps) <= max_steps
    assert not text or steps


def test_newline_splitter():
    text = "Ann has 2 apples.\nShe buys 3 more: 2 + 3 = 5.\n\n#### 5"
    assert split_steps(text, "newline") == ["Ann has 2 apples.\n", "She buys 3 more: 2 + 3 = 5.\n\n", "#### 5"]
    assert split_steps("one line", "newline") == ["one line"]
    assert split_steps("", "newline") == []
    assert split_steps("\n\nfirst\nsecond\n", "newline") == ["\n\nfirst\n", "second\n"]


def test_latex_splitter_respects_math_and_environments():
    text = (
        "Let $x = 3.5$ be given. Then $y = x. Z$ holds!\n"
        "We compute \\[a = 1. B = 2.\\] Next we use\n"
        "\\begin{align*}\nc &= 3. \\\\ D &= 4.\n\\end{align*} Finally, e.g. this works. So the answer is $\\boxed{7}$."
    )
    steps = split_steps(text, "latex", min_chars=0)
    assert "".join(steps) == text
    assert steps == [
        "Let $x = 3.5$ be given.",
        " Then $y = x. Z$ holds!\n",
        "We compute \\[a = 1. B = 2.\\] Next we use\n",
        "\\begin{align*}\nc &= 3. \\\\ D &= 4.\n\\end{align*} Finally, e.g. this works.",
        " So the answer is $\\boxed{7}$.",
    ]


def test_latex_splitter_asy_unclosed_math_and_abbreviations():
    text = "Draw it.\n[asy]\ndraw((0,0)--(1,1)). Label A.\n[/asy]\nThe area is $5$. Dr. Smith agrees. Open $math. Never closed.\nEnd."
    steps = split_steps(text, "latex", min_chars=0)
    assert steps == [
        "Draw it.\n",
        "[asy]\ndraw((0,0)--(1,1)). Label A.\n[/asy]\n",
        "The area is $5$.",
        " Dr. Smith agrees.",
        " Open $math. Never closed.\nEnd.",
    ]


def test_merging_short_pieces_and_cap():
    text = "Yes. No. This is a long enough sentence. Ok. Another long sentence here.\n"
    assert split_steps(text, "latex", min_chars=0) == ["Yes.", " No.", " This is a long enough sentence.", " Ok.", " Another long sentence here.\n"]
    assert split_steps(text, "latex", min_chars=5) == ["Yes. No. This is a long enough sentence. Ok.", " Another long sentence here.\n"]
    assert split_steps("A. Smith and B. Jones met. They talked.", "latex", min_chars=0) == ["A. Smith and B. Jones met.", " They talked."]
    lines = "".join(f"line {i} with some words\n" for i in range(50))
    capped = split_steps(lines, "newline", max_steps=7)
    assert len(capped) == 7 and "".join(capped) == lines
    lengths = [len(s) for s in capped]
    assert max(lengths) <= 2.5 * min(lengths)  # roughly balanced groups
    assert all(s.endswith("\n") for s in capped)  # groups are made of whole pieces
    with pytest.raises(ValueError):
        split_steps(lines, "newline", max_steps=0)


def test_auto_and_registry():
    gsm = "2 + 3 = 5.\nThe answer is 5."
    math = "We have $x=1$. Then $x+1=2$.\nThe final answer is $\\boxed{2}$."
    assert split_steps(gsm, dataset="gsm8k") == split_steps(gsm, "newline")
    assert split_steps(math, dataset="math") == split_steps(math, "latex")
    assert split_steps(math) == split_steps(math, "latex")
    assert split_steps(gsm) == split_steps(gsm, "newline")
    assert {"newline", "latex", "auto"} <= set(SPLITTERS)
    with pytest.raises(KeyError, match="known"):
        get_splitter("sentences")
    register_splitter("test-every-word", lambda text, **kw: re.findall(r"\S+\s*|\s+", text))
    assert split_steps("a b  c", "test-every-word") == ["a ", "b  ", "c"]
    register_splitter("test-broken", lambda text, **kw: [text.strip()])
    with pytest.raises(ValueError, match="round trip"):
        split_steps(" x ", "test-broken")
    with pytest.raises(ValueError, match="already registered"):
        register_splitter("latex", lambda text, **kw: [text])


def _balanced_math(step: str) -> bool:
    s = step.replace("\\\\", "").replace("\\$", "")
    return (
        s.count("$") % 2 == 0
        and s.count("\\[") == s.count("\\]")
        and len(re.findall(r"\\begin\{", s)) == len(re.findall(r"\\end\{", s))
    )


def test_real_solutions_split(data_dir):
    from mathreason.data import load_gsm8k, load_math

    gsm = load_gsm8k("test", data_dir / "gsm8k" / "test.jsonl")
    for p in gsm:
        steps = split_steps(p.solution, dataset="gsm8k")
        assert "".join(steps) == p.solution
        assert len(steps) == sum(1 for line in p.solution.split("\n") if line.strip())  # one step per line
    math = load_math("test", data_dir / "math" / "hendrycks_MATH_test.jsonl")
    n_steps = 0
    for p in math:
        steps = split_steps(p.solution, dataset="math", max_steps=20)
        assert "".join(steps) == p.solution and 1 <= len(steps) <= 20
        n_steps += len(steps)
        if _balanced_math(p.solution):
            assert all(_balanced_math(s) for s in steps), (p.id, steps)
    assert 2.5 < n_steps / len(math) < 10


# --------------------------------------------------------------------------------------------------
# token mapping
# --------------------------------------------------------------------------------------------------


def test_token_step_ids_rules():
    spans = [(0, 5), (5, 9), (12, 15)]
    offsets = [(0, 0), (0, 2), (2, 6), (6, 9), (9, 11), (11, 13), (13, 15), (15, 16), (4, 4)]
    assert token_step_ids(offsets, spans) == [-1, 0, 0, 1, -1, -1, 2, -1, -1]
    assert step_char_spans(["ab", "", "cde"]) == [(0, 2), (2, 2), (2, 5)]
    with pytest.raises(ValueError):
        token_step_ids([(0, 1)], [(0, 5), (3, 8)])


def _training_text() -> list[str]:
    """Text written by the test for training the tokenizers: GSM8K- and MATH-like lines."""
    out = []
    for i in range(300):
        a, b = i % 17 + 2, i % 7 + 3
        out.append(f"Ann has {a} apples and buys {b} more, so she has {a} + {b} = {a + b} apples.\n")
        out.append(f"Let $x = \\frac{{{a}}}{{{b}}}$. Then $x^2 = \\frac{{{a * a}}}{{{b * b}}}$, e.g. café and 🙂.\n")
        out.append(f"\\[ \\sqrt{{{a * a}}} = {a} \\]\nThe answer is $\\boxed{{{a}}}$.\n")
    return out


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<bos>", "<eos>"]
    )
    tok.train_from_iterator(_training_text(), trainer)
    return tok


@pytest.fixture(scope="module")
def whitespace_tok():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(_training_text(), trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    return tok


_SAMPLES = [
    "Ann has 5 apples and buys 3 more.\nShe has 5 + 3 = 8 apples.\n#### 8",
    "Let $x = \\frac{3}{4}$. Then $x^2 = \\frac{9}{16}$, e.g. café 🙂.\n\\[ y = 2. \\]\nThe answer is $\\boxed{\\frac{9}{16}}$.",
    "  leading spaces. Unknown wørds ĳ and ZZZ!\n\n\nEnd? Yes.",
]


def _check_round_trip(tok, text, steps, prefix=""):
    full = prefix + text
    ids, sids = step_ids_for_text(tok, full, steps)
    assert len(ids) == len(sids)
    if prefix:
        n_prefix = sum(1 for s in sids if s == -1)
        assert n_prefix >= 1 and all(s == -1 for s in sids[:n_prefix]) and -1 not in sids[n_prefix:]
    owned = [s for s in sids if s >= 0]
    assert owned == sorted(owned)  # step ids never go back
    decoded = "".join(tok.decode([i for i, s in zip(ids, sids) if s == k]) for k in range(len(steps)))
    assert decoded == text
    return ids, sids


@pytest.mark.parametrize("text", _SAMPLES)
@pytest.mark.parametrize("splitter", ["newline", "latex"])
def test_bpe_round_trip(bpe, text, splitter):
    steps = split_steps(text, splitter, min_chars=0)
    _check_round_trip(bpe, text, steps)
    _check_round_trip(bpe, text, steps, prefix="Question: what is it?\nAnswer:")


def test_bpe_round_trip_real_solutions(bpe, data_dir):
    from mathreason.data import load_gsm8k, load_math

    probs = load_gsm8k("test", data_dir / "gsm8k" / "test.jsonl")[::20] + load_math(
        "test", data_dir / "math" / "hendrycks_MATH_test.jsonl"
    )[::50]
    for p in probs:
        steps = split_steps(p.solution, dataset=p.dataset, max_steps=20)
        _check_round_trip(bpe, p.solution, steps, prefix=p.question + "\n")


def test_transformers_fast_tokenizer_gives_the_same_ids(bpe):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>")
    for text in _SAMPLES:
        steps = split_steps(text, "latex")
        assert step_ids_for_text(fast, text, steps) == step_ids_for_text(bpe, text, steps)


def test_whitespace_tokenizer_tokens_stay_inside_their_step(whitespace_tok):
    for text in _SAMPLES:
        steps = split_steps(text, "latex", min_chars=0)
        spans = step_char_spans(steps)
        enc = whitespace_tok.encode(text)
        ids, sids = step_ids_for_text(whitespace_tok, text, steps)
        assert ids == enc.ids
        for (a, b), k in zip(enc.offsets, sids):
            assert k >= 0 and spans[k][0] <= a and b <= spans[k][1]  # splits fall on white space
        for k, step in enumerate(steps):
            words = [text[a:b] for (a, b), s in zip(enc.offsets, sids) if s == k]
            assert "".join(words) == re.sub(r"\s", "", step)


def test_step_ids_feed_shared_step_logprobs(bpe):
    text = _SAMPLES[1]
    steps = split_steps(text, "latex")
    prompt = "Q: compute.\n"
    ids, sids = step_ids_for_text(bpe, prompt + text, steps)
    gen = torch.Generator().manual_seed(0)
    logps_BT = -torch.rand(1, len(ids), generator=gen)
    sids_BT = torch.tensor([sids])
    out_BS = step_logprobs(logps_BT, sids_BT, len(steps))
    for k in range(len(steps)):
        expected = sum(float(logps_BT[0, t]) for t in range(len(ids)) if sids[t] == k)
        assert abs(float(out_BS[0, k]) - expected) < 1e-5
    with pytest.raises(ValueError, match="start="):
        step_ids_for_text(bpe, "unrelated text", steps)
    ids2, sids2 = step_ids_for_text(bpe, prompt + text + "<eos>", steps, start=len(prompt))
    assert ids2 == ids + [bpe.token_to_id("<eos>")] and sids2 == sids + [-1]
