"""Star graphs G(degree, path length, node labels), compatible with Next-Token-Failures.

A star graph has a source, ``degree`` arms of ``path_len - 1`` fresh nodes each leaving the source,
and a goal at the end of one arm (Bachmann & Nagarajan 2024; code gregorbachmann/Next-Token-Failures).
It is written as the edge list, shuffled, then the query, then the answer::

    a,b|c,d|...|y,z/s,g=s,n1,...,g

The prefix ends at ``=``; the target is the source-to-goal path (``path_len`` nodes, source included,
as in Next-Token-Failures).  All graphs of one G(d, l, N) have the same token length.

Graphs are drawn in bulk with a seeded :class:`numpy.random.Generator` (vectorised: node labels by a
random permutation per graph, edges in a random order per graph) and exposed as :mod:`networkx`
digraphs for checks and drawing (:meth:`GraphSet.to_networkx`, :func:`check_graph`).  Train and test
sets are drawn from independent streams of one seed, deduplicated, and made disjoint (a train graph
equal to a test graph, up to edge order, is dropped and replaced).  :func:`make_splits` caches the
result in memory and on disk keyed by (parameters, seed).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

CACHE_ENV = "STEPCREDIT_CACHE"
CACHE_VERSION = 1

# Stream ids under one seed: the test set, the train set, then fresh post-training graphs.
STREAM_TEST = 0
STREAM_TRAIN = 1
STREAM_FRESH = 2


@dataclass(frozen=True)
class GraphSpec:
    """The family G(degree, path_len, num_nodes)."""

    degree: int
    path_len: int
    num_nodes: int

    def __post_init__(self) -> None:
        if self.degree < 1:
            raise ValueError(f"GraphSpec.degree must be >= 1, got {self.degree}")
        if self.path_len < 2:
            raise ValueError(f"GraphSpec.path_len must be >= 2 (source and goal), got {self.path_len}")
        if self.nodes_per_graph > self.num_nodes:
            raise ValueError(
                f"GraphSpec: a G({self.degree},{self.path_len},N) graph has {self.nodes_per_graph} nodes, "
                f"more than num_nodes={self.num_nodes} labels"
            )

    @property
    def nodes_per_graph(self) -> int:
        return 1 + self.degree * (self.path_len - 1)

    @property
    def num_edges(self) -> int:
        return self.degree * (self.path_len - 1)

    @property
    def name(self) -> str:
        return f"deg_{self.degree}_path_{self.path_len}_nodes_{self.num_nodes}"


@dataclass
class GraphSet:
    """A batch of star graphs as arrays (``n`` graphs).

    ``edges_nE2``: directed edges (parent, child) in the order they are written; ``source_n``,
    ``goal_n``; ``path_nL``: the source-to-goal path (``L = path_len``); ``arms_ndL``: every arm
    as a path from the source (arm 0 is the goal arm), kept for analysis.
    """

    spec: GraphSpec
    edges_nE2: np.ndarray
    source_n: np.ndarray
    goal_n: np.ndarray
    path_nL: np.ndarray
    arms_ndL: np.ndarray

    def __len__(self) -> int:
        return int(self.source_n.shape[0])

    def subset(self, idx: np.ndarray) -> "GraphSet":
        return GraphSet(
            self.spec, self.edges_nE2[idx], self.source_n[idx], self.goal_n[idx], self.path_nL[idx], self.arms_ndL[idx]
        )

    def keys(self) -> list[bytes]:
        """A canonical key per graph (edge set, source, goal), independent of the edge order."""
        e = self.edges_nE2.astype(np.int64)
        code = e[:, :, 0] * self.spec.num_nodes + e[:, :, 1]
        code.sort(axis=1)
        full = np.concatenate([code, self.source_n[:, None].astype(np.int64), self.goal_n[:, None].astype(np.int64)], 1)
        return [row.tobytes() for row in np.ascontiguousarray(full)]

    def text(self, i: int) -> str:
        """Graph ``i`` in the Next-Token-Failures text format (prefix and target)."""
        prefix, target = self.prefix_target(i)
        return prefix + target

    def prefix_target(self, i: int) -> tuple[str, str]:
        edges = "|".join(f"{a},{b}" for a, b in self.edges_nE2[i])
        prefix = f"{edges}/{self.source_n[i]},{self.goal_n[i]}="
        target = ",".join(str(v) for v in self.path_nL[i])
        return prefix, target

    def to_networkx(self, i: int) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_edges_from((int(a), int(b)) for a, b in self.edges_nE2[i])
        g.graph.update(source=int(self.source_n[i]), goal=int(self.goal_n[i]))
        return g


def check_graph(g: nx.DiGraph, spec: GraphSpec) -> list[int]:
    """Check the star-graph invariants with networkx; return the source-to-goal path.

    Raises ``ValueError`` naming the violated invariant.
    """
    s, t = g.graph["source"], g.graph["goal"]
    if g.number_of_nodes() != spec.nodes_per_graph:
        raise ValueError(f"graph has {g.number_of_nodes()} nodes, expected {spec.nodes_per_graph}")
    if not nx.is_arborescence(g):
        raise ValueError("graph is not a tree directed away from one root")
    if g.in_degree(s) != 0 or g.out_degree(s) != spec.degree:
        raise ValueError(f"source {s} has in/out degree {g.in_degree(s)}/{g.out_degree(s)}, expected 0/{spec.degree}")
    for v in g.nodes:
        if v != s and g.out_degree(v) > 1:
            raise ValueError(f"node {v} has out-degree {g.out_degree(v)}; only the source branches")
        if not 0 <= v < spec.num_nodes:
            raise ValueError(f"node label {v} outside [0, {spec.num_nodes})")
    leaves = [v for v in g.nodes if g.out_degree(v) == 0]
    if t not in leaves:
        raise ValueError(f"goal {t} is not a leaf")
    for leaf in leaves:
        if nx.shortest_path_length(g, s, leaf) != spec.path_len - 1:
            raise ValueError(f"arm ending at {leaf} has length != path_len - 1 = {spec.path_len - 1}")
    return [int(v) for v in nx.shortest_path(g, s, t)]


def _rng(seed: int, spec: GraphSpec, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), spec.degree, spec.path_len, spec.num_nodes, int(stream), int(chunk)])
    )


def sample_graphs(spec: GraphSpec, n: int, rng: np.random.Generator) -> GraphSet:
    """Draw ``n`` star graphs (vectorised; duplicates possible)."""
    d, L, N = spec.degree, spec.path_len, spec.num_nodes
    k = spec.nodes_per_graph
    # k distinct labels per graph: the first k entries of a random permutation of range(N).
    labels = np.argsort(rng.random((n, N)), axis=1)[:, :k].astype(np.int64)
    source = labels[:, 0]
    arms = np.empty((n, d, L), dtype=np.int64)
    arms[:, :, 0] = source[:, None]
    arms[:, :, 1:] = labels[:, 1:].reshape(n, d, L - 1)
    goal = arms[:, 0, L - 1]
    parents = arms[:, :, :-1].reshape(n, -1)
    children = arms[:, :, 1:].reshape(n, -1)
    edges = np.stack([parents, children], axis=-1)  # n, E, 2
    order = np.argsort(rng.random((n, spec.num_edges)), axis=1)
    edges = np.take_along_axis(edges, order[:, :, None], axis=1)
    return GraphSet(spec, edges, source.copy(), goal.copy(), arms[:, 0].copy(), arms)


def _draw_unique(spec: GraphSpec, n: int, seed: int, stream: int, exclude: set[bytes]) -> GraphSet:
    """Draw ``n`` distinct graphs whose keys are not in ``exclude`` (chunks of a seeded stream)."""
    parts: list[GraphSet] = []
    seen = set(exclude)
    have = 0
    chunk = 0
    while have < n:
        want = n - have
        batch = sample_graphs(spec, int(want * 1.05) + 16, _rng(seed, spec, stream, chunk))
        keep = []
        for j, key in enumerate(batch.keys()):
            if key not in seen:
                seen.add(key)
                keep.append(j)
                if len(keep) == want:
                    break
        parts.append(batch.subset(np.asarray(keep, dtype=np.int64)))
        have += len(keep)
        chunk += 1
        if chunk > 1000:
            raise RuntimeError(f"could not draw {n} distinct {spec.name} graphs; the family is too small")
    return _concat(parts)


def _concat(parts: list[GraphSet]) -> GraphSet:
    spec = parts[0].spec
    return GraphSet(
        spec,
        np.concatenate([p.edges_nE2 for p in parts]),
        np.concatenate([p.source_n for p in parts]),
        np.concatenate([p.goal_n for p in parts]),
        np.concatenate([p.path_nL for p in parts]),
        np.concatenate([p.arms_ndL for p in parts]),
    )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "stepcredit")) / "stargraph"


def _cache_file(spec: GraphSpec, n_train: int, n_test: int, seed: int) -> Path:
    tag = f"v{CACHE_VERSION}_{spec.name}_train_{n_train}_test_{n_test}_seed_{seed}"
    return cache_dir() / f"{tag}.npz"


def _save(path: Path, train: GraphSet, test: GraphSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, gs in (("train", train), ("test", test)):
        arrays.update({f"{name}_edges": gs.edges_nE2, f"{name}_arms": gs.arms_ndL})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _from_arrays(spec: GraphSpec, edges: np.ndarray, arms: np.ndarray) -> GraphSet:
    return GraphSet(spec, edges, arms[:, 0, 0].copy(), arms[:, 0, -1].copy(), arms[:, 0].copy(), arms)


def _load(path: Path, spec: GraphSpec) -> tuple[GraphSet, GraphSet] | None:
    try:
        with np.load(path) as z:
            train = _from_arrays(spec, z["train_edges"], z["train_arms"])
            test = _from_arrays(spec, z["test_edges"], z["test_arms"])
    except Exception:  # a corrupt or foreign cache file is regenerated, never trusted
        return None
    return train, test


@functools.lru_cache(maxsize=8)
def make_splits(spec: GraphSpec, n_train: int, n_test: int, seed: int, use_disk_cache: bool = True) -> tuple[GraphSet, GraphSet]:
    """Disjoint train and test sets of distinct graphs for ``seed``; cached in memory and on disk.

    The test set depends only on (spec, n_test, seed); the train set is drawn from its own stream and
    excludes every test graph.
    """
    path = _cache_file(spec, n_train, n_test, seed)
    if use_disk_cache and path.exists():
        loaded = _load(path, spec)
        if loaded is not None and len(loaded[0]) == n_train and len(loaded[1]) == n_test:
            return loaded
    test = _draw_unique(spec, n_test, seed, STREAM_TEST, set())
    train = _draw_unique(spec, n_train, seed, STREAM_TRAIN, set(test.keys()))
    if use_disk_cache:
        _save(path, train, test)
    return train, test


def fresh_graphs(spec: GraphSpec, n: int, seed: int, round_: int, exclude: set[bytes]) -> GraphSet:
    """``n`` new graphs for post-training round ``round_`` (not in ``exclude``, e.g. the test keys)."""
    return _draw_unique(spec, n, seed, STREAM_FRESH + int(round_), exclude)


def write_ntf_file(path: str | Path, graphs: GraphSet) -> Path:
    """Write graphs one per line in Next-Token-Failures' text format (their ``data/datasets/graphs``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(len(graphs)):
            f.write(graphs.text(i) + "\n")
    return path


def content_hash(graphs: GraphSet) -> str:
    """A short hash of the graphs' contents (for logs and determinism checks)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(graphs.edges_nE2).tobytes())
    h.update(np.ascontiguousarray(graphs.arms_ndL).tobytes())
    return h.hexdigest()[:16]
