"""Star-graph generator invariants, the Next-Token-Failures text format, and the tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stargraph.graphs import GraphSpec, check_graph, fresh_graphs, make_splits, sample_graphs, write_ntf_file
from stargraph.tokenizer import StarTokenizer, prefix_len, tokenize_graphs


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    make_splits.cache_clear()
    yield
    make_splits.cache_clear()


specs = st.tuples(st.integers(1, 4), st.integers(2, 6), st.integers(0, 20)).map(
    lambda t: GraphSpec(t[0], t[1], 1 + t[0] * (t[1] - 1) + t[2])
)


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**31 - 1))
def test_every_graph_is_a_star_with_the_right_shape(spec, seed):
    gs = sample_graphs(spec, 20, np.random.default_rng(seed))
    for i in range(len(gs)):
        g = gs.to_networkx(i)
        path = check_graph(g, spec)  # degrees, arm lengths, tree shape, labels in range
        assert path == gs.path_nL[i].tolist()
        assert len(path) == spec.path_len
        assert path[0] == gs.source_n[i] and path[-1] == gs.goal_n[i]
        assert g.out_degree(int(gs.source_n[i])) == spec.degree
        nodes = gs.arms_ndL[i, :, 1:].ravel().tolist() + [int(gs.source_n[i])]
        assert len(set(nodes)) == len(nodes) == spec.nodes_per_graph  # unique node labels


def test_check_graph_rejects_a_broken_graph():
    spec = GraphSpec(2, 3, 10)
    gs = sample_graphs(spec, 1, np.random.default_rng(0))
    g = gs.to_networkx(0)
    leaf = [v for v in g.nodes if g.out_degree(v) == 0 and v != g.graph["goal"]][0]
    g.add_edge(leaf, 9 if 9 not in g.nodes else 8)
    with pytest.raises(ValueError):
        check_graph(g, spec)


def test_spec_rejects_too_few_labels():
    with pytest.raises(ValueError, match="more than num_nodes"):
        GraphSpec(3, 4, 9)


def test_splits_are_deterministic_distinct_and_disjoint():
    spec = GraphSpec(2, 3, 8)  # a small family, so collisions would happen without dedup
    train, test = make_splits(spec, 1500, 500, 7, use_disk_cache=False)
    train2, test2 = make_splits.__wrapped__(spec, 1500, 500, 7, use_disk_cache=False)
    assert np.array_equal(train.edges_nE2, train2.edges_nE2) and np.array_equal(test.arms_ndL, test2.arms_ndL)
    other, _ = make_splits.__wrapped__(spec, 1500, 500, 8, use_disk_cache=False)
    assert not np.array_equal(train.edges_nE2, other.edges_nE2)
    ktr, kte = train.keys(), test.keys()
    assert len(set(ktr)) == len(ktr) == 1500 and len(set(kte)) == len(kte) == 500
    assert not set(ktr) & set(kte)
    fresh = fresh_graphs(spec, 200, 7, 0, set(ktr) | set(kte))
    assert not set(fresh.keys()) & (set(ktr) | set(kte))


def test_graph_keys_ignore_edge_order():
    spec = GraphSpec(2, 4, 20)
    gs = sample_graphs(spec, 3, np.random.default_rng(1))
    shuffled = gs.subset(np.arange(3))
    shuffled.edges_nE2 = shuffled.edges_nE2[:, ::-1].copy()
    assert gs.keys() == shuffled.keys()


def test_disk_cache_round_trip(tmp_path):
    spec = GraphSpec(2, 4, 20)
    a = make_splits(spec, 300, 100, 3)
    make_splits.cache_clear()
    b = make_splits(spec, 300, 100, 3)  # loaded from disk
    assert a[0] is not b[0]
    assert np.array_equal(a[0].edges_nE2, b[0].edges_nE2) and np.array_equal(a[1].path_nL, b[1].path_nL)
    assert list((tmp_path / "cache" / "stargraph").glob("*.npz"))


def test_text_format_matches_next_token_failures(tmp_path):
    spec = GraphSpec(2, 5, 50)
    gs = sample_graphs(spec, 5, np.random.default_rng(0))
    prefix, target = gs.prefix_target(0)
    edges, query = prefix[:-1].split("/")
    assert prefix.endswith("=") and query == f"{gs.source_n[0]},{gs.goal_n[0]}"
    pairs = [tuple(int(x) for x in e.split(",")) for e in edges.split("|")]
    assert sorted(pairs) == sorted(map(tuple, gs.edges_nE2[0].tolist())) and len(pairs) == spec.num_edges
    assert [int(x) for x in target.split(",")] == gs.path_nL[0].tolist()
    lines = write_ntf_file(tmp_path / "g.txt", gs).read_text().splitlines()
    assert lines[0] == prefix + target and len(lines) == 5


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**31 - 1))
def test_tokenizer_round_trip_and_vectorised_tokenisation(spec, seed):
    gs = sample_graphs(spec, 4, np.random.default_rng(seed))
    tok = StarTokenizer(spec.num_nodes)
    tt = tokenize_graphs(gs)
    assert tt.P == prefix_len(spec) and tt.T == prefix_len(spec) + spec.path_len
    for i in range(len(gs)):
        text = gs.text(i)
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert ids == tt.tokens_NT[i].tolist()
        assert ids[tt.P - 1] == tok.eq and ids[tt.P - 4] == tok.slash
        assert tt.path_NL[i].tolist() == gs.path_nL[i].tolist()


def test_tokenizer_vocabulary_is_next_token_failures():
    tok = StarTokenizer(50)
    assert tok.vocab_size == 54
    assert tok.encode("3,17|17,4/3,4=3,17,4") == [3, 17, 50, 17, 4, 52, 3, 4, 51, 3, 17, 4]
    assert tok.encode("$") == [53]


@pytest.mark.parametrize("bad", ["1,2|x", "60,1", "1;2"])
def test_tokenizer_rejects_bad_text(bad):
    with pytest.raises(ValueError):
        StarTokenizer(50).encode(bad)


def test_tokenized_graphs_move_and_subset():
    gs = sample_graphs(GraphSpec(2, 4, 20), 10, np.random.default_rng(0))
    tt = tokenize_graphs(gs)
    sub = tt.subset(slice(2, 5))
    assert len(sub) == 3 and torch.equal(sub.tokens_NT, tt.tokens_NT[2:5])
