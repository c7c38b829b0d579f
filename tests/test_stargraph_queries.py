"""Round-2 data: re-goaled queries (structured goals, goals inside an arm), mixed shorter families, and the
pools built on them: every query's path and critical token checked by brute force on the graph, exact Q
of re-goaled queries checked by enumerating every continuation."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch

from stargraph.config import DataConfig, ModelConfig, PoolConfig, PostDataConfig, PostTrainConfig, RuntimeConfig, SFTConfig, TrainConfig
from stargraph.evaluate import source_children
from stargraph.graphs import GraphSpec, make_splits, sample_graphs
from stargraph.posttrain import PostTrainer
from stargraph.queries import build_queries, goal_choices, load_query_data, QueryOptions, tokenize_queries
from stargraph.tokenizer import StarTokenizer, tokenize_graphs
from stargraph.train import load_data

RT = RuntimeConfig(device="cpu", threads=1, eval_batch_size=512, amp="off")
MAIN = GraphSpec(2, 4, 10)


def tiny_train(**data) -> TrainConfig:
    return TrainConfig(
        seed=0,
        data=DataConfig(**{"degree": 2, "path_len": 4, "num_nodes": 10, "n_train": 300, "n_test": 60, "n_eval_train": 60, **data}),
        model=ModelConfig(n_layer=2, n_head=2, n_embd=32),
        sft=SFTConfig(max_steps=60, batch_size=32, learning_rate=3e-3, warmup_steps=5, eval_every=60, resume_every=0),
        runtime=RT,
    )


@pytest.fixture(scope="module")
def ckpt(tiny_sft):
    """The session's tiny checkpoint on G(2,3,8) (tests/conftest.py)."""
    return tiny_sft[1]


def read_query(tokens: torch.Tensor, P: int, num_nodes: int) -> tuple[nx.DiGraph, int, int]:
    """The graph (from the edge list in the prefix, left padding skipped), source and goal of one row."""
    pad = num_nodes + 3
    pre = [int(t) for t in tokens[:P]]
    start = next(i for i, t in enumerate(pre) if t != pad)
    text = StarTokenizer(num_nodes).decode(pre[start:])
    edges, query = text.rstrip("=").split("/")
    g = nx.DiGraph([tuple(int(x) for x in e.split(",")) for e in edges.split("|")])
    s, goal = (int(x) for x in query.split(","))
    assert start % 3 == 0  # left padding keeps edges at positions 0, 1 mod 3
    return g, s, goal


def check_row(data, i: int) -> list[int]:
    """Brute force on the graph: the row's target is the source-to-goal path; return it."""
    g, s, goal = read_query(data.tokens_NT[i], data.P, data.spec.num_nodes)
    path = nx.shortest_path(g, s, goal)
    n = len(path)
    target = data.tokens_NT[i, data.P :].tolist()
    assert target[:n] == path and all(t == data.spec.num_nodes + 3 for t in target[n:])
    tl = data.L if data.target_len_N is None else int(data.target_len_N[i])
    assert tl == n
    kids = sorted(g.successors(s))
    assert sorted(source_children(data.tokens_NT[i : i + 1], data.P, data.spec.degree)[0].tolist()) == kids
    assert path[1] in kids  # the critical token: the first node of the goal's arm
    return path


def test_leaf_queries_equal_round_one_tokens():
    gs = sample_graphs(MAIN, 50, np.random.default_rng(0))
    t, _ = tokenize_queries(gs, *goal_choices(MAIN, 50, "leaf"), MAIN)
    assert torch.equal(t.tokens_NT, tokenize_graphs(gs).tokens_NT) and t.target_len_N is None
    q = build_queries([gs], "leaf", MAIN)
    assert torch.equal(q.data.tokens_NT, t.tokens_NT) and torch.equal(q.group_N, torch.arange(50))


@pytest.mark.parametrize("goals", ["all_leaves", "all_nodes", "random_node"])
def test_every_query_asks_for_the_right_path(goals):
    gs = sample_graphs(MAIN, 40, np.random.default_rng(1))
    q = build_queries([gs], goals, MAIN, rng=np.random.default_rng(2))
    per = {"all_leaves": 2, "all_nodes": 6, "random_node": 1}[goals]
    assert len(q) == 40 * per and q.n_groups == 40
    for i in range(len(q)):
        path = check_row(q.data, i)
        gi = int(q.group_N[i])
        assert path[0] == gs.source_n[gi] and sorted(map(tuple, gs.edges_nE2[gi].tolist())) == sorted(read_query(q.data.tokens_NT[i], q.data.P, 10)[0].edges)
        assert q.arms_NdL[i, 0, : len(path)].tolist() == path  # goal's arm first
    if goals != "random_node":
        for gi in range(40):  # each goal exactly once per graph
            goals_of = q.data.tokens_NT[q.group_N == gi, q.data.P - 2].tolist()
            want = gs.arms_ndL[gi, :, -1] if goals == "all_leaves" else gs.arms_ndL[gi, :, 1:].reshape(-1)
            assert sorted(goals_of) == sorted(want.tolist())


