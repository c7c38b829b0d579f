"""Exact Q against brute-force enumeration, MC Q converging to it, and the exact teacher-forced metrics."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import pytest
import torch

from stargraph.evaluate import generate, greedy_accuracy, summarize, teacher_forced
from stargraph.model import GPT, GPTConfig
from stargraph.rollouts import exact_step_q, mc_step_q, on_path, sample_responses, true_path_step_q
from stargraph.runio import load_checkpoint
from stargraph.tokenizer import TokenizedGraphs
from stargraph.train import load_data


@pytest.fixture(scope="module")
def tiny(tiny_sft):
    """The session's tiny SFT checkpoint (tests/conftest.py) and its data: probabilities far from uniform and from 0/1."""
    cfg, ckpt = tiny_sft
    model, _ = load_checkpoint(ckpt)
    model.eval()
    return model, load_data(cfg, torch.device("cpu"))


@torch.no_grad()
def brute_force_q(model: GPT, data, g: int, steps: list[int]) -> float:
    """Sum over *every* continuation (all vocabulary tokens at every remaining position) of its
    probability under the model, counting those that a networkx verifier accepts (a walk along the
    graph's edges from the source that ends at the goal after path_len - 1 steps)."""
    P, S = data.train.P, data.spec.path_len - 1
    tokens = data.train.tokens_NT[g]
    E = data.spec.num_edges
    G = nx.DiGraph([(int(tokens[3 * j]), int(tokens[3 * j + 1])) for j in range(E)])
    src, goal = int(tokens[P - 3]), int(tokens[P - 2])
    V = model.config.vocab_size
    r = S - len(steps)
    total = 0.0
    for cont in itertools.product(range(V), repeat=r):
        walk = steps + list(cont)
        seq = torch.cat([tokens[: P + 1], torch.tensor(walk, dtype=torch.long)])
        logp = torch.log_softmax(model(seq[None, :-1].long()).double(), -1)[0]
        lp = sum(float(logp[P + len(steps) + j, cont[j]]) for j in range(r))  # logits at t predict t+1
        nodes = [src] + walk
        ok = nodes[-1] == goal and all(G.has_edge(a, b) for a, b in zip(nodes, nodes[1:]))
        if ok:
            total += math.exp(lp)
    return total


def test_exact_q_equals_brute_force_enumeration(tiny):
    model, data = tiny
    S = data.spec.path_len - 1
    tq = true_path_step_q(model, data.train, amp="off")
    seen = []
    for g in range(3):
        path = data.train.path_NL[g, 1:].tolist()
        other = [c for c in range(data.spec.num_nodes) if c not in path][0]
        responses = [path, [path[0], other], [other, path[1]]]
        resp = torch.tensor(responses)
        gm = torch.full((3,), g)
        ex = exact_step_q(tq, data.train, gm, resp)
        for m, r in enumerate(responses):
            for i in range(S):
                bf = brute_force_q(model, data, g, r[: i + 1])
                assert ex.q_MS[m, i].item() == pytest.approx(bf, rel=1e-5, abs=1e-9)
            assert ex.v0_M[m].item() == pytest.approx(brute_force_q(model, data, g, []), rel=1e-5)
        seen += ex.q_MS[0].tolist()[:-1] + [ex.v0_M[0].item()]
        assert ex.q_MS[2, 0].item() == 0.0 and ex.q_MS[1, 1].item() == 0.0  # left the true path
    assert any(0.02 < q < 0.98 for q in seen)  # a non-degenerate model: the check is not vacuous


def test_mc_q_converges_to_exact_q(tiny):
    model, data = tiny
    tq = true_path_step_q(model, data.train, amp="off")
    gm = torch.arange(6)
    gen = torch.Generator().manual_seed(0)
    resp = sample_responses(model, data.train, gm, temperature=1.0, generator=gen)
    exact = exact_step_q(tq, data.train, gm, resp)
    errs = {}
    for k in (16, 4000):
        mc = mc_step_q(model, data.train, gm, resp, k=k, generator=torch.Generator().manual_seed(1))
        errs[k] = (mc.q_MS - exact.q_MS).abs().max().item(), (mc.v0_M - exact.v0_M).abs().max().item()
        if k == 4000:
            q = torch.cat([exact.q_MS.flatten(), exact.v0_M])
            est = torch.cat([mc.q_MS.flatten(), mc.v0_M])
            sd = torch.sqrt(q * (1 - q) / k)
            assert ((est - q).abs() <= 5 * sd + 1e-9).all()
    assert errs[4000][0] < 0.05 and errs[4000][1] < 0.05
    assert errs[4000][0] <= errs[16][0] + 1e-9


def test_mc_best_of_k_is_binary_any(tiny):
    model, data = tiny
    gm = torch.arange(4)
    resp = data.train.path_NL[gm, 1:].clone()
    bok = mc_step_q(model, data.train, gm, resp, k=5, bok=True, generator=torch.Generator().manual_seed(0))
    assert set(bok.q_MS.unique().tolist()) <= {0.0, 1.0}
    assert (bok.q_MS[:, -1] == 1).all()  # complete correct responses succeed


