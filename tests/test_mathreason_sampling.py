"""Sampling backends: output schema, per-row seeded sampling, stop strings (text and ids agree),
per-request token caps, finish reasons, dedup, backend selection, the sampler hosted in a subprocess,
and the vLLM path (marked; runs on a GPU with vLLM)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO_ROOT
from mathreason import sampling as sampling_module
from mathreason.config import load_config
from mathreason.sampling import (
    Completion,
    Request,
    SamplingParams,
    SubprocessSampler,
    TransformersSampler,
    _from_vllm,
    _SeededSampling,
    align_to_stop,
    make_sampler,
    resolve_backend,
    row_seed,
    vllm_available,
)
from mathreason.stages import Context


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset's random Llama and tokenizer (built offline into a temporary run folder)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("tiny_sampling")
    path = Context(load_config("tiny", [f"run_dir={run}"])).base_model()
    sampler = make_sampler(path, backend="transformers", batch_size=8)
    return path, sampler


def _prompts(tok, n=3):
    texts = ["Tom has 3 apples and gets 4 more.", "How many pens?", "Ana buys 5 bags with 2 shells in each bag. How"]
    return [tok(t).input_ids for t in texts[:n]]


def test_row_seed_is_deterministic_and_distinct():
    assert row_seed(0, "sample", "gsm8k/train/1", 0) == row_seed(0, "sample", "gsm8k/train/1", 0)
    seeds = {row_seed(0, "sample", f"p{i}", j) for i in range(50) for j in range(8)}
    assert len(seeds) == 400
    assert all(0 <= s < 2**63 for s in seeds)
    assert row_seed(1, "sample", "p", 0) != row_seed(0, "sample", "p", 0)


def test_schema_and_reproducibility(tiny):
    path, s = tiny
    prompts = _prompts(s.tokenizer)
    reqs = [Request(p, [row_seed(0, p_i, j) for j in range(3)]) for p_i, p in enumerate(prompts)]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=12)
    out = s.generate(reqs, params)
    again = s.generate(reqs, params)
    assert [[c.to_dict() for c in cs] for cs in out] == [[c.to_dict() for c in cs] for cs in again]
    assert [len(cs) for cs in out] == [3, 3, 3]
    for req, cs in zip(reqs, out):
        for seed, c in zip(req.seeds, cs):
            assert isinstance(c, Completion) and c.seed == seed
            assert set(c.to_dict()) == {"text", "token_ids", "finish_reason", "stop_reason", "seed"}
            assert c.finish_reason in ("stop", "length")
            assert 1 <= len(c.token_ids) <= 12
            assert c.text == s.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            if c.finish_reason == "length":
                assert len(c.token_ids) == 12
    # Different seeds of one prompt give different samples (a random model has high entropy).
    assert len({tuple(c.token_ids) for c in out[0]}) > 1


def test_seeded_sampling_processor_draws_depend_only_on_the_row():
    torch.manual_seed(0)
    logits = torch.randn(3, 11)

    def gens(seeds):
        out = []
        for s in seeds:
            g = torch.Generator()
            g.manual_seed(s)
            out.append(g)
        return out

    a = _SeededSampling(0.8, 1.0, gens([1, 2, 3]))(None, logits)
    b = _SeededSampling(0.8, 1.0, gens([3, 1]))(None, logits[[2, 0]])
    assert torch.equal(a[[2, 0]], b)


def test_seeded_sampling_matches_the_softmax_distribution_and_the_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    T, top_p, draws = 0.7, 0.9, 6000
    probs = torch.softmax(logits[0] / T, -1)
    order = torch.argsort(probs, descending=True)
    before = torch.cumsum(probs[order], 0) - probs[order]
    keep = order[before < top_p]
    target = torch.zeros_like(probs)
    target[keep] = probs[keep] / probs[keep].sum()
    g = torch.Generator()
    g.manual_seed(123)
    proc = _SeededSampling(T, top_p, [g])
    counts = torch.zeros(5)
    for _ in range(draws):
        counts[proc(None, logits).argmax(-1)] += 1
    freq = counts / draws
    assert torch.all(counts[target == 0] == 0), "a token outside the nucleus was sampled"
    # Every frequency within 5 binomial standard errors of its probability.
    se = torch.sqrt(target * (1 - target) / draws)
    assert torch.all((freq - target).abs() <= 5 * se + 1e-9), (freq, target)


def test_greedy_equals_transformers_greedy_and_ignores_seeds(tiny):
    path, s = tiny
    prompts = _prompts(s.tokenizer, 2)
    out = s.generate([Request(p, [5, 6]) for p in prompts], SamplingParams(temperature=0.0, max_tokens=10))
    for p, cs in zip(prompts, out):
        ref = s.model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=10, pad_token_id=s.pad_id)[0, len(p) :].tolist()
        assert cs[0].token_ids == cs[1].token_ids
        eos = s.tokenizer.eos_token_id
        cut = ref.index(eos) + 1 if eos in ref else len(ref)
        assert cs[0].token_ids == ref[:cut]
        assert [c.seed for c in cs] == [5, 6]


@contextlib.contextmanager
def _counting_rows(s):
    """Record the rows handed to ``s._generate_rows`` per call."""
    calls: list[list] = []
    original = s._generate_rows

    def counting(rows, params, progress):
        calls.append(list(rows))
        return original(rows, params, progress)

    s._generate_rows = counting
    try:
        yield calls
    finally:
        del s._generate_rows


def test_identical_rows_are_generated_once(tiny):
    path, s = tiny
    with _counting_rows(s) as calls:
        p = _prompts(s.tokenizer, 1)[0]
        out = s.generate([Request(p, [1, 2]), Request(p, [2, 3])], SamplingParams(temperature=1.0, max_tokens=5))
        assert [len(c) for c in calls] == [3]
        assert out[0][1].token_ids == out[1][0].token_ids
        s.generate([Request(p, [1, 2, 3])], SamplingParams(temperature=0.0, max_tokens=5))
        assert len(calls[-1]) == 1  # greedy: one row whatever the seeds
        # The effective cap is part of the key: same prompt and seed, other cap = another row; an explicit cap
        # equal to params.max_tokens is the same row as no cap.
        s.generate(
            [Request(p, [1], max_tokens=2), Request(p, [1]), Request(p, [1], max_tokens=5), Request(p, [1], max_tokens=9)],
            SamplingParams(temperature=1.0, max_tokens=5),
        )
        assert sorted(cap for _, _, cap in calls[-1]) == [2, 5]
        s.generate([Request(p, [1, 2], max_tokens=2), Request(p, [3])], SamplingParams(temperature=0.0, max_tokens=5))
        assert sorted(cap for _, _, cap in calls[-1]) == [2, 5]


# ---------------------------------------------------------------- stop strings: text and ids agree

PHRASE = "Tom has 3 apples and gets 4 more."


@contextlib.contextmanager
def _scripted(script, prompt_len):
    """Make the seeded sampler emit ``script`` (token ids) as the first generated tokens of a single row."""
    original = sampling_module._SeededSampling.__call__

    def patched(self, input_ids, scores):
        step = input_ids.shape[1] - prompt_len
        scores = scores.clone()
        if step < len(script):
            scores[:, script[step]] = 1e4
        return original(self, input_ids, scores)

    sampling_module._SeededSampling.__call__ = patched
    try:
        yield
    finally:
        sampling_module._SeededSampling.__call__ = original


def _phrase_ids(tok):
    ids = tok(PHRASE, add_special_tokens=False).input_ids
    pieces = [tok.decode([t]) for t in ids]
    # The cases below rely on how the tiny tokenizer splits the phrase.
    assert pieces[:12] == ["T", "o", "m", " has", " ", "3", " a", "p", "p", "l", "es", " a"], pieces
    return ids


def test_align_to_stop_on_a_token_boundary_and_mid_token(tiny):
    path, s = tiny
    tok = s.tokenizer
    ids = _phrase_ids(tok)
    # "3 ap" starts on a token boundary (the token "3"): everything before it is kept, text is exact.
    assert align_to_stop(ids, "Tom has ", tok) == (ids[:5], "Tom has ")
    # "s a" starts inside the token "es": that straddling token is dropped, and the text is its decode.
    assert align_to_stop(ids, "Tom has 3 apple", tok) == (ids[:10], "Tom has 3 appl")
    # "as" starts inside " has"; a stop string at the very start keeps nothing.
    assert align_to_stop(ids, "Tom h", tok) == (ids[:3], "Tom")
    assert align_to_stop(ids, "", tok) == ([], "")
    # Special tokens decode to nothing: one just before the stop string is kept (longest prefix), one after is not.
    eos = tok.eos_token_id
    assert align_to_stop(ids[:5] + [eos] + ids[5:], "Tom has ", tok) == (ids[:5] + [eos], "Tom has ")
    # An incomplete multi-byte character: its leading byte tokens decode to U+FFFD and straddle the stop string.
    euro = tok("x\u20acy", add_special_tokens=False).input_ids
    assert tok.decode(euro) == "x\u20acy" and len(euro) >= 3
    assert align_to_stop(euro, "x", tok) == (euro[:1], "x")
    kept, text = align_to_stop(euro, "x\u20ac", tok)
    assert text == "x\u20ac" and kept == euro[: len(kept)] and tok.decode(kept) == text


def test_a_stop_string_hit_cuts_text_and_ids_alike(tiny):
    """Through model.generate: the tokens that straddle or complete the stop string are not in token_ids."""
    path, s = tiny
    tok = s.tokenizer
    ids = _phrase_ids(tok)
    p = _prompts(tok, 1)[0]
    cases = [
        ("3 ap", ids[:5], "Tom has "),  # starts on a token boundary
        ("s a", ids[:10], "Tom has 3 appl"),  # starts inside "es"
        ("as 3", ids[:3], "Tom"),  # starts inside " has"
    ]
    for stop, want_ids, want_text in cases:
        with _scripted(ids, len(p)):
            free = s.generate([Request(p, [1])], SamplingParams(temperature=1.0, max_tokens=20))[0][0]
            cut = s.generate([Request(p, [1])], SamplingParams(temperature=1.0, max_tokens=20, stop=("zzz", stop)))[0][0]
        assert free.token_ids == ids[:20] and free.finish_reason == "length"
        assert (cut.token_ids, cut.text, cut.finish_reason, cut.stop_reason) == (want_ids, want_text, "stop", stop)
        assert cut.text == tok.decode(cut.token_ids, skip_special_tokens=True)


def test_stop_strings_are_matched_in_the_generated_text_only(tiny):
    """A stop string spanning the prompt's end and the first generated token, or special tokens' text, does
    not stop a row (transformers' own stop_strings would cut such a row short without a hit, as vLLM does not)."""
    path, s = tiny
    tok = s.tokenizer
    ids = _phrase_ids(tok)
    p = tok("How many pens?\n").input_ids
    script = ids[:4] + [tok.pad_token_id] + ids[4:]
    with _scripted(script, len(p)):
        params = SamplingParams(temperature=1.0, max_tokens=8, stop=("\nTom", "<pad>", "has<pad>"))
        c = s.generate([Request(p, [1])], params)[0][0]
    assert (c.token_ids, c.finish_reason, c.stop_reason) == (script[:8], "length", None)
    assert c.text == "Tom has 3 a"


def test_vllm_outputs_are_converted_with_the_same_rule(tiny):
    """vLLM reports text without the stop string and ids with the tokens that completed it."""
    path, s = tiny
    tok = s.tokenizer
    ids = _phrase_ids(tok)
    eos = tok.eos_token_id
    hit = SimpleNamespace(text="Tom has 3 apple", token_ids=ids[:12], finish_reason="stop", stop_reason="s a")
    assert _from_vllm(hit, tok, 5) == Completion("Tom has 3 appl", ids[:10], "stop", "s a", 5)
    hit = SimpleNamespace(text="Tom has ", token_ids=ids[:7], finish_reason="stop", stop_reason="3 ap")
    assert _from_vllm(hit, tok, 5) == Completion("Tom has ", ids[:5], "stop", "3 ap", 5)
    ended = SimpleNamespace(text="Tom", token_ids=ids[:3] + [eos], finish_reason="stop", stop_reason=None)
    assert _from_vllm(ended, tok, 5) == Completion("Tom", ids[:3] + [eos], "stop", None, 5)
    by_token = SimpleNamespace(text="Tom", token_ids=ids[:3] + [eos], finish_reason="stop", stop_reason=eos)
    assert _from_vllm(by_token, tok, 5).stop_reason is None
    long = SimpleNamespace(text="Tom has", token_ids=ids[:4], finish_reason="length", stop_reason=None)
    assert _from_vllm(long, tok, 5) == Completion("Tom has", ids[:4], "length", None, 5)


def _expected(free_ids, cap, stop, tok, eos):
    """Brute-force oracle: a row's completion from the same row generated without stop strings and with a
    larger cap (the longest fitting prefix is found by trying every prefix)."""
    gen = list(free_ids[:cap])
    eos_at = gen.index(eos) if eos in gen else None
    body = gen if eos_at is None else gen[:eos_at]
    text = tok.decode(body, skip_special_tokens=True)
    hits = [(text.find(x), i, x) for i, x in enumerate(stop) if x in text]
    if hits:
        pos, _, x = min(hits)
        k = max(j for j in range(len(body) + 1) if text[:pos].startswith(tok.decode(body[:j], skip_special_tokens=True)))
        return tok.decode(body[:k], skip_special_tokens=True), body[:k], "stop", x, pos
    if eos_at is not None:
        return text, gen[: eos_at + 1], "stop", None, None
    assert len(gen) == cap
    return text, body, "length", None, None


def test_text_equals_the_decoded_ids_for_random_samples_with_stops_and_caps(tiny):
    path, s = tiny
    tok = s.tokenizer
    eos = tok.eos_token_id
    prompts = [tok(t).input_ids for t in [PHRASE, "How many pens?", "Ana buys 5 bags", "x", "Sum 2 and 2.", "Q:", "A\nB", "7"]]
    seeds = iter(range(1000, 2000))
    big = 24
    caps = [None, 24, 17, 9, 5, 2, 1, 13]
    reqs = [Request(p, [next(seeds) for _ in range(4)], max_tokens=caps[i]) for i, p in enumerate(prompts)]
    base = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=big)
    # The same rows (same batches) without caps or stop strings: the reference every row is a cut of.
    free = s.generate([Request(r.prompt_ids, r.seeds) for r in reqs], base)
    # Stop strings: "\n", "apples", and pieces of free samples that start inside a multi-character token (from
    # even rows) or on a token boundary (odd rows), so that both cases occur.
    stop = ["\n", "apples"]
    specials = set(tok.all_special_ids)
    for i, f in enumerate(fs for cs in free[:4] for fs in cs[:2]):
        for t in range(1, len(f.token_ids) - 1):
            a, b = tok.decode(f.token_ids[t : t + 1]), tok.decode(f.token_ids[t + 1 : t + 2])
            if f.token_ids[t] not in specials and f.token_ids[t + 1] not in specials and len(a) >= 2 and (a + b).isprintable():
                stop.append(a[1:] + b[:1] if i % 2 == 0 else a + b[:1])
                break
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=big, stop=tuple(stop))
    out = s.generate(reqs, params)
    seen = {"straddle": 0, "boundary": 0, "length": 0, "eos": 0}
    for req, cs, fs in zip(reqs, out, free):
        cap = req.cap(params)
        for c, f in zip(cs, fs):
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            text, ids, finish, reason, pos = _expected(f.token_ids, cap, params.stop, tok, eos)
            assert (c.text, c.token_ids, c.finish_reason, c.stop_reason) == (text, ids, finish, reason)
            assert len(c.token_ids) <= cap
            if reason is not None:
                seen["straddle" if len(c.text) < pos else "boundary"] += 1
            elif finish == "length":
                seen["length"] += 1
            else:
                seen["eos"] += 1
    assert seen["straddle"] >= 1 and seen["boundary"] >= 1 and seen["length"] >= 1, seen


