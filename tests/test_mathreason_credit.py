"""Per-step credit on sampled responses (mathreason.credit): step boundaries on token ids, Q of step
prefixes by rollouts, first pits, the three schedules, rollout accounting and resume.

A scripted sampler stands in for the policy: a rollout from a step prefix succeeds with a known
probability unless a planted wrong step is in the prefix, so every Q-value has a known truth. Rollouts
go through the real ``Sampler.generate`` (dedup, per-row caps) and the real grader."""

from __future__ import annotations

import math
import random

import pytest

from mathreason.credit import CreditSettings, PrefixResult, Response, estimate_credit, prefix_key, step_token_ends
from mathreason.sampling import Completion, Sampler, SamplingParams
from mathreason.stages.credit import build_responses, make_rollout_fn
from mathreason.steps import split_steps

EOS = 0


def enc(s: str) -> list[int]:
    return [ord(c) for c in s]


def dec(ids) -> str:
    return "".join(chr(i) for i in ids if i != EOS)


class Scripted(Sampler):
    """Completes ``question + prefix`` with "#### 42" (correct) with probability ``p(prefix)``, else "#### 7"."""

    backend = "scripted"

    def __init__(self, p):
        self.p = p
        self.rows: list[tuple] = []

    def _generate_rows(self, rows, params, progress):
        out = []
        for prompt, seed, cap in rows:
            self.rows.append((tuple(prompt), seed, cap))
            prefix = dec(prompt).split("\n", 1)[1]
            ok = random.Random(seed).random() < self.p(prefix)
            ids = enc("so\n#### " + ("42" if ok else "7")) + [EOS]
            finish = "stop"
            if len(ids) > cap:
                ids, finish = ids[:cap], "length"
            out.append(Completion(dec(ids), ids, finish, None, seed))
        return out


def clean_then_wrong(p_clean: float, p_wrong: float = 0.0):
    return lambda prefix: p_wrong if "WRONG" in prefix else p_clean


def make_response(qid: str, lines: list[str], answer: str, sample_index: int = 0) -> tuple[Response, dict]:
    text = "".join(f"{ln}\n" for ln in lines) + f"#### {answer}"
    ids = enc(text) + [EOS]
    steps = split_steps(dec(ids), "newline")
    r = Response(qid, sample_index, enc(f"Q {qid}:\n"), ids, step_token_ends(ids, steps, dec), 1.0 if answer == "42" else 0.0)
    return r, {"text": text}


def run(responses, sampler, *, k=5, estimator="best_of_k", schedule="linear", budget=200, folder=None, chunk=64, keep=1):
    settings = CreditSettings(rollouts=k, estimator=estimator, schedule=schedule, seed=3, budget=budget, chunk_size=chunk)
    fn = make_rollout_fn(
        sampler, dec, gold_by_id={r.problem_id: "42" for r in responses}, dataset="gsm8k",
        params=SamplingParams(temperature=1.0, max_tokens=budget), settings=settings, keep_continuations=keep, grade_workers=1,
    )
    return estimate_credit(responses, fn, settings, folder=folder, key="k")


