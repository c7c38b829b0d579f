"""Metrics from one teacher-forced pass, and greedy/sampled generation.

Greedy decoding reproduces the true path iff the argmax equals the target token at every target
position under teacher forcing (each greedy step then sees exactly the teacher-forced prefix), so
full-path greedy accuracy, per-position accuracy and the critical token's accuracy all come from one
forward pass over prefix + path.  The same pass gives exact Q-values: from any prefix on the true
path the correct continuation is unique, so its success probability is the product of the policy's
probabilities of the remaining true tokens (:func:`shared.advantages.exact_q_values`).

Target positions ``j = 0..L-1`` hold the path (``j = 0`` the source, ``j = 1`` the critical token).
Steps (for Q-values, pits, advantages) are the nodes after the source: step ``i`` is position
``i + 1``.
"""

from __future__ import annotations

import math

import torch

from shared.advantages import best_of_k, exact_q_values
from shared.logprobs import token_logprobs

from .model import GPT, autocast
from .tokenizer import TokenizedGraphs


def source_children(tokens_NT: torch.Tensor, P: int, degree: int) -> torch.Tensor:
    """``(N, degree)`` children of each graph's source, read from the edge list in the prefix."""
    E = (P - 3) // 3
    parents = tokens_NT[:, 0 : 3 * E - 1 : 3]
    children = tokens_NT[:, 1 : 3 * E - 1 : 3]
    src = tokens_NT[:, P - 3 : P - 2]
    is_child = parents == src
    # stable sort puts the source's edges first, in prefix order
    order = torch.sort(is_child.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :degree]
    return children.gather(1, order)


def critical_mass(logits_NV: torch.Tensor, children_Nd: torch.Tensor, correct_N: torch.Tensor) -> dict[str, torch.Tensor]:
    """Where the probability at the critical position goes (float64, per graph; the three sum to 1).

    ``logits_NV``: logits of the critical position; ``children_Nd``: the source's (distinct) children;
    ``correct_N``: the correct child (one of them).  Returns ``p_correct_N`` (the correct child),
    ``p_other_child_N`` (the other children together) and ``p_non_child_N`` (every other token).
    """
    if logits_NV.dim() != 2 or children_Nd.dim() != 2 or correct_N.shape != logits_NV.shape[:1] or children_Nd.shape[0] != logits_NV.shape[0]:
        raise ValueError(f"critical_mass: expected (N, V), (N, d), (N,); got {tuple(logits_NV.shape)}, {tuple(children_Nd.shape)}, {tuple(correct_N.shape)}")
    probs = torch.softmax(logits_NV.double(), dim=-1)
    child = probs.gather(1, children_Nd).sum(1)
    p_correct = probs.gather(1, correct_N.unsqueeze(1)).squeeze(1)
    return {"p_correct_N": p_correct, "p_other_child_N": child - p_correct, "p_non_child_N": 1.0 - child}


CPU_FORWARD_ROWS = 256
"""Rows per forward pass of evaluation and sampling on the CPU: activations of a few hundred short rows
stay in the cache (a 1024-row pass of the quick preset's model takes about 1.3x as long per row);
each row's logits do not depend on the chunk."""


def forward_rows(batch_size: int, device: torch.device) -> int:
    """Rows per forward pass for a ``batch_size`` (at most :data:`CPU_FORWARD_ROWS` on the CPU)."""
    return min(batch_size, CPU_FORWARD_ROWS) if device.type == "cpu" else batch_size


@torch.no_grad()
def teacher_forced(model: GPT, data: TokenizedGraphs, *, batch_size: int = 4096, amp: bool | str = "auto") -> dict[str, torch.Tensor]:
    """Per-graph quantities of one teacher-forced pass (all on CPU, float64 where it matters).

    Returns ``logp_NL`` (log-prob of each true target token), ``correct_NL`` (argmax == target),
    ``child_mass_N`` (probability of the source's children at the critical position),
    ``other_child_N`` / ``non_child_N`` (probability of the other children / of non-child tokens there,
    :func:`critical_mass`) and ``min_child_N`` (the critical argmax is the smallest-id child).  Rows with
    a shorter target (``data.target_len_N``) add ``mask_NL``; their padding positions get log-prob 0
    and count as correct, so products and "all correct" need no mask.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    P = data.P
    keys = ("logp_NL", "correct_NL", "child_mass_N", "other_child_N", "non_child_N", "min_child_N")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    degree = data.spec.degree
    mask_all = data.target_mask_NL if data.target_len_N is not None else None
    rows = forward_rows(batch_size, dev)
    for start in range(0, len(data), batch_size):
        tok = data.tokens_NT[start : start + batch_size].to(dev)
        with autocast(dev, amp):
            logits = torch.cat([model(tok[i : i + rows, :-1], logits_from=P - 1) for i in range(0, tok.shape[0], rows)])
        logits = logits.float()
        labels = tok[:, P:]
        logp = token_logprobs(logits, labels).double().cpu()
        pred = logits.argmax(-1)
        correct = (pred == labels).cpu()
        if mask_all is not None:
            m = mask_all[start : start + batch_size].cpu()
            logp = torch.where(m, logp, torch.zeros((), dtype=logp.dtype))
            correct = correct | ~m
        out["logp_NL"].append(logp)
        out["correct_NL"].append(correct)
        kids = source_children(tok, P, degree)
        cm = critical_mass(logits[:, 1], kids, labels[:, 1])
        out["child_mass_N"].append((cm["p_correct_N"] + cm["p_other_child_N"]).cpu())
        out["other_child_N"].append(cm["p_other_child_N"].cpu())
        out["non_child_N"].append(cm["p_non_child_N"].cpu())
        out["min_child_N"].append((pred[:, 1] == kids.min(1).values).cpu())
    model.train(was_training)
    res = {k: torch.cat(v) for k, v in out.items()}
    if mask_all is not None:
        res["mask_NL"] = mask_all.cpu()
    return res


def _mean(x: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean of ``x`` over ``mask`` (all of it without one); nan when the mask is empty."""
    x = x.double()
    if mask is None:
        return float(x.mean()) if x.numel() else float("nan")
    n = mask.sum()
    return float((x * mask).sum() / n) if n > 0 else float("nan")