# ---------------------------------------------------------------- per-request token caps


def test_per_request_caps_cut_rows_exactly(tiny):
    path, s = tiny
    tok = s.tokenizer
    p1, p2 = _prompts(tok, 2)
    seeds = [3, 4, 5]
    params = SamplingParams(temperature=1.0, max_tokens=12)
    reqs = [
        Request(p1, seeds, max_tokens=3),
        Request(p2, seeds, max_tokens=7),
        Request(p1, seeds),
        Request(p2, seeds, max_tokens=50),
    ]
    out = s.generate(reqs, params)  # one batch mixing caps 3, 7 and 12
    checked = 0
    for capped, full, m in ((out[0], out[2], 3), (out[1], out[3], 7)):
        for c, f in zip(capped, full):
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            if len(f.token_ids) > m:  # the longer row did not stop within m tokens
                assert c.token_ids == f.token_ids[:m] and c.finish_reason == "length" and c.stop_reason is None
                checked += 1
            else:
                assert c.to_dict() == f.to_dict()
    assert checked >= 4
    for c in out[3]:  # min(12, 50) = 12
        assert len(c.token_ids) <= 12
        assert (c.finish_reason == "length") == (len(c.token_ids) == 12 and c.token_ids[-1] != tok.eos_token_id)
    # The same holds across calls with the same rows, and for greedy decoding.
    alone = s.generate([Request(p1, seeds, max_tokens=3)], params)[0]
    longer = s.generate([Request(p1, seeds, max_tokens=40)], params)[0]
    assert [c.token_ids for c in alone] == [c.token_ids[:3] for c in longer]
    g = s.generate([Request(p2, [0], max_tokens=1), Request(p2, [0])], SamplingParams(temperature=0.0, max_tokens=6))
    assert g[0][0].token_ids == g[1][0].token_ids[:1] and g[0][0].finish_reason == "length"