def planted(n: int, steps: int, seed: int = 0) -> list[tuple[Response, int]]:
    """``n`` negatives of ``steps`` steps (the last is the answer line) with a wrong step at a random place."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = rng.randrange(steps)  # 0 .. steps - 1; steps - 1 = only the final answer is wrong
        lines = [("WRONG" if j == at else "ok") + f" {i} {j}" for j in range(steps - 1)]
        r, _ = make_response(f"q{i}", lines, "7")
        out.append((r, at))
    return out


# ---------------------------------------------------------------- step boundaries on token ids


def test_step_token_ends_on_a_byte_level_bpe_tokenizer(tmp_path):
    from mathreason.models import build_tiny_tokenizer

    corpus = ["Tom has 3+4 = 7 apples.\nHe gives 2 away.\n#### 5", "Ana buys 2*3 = 6 pens.\n#### 6"] * 20
    tok = build_tiny_tokenizer(corpus, 300)
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    for text in ["Tom has 3+4 = 7 apples.\nHe gives 2 away.\nSo 7-2 = 5.\n#### 5", "one line only", "a\n\nb\n#### 1"]:
        ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
        steps = split_steps(decode(ids), "newline")
        ends = step_token_ends(ids, steps, decode)
        assert ends[-1] == len(ids) and all(a < b for a, b in zip([0] + ends, ends))
        # Prefix ids are exact prefixes of the sample's ids, and decode to the steps through k.
        for k, e in enumerate(ends[:-1]):
            assert decode(ids[:e]) == "".join(steps[: k + 1])
        assert len(ends) == len(steps)
    assert step_token_ends([], [], decode) == []


def test_a_token_spanning_a_step_boundary_merges_the_empty_step():
    # Token "b\nc" starts in step 0's text? No: it starts at "b", inside step 1, and covers step 2's start.
    vocab = {1: "a\n", 2: "b\nc", 3: "\nd"}
    decode = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    ids = [1, 2, 3]
    steps = split_steps(decode(ids), "newline")  # ["a\n", "b\n", "c\n", "d"]
    assert steps == ["a\n", "b\n", "c\n", "d"]
    # token 2 starts at "b" (step 1); token 3 starts at "\n" (still step 2: "c\n"); step 3 "d" owns no token start.
    assert step_token_ends(ids, steps, decode) == [1, 2, 3]


# ---------------------------------------------------------------- Q, pits and schedules on a scripted policy


@pytest.mark.parametrize("schedule", ["linear", "all", "bisect"])
def test_pit_on_the_planted_step_and_q_of_the_last_prefix_is_the_reward(schedule):
    data = planted(40, 6, seed=1)
    sampler = Scripted(clean_then_wrong(0.8))
    rows, summary = run([r for r, _ in data], sampler, schedule=schedule)
    assert [row["pit"] for row in rows] == [at for _, at in data]
    for row, (r, at) in zip(rows, data):
        assert row["q"][-1] == r.reward == 0.0
        assert row["pit_advantage"] == -1.0 and row["advantages"][at] == -1.0
        assert row["step_ends"] == r.step_ends and row["num_steps"] == 6
    assert summary["negatives_with_pit"] == 40
    # Every rollout the policy produced belongs to a distinct prefix: rollouts = unique prefixes x K.
    assert len(sampler.rows) == summary["unique_prefixes"] * 5 == summary["rollouts_generated"]
    assert len({(p, s) for p, s, _ in sampler.rows}) == len(sampler.rows)
    # Each rollout's cap is the budget minus its prefix length.
    qlen = {r.problem_id: len(r.prompt_ids) for r, _ in data}
    for prompt, _, cap in sampler.rows:
        q = dec(prompt).split(":", 1)[0][2:]
        assert cap == 200 - (len(prompt) - qlen[q])


def test_mc_mean_q_is_within_sampling_error_of_the_truth():
    p, K = 0.6, 20
    data = planted(60, 5, seed=2)
    rows, _ = run([r for r, _ in data], Scripted(clean_then_wrong(p)), k=K, estimator="mc_mean", schedule="all")
    clean = [q for row, (_, at) in zip(rows, data) for i, q in enumerate(row["q"][:-1]) if i < at]
    clean += [row["v"] for row in rows]
    dirty = [q for row, (_, at) in zip(rows, data) for i, q in enumerate(row["q"]) if i >= at]
    se = math.sqrt(p * (1 - p) / (K * len(clean)))
    assert abs(sum(clean) / len(clean) - p) < 4 * se, (sum(clean) / len(clean), p, se)
    assert dirty and all(q == 0.0 for q in dirty)
    # Advantages are differences of consecutive Q's (Eq. 3), with Q_{-1} = V.
    for row in rows:
        prev = row["v"]
        for q, a in zip(row["q"], row["advantages"]):
            assert a == pytest.approx(q - prev)
            prev = q


def test_best_of_k_q_matches_one_minus_failure_to_the_k():
    p, K = 0.3, 3
    data = planted(80, 4, seed=3)
    rows, _ = run([r for r, _ in data], Scripted(clean_then_wrong(p)), k=K, schedule="all")
    clean = [q for row, (_, at) in zip(rows, data) for i, q in enumerate(row["q"][:-1]) if i < at] + [row["v"] for row in rows]
    truth = 1 - (1 - p) ** K
    se = math.sqrt(truth * (1 - truth) / len(clean))
    assert abs(sum(clean) / len(clean) - truth) < 4 * se


def test_linear_and_all_give_the_same_pits_under_best_of_k_even_with_recovery():
    # After the wrong step a rollout still succeeds sometimes (recovery): Q is not monotone.
    data = planted(50, 7, seed=4)
    lin, lsum = run([r for r, _ in data], Scripted(clean_then_wrong(0.5, 0.15)), k=2, schedule="linear")
    al, asum = run([r for r, _ in data], Scripted(clean_then_wrong(0.5, 0.15)), k=2, schedule="all")
    assert [r["pit"] for r in lin] == [r["pit"] for r in al]
    assert asum["rollouts_generated"] > lsum["rollouts_generated"]
    # linear stops at the first zero: later Q's are not estimated.
    for r in lin:
        if r["pit"] >= 0:
            assert all(q is None for q in r["q"][r["pit"] + 1 : -1])


@pytest.mark.parametrize("steps", [8, 12, 20])
def test_bisect_needs_at_most_log2_probes_per_response(steps):
    data = planted(40, steps, seed=5)
    lin_rows, lin = run([r for r, _ in data], Scripted(clean_then_wrong(0.9)), schedule="linear")
    bis_rows, bis = run([r for r, _ in data], Scripted(clean_then_wrong(0.9)), schedule="bisect")
    probes = math.ceil(math.log2(steps + 1))
    assert all(r["rollouts"] <= 5 * probes for r in bis_rows)
    assert bis["rounds"] <= probes
    assert bis["rollouts_generated"] < lin["rollouts_generated"]
    if steps >= 20:  # linear's cost grows like the pit position, bisect's like log2(steps)
        assert bis["rollouts_generated"] <= 0.5 * lin["rollouts_generated"], (bis["rollouts_generated"], lin["rollouts_generated"])
    assert [r["pit"] for r in bis_rows] == [r["pit"] for r in lin_rows] == [at for _, at in data]


def test_identical_prefixes_are_rolled_out_once_across_responses():
    # Two samples of one question share their first two steps (and the question's V).
    a, _ = make_response("q", ["x = 1", "y = 2", "WRONG"], "7", sample_index=0)
    b, _ = make_response("q", ["x = 1", "y = 2", "z = 3"], "7", sample_index=1)
    sampler = Scripted(clean_then_wrong(0.9))
    rows, summary = run([a, b], sampler, schedule="all", k=4)
    keys = {prefix_key(r.prompt_ids, r.prefix_ids(i)) for r in (a, b) for i in range(-1, r.num_steps - 1)}
    assert summary["unique_prefixes"] == len(keys) == 1 + 2 + 1 + 1
    assert len(sampler.rows) == len(keys) * 4
    assert rows[0]["rollouts"] == rows[1]["rollouts"] == 4 * 4  # each response's own prefixes, shared ones included


@pytest.mark.parametrize("schedule", ["linear", "all", "bisect"])
def test_negative_without_a_losing_step_has_no_pit(schedule):
    # The question is unsolvable from the start: V = 0, every Q = 0: no step loses value.
    r, _ = make_response("q", ["a", "b", "c", "d"], "7")
    rows, summary = run([r], Scripted(lambda prefix: 0.0), schedule=schedule)
    assert rows[0]["pit"] == -1 and rows[0]["no_pit_reason"] == "advantage at the pit is not negative"
    assert summary["negatives_without_pit"] == 1 and rows[0]["v"] == 0.0


def test_truncated_rollouts_are_failures():
    r, _ = make_response("q", ["a", "b"], "7")
    # The response is 13 tokens long; a budget of 16 leaves the rollouts (13 tokens) no room after late prefixes.
    rows, _ = run([r], Scripted(lambda prefix: 1.0), schedule="all", budget=len(r.token_ids) + 3)
    assert rows[0]["v"] == 1.0  # from the empty prefix the whole rollout fits
    assert rows[0]["q"][1] == 0.0  # from the prefix through step 1 it is cut by max_tokens: never correct


def test_shared_prefix_continuations_are_successful_rollouts_from_before_the_pit():
    data = planted(10, 5, seed=6)
    rows, _ = run([r for r, _ in data], Scripted(clean_then_wrong(0.9)), schedule="linear", keep=2)
    for row in rows:
        assert 1 <= len(row["pit_continuations"]) <= 2
        for ids in row["pit_continuations"]:
            assert dec(ids).endswith("#### 42")


# ---------------------------------------------------------------- resume


def test_resume_after_a_crash_gives_the_rows_of_an_uninterrupted_run(tmp_path):
    data = [r for r, _ in planted(30, 6, seed=7)]
    whole, _ = run(data, Scripted(clean_then_wrong(0.7, 0.1)), schedule="linear", folder=tmp_path / "a", chunk=7)

    class Crash(Exception):
        pass

    settings = CreditSettings(rollouts=5, schedule="linear", seed=3, budget=200, chunk_size=7)
    real = make_rollout_fn(Scripted(clean_then_wrong(0.7, 0.1)), dec, gold_by_id={r.problem_id: "42" for r in data},
                           dataset="gsm8k", params=SamplingParams(temperature=1.0, max_tokens=200), settings=settings, grade_workers=1)
    calls = {"n": 0}

    def crashing(prefixes):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Crash
        return real(prefixes)

    with pytest.raises(Crash):
        estimate_credit(data, crashing, settings, folder=tmp_path / "b", key="k")
    sampler = Scripted(clean_then_wrong(0.7, 0.1))
    resumed_fn = make_rollout_fn(sampler, dec, gold_by_id={r.problem_id: "42" for r in data}, dataset="gsm8k",
                                 params=SamplingParams(temperature=1.0, max_tokens=200), settings=settings, grade_workers=1)
    rows, summary = estimate_credit(data, resumed_fn, settings, folder=tmp_path / "b", key="k")
    assert rows == whole
    # Only the unfinished shards were rolled out again: nothing lost, nothing duplicated.
    assert len(sampler.rows) == summary["rollouts_generated_this_run"] < summary["rollouts_generated"]
    assert summary["rollouts_generated"] == summary["unique_prefixes"] * 5


def test_settings_are_checked():
    with pytest.raises(ValueError, match="mc_mean"):
        CreditSettings(estimator="mc_mean", schedule="linear")
    with pytest.raises(ValueError):
        CreditSettings(rollouts=0)
    r, _ = make_response("q", ["a"], "7")
    with pytest.raises(RuntimeError, match="expected 5"):
        estimate_credit([r], lambda prefixes: [PrefixResult([True], ["stop"], 1) for _ in prefixes], CreditSettings())


def test_build_responses_uses_the_samples_own_ids():
    ids = enc("a = 1\nb = 2\n#### 3") + [EOS]
    rows = [{"problem_id": "q", "sample_index": 2, "token_ids": ids, "correct": False, "text": "ignored"}]
    (r,) = build_responses(rows, {"q": {"prompt_ids": [5, 6]}}, dec, splitter="newline", dataset="gsm8k", max_steps=None, min_chars=None)
    assert r.token_ids == ids and r.step_ends == [6, 12, len(ids)] and r.prompt_ids == [5, 6] and r.reward == 0.0
    assert r.prefix_ids(-1) == [] and r.prefix_ids(1) == ids[:12]
