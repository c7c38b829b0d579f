"""Sampling backends: output schema, per-row seeded sampling, stop strings, finish reasons, dedup,
backend selection, and the vLLM path (marked; runs on a GPU with vLLM)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from mathreason.config import load_config
from mathreason.sampling import (
    Completion,
    Request,
    SamplingParams,
    TransformersSampler,
    _SeededSampling,
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
            assert c.text == s.tokenizer.decode(
                [t for t in c.token_ids if t != s.tokenizer.eos_token_id], skip_special_tokens=True
            )
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


def test_identical_rows_are_generated_once(tiny):
    path, s = tiny
    calls = []
    original = s._generate_rows

    def counting(rows, params, progress):
        calls.append(len(rows))
        return original(rows, params, progress)

    s._generate_rows = counting
    try:
        p = _prompts(s.tokenizer, 1)[0]
        out = s.generate([Request(p, [1, 2]), Request(p, [2, 3])], SamplingParams(temperature=1.0, max_tokens=5))
        assert calls == [3]
        assert out[0][1].token_ids == out[1][0].token_ids
        s.generate([Request(p, [1, 2, 3])], SamplingParams(temperature=0.0, max_tokens=5))
        assert calls[-1] == 1  # greedy: one row whatever the seeds
    finally:
        del s._generate_rows


def test_stop_strings_cut_text_and_token_ids(tiny):
    path, s = tiny
    tok = s.tokenizer
    p = _prompts(tok, 1)[0]
    free = s.generate([Request(p, [7])], SamplingParams(temperature=1.0, max_tokens=30))[0][0]
    assert len(free.text) >= 6
    stop = free.text[3:5]  # a string that the unconstrained sample contains
    first = free.text.find(stop)
    cut = s.generate([Request(p, [7])], SamplingParams(temperature=1.0, max_tokens=30, stop=(stop,)))[0][0]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert cut.text == free.text[:first]
    # The ids are the shortest prefix whose decoded text contains the stop string.
    assert stop in tok.decode(cut.token_ids, skip_special_tokens=True)
    assert stop not in tok.decode(cut.token_ids[:-1], skip_special_tokens=True)
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_backend_selection_on_cpu():
    assert not vllm_available()
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(RuntimeError, match="not available"):
        resolve_backend("vllm")


def test_vllm_is_imported_only_by_sampling_module():
    offenders = []
    for path in sorted((REPO_ROOT / "mathreason").rglob("*.py")):
        if path.name == "sampling.py":
            continue
        if re.search(r"^\s*(import vllm|from vllm)", path.read_text(), re.M):
            offenders.append(path.name)
    assert offenders == []
    code = "import sys, mathreason.sampling, mathreason.stages, mathreason.cli; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "False"


@pytest.mark.vllm
def test_vllm_backend_schema_and_seeds(tiny):
    """On a GPU with vLLM: same schema as the transformers backend, seeds honoured, greedy agrees."""
    path, hf = tiny
    from mathreason.sampling import VLLMSampler

    v = VLLMSampler(path, gpu_memory_utilization=0.3, max_model_len=512, dtype="float32")
    try:
        prompts = _prompts(hf.tokenizer)
        reqs = [Request(p, [11, 12, 13]) for p in prompts]
        params = SamplingParams(temperature=1.0, max_tokens=16)
        a = v.generate(reqs, params)
        b = v.generate(reqs, params)
        assert [[c.token_ids for c in cs] for cs in a] == [[c.token_ids for c in cs] for cs in b]
        for cs in a:
            for c in cs:
                assert c.finish_reason in ("stop", "length") and 1 <= len(c.token_ids) <= 16
        g_v = v.generate(reqs, SamplingParams(temperature=0.0, max_tokens=16))
        g_h = hf.generate(reqs, SamplingParams(temperature=0.0, max_tokens=16))
        agree = sum(x[0].token_ids == y[0].token_ids for x, y in zip(g_v, g_h))
        assert agree >= len(reqs) - 1  # float32 on both sides; allow one near-tie
    finally:
        v.close()



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