def test_a_stop_string_after_the_cap_does_not_count(tiny):
    path, s = tiny
    tok = s.tokenizer
    ids = _phrase_ids(tok)
    p = _prompts(tok, 1)[0]
    with _scripted(ids, len(p)):
        # "s a" is completed by token 12; a cap of 10 ends before it, a cap of 12 reaches it.
        short = s.generate([Request(p, [1], max_tokens=10)], SamplingParams(temperature=1.0, max_tokens=20, stop=("s a",)))[0][0]
        reach = s.generate([Request(p, [1], max_tokens=12)], SamplingParams(temperature=1.0, max_tokens=20, stop=("s a",)))[0][0]
    assert (short.token_ids, short.text, short.finish_reason, short.stop_reason) == (ids[:10], "Tom has 3 appl", "length", None)
    assert (reach.token_ids, reach.text, reach.finish_reason, reach.stop_reason) == (ids[:10], "Tom has 3 appl", "stop", "s a")


def test_eos_finishes_with_the_eos_id_included(tiny):
    path, s = tiny
    eos = s.tokenizer.eos_token_id

    class ForceEos:
        """Make EOS the argmax from the third generated token on."""

        def __init__(self, start):
            self.start = start

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] >= self.start + 2:
                scores[:, eos] = 1e4
            return scores

    from mathreason import sampling as sampling_module

    p = _prompts(s.tokenizer, 1)[0]
    original = sampling_module._SeededSampling.__call__
    force = ForceEos(len(p))

    def patched(self, input_ids, scores):
        return original(self, input_ids, force(input_ids, scores))

    sampling_module._SeededSampling.__call__ = patched
    try:
        c = s.generate([Request(p, [1])], SamplingParams(temperature=1.0, max_tokens=20))[0][0]
    finally:
        sampling_module._SeededSampling.__call__ = original
    assert c.finish_reason == "stop" and c.stop_reason is None
    assert c.token_ids[-1] == eos and len(c.token_ids) == 3
    assert eos not in c.token_ids[:-1]


