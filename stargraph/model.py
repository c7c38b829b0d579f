"""A nanoGPT-style GPT: learned positions, pre-LayerNorm blocks, SDPA causal attention, tied embeddings.

Same architecture family as Next-Token-Failures' ``gpt`` model (GPT-2 blocks, tanh-GELU MLP of width
4x, biases, no dropout by default), with a fused QKV projection and
:func:`torch.nn.functional.scaled_dot_product_attention` (``is_causal=True``).  Weights are initialised
from a seeded :class:`torch.Generator` (no global RNG).  bf16 autocast on CUDA is the caller's
context (:func:`autocast`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """Model shape (``vocab_size`` and ``block_size`` come from the graph family)."""

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with the bias added after the product on the CPU (the same values to float rounding).

    On the CPU ``addmm`` first copies the broadcast bias into every output row, which costs more than
    adding it in place afterwards (about 1 ms per ``(4096, 512)`` output on one core); CUDA and CPU
    autocast keep the fused bias."""
    if bias is None or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return F.linear(x, weight, bias)
    return F.linear(x, weight).add_(bias)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` (same parameters and state dict) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, q_from: int = 0, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal attention of new positions ``x`` ``(B, T, C)`` (absolute positions ``S..S+T-1``) to the
        cached keys and values ``past`` (each ``(B, H, S, D)``; None: ``S = 0``) and to themselves; with
        ``q_from > 0`` only new positions ``q_from..T-1`` are queried (queries are computed for those
        only), each still attending to every earlier position. Returns the output ``(B, T - q_from, C)``
        and the keys and values of all ``S + T`` positions."""
        # Shapes (CONTRIBUTING.md): B batch, T new positions, S cached ones, C = n_embd, H heads,
        # D = C // H head width, T' = T - q_from queried positions.
        B, T, C = x.shape  # x: (B, T, C)
        H = self.n_head
        w, b = self.qkv.weight, self.qkv.bias  # (3C, C), (3C,): rows [q; k; v]
        if q_from == 0:
            q, k, v = linear(x, w, b).split(C, dim=-1)  # each (B, T, C)
        else:
            q = linear(x[:, q_from:], w[:C], None if b is None else b[:C])  # (B, T', C)
            k, v = linear(x, w[C:], None if b is None else b[C:]).split(C, dim=-1)  # each (B, T, C)
        # (B, T, C) -> (B, T, H, D) -> (B, H, T, D); split + transposed views instead of one permute and
        # unbind: their backward is one concatenation instead of a stack and a copy
        q, k, v = (t.view(B, t.shape[1], H, C // H).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, S + T, D)
        S = k.shape[2] - T
        drop = self.dropout if self.training else 0.0
        if S == 0 and q_from == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)  # (B, H, T, D)
        elif q_from == T - 1:  # one query, the last position: it sees every key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, H, 1, D)
        else:
            rows = torch.arange(S + q_from, S + T, device=x.device).unsqueeze(1)  # (T', 1): absolute query positions
            mask = torch.arange(S + T, device=x.device).unsqueeze(0) <= rows  # (T', S + T) bottom-right aligned causal mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # (B, H, T', D)
        return self.proj(y.transpose(1, 2).reshape(B, T - q_from, C)), (k, v)  # (B, T', H, D) -> (B, T', C)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, q_from: int = 0, past=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The block's output at new positions ``q_from..`` and its keys and values (see the attention)."""
        a, kv = self.attn(self.ln_1(x), q_from, past)
        x = x[:, q_from:] + a
        return x + self.mlp(self.ln_2(x)), kv


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 init (normal 0.02; residual projections scaled by 1/sqrt(2 n_layer)) from ``generator``."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            elif name.endswith("bias"):
                p.zero_()
            else:  # LayerNorm weight
                p.fill_(1.0)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx_BT: torch.Tensor, logits_from: int = 0) -> torch.Tensor:
        """Logits ``(B, T - logits_from, V)`` for positions ``logits_from..T-1`` of ``idx_BT``."""
        return self.forward_cached(idx_BT, None, logits_from)[0]

    def forward_cached(self, idx_BT: torch.Tensor, cache: list | None = None, logits_from: int = 0) -> tuple[torch.Tensor, list]:
        """Logits ``(B, T - logits_from, V)`` of new tokens ``idx_BT`` at positions ``S+logits_from..S+T-1``
        after the ``S`` positions of ``cache`` (a list of per-block ``(k, v)``, each ``(B, H, S, D)``, from an
        earlier call; None: ``S = 0``), and the cache of all ``S + T`` positions. A sequence fed in pieces
        gets the logits of one :meth:`forward` of it (to float rounding)."""
        B, T = idx_BT.shape
        S = 0 if cache is None else cache[0][0].shape[2]
        if S + T > self.config.block_size:
            raise ValueError(f"sequence length {S + T} exceeds block_size {self.config.block_size}")
        if not 0 <= logits_from < T:
            raise ValueError(f"logits_from={logits_from} outside [0, {T})")
        x = self.drop(self.wte(idx_BT) + self.wpe(torch.arange(S, S + T, device=idx_BT.device)))
        last = len(self.blocks) - 1
        new = []
        for i, block in enumerate(self.blocks):
            # Only the positions that get logits matter after the last block: skip the others there
            # (their keys and values are still computed).
            x, kv = block(x, logits_from if i == last else 0, None if cache is None else cache[i])
            new.append(kv)
        if last < 0:
            x = x[:, logits_from:]
        return self.lm_head(self.ln_f(x)), new


def autocast(device: torch.device | str, amp: bool | str = True):
    """bf16 autocast: ``amp`` true/"auto" = on CUDA only; "bf16" = on CUDA and CPU; false/"off" = never."""
    dev = torch.device(device)
    if amp in (True, "auto") and dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if amp == "bf16" and dev.type in ("cuda", "cpu"):
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev
