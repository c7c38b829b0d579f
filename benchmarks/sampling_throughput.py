"""Sampling throughput: generated tokens per second of each available backend on the same prompts.

Usage::

    python benchmarks/sampling_throughput.py                          # tiny random Llama, CPU
    python benchmarks/sampling_throughput.py --hidden-size 512 --layers 8 --prompts 64
    python benchmarks/sampling_throughput.py --model deepseek-ai/deepseek-math-7b-base \
        --prompts-from gsm8k --prompts 256 --n 8 --max-tokens 512      # on a GPU: vLLM and transformers

Every backend gets the same token-id prompts, the same per-sample seeds and the same sampling
parameters (temperature, top_p, max_tokens); one short warm-up call per backend is not timed. Backends
that cannot run here (vLLM without CUDA) are listed with the reason. The JSON report goes to stdout
and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mathreason.config import load_config  # noqa: E402
from mathreason.sampling import Request, SamplingParams, backend_available, make_sampler, row_seed  # noqa: E402
from mathreason.stages import Context  # noqa: E402


def _prompts(args, ctx: Context, tokenizer) -> list[list[int]]:
    if args.prompts_from == "gsm8k":
        from mathreason.data import load_problems

        problems = load_problems("gsm8k", split="test")[: args.prompts]
    else:
        from mathreason.tiny import tiny_problem_rows

        rows, _ = tiny_problem_rows(args.prompts, 0, seed=args.seed)
        from mathreason.data import Problem

        problems = [Problem(r["id"], r["question"], r["solution"], r["answer"], "tiny", "gsm8k") for r in rows]
    return [ids for _, _, ids in ctx.encode_prompts(tokenizer, problems)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random-llama", help="hub id / folder, or tiny-random-llama (built offline)")
    ap.add_argument("--hidden-size", type=int, default=64, help="tiny model width")
    ap.add_argument("--layers", type=int, default=2, help="tiny model depth")
    ap.add_argument("--prompts", type=int, default=32, help="number of prompts")
    ap.add_argument("--prompts-from", choices=["tiny", "gsm8k"], default="tiny", help="generated tiny problems or GSM8K test questions")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=64, help="transformers backend batch size")
    ap.add_argument("--backends", default="transformers,vllm", help="comma-separated backends to try")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM: fraction of GPU memory it may take")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the tiny model is built (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        overrides = [
            f"run_dir={workdir}",
            f"threads={args.threads or 'null'}",
            f"model.name_or_path={args.model}",
            f"model.tiny.hidden_size={args.hidden_size}",
            f"model.tiny.intermediate_size={args.hidden_size * 2}",
            f"model.tiny.num_hidden_layers={args.layers}",
            f"model.tiny.num_attention_heads={max(4, args.hidden_size // 64)}",
            f"model.tiny.num_key_value_heads={max(2, args.hidden_size // 128)}",
        ]
        if args.prompts_from == "gsm8k":
            overrides.append("data.prompt_template=gsm8k-zeroshot-v1")
        ctx = Context(load_config("tiny", overrides), progress=False)
        model_path = ctx.base_model()
        from mathreason.models import load_tokenizer

        tokenizer = load_tokenizer(model_path)
        prompts = _prompts(args, ctx, tokenizer)
        requests = [Request(p, [row_seed(args.seed, "bench", i, j) for j in range(args.n)]) for i, p in enumerate(prompts)]
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
        report = {
            "model": args.model if args.model != "tiny-random-llama" else f"tiny-random-llama(hidden={args.hidden_size}, layers={args.layers})",
            "prompts": len(prompts),
            "prompts_from": args.prompts_from,
            "mean_prompt_tokens": sum(map(len, prompts)) / max(1, len(prompts)),
            "samples_per_prompt": args.n,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "results": [],
        }
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if not backend_available(name):
                report["results"].append({"backend": name, "skipped": "not available here (vLLM needs CUDA and an importable vllm)"})
                continue
            sampler = make_sampler(
                model_path, backend=name, batch_size=args.batch_size, seed=args.seed, gpu_memory_utilization=args.gpu_memory_utilization
            )
            try:
                t0 = time.perf_counter()
                sampler.generate(requests[:1], SamplingParams(temperature=args.temperature, max_tokens=4))
                warmup = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = sampler.generate(requests, params)
                seconds = time.perf_counter() - t0
            finally:
                sampler.close()
            tokens = sum(len(c.token_ids) for cs in out for c in cs)
            report["results"].append(
                {
                    "backend": name,
                    "sequences": sum(len(cs) for cs in out),
                    "generated_tokens": tokens,
                    "seconds": round(seconds, 4),
                    "tokens_per_s": round(tokens / seconds, 2),
                    "sequences_per_s": round(sum(len(cs) for cs in out) / seconds, 3),
                    "finished_by_length": sum(c.finish_reason == "length" for cs in out for c in cs),
                    "warmup_seconds": round(warmup, 4),
                    **({"batch_size": args.batch_size} if name == "transformers" else {}),
                }
            )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