def test_params_and_requests_validate():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError):
        Request([], [1])
    with pytest.raises(ValueError):
        Request([1], [])
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="max_tokens"):
            Request([1], [1], max_tokens=bad)
    r = Request([1], [1], max_tokens=4)
    assert r.cap(SamplingParams(max_tokens=10)) == 4 and r.cap(SamplingParams(max_tokens=3)) == 3
    assert Request([1], [1]).cap(SamplingParams(max_tokens=10)) == 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_backend_selection_on_cpu(tiny):
    assert not vllm_available()
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(RuntimeError, match="not available"):
        resolve_backend("vllm")
    assert type(tiny[1]) is TransformersSampler  # isolate=None: transformers stays in this process


def test_vllm_samplers_are_isolated_by_default(monkeypatch):
    """isolate=None hosts exactly the vLLM backend in a subprocess; True/False force either way."""
    made = []

    class Hosted:
        def __init__(self, model_path, **options):
            made.append(("subprocess", options["backend"]))

    monkeypatch.setattr(sampling_module, "SubprocessSampler", Hosted)
    monkeypatch.setattr(sampling_module, "VLLMSampler", lambda *a, **k: made.append(("in-process", "vllm")))
    monkeypatch.setattr(sampling_module, "resolve_backend", lambda name: "vllm")
    make_sampler("m")
    make_sampler("m", isolate=False)
    monkeypatch.setattr(sampling_module, "resolve_backend", lambda name: "transformers")
    make_sampler("m", isolate=True)
    assert made == [("subprocess", "vllm"), ("in-process", "vllm"), ("subprocess", "transformers")]


