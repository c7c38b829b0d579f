"""The testbed's fast paths compute what the plain computation computes (issue 12).

The trainer's model skips work (queries and logits only at the target positions, the bias added after
the matrix product, split q/k/v views) and its optimizer is fused AdamW; evaluation and sampling reuse
the prefix's keys and values. Each test runs the fast path against a plain reference written here
from the same parameters (full-sequence forward with explicit causal softmax attention, full logits,
``torch.optim.AdamW`` with its per-tensor loop) and asserts the same losses, parameters, metrics and
samples.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stargraph.graphs import GraphSpec, make_splits
from stargraph.loop import make_optimizer, sft_step_loss
from stargraph.model import GPT, GPTConfig
from stargraph.tokenizer import tokenize_graphs


def reference_logits(m: GPT, idx_BT: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, T, V)`` of every position, from ``m``'s parameters with plain tensor operations."""
    B, T = idx_BT.shape
    C, H = m.config.n_embd, m.config.n_head
    D = C // H
    x = m.wte.weight[idx_BT] + m.wpe.weight[:T]
    causal_TT = torch.ones(T, T, dtype=torch.bool).tril()
    for blk in m.blocks:
        h = F.layer_norm(x, (C,), blk.ln_1.weight, blk.ln_1.bias)
        qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=-1))
        att = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~causal_TT, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = F.layer_norm(x, (C,), blk.ln_2.weight, blk.ln_2.bias)
        h = F.gelu(h @ blk.mlp.fc.weight.T + blk.mlp.fc.bias, approximate="tanh")
        x = x + h @ blk.mlp.proj.weight.T + blk.mlp.proj.bias
    return F.layer_norm(x, (C,), m.ln_f.weight, m.ln_f.bias) @ m.wte.weight.T


def reference_sft_loss(m: GPT, tokens_BT: torch.Tensor, P: int) -> torch.Tensor:
    """Mean over rows of the mean NLL of the target tokens ``P..T-1``, from full-sequence logits."""
    logp_BTV = reference_logits(m, tokens_BT[:, :-1]).log_softmax(-1)
    nll_BL = -logp_BTV[:, P - 1 :].gather(-1, tokens_BT[:, P:].unsqueeze(-1)).squeeze(-1)
    return nll_BL.mean(1).mean()


@pytest.fixture(scope="module")
def graphs():
    spec = GraphSpec(2, 4, 20)
    train_g, test_g = make_splits(spec, 96, 64, 5)
    return tokenize_graphs(train_g), tokenize_graphs(test_g)


def _model(seed: int = 0) -> GPT:
    cfg = GPTConfig(vocab_size=24, block_size=24, n_layer=3, n_head=4, n_embd=32)
    return GPT(cfg, generator=torch.Generator().manual_seed(seed))


def test_fast_forward_equals_the_full_reference(graphs):
    train, _ = graphs
    m = _model()
    tok = train.tokens_NT[:16, :-1]
    ref = reference_logits(m, tok)
    assert torch.allclose(m(tok), ref, atol=1e-5)
    for start in (1, train.P - 1, tok.shape[1] - 1):
        assert torch.allclose(m(tok, logits_from=start), ref[:, start:], atol=1e-5)


def test_sft_steps_give_the_reference_losses_and_weights(graphs):
    """Eight optimizer steps of the trainer's SFT step (target-only logits, fused AdamW, gradient
    clipping) and of the plain reference (full logits, per-tensor AdamW) from the same weights on the
    same batches: the same loss at every step and the same weights at the end, to float rounding."""
    train, _ = graphs
    fast, ref = _model(1), _model(1)
    opt_fast = make_optimizer(fast, lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    decay = [p for p in ref.parameters() if p.dim() >= 2]
    no_decay = [p for p in ref.parameters() if p.dim() < 2]
    opt_ref = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95), foreach=False
    )
    gen = torch.Generator().manual_seed(2)
    for _ in range(8):
        batch = train.tokens_NT[torch.randperm(len(train), generator=gen)[:32]]
        losses = []
        for model, opt, loss_fn in (
            (fast, opt_fast, lambda: sft_step_loss(fast, batch, train.P, torch.device("cpu"), "off")),
            (ref, opt_ref, lambda: reference_sft_loss(ref, batch, train.P)),
        ):
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