def test_mixed_shorter_families_are_left_padded_and_exact():
    parts = [sample_graphs(GraphSpec(2, l, 10), 20, np.random.default_rng(l)) for l in (4, 2, 3)]
    q = build_queries(parts, "leaf", MAIN)
    assert len(q) == 60 and q.data.T == tokenize_graphs(parts[0]).T
    assert q.data.target_len_N.tolist() == [4] * 20 + [2] * 20 + [3] * 20
    tok = StarTokenizer(10)
    for i in range(60):
        check_row(q.data, i)
        fam, j = divmod(i, 20)
        pre, tgt = parts[fam].prefix_target(j)
        row = [t for t in q.data.tokens_NT[i].tolist() if t != 13]
        assert tok.decode(row) == pre + tgt  # the family's own Next-Token-Failures text, padding removed


def test_load_query_data_keeps_the_main_family_metrics_separate(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "c"))
    make_splits.cache_clear()
    qd = load_query_data(MAIN, 100, 30, 0, QueryOptions("all_nodes", (2, 3), 50, 20))
    tr, te = make_splits(MAIN, 100, 30, 0)
    assert torch.equal(qd.test.tokens_NT, tokenize_graphs(te).tokens_NT)  # test/ = main family, own goals
    assert torch.equal(qd.train_main.tokens_NT, tokenize_graphs(tr).tokens_NT)
    assert set(qd.extra_eval) == {"test_l2", "test_l3"} and len(qd.extra_eval["test_l2"]) == 20
    assert len(qd.train_q) == 100 * 6 + 50 * 2 * 1 + 50 * 2 * 2 and qd.train_q.n_groups == 200
    data = load_data(tiny_train(goals="all_leaves", mix_path_lens=[3], mix_n_train=40, mix_n_test=10), torch.device("cpu"))
    assert len(data.train) == 300 * 2 + 40 * 2 and set(data.eval_sets) == {"train", "test", "test_l3"}
    make_splits.cache_clear()


@torch.no_grad()
def brute_force_q(model, data, i: int, steps: list[int]) -> float:
    """Probability, summed over every continuation of every vocabulary token up to the goal's depth,
    of the continuations that a networkx check accepts (a walk along the edges ending at the goal)."""
    g, s, goal = read_query(data.tokens_NT[i], data.P, data.spec.num_nodes)
    k = len(nx.shortest_path(g, s, goal)) - 1
    r = k - len(steps)
    if r == 0:
        nodes = [s] + steps
        return float(nodes[-1] == goal and all(g.has_edge(a, b) for a, b in zip(nodes, nodes[1:])))
    V = model.config.vocab_size
    conts = torch.tensor(list(itertools.product(range(V), repeat=r)))
    head = torch.cat([data.tokens_NT[i, : data.P + 1], torch.tensor(steps, dtype=torch.long)])
    seq = torch.cat([head.expand(conts.shape[0], -1), conts], 1)
    logp = torch.log_softmax(model(seq[:, :-1]).double(), -1)
    start = head.numel() - 1
    lp = logp[:, start : start + r].gather(2, conts.unsqueeze(2)).squeeze(2).sum(1)
    total = 0.0
    for c, l in zip(conts.tolist(), lp.tolist()):
        nodes = [s] + steps + c
        if nodes[-1] == goal and all(g.has_edge(a, b) for a, b in zip(nodes, nodes[1:])):
            total += math.exp(l)
    return total


def _pt(ckpt, **kw) -> PostTrainConfig:
    pool = kw.pop("pool", {})
    data = kw.pop("data", {})
    return PostTrainConfig(
        init=str(ckpt), objective=kw.pop("objective", "per_step_dpo"), max_steps=2, batch_size=8, eval_every=2, learning_rate=1e-3,
        pool=PoolConfig(**{"graphs": 6, "samples_per_graph": 3, "resample_every": 2, "temperature": 1.5, **pool}),
        data=PostDataConfig(**data), runtime=RT, save_final=False, **kw,
    )