# ---------------------------------------------------------------- a sampler in its own process


@pytest.fixture(scope="module")
def isolated(tiny):
    """The tiny model's transformers sampler hosted in a spawned child (one thread, like the in-process one)."""
    path, _ = tiny
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch in the child
    try:
        s = make_sampler(path, backend="transformers", batch_size=8, isolate=True)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    yield s
    s.close()


def test_an_isolated_sampler_returns_the_in_process_rows(tiny, isolated):
    path, s = tiny
    assert isinstance(isolated, SubprocessSampler) and isolated.backend == "transformers"
    assert isolated.process.is_alive() and isolated.process.pid != os.getpid()
    prompts = _prompts(s.tokenizer)
    reqs = [Request(p, [row_seed(9, i, j) for j in range(3)], max_tokens=[None, 4, 9][i]) for i, p in enumerate(prompts)]
    sampled = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=10, stop=("e", "\n"))
    for params in (sampled, SamplingParams(temperature=0.0, max_tokens=6)):
        here = s.generate(reqs, params)
        there = isolated.generate(reqs, params)
        assert [[c.to_dict() for c in cs] for cs in there] == [[c.to_dict() for c in cs] for cs in here]


def test_an_error_in_the_child_is_raised_here_and_the_child_keeps_serving(tiny, isolated):
    path, s = tiny
    with pytest.raises(RuntimeError, match=r"(?s)failed:.*Traceback.*(IndexError|index out of range)"):
        isolated.generate([Request([1, 10**6], [1])], SamplingParams(max_tokens=2))  # no such token id
    p = _prompts(s.tokenizer, 1)[0]
    ok = isolated.generate([Request(p, [1])], SamplingParams(max_tokens=3))
    assert ok == s.generate([Request(p, [1])], SamplingParams(max_tokens=3))


