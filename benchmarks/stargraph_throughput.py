"""Star-graph throughput: SFT training samples/s and greedy-evaluation prompts/s, printed as JSON.

Uses the testbed's own training step (pre-tokenised data on the device, one ``randperm`` per epoch,
target-only logits, fused AdamW, SDPA, optional ``torch.compile``, bf16 autocast) and its
evaluation: greedy accuracy exactly from one teacher-forced pass, and, for reference, autoregressive
greedy decoding (key/value cache).  ``--export-ntf DIR`` writes the same training/test graphs in Next-Token-Failures'
text format (``deg_D_path_L_nodes_N_{train_200000,test_20000}.txt``) and prints the command that
trains the same model with their trainer, for a side-by-side comparison.

Examples::

    python benchmarks/stargraph_throughput.py --preset quick --threads 2
    python benchmarks/stargraph_throughput.py --preset paper --device cuda --compile --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from stargraph import runio
from stargraph.config import ModelConfig, TrainConfig, resolve
from stargraph.evaluate import generate, teacher_forced
from stargraph.graphs import GraphSpec, make_splits, write_ntf_file
from stargraph.model import resolve_device
from stargraph.loop import EpochSampler, make_optimizer, sft_step_loss
from stargraph.train import build_model
from stargraph.tokenizer import tokenize_graphs


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# Self time of each operator family in a profiled training step (first match wins; the rest is "other").
OP_FAMILIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention", ("scaled_dot_product",)),
    ("gelu", ("aten::gelu",)),
    ("layer_norm", ("layer_norm",)),
    ("optimizer", ("adam",)),
)


def profile_steps(step, n: int) -> dict:
    """Where a training step's CPU time goes: torch.profiler's self time of ``n`` steps by operator family
    (:data:`OP_FAMILIES`) as fractions, and ``kernels`` = the share of matmul, attention, GELU and layer norm,
    the arithmetic any trainer of the same model must do (the rest is overhead a faster trainer can cut)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    fam: dict[str, float] = {name: 0.0 for name, _ in OP_FAMILIES} | {"other": 0.0}
    for ev in prof.key_averages():
        key = ev.key.lower()
        name = next((f for f, pats in OP_FAMILIES if any(p in key for p in pats)), "other")
        fam[name] += ev.self_cpu_time_total
    total = sum(fam.values()) or 1.0
    frac = {k: v / total for k, v in fam.items()}
    return {"steps": n, "self_cpu_s": total / 1e6, "fractions": frac,
            "kernels": frac["matmul"] + frac["attention"] + frac["gelu"] + frac["layer_norm"],
            "note": "self CPU time under torch.profiler (its own overhead lands in 'other'); fractions of the profiled total"}