def test_teacher_forced_greedy_accuracy_equals_autoregressive_greedy(tiny):
    model, data = tiny
    gen = generate(model, data.train.tokens_NT, data.train.P, temperature=0.0)
    # Make the check non-vacuous: the targets of the first half become the model's own greedy output
    # (greedy must then be exactly right there), the second half keep the true path.
    half = len(data.train) // 2
    tokens = data.train.tokens_NT.clone()
    tokens[:half] = gen[:half]
    mixed = TokenizedGraphs(data.spec, tokens, data.train.P)
    tf = teacher_forced(model, mixed, amp="off")
    m = summarize(tf)
    assert m["acc"] == pytest.approx(greedy_accuracy(model, mixed, amp="off"))
    assert tf["correct_NL"][:half].all() and m["acc"] >= 0.5
    per_pos = gen[:, data.train.P :] == data.train.path_NL
    prefix_ok = torch.cumprod(per_pos.to(torch.int8), 1).bool()
    assert (prefix_ok <= teacher_forced(model, data.train, amp="off")["correct_NL"]).all()


def test_summary_metrics_by_hand():
    logp = torch.log(torch.tensor([[1.0, 0.5, 0.8, 0.9], [1.0, 0.25, 1.0, 0.5]], dtype=torch.float64))
    correct = torch.tensor([[True, True, True, True], [True, False, True, False]])
    tf = {"logp_NL": logp, "correct_NL": correct, "child_mass_N": torch.tensor([1.0, 0.5], dtype=torch.float64), "min_child_N": torch.tensor([True, False])}
    m = summarize(tf, bok_k=2)
    assert m["acc"] == 0.5 and m["crit_acc"] == 0.5 and m["acc_pos3"] == 0.5
    assert m["lookup_acc"] == pytest.approx(0.75)
    assert m["q_crit"] == pytest.approx((0.8 * 0.9 + 1.0 * 0.5) / 2)
    assert m["v_crit"] == pytest.approx((0.5 * 0.8 * 0.9 + 0.25 * 0.5) / 2)
    assert m["q_crit_bok"] == pytest.approx(((1 - (1 - 0.72) ** 2) + (1 - 0.5**2)) / 2)
    assert m["loss"] == pytest.approx(-logp.mean().item())
    assert m["crit_min_child"] == 0.5 and m["crit_child_mass"] == 0.75


def test_model_logits_from_matches_full_forward():
    m = GPT(GPTConfig(vocab_size=14, block_size=20, n_layer=3, n_head=2, n_embd=16), torch.Generator().manual_seed(0)).double()
    x = torch.randint(0, 14, (4, 20))
    assert torch.allclose(m(x)[:, 12:], m(x, logits_from=12), atol=1e-12)
    with pytest.raises(ValueError):
        m(torch.zeros(1, 21, dtype=torch.long))


def test_model_init_is_seeded_and_embeddings_tied():
    cfg = GPTConfig(vocab_size=14, block_size=20, n_layer=1, n_head=2, n_embd=16)
    a = GPT(cfg, torch.Generator().manual_seed(3))
    b = GPT(cfg, torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.lm_head.weight is a.wte.weight


def test_on_path_marks_the_first_error_onwards(tiny):
    _, data = tiny
    path = data.train.path_NL[0, 1:]
    wrong = (path[0] + 1) % data.spec.num_nodes
    resp = torch.stack([path, torch.tensor([path[0], wrong]), torch.tensor([wrong, path[1]])])
    onp = on_path(data.train, torch.zeros(3, dtype=torch.long), resp)
    assert onp.tolist() == [[True, True], [True, False], [False, False]]


def test_generate_runs_each_distinct_prefix_once_and_samples_each_row(tiny):
    """Rows sampled from the same prompt share the prompt's forward pass (one row for 4000 samples),
    every later position is one token per row on the cache, yet every row draws its own token: the
    empirical distribution of the first sampled token matches the model's probabilities."""
    model, data = tiny
    P = data.train.P
    prompt = data.train.tokens_NT[:1].repeat(4000, 1)
    shapes: list[tuple[int, int]] = []
    cached = model.forward_cached

    def spy(idx_BT, cache=None, logits_from=0):
        shapes.append(tuple(idx_BT.shape))
        return cached(idx_BT, cache, logits_from)

    model.forward_cached = spy
    try:
        out = generate(model, prompt, P + 1, temperature=1.0, generator=torch.Generator().manual_seed(0), amp="off")
    finally:
        del model.forward_cached
    assert shapes[0] == (1, P + 1)  # one distinct prompt, its whole prefix once
    assert shapes[1:] and all(s[1] == 1 for s in shapes[1:])  # then one token per row and position
    assert sum(s[0] for s in shapes[1:]) == 4000 * (data.train.T - P - 2)  # (in chunks of rows)
    with torch.no_grad():
        probs = torch.softmax(model(prompt[:1, : P + 1], logits_from=P)[0, 0].double(), -1)
    first = out[:, P + 1]
    emp = torch.bincount(first, minlength=probs.numel()).double() / first.numel()
    sd = torch.sqrt(probs * (1 - probs) / first.numel())
    assert ((emp - probs).abs() <= 5 * sd + 1e-3).all()
    assert first.unique().numel() >= 2  # not one token copied to every row


def test_exact_step_q_on_a_subset_of_graphs_matches_the_full_set(tiny):
    """The pool computes exact Q on its own graphs only; the values equal those from the whole set."""
    model, data = tiny
    gm = torch.tensor([7, 3, 7, 11, 3])
    resp = sample_responses(model, data.train, gm, temperature=1.0, generator=torch.Generator().manual_seed(2), amp="off")
    full = exact_step_q(true_path_step_q(model, data.train, amp="off"), data.train, gm, resp)
    ug, inv = torch.unique(gm, return_inverse=True)
    sub = data.train.subset(ug)
    part = exact_step_q(true_path_step_q(model, sub, amp="off"), sub, inv, resp)
    assert torch.allclose(full.q_MS, part.q_MS, atol=1e-6) and torch.allclose(full.v0_M, part.v0_M, atol=1e-6)
