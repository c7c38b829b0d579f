"""Queries: a star graph asked for one of its goals, tokenised (round-2 data and pool options).

Round 1 asks every graph once, for the leaf of its goal arm (arm 0 of :class:`~stargraph.graphs.GraphSet`).
A *query* is (graph, arm ``a``, depth ``k``): the goal is node ``k`` of arm ``a`` (``1 <= k <= l - 1``),
the source and the edge list stay the same, the query reads ``.../s,g=`` with the new goal, and the
target is the arm up to the goal, ``arms[a, 0..k]`` (``k + 1`` tokens).  The critical token is the first
node of the goal's arm, still at target position 1.  Goal options (``goals``):

- ``leaf``: one query per graph, its own goal (round 1);
- ``all_leaves``: every graph once per arm, goal = that arm's leaf: ``degree`` queries per graph with the
  same edge list (Frydenlund 2024's structured samples);
- ``all_nodes``: every non-source node as the goal: ``degree * (l - 1)`` queries per graph;
- ``random_node``: one query per graph, the goal a uniformly drawn non-source node (seeded).

Shorter families G(d, l', N) (``l' < L``, decomposition) are written in the main family's row layout:
their prefix is left-padded with ``3 (E - E')`` pad tokens, so ``=`` sits at the main family's position
and edges keep their positions modulo 3 (:func:`stargraph.evaluate.source_children` reads them
unchanged), and every target shorter than ``L`` is right-padded and carries
:attr:`TokenizedGraphs.target_len_N` (losses and metrics ignore the padding).  With ``leaf`` goals on the
main family the rows equal :func:`stargraph.tokenizer.tokenize_graphs` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .graphs import GraphSet, GraphSpec, fresh_graphs, make_splits
from .tokenizer import TokenizedGraphs, prefix_len, tokenize_graphs

GOALS: tuple[str, ...] = ("leaf", "all_leaves", "all_nodes", "random_node")


@dataclass
class QuerySet:
    """Tokenised queries with what pools need besides the tokens.

    ``data``: the rows (prefix with the query's goal, target = path to that goal, padded);
    ``group_N``: index of the query's graph (the queries of one graph share it, and are consecutive);
    ``arms_NdL``: every arm of the query's graph as a path from the source, the goal's arm first,
    right-padded to ``L`` (for constructed negatives along the other arms).
    """

    data: TokenizedGraphs
    group_N: torch.Tensor
    arms_NdL: torch.Tensor

    def __len__(self) -> int:
        return len(self.data)

    @property
    def n_groups(self) -> int:
        return int(self.group_N.max()) + 1 if len(self) else 0


def goal_choices(spec: GraphSpec, n: int, goals: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(graph_Q, arm_Q, depth_Q)`` of the queries of ``n`` graphs of ``spec`` (graph-major order)."""
    d, l = spec.degree, spec.path_len
    if goals == "leaf":
        return np.arange(n), np.zeros(n, dtype=np.int64), np.full(n, l - 1, dtype=np.int64)
    if goals == "all_leaves":
        return np.repeat(np.arange(n), d), np.tile(np.arange(d), n), np.full(n * d, l - 1, dtype=np.int64)
    if goals == "all_nodes":
        arm = np.repeat(np.arange(d), l - 1)
        depth = np.tile(np.arange(1, l), d)
        return np.repeat(np.arange(n), d * (l - 1)), np.tile(arm, n), np.tile(depth, n)
    if goals == "random_node":
        if rng is None:
            raise ValueError("goal_choices: goals='random_node' needs a seeded rng")
        return np.arange(n), rng.integers(0, d, size=n), rng.integers(1, l, size=n)
    raise ValueError(f"goals must be one of {GOALS}, got {goals!r}")


def queries_per_graph(spec: GraphSpec, goals: str) -> int:
    return {"leaf": 1, "random_node": 1, "all_leaves": spec.degree, "all_nodes": spec.degree * (spec.path_len - 1)}[goals]


def tokenize_queries(
    graphs: GraphSet, graph_Q: np.ndarray, arm_Q: np.ndarray, depth_Q: np.ndarray, main: GraphSpec, device: str | torch.device = "cpu"
) -> tuple[TokenizedGraphs, torch.Tensor]:
    """Rows of the queries (graph ``graph_Q``, goal = node ``depth_Q`` of arm ``arm_Q``) in the layout of
    family ``main``; returns the rows and ``arms_QdL`` (the goal's arm first, padded to ``L``)."""
    spec = graphs.spec
    if spec.degree != main.degree or spec.num_nodes != main.num_nodes or spec.path_len > main.path_len:
        raise ValueError(f"queries of {spec.name} cannot be written in the layout of {main.name}")
    graph_Q, arm_Q, depth_Q = (np.asarray(x, dtype=np.int64) for x in (graph_Q, arm_Q, depth_Q))
    if ((depth_Q < 1) | (depth_Q > spec.path_len - 1)).any() or ((arm_Q < 0) | (arm_Q >= spec.degree)).any():
        raise ValueError("tokenize_queries: arm or depth out of range")
    N, pad = main.num_nodes, main.num_nodes + 3
    Q, d, l, L = graph_Q.shape[0], spec.degree, spec.path_len, main.path_len
    E, P = spec.num_edges, prefix_len(main)
    off = 3 * (main.num_edges - E)  # left padding: a multiple of 3 keeps edge positions mod 3
    out = np.full((Q, P + L), pad, dtype=np.int64)
    edges = graphs.edges_nE2[graph_Q]
    out[:, off + 0 : off + 3 * E - 1 : 3] = edges[:, :, 0]
    out[:, off + 1 : off + 3 * E - 1 : 3] = edges[:, :, 1]
    out[:, off + 2 : off + 3 * E - 1 : 3] = N  # '|'
    arms = graphs.arms_ndL[graph_Q]  # Q, d, l
    # the goal's arm first, the others in their order
    order = np.argsort(np.arange(d)[None, :] != arm_Q[:, None], axis=1, kind="stable")
    arms = np.take_along_axis(arms, order[:, :, None], axis=1)
    rows = np.arange(Q)
    out[:, P - 4] = N + 2  # '/'
    out[:, P - 3] = graphs.source_n[graph_Q]
    out[:, P - 2] = arms[rows, 0, depth_Q]
    out[:, P - 1] = N + 1  # '='
    keep = np.arange(l)[None, :] <= depth_Q[:, None]
    out[:, P : P + l] = np.where(keep, arms[:, 0, :], pad)
    arms_L = np.full((Q, d, L), pad, dtype=np.int64)
    arms_L[:, :, :l] = arms
    tlen = depth_Q + 1
    target_len = None if (tlen == L).all() else torch.from_numpy(tlen).to(device)
    return TokenizedGraphs(main, torch.from_numpy(out).to(device), P, target_len), torch.from_numpy(arms_L)


def build_queries(parts: list[GraphSet], goals: str, main: GraphSpec, *, rng: np.random.Generator | None = None, device: str | torch.device = "cpu") -> QuerySet:
    """The queries of every graph of ``parts`` (families of ``main``'s degree and labels), concatenated;
    graph indices (``group_N``) run over the parts in order."""
    toks, tlens, groups, arms = [], [], [], []
    base = 0
    for gs in parts:
        if len(gs) == 0:
            continue
        g, a, k = goal_choices(gs.spec, len(gs), goals, rng)
        if goals == "leaf" and gs.spec == main:
            t, al = tokenize_graphs(gs, device), torch.from_numpy(gs.arms_ndL.astype(np.int64))
        else:
            t, al = tokenize_queries(gs, g, a, k, main, device)
        toks.append(t)
        tlens.append(t.target_len_N if t.target_len_N is not None else torch.full((len(t),), main.path_len, dtype=torch.long, device=t.tokens_NT.device))
        groups.append(torch.from_numpy(g + base))
        arms.append(al)
        base += len(gs)
    if not toks:
        raise ValueError("build_queries: no graphs")
    tokens = torch.cat([t.tokens_NT for t in toks])
    tlen = torch.cat(tlens)
    target_len = None if bool((tlen == main.path_len).all()) else tlen
    return QuerySet(TokenizedGraphs(main, tokens, toks[0].P, target_len), torch.cat(groups), torch.cat(arms))


# ---------------------------------------------------------------- the data of a run


@dataclass
class QueryOptions:
    """What a run trains on besides the main family's graphs (see :class:`stargraph.config.DataConfig`)."""

    goals: str = "leaf"
    mix_path_lens: tuple[int, ...] = ()
    mix_n_train: int = 1000
    mix_n_test: int = 500

    @property
    def trivial(self) -> bool:
        return self.goals == "leaf" and not self.mix_path_lens


@dataclass
class QueryData:
    """Graphs and tokenised queries of one run (main family plus mixed shorter families).

    ``train_parts``: the training graphs per family (main first); ``train_q``: their queries (SFT data and
    pool queries); ``train_main``: the main family's training graphs with their own goals (train metrics);
    ``test``: the main family's test graphs (test metrics); ``extra_eval``: ``test_l<l>`` sets of the mixed
    families (their own goals); ``seen_keys``: per family, the keys of its train and test graphs.
    """

    spec: GraphSpec
    options: QueryOptions
    train_parts: list[GraphSet]
    train_q: QuerySet
    train_main: TokenizedGraphs
    test: TokenizedGraphs
    extra_eval: dict[str, TokenizedGraphs]
    seen_keys: list[set[bytes]]


def goal_rng(data_seed: int) -> np.random.Generator:
    """The seeded stream of ``random_node`` goals of a run's training queries."""
    return np.random.default_rng([int(data_seed), 23])


def load_query_data(spec: GraphSpec, n_train: int, n_test: int, data_seed: int, options: QueryOptions, device: str | torch.device = "cpu") -> QueryData:
    train_g, test_g = make_splits(spec, n_train, n_test, data_seed)
    parts, seen = [train_g], [set(train_g.keys()) | set(test_g.keys())]
    train_main = tokenize_graphs(train_g, device)
    extra: dict[str, TokenizedGraphs] = {}
    for l in options.mix_path_lens:
        fam = GraphSpec(spec.degree, int(l), spec.num_nodes)
        tr, te = make_splits(fam, options.mix_n_train, options.mix_n_test, data_seed)
        parts.append(tr)
        seen.append(set(tr.keys()) | set(te.keys()))
        extra[f"test_l{l}"] = build_queries([te], "leaf", spec, device=device).data
    if options.trivial:
        train_q = QuerySet(train_main, torch.arange(len(train_main)), torch.from_numpy(train_g.arms_ndL.astype(np.int64)))
    else:
        train_q = build_queries(parts, options.goals, spec, rng=goal_rng(data_seed), device=device)
    return QueryData(spec, options, parts, train_q, train_main, tokenize_graphs(test_g, device), extra, seen)


def fresh_queries(qd: QueryData, n_graphs: int, seed: int, round_: int, *, goals: str | None = None, rng: np.random.Generator | None = None, device: str | torch.device = "cpu") -> QuerySet:
    """Queries of ``n_graphs`` newly drawn graphs (none of them a train or test graph of the run),
    split over the families in proportion to their training sets."""
    goals = goals or qd.options.goals
    sizes = np.array([len(p) for p in qd.train_parts], dtype=np.float64)
    counts = np.floor(n_graphs * sizes / sizes.sum()).astype(np.int64)
    counts[0] += n_graphs - counts.sum()
    parts = [fresh_graphs(p.spec, int(c), seed, round_, qd.seen_keys[i]) for i, (p, c) in enumerate(zip(qd.train_parts, counts)) if c > 0]
    if goals == "random_node" and rng is None:
        rng = np.random.default_rng([int(seed), int(round_), 29])
    return build_queries(parts, goals, qd.spec, rng=rng, device=device)