@torch.no_grad()
def reference_generate(m: GPT, seq_BT: torch.Tensor, start_B: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """Autoregressive filling with one full forward pass per position (no cache), drawing tokens in
    row order as :func:`stargraph.evaluate.generate` documents."""
    seq = seq_BT.clone()
    for t in range(int(start_B.min()), seq.shape[1]):
        rows = (start_B <= t).nonzero().squeeze(1)
        logits = m(seq[rows, :t], logits_from=t - 1)[:, 0].float()
        if temperature == 0:
            seq[rows, t] = logits.argmax(-1)
        else:
            seq[rows, t] = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
    return seq


def test_forward_cached_in_pieces_equals_one_forward(graphs):
    train, _ = graphs
    m = _model(3)
    tok = train.tokens_NT[:8, :-1]
    full = m(tok)
    logits_a, cache = m.forward_cached(tok[:, :10])
    logits_b, cache = m.forward_cached(tok[:, 10:13], cache)
    logits_c, cache = m.forward_cached(tok[:, 13:14], cache, logits_from=0)
    assert cache[0][0].shape[2] == 14
    assert torch.allclose(torch.cat([logits_a, logits_b, logits_c], 1), full[:, :14], atol=1e-5)
    with pytest.raises(ValueError):
        m.forward_cached(tok[:, :14], cache)  # past block_size


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_gives_the_samples_of_full_forwards(graphs, temperature):
    """Greedy and sampled filling, rows starting at different positions (prompts, step prefixes) and
    repeated prompts, in batches smaller than the rows: the same tokens as one full forward per
    position with the same generator (a float64 model, so that no draw sits on a rounding boundary)."""
    from stargraph.evaluate import generate

    train, _ = graphs
    m = _model(4).double()
    P = train.P
    seq = train.tokens_NT[torch.arange(40) % 13].clone()
    start = P + 1 + torch.arange(40) % 3  # the prompt, or 1 or 2 steps given
    fast = generate(m, seq, start, temperature=temperature, generator=torch.Generator().manual_seed(7), amp="off", batch_size=16)
    ref = reference_generate(m, seq, start, temperature, generator=torch.Generator().manual_seed(7))
    assert torch.equal(fast, ref)
    keep = torch.arange(seq.shape[1]).unsqueeze(0) < start.unsqueeze(1)
    assert torch.equal(fast[keep], seq[keep])  # the given tokens are kept
    if temperature > 0:
        assert not torch.equal(fast[:, P + 1 :], seq[:, P + 1 :])  # and something was sampled


def test_pair_logps_with_a_shared_prompt_equal_separate_passes(graphs):
    """Per-step DPO's pairs share the prompt and the source: running that part once gives the
    log-probs and the gradients of one full pass per side."""
    from stargraph.loop import pair_target_logps, target_logps

    train, _ = graphs
    P = train.P
    chosen = train.tokens_NT[:12].clone()
    rejected = chosen.clone()
    rejected[:, P + 1 :] = torch.randint(0, 20, (12, rejected.shape[1] - P - 1), generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    grads = []
    for shared in (True, False):
        m = _model(5)
        if shared:
            lc, lr = pair_target_logps(m, chosen, rejected, P, cpu, "off")
        else:
            lc, lr = target_logps(m, chosen, P, cpu, "off"), target_logps(m, rejected, P, cpu, "off")
        (lc.sum() - 0.5 * lr.sum()).backward()
        grads.append(({n: p.grad.clone() for n, p in m.named_parameters()}, lc.detach(), lr.detach()))
    (g1, c1, r1), (g2, c2, r2) = grads
    assert torch.allclose(c1, c2, atol=1e-5) and torch.allclose(r1, r2, atol=1e-5)
    assert not torch.allclose(c1, r1)  # the sides differ
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-5), n