def test_structured_pool_every_goal_once_paths_and_exact_q(ckpt, tmp_path):
    tr = PostTrainer(_pt(ckpt, data={"goals": "all_leaves"}, pool={"arm_negatives": True}), tmp_path / "a", log=lambda s: None)
    model = tr.ref
    pool = tr.build_pool()
    G, d = 6, 2
    qidx = torch.unique(pool.graph_M)
    assert qidx.numel() == G * d and pool.stats["pool/graphs"] == G and pool.stats["pool/queries"] == G * d
    groups = tr.queries.group_N[qidx]
    assert torch.unique(groups).numel() == G and (torch.bincount(groups)[torch.unique(groups)] == d).all()
    for gi in torch.unique(groups).tolist():  # each of the graph's goals once, same edge list and source
        rows = qidx[groups == gi]
        goals = pool.graphs.tokens_NT[rows, tr.P - 2].tolist()
        prefixes = pool.graphs.tokens_NT[rows, : tr.P - 2]
        assert len(set(goals)) == d and (prefixes == prefixes[0]).all()
        crit = pool.graphs.tokens_NT[rows, tr.P + 1].tolist()
        assert len(set(crit)) == d  # the critical token changes with the goal
    for q in qidx.tolist():
        check_row(pool.graphs, q)
    # constructed negatives: one per other arm and query, pit at the critical token, exact Q = 0 there
    n_arm = pool.stats["pool/arm_negatives"]
    assert n_arm == G * d * (d - 1)
    arm_rows = torch.arange(pool.resp_MS.shape[0] - n_arm, pool.resp_MS.shape[0])
    assert (pool.pit_M[arm_rows] == 0).all() and (pool.q.q_MS[arm_rows, 0] == 0).all()
    # exact Q of re-goaled queries against enumeration, for sampled and constructed responses
    checked = 0
    for m in list(range(0, pool.resp_MS.shape[0] - n_arm, 5)) + arm_rows[:3].tolist():
        g = int(pool.graph_M[m])
        resp = pool.resp_MS[m].tolist()
        for i in range(tr.S):
            assert pool.q.q_MS[m, i].item() == pytest.approx(brute_force_q(model, pool.graphs, g, resp[: i + 1]), rel=1e-5, abs=1e-9)
        assert pool.q.v0_M[m].item() == pytest.approx(brute_force_q(model, pool.graphs, g, []), rel=1e-5)
        checked += 1
    assert checked >= 5 and 0.02 < float(pool.q.v0_M.mean()) < 0.98
    # the share of critical-pit negatives whose rejected token is the other child (not a non-child token)
    crit = (~pool.correct_M & (pool.pit_M == 0)).nonzero().squeeze(1)
    other = []
    for m in crit.tolist():
        g, s_, _ = read_query(pool.graphs.tokens_NT[int(pool.graph_M[m])], tr.P, 8)
        other.append(int(pool.resp_MS[m, 0]) in set(g.successors(s_)))
    assert pool.stats["pool/crit_pit_other_child"] == pytest.approx(sum(other) / len(other))


def test_goals_inside_an_arm_and_mixes_exact_q(ckpt, tmp_path):
    tr = PostTrainer(_pt(ckpt, data={"goals": "all_nodes", "mix_path_lens": [2], "mix_n_train": 30, "mix_n_test": 20}, pool={"graphs": 8}), tmp_path / "b", log=lambda s: None)
    pool = tr.build_pool()
    tl = pool.graphs.target_len_N
    assert tl is not None and set(tl[pool.graph_M].tolist()) == {2, 3}
    for m in range(0, pool.resp_MS.shape[0], 3):
        g = int(pool.graph_M[m])
        check_row(pool.graphs, g)
        k = int(tl[g]) - 1  # steps up to the goal; later steps are padding
        resp = pool.resp_MS[m].tolist()
        ok = resp[:k] == pool.graphs.tokens_NT[g, tr.P + 1 : tr.P + 1 + k].tolist()
        assert bool(pool.correct_M[m]) == ok
        for i in range(k):
            assert pool.q.q_MS[m, i].item() == pytest.approx(brute_force_q(tr.ref, pool.graphs, g, resp[: i + 1]), rel=1e-5, abs=1e-9)
        if not ok:
            assert 0 <= int(pool.pit_M[m]) < k  # the pit is a real step, never padding