def summarize(tf: dict[str, torch.Tensor], *, bok_k: int = 5, prefix: str = "") -> dict[str, float]:
    """Scalar metrics from :func:`teacher_forced`.

    - ``loss``: mean NLL per target token (as Next-Token-Failures' loss);
    - ``acc``: full-path greedy accuracy (source included, as Next-Token-Failures; the headline
      metric); ``acc_given_source``: greedy accuracy of the path after the source when the source is
      given (the post-training prompt); ``acc_pos{j}``: per-position accuracy;
    - ``crit_acc``: accuracy of the critical token (position 1); ``lookup_acc``: positions 2..L-1;
    - ``crit_prob``: mean probability of the correct critical token;
    - ``q_crit``: exact Q of the prefix through the correct critical token (success probability of
      the rest); ``v_crit``: value at the critical decision, pi(critical) * q_crit (= the success
      probability of sampling after the source); ``*_bok``: the same under best-of-``bok_k``;
    - ``crit_child_mass``: probability on the source's children; ``crit_min_child``: fraction of
      graphs whose critical argmax is the smallest-id child (the spurious heuristic);
    - where the critical position's mass goes (likelihood displacement): ``crit_p_other_child`` (the
      other children), ``crit_p_non_child`` (every non-child token; with ``crit_prob`` they sum to 1),
      ``crit_logp`` (mean log-prob of the correct child); ``path_logp``: mean log-likelihood of the true
      path (summed over its tokens, source included), ``path_logp_given_source`` (after the source);
    - ``forced_token_acc``: Next-Token-Failures' teacher-forced per-token accuracy (``evaluate_forced``'s
      ``token_acc``: argmax == target given the true prefix, averaged over the target positions, source
      included), ``forced_token_acc_given_source`` (positions after the source).  Their "forced
      accuracy" (every target token right) is ``acc``.

    Rows with a shorter target (``mask_NL`` in ``tf``) count only their true target positions.
    """
    logp, correct = tf["logp_NL"], tf["correct_NL"]
    mask = tf.get("mask_NL")
    N, L = logp.shape
    steps_lp = logp[:, 1:]
    ex = exact_q_values(steps_lp, torch.ones_like(steps_lp, dtype=torch.bool))
    q_crit = ex.q_BS[:, 0] if L > 1 else torch.ones(N, dtype=torch.float64)
    v_crit = ex.v0_B
    col = (lambda j: None) if mask is None else (lambda j: mask[:, j])
    tail = (lambda j: None) if mask is None else (lambda j: mask[:, j:])
    m: dict[str, float] = {
        "loss": -_mean(logp, mask),
        "acc": float(correct.all(1).double().mean()),
        "acc_given_source": float(correct[:, 1:].all(1).double().mean()),
        "forced_token_acc": _mean(correct, mask),
        "forced_token_acc_given_source": _mean(correct[:, 1:], tail(1)),
        "path_logp": float(logp.sum(1).mean()),
        "path_logp_given_source": float(logp[:, 1:].sum(1).mean()),
    }
    for j in range(L):
        m[f"acc_pos{j}"] = _mean(correct[:, j], col(j))
    if L > 1:
        m["crit_acc"] = float(correct[:, 1].double().mean())
        m["crit_prob"] = float(logp[:, 1].exp().mean())
        m["crit_logp"] = float(logp[:, 1].mean())
    if L > 2:
        m["lookup_acc"] = _mean(correct[:, 2:], tail(2))
    m["q_crit"] = float(q_crit.mean())
    m["v_crit"] = float(v_crit.mean())
    if bok_k > 0:
        m["q_crit_bok"] = float(best_of_k(q_crit, bok_k).mean())
        m["v_crit_bok"] = float(best_of_k(v_crit, bok_k).mean())
    m["crit_child_mass"] = float(tf["child_mass_N"].mean())
    if "other_child_N" in tf:
        m["crit_p_other_child"] = float(tf["other_child_N"].mean())
        m["crit_p_non_child"] = float(tf["non_child_N"].mean())
    m["crit_min_child"] = float(tf["min_child_N"].double().mean())
    clean = {k: (v if math.isfinite(v) else float("nan")) for k, v in m.items()}
    return {f"{prefix}{k}": v for k, v in clean.items()}


