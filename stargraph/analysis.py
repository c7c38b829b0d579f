"""How close is per-step DPO's update to SFT on the critical token?  Gradient alignment at a checkpoint.

At the critical token, per-step DPO's gradient on the logits is ``beta sigma(-beta h) (e_correct -
e_rejected)`` and SFT's is ``e_correct - p``: in a near-two-way choice they point the same way.
This module measures it in parameter space.  From one on-policy pool of a checkpoint (the same pool
``stargraph posttrain --objective per_step_dpo`` would build first: exact Q, first pits, the
configured pair construction) it computes the mean-loss parameter gradients of

- ``psdpo``: per-step DPO on every pair of the pool;
- ``psdpo_crit``: per-step DPO on the pairs whose pit is the critical token;
- ``sftc_pairs``: SFT on the critical token of the same graphs as ``psdpo``'s pairs (one row per pair:
  the graphs where the policy erred, as often as it erred there);
- ``sftc``: SFT on the critical token of uniformly drawn training graphs;
- ``sft``: SFT on the whole path of the same uniform graphs;
- ``sft_lookup``: SFT on the lookup tokens only (path positions after the critical token);

and the cosine similarity of every pair of them, with the gradient norms and the pool statistics.
At the start of post-training the policy equals the reference, so ``h = 0`` and every pair has
weight ``beta / 2``.

    stargraph analysis runs/align --set 'checkpoints=[runs/.../ckpt_100.pt,runs/.../ckpt_1000.pt]'

writes ``runs/align/config.yaml`` and ``runs/align/alignment.json`` (a list, one entry per checkpoint,
rewritten after each).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import torch

from shared.losses import sft_loss
from shared.objectives import PreferenceBatch

from . import configlib
from .config import AnalysisConfig, PoolConfig, PostTrainConfig, RuntimeConfig
from .posttrain import PostTrainer
from .runio import atomic_write_text


def _flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def _grad_of(model: torch.nn.Module, chunks) -> torch.Tensor:
    """Gradient of ``sum_chunk loss_sum(chunk) / total`` (a mean over all rows, in chunks)."""
    model.zero_grad(set_to_none=True)
    for loss_sum in chunks:
        loss_sum.backward()
    g = _flat_grad(model).clone()
    model.zero_grad(set_to_none=True)
    return g


def gradient_alignment(
    init: str,
    *,
    graphs: int = 1024,
    samples_per_graph: int = 4,
    uniform: int = 4096,
    beta: float = 0.1,
    construction: str = "full",
    seed: int = 0,
    chunk: int = 512,
    return_grads: bool = False,
) -> dict:
    """Gradients and their cosines at checkpoint ``init`` (see the module docstring); with
    ``return_grads`` the flat gradient vectors too (under ``"grads"``)."""
    cfg = PostTrainConfig(
        init=str(init), objective="per_step_dpo", beta=beta, construction=construction, seed=seed, max_steps=0,
        pool=PoolConfig(policy="resampled", graphs=graphs, samples_per_graph=samples_per_graph),
        runtime=RuntimeConfig(device="cpu", threads=0, eval_batch_size=4096, amp="off"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        pt = PostTrainer(cfg, Path(tmp), log=lambda s: None)
    model = pt.model
    model.train()
    pool = pt.build_pool()
    batches = pt.make_batches(pool)
    out: dict = {"init": str(init), "init_step": pt.init_step, "construction": construction, "beta": beta, **pool.stats}
    if not isinstance(batches, PreferenceBatch):
        out["pairs"] = 0
        return out
    n = len(batches)
    rmask = batches.rejected_mask_BL
    pit_crit = (rmask[:, 1] & (rmask.sum(1) == 1)).nonzero().squeeze(1)
    out["pairs"] = n
    out["pairs_pit_at_critical"] = int(pit_crit.numel())

    def psdpo(rows: torch.Tensor):
        for i in range(0, rows.numel(), chunk):
            idx = rows[i : i + chunk]
            loss, _ = pt.step_loss(batches, idx)  # mean over idx
            yield loss * idx.numel() / rows.numel()

    def sft_on(seqs: torch.Tensor, positions: slice):
        N = seqs.shape[0]
        for i in range(0, N, chunk):
            s = seqs[i : i + chunk]
            lp = pt._logps(s)
            mask = torch.zeros_like(lp, dtype=torch.bool)
            mask[:, positions] = True
            yield sft_loss(lp, mask).loss_B.sum() / N

    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    uni = pt.train.tokens_NT[torch.randperm(len(pt.train), generator=gen)[: min(uniform, len(pt.train))]]
    all_rows = torch.arange(n)
    grads = {
        "psdpo": _grad_of(model, psdpo(all_rows)),
        "sftc_pairs": _grad_of(model, sft_on(batches.chosen_BT, slice(1, 2))),
        "sftc": _grad_of(model, sft_on(uni, slice(1, 2))),
        "sft": _grad_of(model, sft_on(uni, slice(0, None))),
        "sft_lookup": _grad_of(model, sft_on(uni, slice(2, None))),
    }
    if pit_crit.numel():
        grads["psdpo_crit"] = _grad_of(model, psdpo(pit_crit))
    out["grad_norm"] = {k: float(v.norm()) for k, v in grads.items()}
    out["cosine"] = {
        f"{a}|{b}": float(torch.nn.functional.cosine_similarity(grads[a].double(), grads[b].double(), dim=0))
        for a, b in itertools.combinations(grads, 2)
    }
    if return_grads:
        out["grads"] = grads
    return out


def analyse(cfg: AnalysisConfig, run_dir: str | Path) -> list[dict]:
    """``stargraph analysis``: :func:`gradient_alignment` of every checkpoint of ``cfg``, written to
    ``run_dir/alignment.json`` after each (a killed run keeps what it computed) beside ``config.yaml``."""
    if not cfg.checkpoints:
        raise FileNotFoundError("no checkpoints given; --set 'checkpoints=[path/ckpt_100.pt]'")
    missing = [c for c in cfg.checkpoints if not Path(c).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoints not found: {', '.join(missing)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", configlib.dump_yaml(cfg))
    torch.set_num_threads(cfg.threads)
    res = []
    for c in cfg.checkpoints:
        res.append(gradient_alignment(c, graphs=cfg.graphs, samples_per_graph=cfg.samples_per_graph, uniform=cfg.uniform,
                                      beta=cfg.beta, construction=cfg.construction, seed=cfg.seed))
        atomic_write_text(run_dir / "alignment.json", json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res[-1].items() if k in ("init", "pairs", "cosine")}), flush=True)
    return res


def pool_graph_groups(pool, n_queries: int) -> dict[str, torch.Tensor]:
    """The queries of a pool's query set split three ways, as ``(n_queries,)`` bool masks: ``erred`` (in the pool,
    with at least one wrong sample: the queries of the per-step pairs), ``pool_right`` (in the pool, every sample
    right: no pair) and ``outside`` (not in the pool). ``pool`` is a :class:`stargraph.posttrain.Pool` on a query
    set of ``n_queries`` rows (the training queries, for the ``resampled`` and ``fixed`` policies)."""
    g = pool.graph_M.long().cpu()
    if g.numel() and int(g.max()) >= n_queries:
        raise ValueError(f"pool_graph_groups: the pool indexes query {int(g.max())}, beyond n_queries={n_queries}")
    in_pool = torch.zeros(n_queries, dtype=torch.bool)
    in_pool[g] = True
    erred = torch.zeros(n_queries, dtype=torch.bool)
    erred[g[~pool.correct_M.cpu()]] = True
    return {"erred": erred, "pool_right": in_pool & ~erred, "outside": ~in_pool}


def critical_by_group(model, data, groups: dict[str, torch.Tensor], *, amp: bool | str = "off") -> dict[str, dict[str, float]]:
    """Critical-token metrics of ``model`` on each group of rows of ``data`` (one teacher-forced pass): ``n``,
    ``crit_acc`` (argmax right), ``crit_prob`` (probability of the correct child), ``p_other_child`` and
    ``p_non_child`` (where the rest of the mass is; the three sum to 1)."""
    from .evaluate import teacher_forced

    tf = teacher_forced(model, data, amp=amp)
    p = tf["logp_NL"][:, 1].exp()
    acc = tf["correct_NL"][:, 1].double()
    out = {}
    for name, m in groups.items():
        m = m.cpu()
        n = int(m.sum())
        mean = (lambda x: float(x[m].double().mean())) if n else (lambda x: float("nan"))
        out[name] = {"n": n, "crit_acc": mean(acc), "crit_prob": mean(p), "p_other_child": mean(tf["other_child_N"]),
                     "p_non_child": mean(tf["non_child_N"])}
    return out