def test_structured_controls_train_on_the_same_queries(ckpt, tmp_path):
    tr = PostTrainer(_pt(ckpt, objective="sft", data={"goals": "all_leaves"}), tmp_path / "c", log=lambda s: None)
    assert len(tr.sft_data) == 2 * len(tr.train) and torch.equal(tr.sft_data.tokens_NT, tr.queries.data.tokens_NT)
    assert torch.equal(tr.eval_sets["test"].tokens_NT, tr.test.tokens_NT) and len(tr.eval_sets["train"]) == 60
    for i in range(0, len(tr.sft_data), 37):
        check_row(tr.sft_data, i)


def test_arm_negatives_give_pairs_for_goals_the_policy_gets_right(ckpt, tmp_path):
    cfg = _pt(ckpt, data={"goals": "all_leaves"}, pool={"arm_negatives": True, "temperature": 0.01, "samples_per_graph": 1})
    tr = PostTrainer(cfg, tmp_path / "d", log=lambda s: None)
    pool = tr.build_pool()
    b = tr.make_batches(pool)
    with_pairs = set(torch.unique(pool.graph_M[~pool.correct_M]).tolist())
    assert with_pairs == set(torch.unique(pool.graph_M).tolist())  # every query, also the correctly answered ones
    assert len(b) >= 12 and (b.rejected_mask_BL[:, 1]).any()
    without = PostTrainer(_pt(ckpt, data={"goals": "all_leaves"}, pool={"temperature": 0.01, "samples_per_graph": 1}), tmp_path / "e", log=lambda s: None)
    b_without = without.make_batches(without.build_pool())  # None: no pair at all
    assert (0 if b_without is None else len(b_without)) < len(b)


@pytest.mark.parametrize("objective", ["per_step_dpo", "per_step_dpo_sft", "awr", "sft", "sft_critical", "rft", "dpo"])
def test_every_objective_runs_on_structured_and_mixed_queries(ckpt, tmp_path, objective):
    data = {"goals": "all_nodes", "mix_path_lens": [2], "mix_n_train": 20, "mix_n_test": 20} if objective in ("awr", "per_step_dpo_sft", "dpo") else {"goals": "all_leaves"}
    rec = PostTrainer(_pt(ckpt, objective=objective, data=data, pool={"arm_negatives": objective != "rft"}), tmp_path / objective, log=lambda s: None).run()
    assert rec["step"] == 2 and math.isfinite(rec["train_loss"]) and rec["empty_steps"] == 0
    assert 0 <= rec["test/acc"] <= 1 and "test/forced_token_acc" in rec
    if "mix_path_lens" in data:
        assert 0 <= rec["test_l2/acc"] <= 1


def test_mc_q_on_queries_with_a_shorter_target(ckpt, tmp_path):
    cfg = _pt(ckpt, data={"goals": "all_nodes"}, q_estimator="mc", mc_rollouts=4, pool={"graphs": 3})
    tr = PostTrainer(cfg, tmp_path / "f", log=lambda s: None)
    pool = tr.build_pool()
    steps = pool.graphs.step_mask(pool.graph_M)
    last = steps.sum(1) - 1
    q_last = pool.q.q_MS[torch.arange(len(last)), last]
    assert torch.equal(q_last, pool.correct_M.double())  # the prefix through the goal: its own reward


def test_fresh_structured_pools_use_new_graphs_of_every_family(ckpt, tmp_path):
    cfg = _pt(ckpt, data={"goals": "all_leaves", "mix_path_lens": [2], "mix_n_train": 30, "mix_n_test": 20}, pool={"policy": "fresh", "graphs": 43})
    tr = PostTrainer(cfg, tmp_path / "g", log=lambda s: None)
    pool = tr.build_pool()
    q = torch.unique(pool.graph_M)
    assert q.numel() == 86 and pool.stats["pool/graphs"] == 43  # 43 new graphs (40 + 3: 400 and 30 training graphs) x 2 goals
    seen = {tuple(r) for r in tr.queries.data.tokens_NT[:, : tr.P - 2].tolist()} | {tuple(r) for r in tr.test.tokens_NT[:, : tr.P - 2].tolist()}
    rows = pool.graphs.tokens_NT[q]
    assert not {tuple(r) for r in rows[:, : tr.P - 2].tolist()} & seen
    assert set(pool.graphs.target_len_N.tolist()) == {2, 3}  # both families (in proportion to their training sets)
    for i in q.tolist():
        check_row(pool.graphs, i)