def evaluate(model: GPT, sets: dict[str, TokenizedGraphs], *, batch_size: int, amp: bool | str, bok_k: int) -> dict[str, float]:
    """``{"train/acc": ..., "test/acc": ...}`` for every named set."""
    out: dict[str, float] = {}
    for name, data in sets.items():
        out.update(summarize(teacher_forced(model, data, batch_size=batch_size, amp=amp), bok_k=bok_k, prefix=f"{name}/"))
    return out


@torch.no_grad()
def generate(
    model: GPT,
    seq_BT: torch.Tensor,
    start_B: torch.Tensor | int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    amp: bool | str = "auto",
    batch_size: int = 8192,
) -> torch.Tensor:
    """Fill ``seq_BT[b, start_B[b]:]`` autoregressively, with a key/value cache.

    Positions before ``start_B[b]`` are kept. ``temperature == 0`` is greedy decoding; otherwise
    tokens are drawn with ``torch.multinomial`` from ``generator`` (on the model's device), position
    by position, in row order and in chunks of ``batch_size`` rows.
    The fixed prefixes ``seq_BT[:, :min(start_B)]`` run once per *distinct* prefix (rows sampled from
    the same prompt share that pass); after it every row advances one token per position
    (:meth:`GPT.forward_cached`), attending to its prompt's cached keys and values and to its own:
    the logits of a full forward pass per position, to float rounding, for a fraction of its cost.
    The cache of the generated positions takes ``B x n_layer x 2 x n_embd x (T - min(start_B))``
    floats. Returns a new tensor.
    """
    was_training = model.training
    model.eval()
    try:
        return _generate(model, seq_BT, start_B, temperature, generator, amp, batch_size)
    finally:
        model.train(was_training)


def _generate(model: GPT, seq_BT, start_B, temperature, generator, amp, batch_size) -> torch.Tensor:
    dev = next(model.parameters()).device
    seq = seq_BT.to(dev).clone()
    B, T = seq.shape
    start = torch.as_tensor(start_B, device=dev)
    if start.dim() == 0:
        start = start.expand(B)
    if B == 0:
        return seq
    first = int(start.min())
    if first < 1:
        raise ValueError("generate: every row needs at least one fixed token before start")
    if first >= T:
        return seq
    # The distinct prompts (U of them) once: their cache of positions 0..first-1 and the logits there.
    uniq, inv = torch.unique(seq[:, :first], dim=0, return_inverse=True)
    rows_fwd = forward_rows(batch_size, dev)
    parts, caches = [], []
    for c in range(0, uniq.shape[0], rows_fwd):
        with autocast(dev, amp):
            logits, kv = model.forward_cached(uniq[c : c + rows_fwd], logits_from=first - 1)
        parts.append(logits[:, 0].float())
        caches.append(kv)
    prompt_kv = [tuple(torch.cat([kv[layer][i] for kv in caches]) for i in (0, 1)) for layer in range(len(caches[0]))]  # (U, H, first, D)
    logits_BV = torch.cat(parts)[inv]
    # Per chunk of rows, the per-block (k, v) of positions 0..t-1 (each (rows, H, t, D)): the rows' prompt
    # caches at first, then what forward_cached returns (its input cache with the new position appended).
    row_kv = [[(pk[inv[c : c + rows_fwd]], pv[inv[c : c + rows_fwd]]) for pk, pv in prompt_kv] for c in range(0, B, rows_fwd)]
    for t in range(first, T):
        if t > first:  # feed every row's token at t - 1 (generated or fixed): the logits of position t - 1
            parts = []
            for j, c in enumerate(range(0, B, rows_fwd)):
                with autocast(dev, amp):
                    logits, row_kv[j] = model.forward_cached(seq[c : c + rows_fwd, t - 1 : t], row_kv[j])
                parts.append(logits[:, 0].float())
            logits_BV = torch.cat(parts)
        rows = (start <= t).nonzero().squeeze(1)
        logits_rows = logits_BV[rows]
        for c in range(0, rows.numel(), batch_size):
            r = rows[c : c + batch_size]
            logits = logits_rows[c : c + batch_size]
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            seq[r, t] = nxt
    return seq


def greedy_accuracy(model: GPT, data: TokenizedGraphs, *, batch_size: int = 4096, amp: bool | str = "auto") -> float:
    """Full-path accuracy of autoregressive greedy decoding from the prefix (reference implementation)."""
    gen = generate(model, data.tokens_NT, data.P, temperature=0.0, amp=amp, batch_size=batch_size)
    return float((gen[:, data.P :].cpu() == data.path_NL.cpu()).all(1).double().mean())