def test_close_ends_the_child(isolated):
    pid = isolated.process.pid
    isolated.close()
    assert not isolated.process.is_alive() and isolated.process.exitcode == 0  # it exited by itself
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped
    isolated.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        isolated.generate([Request([1], [1])], SamplingParams(max_tokens=2))


def test_a_child_that_cannot_start_raises_its_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(RuntimeError, match=r"(?s)could not start the transformers sampler.*Traceback.*no-such-model"):
        make_sampler(str(missing), backend="transformers", isolate=True)


def test_a_child_that_dies_raises_instead_of_hanging(tiny):
    path, s = tiny
    iso = SubprocessSampler(path, backend="transformers", batch_size=8)
    try:
        os.kill(iso.process.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="killed by signal 9"):
            iso.generate([Request([1, 2], [1])], SamplingParams(max_tokens=2))
        assert not iso.process.is_alive()
        with pytest.raises(RuntimeError, match="closed"):
            iso.generate([Request([1, 2], [1])], SamplingParams(max_tokens=2))
    finally:
        iso.close()


@pytest.mark.vllm
def test_vllm_backend_schema_and_seeds(tiny):
    """On a GPU with vLLM: hosted in a subprocess by default, same schema as the transformers backend (text ==
    decode(ids), per-request caps, stop strings), seeds honoured, greedy agrees; closing ends the process."""
    path, hf = tiny
    tok = hf.tokenizer
    v = make_sampler(path, backend="vllm", gpu_memory_utilization=0.3, max_model_len=512, dtype="float32")
    assert isinstance(v, SubprocessSampler) and v.backend == "vllm"
    try:
        prompts = _prompts(tok)
        reqs = [Request(p, [11, 12, 13], max_tokens=[None, 5, 9][i]) for i, p in enumerate(prompts)]
        params = SamplingParams(temperature=1.0, max_tokens=16)
        a = v.generate(reqs, params)
        b = v.generate(reqs, params)
        assert [[c.token_ids for c in cs] for cs in a] == [[c.token_ids for c in cs] for cs in b]
        for req, cs in zip(reqs, a):
            for c in cs:
                assert c.finish_reason in ("stop", "length") and 1 <= len(c.token_ids) <= req.cap(params)
                assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        stops = SamplingParams(temperature=1.0, max_tokens=16, stop=("e", "a", "\n"))
        for req, cs in zip(reqs, v.generate(reqs, stops)):
            for c in cs:
                assert c.text == tok.decode(c.token_ids, skip_special_tokens=True) and len(c.token_ids) <= req.cap(stops)
                if c.stop_reason is not None:
                    assert c.finish_reason == "stop" and not any(x in c.text for x in stops.stop)
        g_v = v.generate(reqs, SamplingParams(temperature=0.0, max_tokens=16))
        g_h = hf.generate(reqs, SamplingParams(temperature=0.0, max_tokens=16))
        agree = sum(x[0].token_ids == y[0].token_ids for x, y in zip(g_v, g_h))
        assert agree >= len(reqs) - 1  # float32 on both sides; allow one near-tie
    finally:
        v.close()
    assert not v.process.is_alive()


