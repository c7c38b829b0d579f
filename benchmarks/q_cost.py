"""Exact Q against Monte-Carlo Q on the same checkpoint and step prefixes: time and error, as JSON.

A pool is built as ``stargraph posttrain`` builds it (``--graphs`` training graphs x ``--samples``
responses sampled from the checkpoint, source given), and the Q-value of every step prefix of every
response is computed

- exactly (``q_estimator: exact``): one teacher-forced pass over the pool's graphs
  (:func:`stargraph.rollouts.true_path_step_q` + :func:`~stargraph.rollouts.exact_step_q`);
- by Monte-Carlo rollouts (``q_estimator: mc``) with K = 4, 16, 64 rollouts per distinct (graph,
  prefix) (:func:`stargraph.rollouts.mc_step_q`).

Per K: wall time (median over ``--repeats``), the speed-up of exact Q, and the error against exact Q:
mean / max absolute error over all step prefixes and over the prompt values ``v0``, and the fraction of
negatives whose first pit (lowest-Q rule, as posttrain's default) equals the exact one.  Target of
issue 12: exact Q at least 20x cheaper than MC at K = 16.

Without ``--init`` the checkpoint is trained first: the quick preset's seed-0 SFT run (G(2,4,20), 2000
training graphs, 3x96 GPT) to ``--sft-steps`` (200: under-trained, the start of round 1's per-step DPO
arms, so Q-values are far from 0 and 1)::

    python benchmarks/q_cost.py --threads 1 --out docs/benchmarks/q_cost.json
    python benchmarks/q_cost.py --init runs/study/quick3/seed_0/sft/ckpt_200.pt --graphs 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shared.advantages import first_pit
from stargraph import runio
from stargraph.config import TrainConfig
from stargraph.graphs import GraphSpec, make_splits
from stargraph.rollouts import exact_step_q, mc_step_q, on_path, sample_responses, true_path_step_q
from stargraph.tokenizer import tokenize_graphs
from stargraph.train import train_sft


def small_checkpoint(run_dir: Path, steps: int, threads: int) -> Path:
    """The quick preset's seed-0 SFT run (G(2,4,20), 2000 training graphs, 3x96 GPT) stopped at ``steps``
    (its checkpoints equal those of ``stargraph reproduce --preset quick``: constant LR after warm-up)."""
    from stargraph import configlib
    from stargraph.config import resolve

    over = configlib.sets_tree([f"sft.max_steps={steps}", f"sft.eval_every={max(1, steps)}", "sft.checkpoint_at=[]", "sft.resume_every=0",
                                "runtime.device=cpu", f"runtime.threads={threads}", "runtime.amp=\"off\"", "seed=0"])
    cfg = resolve(TrainConfig, preset="quick", config_file=None, overrides=over, preset_section="train")
    train_sft(cfg, run_dir, log=lambda s: None)
    return run_dir / f"ckpt_{steps}.pt"


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def bench(init: Path, *, graphs: int, samples: int, ks: list[int], repeats: int, seed: int, batch_size: int) -> dict:
    model, ck = runio.load_checkpoint(init, "cpu")
    model.eval()
    sp = ck["spec"]
    spec = GraphSpec(sp["degree"], sp["path_len"], sp["num_nodes"])
    train_g, _ = make_splits(spec, int(sp["n_train"]), int(sp["n_test"]), int(sp["data_seed"]))
    data = tokenize_graphs(train_g)
    gidx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: min(graphs, len(data))].sort().values
    graph_M = gidx.repeat_interleave(samples)
    resp = sample_responses(model, data, graph_M, temperature=1.0, generator=torch.Generator().manual_seed(seed + 1), amp="off", batch_size=batch_size).cpu()
    correct = on_path(data, graph_M, resp)[:, -1]
    M, S = resp.shape
    # distinct (graph, prefix) pairs whose Q MC estimates by rollouts (levels 0..S-1: 0 = the prompt)
    lv = torch.arange(S).repeat(M)
    key = torch.where(torch.arange(S).unsqueeze(0) < lv.unsqueeze(1), resp.repeat_interleave(S, 0), torch.full((M * S, S), -1))
    distinct = int(torch.unique(torch.cat([graph_M.repeat_interleave(S).unsqueeze(1), key], 1), dim=0).shape[0])

    def exact():
        ug, inv = torch.unique(graph_M, return_inverse=True)
        sub = data.subset(ug)
        return exact_step_q(true_path_step_q(model, sub, batch_size=batch_size, amp="off"), sub, inv, resp)

    ex, t_exact = _timed(exact, repeats)
    mask = torch.ones(M, S, dtype=torch.bool)
    neg = ~correct
    pit_ex = first_pit(ex.q_MS, mask)[neg]
    res = {
        "checkpoint": str(init),
        "init_step": int(ck["step"]),
        "graph": f"G({spec.degree},{spec.path_len},{spec.num_nodes})",
        "model": ck["model_config"],
        "graphs": int(gidx.numel()),
        "samples_per_graph": samples,
        "responses": M,
        "step_prefixes": M * S,
        "distinct_rollout_prefixes": distinct,
        "sample_acc": float(correct.double().mean()),
        "negatives": int(neg.sum()),
        "repeats": repeats,
        "exact": {"time_s": t_exact, "mean_q": float(ex.q_MS.mean()), "mean_v0": float(ex.v0_M.mean())},
        "mc": {},
    }
    for k in ks:
        gen = torch.Generator().manual_seed(seed + 100 + k)
        mc, t = _timed(lambda: mc_step_q(model, data, graph_M, resp, k=k, generator=gen, amp="off", batch_size=batch_size), repeats)
        err = (mc.q_MS - ex.q_MS).abs()
        verr = (mc.v0_M - ex.v0_M).abs()
        pit_mc = first_pit(mc.q_MS, mask)[neg]
        res["mc"][str(k)] = {
            "time_s": t,
            "rollouts": distinct * k,
            "exact_speedup": t / t_exact,
            "q_mean_abs_err": float(err.mean()),
            "q_max_abs_err": float(err.max()),
            "q_rmse": float(err.pow(2).mean().sqrt()),
            "v0_mean_abs_err": float(verr.mean()),
            "v0_max_abs_err": float(verr.max()),
            "first_pit_agreement": float((pit_mc == pit_ex).double().mean()) if neg.any() else None,
        }
    k16 = res["mc"].get("16")
    res["target_exact_20x_cheaper_than_mc_k16"] = None if k16 is None else bool(k16["exact_speedup"] >= 20)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default=None, help="SFT checkpoint (.pt); default: train a small one first")
    ap.add_argument("--sft-steps", type=int, default=200, help="steps of the quick-preset checkpoint trained without --init")
    ap.add_argument("--graphs", type=int, default=256, help="training graphs in the pool")
    ap.add_argument("--samples", type=int, default=4, help="responses per graph")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 16, 64], help="Monte-Carlo rollouts per prefix")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8192, help="rows per forward pass")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        init = Path(args.init) if args.init else small_checkpoint(Path(tmp) / "sft", args.sft_steps, args.threads)
        t_sft = time.perf_counter() - t0
        res = bench(init, graphs=args.graphs, samples=args.samples, ks=args.ks, repeats=args.repeats, seed=args.seed, batch_size=args.batch_size)
    if not args.init:
        res["checkpoint"] = f"quick preset, seed 0, SFT step {args.sft_steps} (G(2,4,20), 2000 graphs, 3x96), trained by this script in {t_sft:.0f} s"
    res.update({"device": "cpu", "threads": args.threads, "torch": torch.__version__, "platform": platform.platform()})
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        runio.atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
