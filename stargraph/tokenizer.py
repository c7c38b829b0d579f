"""Next-Token-Failures' numeral tokenizer, and the pre-tokenised tensors training runs on.

Vocabulary (as in ``tokenizing/numeral_tokenizer.py`` of Next-Token-Failures): node ``i`` is token
``i`` for ``0 <= i < N``; ``|`` is ``N``, ``=`` is ``N+1``, ``/`` is ``N+2``, ``$`` is ``N+3`` (used
here as padding); commas are separators and produce no token.  Decoding puts a comma back between
two consecutive node tokens, so ``decode(encode(text)) == text`` for every well-formed graph text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from .graphs import GraphSet, GraphSpec

SEPARATORS = ("|", "=", "/", "$")
_TOKEN_RE = re.compile(r"\d+|[|=/$]|,")


class StarTokenizer:
    """One token per node id plus the separators ``| = / $``."""

    def __init__(self, num_nodes: int) -> None:
        self.num_nodes = int(num_nodes)
        self.pipe, self.eq, self.slash, self.dollar = (self.num_nodes + i for i in range(4))
        self.pad = self.dollar
        self.vocab_size = self.num_nodes + 4
        self._sep_id = dict(zip(SEPARATORS, (self.pipe, self.eq, self.slash, self.dollar)))
        self._id_sep = {v: k for k, v in self._sep_id.items()}

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        pos = 0
        for m in _TOKEN_RE.finditer(text):
            if m.start() != pos:
                raise ValueError(f"cannot tokenise {text[pos:m.start()]!r} at character {pos} of {text!r}")
            pos = m.end()
            tok = m.group()
            if tok == ",":
                continue
            if tok.isdigit():
                v = int(tok)
                if v >= self.num_nodes:
                    raise ValueError(f"node id {v} at character {m.start()} is >= num_nodes={self.num_nodes}")
                out.append(v)
            else:
                out.append(self._sep_id[tok])
        if pos != len(text):
            raise ValueError(f"cannot tokenise {text[pos:]!r} at character {pos} of {text!r}")
        return out

    def decode(self, ids) -> str:
        parts: list[str] = []
        prev_node = False
        for t in (int(x) for x in ids):
            if 0 <= t < self.num_nodes:
                if prev_node:
                    parts.append(",")
                parts.append(str(t))
                prev_node = True
            elif t in self._id_sep:
                parts.append(self._id_sep[t])
                prev_node = False
            else:
                raise ValueError(f"token id {t} outside the vocabulary of size {self.vocab_size}")
        return "".join(parts)


def prefix_len(spec: GraphSpec) -> int:
    """Tokens up to and including ``=``: 3 per edge minus one pipe, then ``/ s g =``."""
    return 3 * spec.num_edges - 1 + 4


@dataclass
class TokenizedGraphs:
    """Pre-tokenised graphs: ``tokens_NT`` holds prefix and target, every row the same length.

    ``P`` is the prefix length (through ``=``); the target ``tokens_NT[:, P:]`` is the path (source
    first, ``path_len`` tokens).  The critical token is the first node after the source, at
    ``P + 1``.  ``keys`` identify graphs for disjointness checks.

    ``target_len_N`` (optional): rows whose target is shorter than ``path_len`` (a goal inside an arm,
    or a shorter graph family, see :mod:`stargraph.queries`) hold ``target_len_N[i]`` true target
    tokens followed by padding; ``None`` means every target is complete.  Losses and metrics use
    :attr:`target_mask_NL`.
    """

    spec: GraphSpec
    tokens_NT: torch.Tensor
    P: int
    target_len_N: torch.Tensor | None = None

    @property
    def L(self) -> int:
        return self.spec.path_len

    @property
    def T(self) -> int:
        return self.tokens_NT.shape[1]

    @property
    def path_NL(self) -> torch.Tensor:
        return self.tokens_NT[:, self.P :]

    @property
    def target_mask_NL(self) -> torch.Tensor:
        """``(N, L)`` bool: the true target positions (all True without ``target_len_N``)."""
        N, L = self.tokens_NT.shape[0], self.L
        dev = self.tokens_NT.device
        if self.target_len_N is None:
            return torch.ones(N, L, dtype=torch.bool, device=dev)
        return torch.arange(L, device=dev).unsqueeze(0) < self.target_len_N.to(dev).unsqueeze(1)

    def step_mask(self, idx=None) -> torch.Tensor:
        """``(M, S)`` bool valid steps (target positions after the source) of rows ``idx`` (all rows: None), on the CPU."""
        m = self.target_mask_NL[:, 1:].cpu()
        return m if idx is None else m[torch.as_tensor(idx).cpu()]

    def __len__(self) -> int:
        return self.tokens_NT.shape[0]

    def to(self, device) -> "TokenizedGraphs":
        tl = None if self.target_len_N is None else self.target_len_N.to(device)
        return TokenizedGraphs(self.spec, self.tokens_NT.to(device), self.P, tl)

    def subset(self, idx) -> "TokenizedGraphs":
        if self.target_len_N is None:
            return TokenizedGraphs(self.spec, self.tokens_NT[idx], self.P)
        if isinstance(idx, torch.Tensor):
            idx_t = idx.to(self.target_len_N.device)
        else:
            idx_t = idx
        return TokenizedGraphs(self.spec, self.tokens_NT[idx], self.P, self.target_len_N[idx_t])


def tokenize_graphs(graphs: GraphSet, device: str | torch.device = "cpu") -> TokenizedGraphs:
    """Vectorised tokenisation of a :class:`GraphSet` (equals ``StarTokenizer.encode`` of each text)."""
    spec = graphs.spec
    N = spec.num_nodes
    n, E = len(graphs), spec.num_edges
    P = prefix_len(spec)
    out = np.empty((n, P + spec.path_len), dtype=np.int64)
    # edges: a b | c d | ... ; position 3j, 3j+1 hold edge j, 3j+2 holds a pipe (except the last)
    out[:, 0 : 3 * E - 1 : 3] = graphs.edges_nE2[:, :, 0]
    out[:, 1 : 3 * E - 1 : 3] = graphs.edges_nE2[:, :, 1]
    out[:, 2 : 3 * E - 1 : 3] = N  # '|'
    out[:, 3 * E - 1] = N + 2  # '/'
    out[:, 3 * E] = graphs.source_n
    out[:, 3 * E + 1] = graphs.goal_n
    out[:, 3 * E + 2] = N + 1  # '='
    out[:, P:] = graphs.path_nL
    return TokenizedGraphs(spec, torch.from_numpy(out).to(device), P)