def test_throughput_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "sampling_throughput.py"), "--prompts", "2", "--n", "2",
           "--max-tokens", "4", "--threads", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tmp_path)
    report = json.loads(out.read_text())
    by_backend = {r["backend"]: r for r in report["results"]}
    assert by_backend["transformers"]["sequences"] == 4
    assert 0 < by_backend["transformers"]["generated_tokens"] <= 16 and by_backend["transformers"]["tokens_per_s"] > 0
    assert "vllm" in by_backend


def test_the_checkpoint_generation_config_does_not_leak_into_decoding(tiny):
    """A checkpoint's generation_config (do_sample, temperature, repetition_penalty, ...) must not change
    our greedy or seeded decoding, and is left as it was."""
    path, s = tiny
    p = _prompts(s.tokenizer, 1)[0]
    reqs = [Request(p, [1, 2])]
    ref_g = s.generate(reqs, SamplingParams(temperature=0.0, max_tokens=10))
    ref_s = s.generate(reqs, SamplingParams(temperature=0.7, max_tokens=10))
    gc = s.model.generation_config
    saved = gc.to_dict()
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k, gc.repetition_penalty = True, 0.6, 0.5, 3, 1.3
    try:
        out_g = s.generate(reqs, SamplingParams(temperature=0.0, max_tokens=10))
        out_s = s.generate(reqs, SamplingParams(temperature=0.7, max_tokens=10))
        assert s.model.generation_config is gc and gc.repetition_penalty == 1.3
    finally:
        for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty"):
            setattr(gc, k, saved.get(k))
    assert [c.token_ids for c in out_g[0]] == [c.token_ids for c in ref_g[0]]
    assert [c.token_ids for c in out_s[0]] == [c.token_ids for c in ref_s[0]]