def bench(cfg: TrainConfig, *, steps: int, warmup: int, eval_prompts: int, amp: str, compile_: bool, profile: int = 0) -> dict:
    dev = resolve_device(cfg.runtime.device)
    d = cfg.data
    spec = GraphSpec(d.degree, d.path_len, d.num_nodes)
    n_train = max(cfg.sft.batch_size * 4, min(d.n_train, 50_000))
    train_g, test_g = make_splits(spec, n_train, eval_prompts, cfg.data_seed)
    train = tokenize_graphs(train_g, dev)
    test = tokenize_graphs(test_g, dev)
    model = build_model(cfg, spec, train.T, dev)
    opt = make_optimizer(model, lr=cfg.sft.learning_rate, weight_decay=cfg.sft.weight_decay, betas=(cfg.sft.beta1, cfg.sft.beta2))
    fwd = torch.compile(model) if compile_ else model
    sampler = EpochSampler(len(train), cfg.sft.batch_size, torch.Generator(device=dev).manual_seed(0), dev)

    def step() -> torch.Tensor:
        loss = sft_step_loss(fwd, train.tokens_NT[sampler.next()], train.P, dev, amp)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    model.train()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(dev)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step()
    _sync(dev)
    train_s = time.perf_counter() - t0
    float(last)
    prof = profile_steps(step, profile) if profile > 0 else None

    bs = cfg.runtime.eval_batch_size
    teacher_forced(model, test.subset(slice(0, min(len(test), bs))), batch_size=bs, amp=amp)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    teacher_forced(model, test, batch_size=bs, amp=amp)
    _sync(dev)
    tf_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, test.tokens_NT, test.P, temperature=0.0, amp=amp, batch_size=bs)
    _sync(dev)
    gen_s = time.perf_counter() - t0
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "graph": {"degree": d.degree, "path_len": d.path_len, "num_nodes": d.num_nodes, "seq_len": train.T},
        "model": {"n_layer": cfg.model.n_layer, "n_head": cfg.model.n_head, "n_embd": cfg.model.n_embd, "params": model.num_params()},
        "batch_size": cfg.sft.batch_size,
        "amp": amp,
        "compile": compile_,
        "warmup_steps": warmup,
        "warmup_s": warm_s,
        "timed_steps": steps,
        "train_step_s": train_s / steps,
        "train_samples_per_s": steps * cfg.sft.batch_size / train_s,
        "train_tokens_per_s": steps * cfg.sft.batch_size * (train.T - 1) / train_s,
        "eval_prompts": len(test),
        "greedy_eval_prompts_per_s": len(test) / tf_s,
        "greedy_eval_method": "exact from one teacher-forced pass (argmax == target at every target position)",
        "greedy_generate_prompts_per_s": len(test) / gen_s,
        **({"train_step_profile": prof} if prof else {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", help="preset whose train: section gives graph, model and batch (default quick)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field, e.g. model.n_layer=6")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--amp", default=None, choices=["auto", "bf16", "off"], help="default: the preset's runtime.amp")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=50, help="timed training steps")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="after the timed steps, profile N more and report where the time goes (train_step_profile)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    ap.add_argument("--eval-prompts", type=int, default=4096, help="test prompts for the evaluation timings")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--export-ntf", default=None, metavar="DIR", help="write the graphs in Next-Token-Failures' format to DIR")
    ap.add_argument("--export-only", action="store_true", help="with --export-ntf: write the graphs and skip the timings")
    args = ap.parse_args(argv)
    from stargraph import configlib

    cfg = resolve(TrainConfig, preset=args.preset, config_file=None, overrides=configlib.sets_tree(args.set), preset_section="train")
    cfg = replace(cfg, runtime=replace(cfg.runtime, device=args.device, threads=args.threads))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    amp = args.amp or cfg.runtime.amp
    res: dict = {}
    if not args.export_only:
        res = bench(cfg, steps=args.steps, warmup=args.warmup, eval_prompts=args.eval_prompts, amp=amp, compile_=args.compile, profile=args.profile)
    res["preset"] = args.preset
    if args.export_ntf:
        d = cfg.data
        spec = GraphSpec(d.degree, d.path_len, d.num_nodes)
        tr, te = make_splits(spec, d.n_train, d.n_test, cfg.data_seed)
        out = Path(args.export_ntf)
        # Next-Token-Failures reads ..._train_200000.txt / ..._test_20000.txt and keeps the first n lines.
        write_ntf_file(out / f"{spec.name}_train_200000.txt", tr)
        write_ntf_file(out / f"{spec.name}_test_20000.txt", te)
        m: ModelConfig = cfg.model
        # Their trainer evaluates (greedy generation over --n_test graphs) whenever epoch % eval_every == 0,
        # i.e. always after epoch 0 whatever --eval_every says; time their training loop, or keep
        # --n_test small when timing the whole script.
        res["ntf_command"] = (
            f"cp {out}/*.txt data/datasets/graphs/ && python train.py --model gpt --n_layer {m.n_layer} --n_embd {m.n_embd} "
            f"--n_head {m.n_head} --n_train {d.n_train} --n_test {d.n_test} --deg {d.degree} --path_len {d.path_len} "
            f"--num_nodes {d.num_nodes} --batch_size {cfg.sft.batch_size} --lr {cfg.sft.learning_rate} --epochs 1"
        )
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        runio.atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
